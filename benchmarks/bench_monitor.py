"""EquilibriumMonitor overhead: a cnn1d_bn training step with the monitor (every k updates)
against the same step without it, measured in one run.

Two identical set-ups (the harness's ``cnn1d_bn`` from ``build_model``, MNIST-1D-shaped
inputs (1, 40), 10 classes, batch 128, the optimizer named) train on the same fixed batches;
one has an ``EquilibriumMonitor(model, optimizer, every=k)`` attached (found scale-invariant
weights with the probe, as a user would). A training step is forward, backward and
``optimizer.step()``: the monitor's cost is its hooks (torch's step-hook wrapper at every
update, the copy before a measured update, the norms and records after it). The two sides
run in pairs of adjacent blocks of ``--block`` steps (a multiple of k: each monitored block
holds the same number of measured updates), the order alternating from pair to pair, after
a warm-up, on one thread. On a shared machine the load drifts between pairs more than
within one, so the estimate is the median over pairs of the ratio monitored / bare (wall
and CPU time of this process; target: <= 1.05 at k = 10). A second measurement isolates the
added cost per update: ``optimizer.step()`` alone, paired likewise.

A third measurement (``--harness-pairs``, 0 to skip) times whole harness runs
(``weightdecay.harness.train.run``: MNIST-1D, cnn1d_bn, 10 epochs as in the presets, cosine
AdamW) with
``monitor_every=k`` against the same run without it, in alternating pairs: what the monitor
costs a sweep's run (the probe, the measured updates, the per-epoch summaries), and a check
that it changes nothing (the same final test error).

    .venv/bin/python benchmarks/bench_monitor.py [--every 10] [--pairs 60] [--block 20]
        [--harness-pairs 6] [--out docs/results/bench_monitor.txt]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import weightdecay as wd
from weightdecay._io import write_atomic
from weightdecay.diagnostics import EquilibriumMonitor
from weightdecay.harness.models import build_model

OPTIMIZERS = {
    "wd.AdamW": lambda ps: wd.AdamW(ps, lr=1e-3, weight_decay=0.025),
    "wd.SGDW": lambda ps: wd.SGDW(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "torch.optim.AdamW": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=25.0),
}


def setup(optimizer: str, batches, every: int | None):
    torch.manual_seed(0)
    model = build_model("cnn1d_bn", input_shape=(1, 40), num_classes=10)
    opt = OPTIMIZERS[optimizer](model.parameters())
    monitor = None
    if every is not None:
        monitor = EquilibriumMonitor(model, opt, every=every, example_input=batches[0][0])
    return model, opt, monitor


def train_block(model, opt, batches, steps: int, offset: int) -> None:
    for i in range(steps):
        x, y = batches[(offset + i) % len(batches)]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _load() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def step_only(opt, steps: int) -> float:
    """CPU seconds per ``optimizer.step()`` alone (the gradients of the last backward, kept)."""
    t0 = time.process_time()
    for _ in range(steps):
        opt.step()
    return (time.process_time() - t0) / steps


def harness_pairs(pairs: int, every: int) -> tuple[list[float], list[float], bool]:
    """CPU seconds of harness runs without and with ``monitor_every`` (alternating), and
    whether every pair ended with the same test error."""
    from weightdecay.harness.build import get_dataset
    from weightdecay.harness.config import RunConfig
    from weightdecay.harness.train import run

    get_dataset("mnist1d", "cpu", None)
    cfg = RunConfig(dataset="mnist1d", model="cnn1d_bn", optimizer="adamw", lr=2**-5,
                    weight_decay=2**-7, epochs=10, seed=0)
    run(cfg)  # warm-up
    times: dict[str, list[float]] = {"bare": [], "monitor": []}
    errors: dict[str, list[float]] = {"bare": [], "monitor": []}
    for b in range(pairs):
        for side in ("bare", "monitor") if b % 2 == 0 else ("monitor", "bare"):
            c0 = time.process_time()
            rec = run(cfg if side == "bare" else cfg.replace(monitor_every=every))
            times[side].append(time.process_time() - c0)
            errors[side].append(rec["final_test_error"])
    return times["bare"], times["monitor"], errors["bare"] == errors["monitor"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--pairs", type=int, default=60, help="pairs of timed blocks")
    p.add_argument("--block", type=int, default=20,
                   help="training steps per block (a multiple of --every)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="wd.AdamW", choices=sorted(OPTIMIZERS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--harness-pairs", type=int, default=6,
                   help="pairs of whole harness runs with and without monitor_every (0: skip)")
    p.add_argument("--out", help="also write the report to this file")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    load_before = _load()
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch_size, 1, 40, generator=gen),
                torch.randint(0, 10, (args.batch_size,), generator=gen)) for _ in range(16)]
    sides = {"bare": setup(args.optimizer, batches, None),
             "monitor": setup(args.optimizer, batches, args.every)}
    for model, opt, _ in sides.values():  # warm-up: allocator, kernels, Adam state
        train_block(model, opt, batches, args.block, 0)
    if args.block % args.every:
        p.error("--block must be a multiple of --every")
    wall: dict[str, list[float]] = {"bare": [], "monitor": []}
    cpu: dict[str, list[float]] = {"bare": [], "monitor": []}
    for b in range(args.pairs):
        for side in ("bare", "monitor") if b % 2 == 0 else ("monitor", "bare"):
            model, opt, _ = sides[side]
            w0, c0 = time.perf_counter(), time.process_time()
            train_block(model, opt, batches, args.block, b * args.block)
            wall[side].append((time.perf_counter() - w0) / args.block)
            cpu[side].append((time.process_time() - c0) / args.block)
    monitor = sides["monitor"][2]
    assert monitor is not None
    records = monitor.records()
    expected = (args.pairs + 1) * args.block // args.every
    measured = len({r["step"] for r in records})
    # the added cost per update, isolated: optimizer.step() alone, paired likewise
    alone: dict[str, list[float]] = {"bare": [], "monitor": []}
    for b in range(args.pairs):
        for side in ("bare", "monitor") if b % 2 == 0 else ("monitor", "bare"):
            alone[side].append(step_only(sides[side][1], 5 * args.block))

    out = io.StringIO()

    def say(line: str = "") -> None:
        print(line)
        out.write(line + "\n")

    say(f"EquilibriumMonitor overhead on a cnn1d_bn training step: {args.optimizer}, batch "
        f"{args.batch_size}, every={args.every}, {args.pairs} pairs of blocks of {args.block} "
        f"steps, order alternating, {args.threads} thread(s); torch {torch.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average before "
        f"{load_before}, after {_load()}")
    say(f"monitor: {len(monitor.scale_invariant)} scale-invariant weights "
        f"({monitor.scale_invariance_source}), {measured} measured updates "
        f"(expected {expected}), {len(records)} records")
    for label, times in (("wall", wall), ("cpu", cpu)):
        for side in ("bare", "monitor"):
            ms = [1e3 * t for t in times[side]]
            say(f"{label:4} {side:7} per step: median {statistics.median(ms):.3f} ms, "
                f"best {min(ms):.3f} ms")
    for label, times in (("wall", wall), ("cpu", cpu)):
        ratios = sorted(m / b for m, b in zip(times["monitor"], times["bare"]))
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        say(f"ratio monitor/bare ({label} time), median over {len(ratios)} pairs: "
            f"{statistics.median(ratios):.3f} (quartiles {q1:.3f}-{q3:.3f})  (target <= 1.05)")
    bare_alone = statistics.median(alone["bare"])
    added = statistics.median(m - b for m, b in zip(alone["monitor"], alone["bare"]))
    say(f"optimizer.step() alone (cpu time): bare median {1e6 * bare_alone:.1f} us; the "
        f"monitor adds {1e6 * added:.1f} us per update (median over pairs) = "
        f"{added / statistics.median(cpu['bare']):.3f} of a bare training step")
    if args.harness_pairs:
        bare_h, mon_h, same = harness_pairs(args.harness_pairs, args.every)
        ratios = sorted(m / b for m, b in zip(mon_h, bare_h))
        say(f"harness run (train.run, MNIST-1D, cnn1d_bn, 10 epochs) with monitor_every="
            f"{args.every}, cpu time: bare median {statistics.median(bare_h):.3f} s, monitored "
            f"{statistics.median(mon_h):.3f} s; ratio median over {len(ratios)} pairs "
            f"{statistics.median(ratios):.3f} (quartiles {ratios[len(ratios) // 4]:.3f}-"
            f"{ratios[(3 * len(ratios)) // 4]:.3f}); same final test error: {same}")
    say("(on a shared machine the wall times include waiting for a core: the CPU-time ratio "
        "is the steadier estimate)")
    monitor.close()
    if args.out:
        write_atomic(args.out, out.getvalue())


if __name__ == "__main__":
    main()

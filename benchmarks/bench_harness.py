"""Harness overhead: one MNIST-1D run through ``train.run`` vs a minimal hand-written loop.

Both sides do the same work: same model (built after ``torch.manual_seed(seed)``), same
optimizer and eta_t schedule (stepped per update), same shuffling (``torch.randperm`` from a
``torch.Generator`` seeded with ``seed``), same epochs and batch size, and the test error
after every epoch (the harness records it per epoch by contract). The hand-written loop
skips everything else the harness does: config validation, per-epoch weight norm and
history, divergence checks, the record (and checkpoints, unless ``--checkpoint``).
Because the work is the same, both reach the same final test error: the script checks it.

Runs alternate (harness, loop, loop, harness, ...) after one warm-up each, on one thread;
the script prints the median wall and CPU time of each and their ratios (target: <= 1.10).
Both sides take the eager training step unless ``--compile``: then both take the harness's
compiled one (``weightdecay.harness.step``, compiled during the warm-up).

    .venv/bin/python benchmarks/bench_harness.py [--epochs 5] [--repeats 5] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import weightdecay
from weightdecay.harness.config import RunConfig
from weightdecay.harness.data import load_dataset
from weightdecay.harness.models import build_model
from weightdecay.harness.step import batch_sizes, loss_function
from weightdecay.harness.train import build_schedule, run, steps_per_epoch

_OPTIMIZERS = {"sgd": weightdecay.SGD, "sgdw": weightdecay.SGDW,
               "adam": weightdecay.Adam, "adamw": weightdecay.AdamW}


def hand_written(cfg: RunConfig, data) -> float:
    """The minimal loop; returns the final test error."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = build_model(cfg.model, data)
    kw = {"momentum": cfg.momentum} if cfg.optimizer.startswith("sgd") else {}
    opt = _OPTIMIZERS[cfg.optimizer](model.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay, **kw)
    x, y, n = data.x_train, data.y_train, len(data.y_train)
    loss_of = loss_function(model, cfg, batch_sizes(n, cfg.batch_size), x.shape[1:])
    spe = steps_per_epoch(n, cfg.batch_size)
    sched = weightdecay.schedules.as_torch_scheduler(opt, build_schedule(cfg, spe))
    err = float("nan")
    for _ in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = loss_of(x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            err = (model(data.x_test).argmax(1) != data.y_test).float().mean().item()
    return err


def through_harness(cfg: RunConfig, data, checkpoint: bool) -> float:
    """``train.run``; returns the final test error."""
    if checkpoint:
        with tempfile.TemporaryDirectory() as tmp:
            rec = run(cfg, checkpoint_path=Path(tmp) / "ck.pt", data=data)
    else:
        rec = run(cfg, data=data)
    return rec["final_test_error"]


def timed(fn, *args) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, fn's result)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - w0, time.process_time() - c0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--model", default="cnn1d_bn")
    p.add_argument("--optimizer", default="adamw", choices=sorted(_OPTIMIZERS))
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--checkpoint", action="store_true",
                   help="let the harness checkpoint every epoch (the loop does not)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true",
                   help="both sides take the compiled training step (default: eager)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    lr = 0.05 if args.optimizer.startswith("sgd") else 1e-3
    cfg = RunConfig(dataset="mnist1d", model=args.model, optimizer=args.optimizer, lr=lr,
                    weight_decay=1e-4 if args.optimizer.startswith("sgd") else 0.025,
                    schedule=args.schedule, epochs=args.epochs, batch_size=args.batch_size,
                    seed=0, T_0=max(1, args.epochs // 4), compile=args.compile)
    data = load_dataset("mnist1d")

    through_harness(cfg, data, args.checkpoint)  # warm-up (allocator, kernels, imports)
    hand_written(cfg, data)
    sides = {"harness": (through_harness, (cfg, data, args.checkpoint)),
             "loop": (hand_written, (cfg, data))}
    wall: dict[str, list[float]] = {"harness": [], "loop": []}
    cpu: dict[str, list[float]] = {"harness": [], "loop": []}
    errors = set()
    for r in range(args.repeats):
        for side in ("harness", "loop") if r % 2 == 0 else ("loop", "harness"):
            fn, fn_args = sides[side]
            w, c, err = timed(fn, *fn_args)
            wall[side].append(w)
            cpu[side].append(c)
            errors.add(round(err, 6))

    print(f"config: {args.optimizer} {args.model} {args.schedule} epochs={args.epochs} "
          f"batch={args.batch_size} threads={args.threads} checkpoint={args.checkpoint}"
          + (" compile=True" if args.compile else ""))
    for label, times in (("wall", wall), ("cpu", cpu)):
        for side in ("harness", "loop"):
            runs = ", ".join(f"{t:.3f}" for t in times[side])
            print(f"{label:4} {side:8} median {statistics.median(times[side]):.3f} s  ({runs})")
    for label, times in (("wall", wall), ("cpu", cpu)):
        med = statistics.median(times["harness"]) / statistics.median(times["loop"])
        best = min(times["harness"]) / min(times["loop"])
        print(f"ratio harness/loop ({label} time): median {med:.3f}, best-of-{args.repeats} "
              f"{best:.3f}  (target <= 1.10)")
    print("(on a shared machine, CPU time and best-of-N are the steadier estimates)")
    print(f"same final test error on both sides: {len(errors) == 1} {sorted(errors)}")


if __name__ == "__main__":
    main()

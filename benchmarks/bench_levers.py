"""Levers on the speed of the training step, each alone against today's step, then the
combination the harness adopts, measured in one run; writes docs/results/bench_levers.txt.

The work is one run of the quick preset (``weightdecay reproduce --preset quick``): AdamW on
MNIST-1D (4000 training signals of length 40), cnn1d_bn (3 x [Conv1d(k=5, 32 channels) ->
BatchNorm1d -> ReLU], mean pool, linear head), batch 128, 10 epochs (320 updates), one
evaluation of 10,000 test signals; one torch thread, as a sweep's workers run.

1. **Step levers**: milliseconds per update (forward, loss, backward, ``zero_grad``, AdamW
   step) on real batches. "today" is the eager step on the (B, C, L) layout; every other arm
   changes one thing (or, last, the adopted combination). Same model, same parameters and
   buffers; only the float rounding differs.
2. **Costs around the step** (per update): the batching, the eta_t scheduler, ``zero_grad``,
   the optimizer step, the per-epoch weight norm.
3. **Evaluation levers**: the 10k-example test pass (today: chunks of 1000 under no_grad).
4. **Runs**: ``weightdecay.harness.train.run`` of the quick preset's first cell: today
   (eager, (B, C, L)) against each lever and the adopted default, compilation done before
   (cached per process, as in a worker).
5. **Compilation in a fresh process**: what the first run of a worker pays on top, with
   Inductor's on-disk cache empty (a fresh machine) and filled; CPU time counts the C++
   compiler's processes. The break-even is the number of runs per worker after which the
   compiled step has paid for its compilation.

Arms alternate within every repetition (the order reversed every other one) so that the
machine's noise hits all alike; medians of process CPU time and of wall time. Ratios are
speed-ups: today's time / the arm's time (> 1: faster).

    .venv/bin/python benchmarks/bench_levers.py [--repeats 9] [--steps 20] [--runs 7]
        [--out docs/results/bench_levers.txt]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import weightdecay
from weightdecay._io import write_atomic
from weightdecay.harness import models, step
from weightdecay.harness.build import build_schedule, get_dataset
from weightdecay.harness.config import RunConfig
from weightdecay.harness.models import CNN1d, weight_norm
from weightdecay.harness.train import run

ROOT = Path(__file__).resolve().parent.parent
#: the first cell of the quick preset (weightdecay.harness.presets)
QUICK = RunConfig(optimizer="adamw", lr=2**-5, weight_decay=2**-7, dataset="mnist1d",
                  model="cnn1d_bn", batch_size=128, test_size=10000, epochs=10,
                  schedule="cosine", eval_every=10, seed=0)


# ------------------------------------------------------------------------------ timing


def interleaved(arms: dict[str, Callable[[], object]], repeats: int
                ) -> dict[str, tuple[list[float], list[float]]]:
    """Run every arm once per repetition, in an order reversed every other repetition;
    per arm: (CPU seconds, wall seconds) of each call."""
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in arms}
    names = list(arms)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            c0, w0 = time.process_time(), time.perf_counter()
            arms[name]()
            out[name][0].append(time.process_time() - c0)
            out[name][1].append(time.perf_counter() - w0)
    return out


def table(times: dict[str, tuple[list[float], list[float]]], unit: float, label: str,
          baseline: str) -> list[str]:
    """Median CPU and wall per arm (in ``label``, seconds / ``unit``) and their speed-ups."""
    cpu0, wall0 = (statistics.median(t) for t in times[baseline])
    rows = [f"| arm | CPU {label} | speed-up (CPU) | wall {label} | speed-up (wall) |",
            "|---|---|---|---|---|"]
    for name, (cpu, wall) in times.items():
        c, w = statistics.median(cpu), statistics.median(wall)
        rows.append(f"| {name} | {c / unit:.3f} | {cpu0 / c:.2f} | {w / unit:.3f} | "
                    f"{wall0 / w:.2f} |")
    return rows


# ------------------------------------------------------------------------------ variants


def _bn_stats_update(bn: nn.BatchNorm1d, mean: torch.Tensor, var: torch.Tensor, n: int):
    """BatchNorm's running statistics: momentum average, unbiased variance (torch's rule)."""
    with torch.no_grad():
        bn.running_mean.lerp_(mean, bn.momentum)
        bn.running_var.lerp_(var * (n / (n - 1)), bn.momentum)
        bn.num_batches_tracked.add_(1)


class BN2dView(nn.Module):
    """BatchNorm1d computed as BatchNorm2d on the (B, C, L, 1) view."""

    def __init__(self, bn: nn.BatchNorm1d):
        super().__init__()
        self.bn = bn

    def forward(self, x):
        b = self.bn
        return F.batch_norm(x.unsqueeze(-1), b.running_mean, b.running_var, b.weight, b.bias,
                            b.training, b.momentum, b.eps).squeeze(-1)


class BNChannelsLast(BN2dView):
    """BatchNorm1d on the (B, C, 1, L) channels-last copy, converted back to (B, C, L)."""

    def forward(self, x):
        b = self.bn
        x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        y = F.batch_norm(x4, b.running_mean, b.running_var, b.weight, b.bias, b.training,
                         b.momentum, b.eps)
        return y.squeeze(2).contiguous()


class BNVarMean(BN2dView):
    """BatchNorm1d written out: torch.var_mean, normalise, scale and shift."""

    def forward(self, x):
        b = self.bn
        if not b.training:
            return b(x)
        var, mean = torch.var_mean(x, dim=(0, 2), correction=0)
        _bn_stats_update(b, mean.detach(), var.detach(), x.numel() // x.shape[1])
        return ((x - mean[:, None]) * (torch.rsqrt(var + b.eps) * b.weight)[:, None]
                + b.bias[:, None])


class ConvChannelsLast(nn.Module):
    """Conv1d as a channels-last 2-D convolution, converted back to (B, C, L)."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        c = self.conv
        x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        w4 = c.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x4, w4, c.bias, 1, (0, c.padding[0]))
        return y.squeeze(2).contiguous()


class ConvUnfold(ConvChannelsLast):
    """Conv1d as unfold (im2col) + one GEMM."""

    def forward(self, x):
        c = self.conv
        b, _, length = x.shape
        k, p = c.kernel_size[0], c.padding[0]
        cols = F.pad(x, (p, p)).unfold(2, k, 1).permute(0, 2, 1, 3).reshape(b * length, -1)
        y = cols @ c.weight.reshape(c.out_channels, -1).t()
        if c.bias is not None:
            y = y + c.bias
        return y.view(b, length, -1).transpose(1, 2)


def quick_model(channels_last: bool, swap: type[nn.Module] | None = None) -> CNN1d:
    """cnn1d_bn for MNIST-1D with seed 0's initial weights; ``swap``: a wrapper put around
    every BatchNorm1d (BN* classes) or Conv1d (Conv* classes)."""
    torch.manual_seed(0)
    model = CNN1d(1, 10, channels_last=channels_last)
    if swap is not None:
        kind = nn.BatchNorm1d if swap.__name__.startswith("BN") else nn.Conv1d
        for i, layer in enumerate(model.features):
            if isinstance(layer, kind):
                model.features[i] = swap(layer)
    return model


@contextlib.contextmanager
def todays_layout() -> Iterator[None]:
    """The harness builds cnn1d models on today's (B, C, L) layout inside the block."""
    build = models.build_model

    def old(name, dataset=None, **kw):
        if name.startswith("cnn1d"):
            kw.setdefault("channels_last", False)
        return build(name, dataset, **kw)

    models.build_model = old
    try:
        yield
    finally:
        models.build_model = build


# ------------------------------------------------------------------------------ sections


def step_levers(data, args) -> tuple[list[str], dict]:
    gen = torch.Generator().manual_seed(0)
    n = len(data.y_train)
    batches = [torch.randperm(n, generator=gen)[:QUICK.batch_size] for _ in range(args.steps)]
    xs = [(data.x_train[i], data.y_train[i]) for i in batches]

    def arm(model: nn.Module, compiled: bool = False, no_mkldnn: bool = False):
        opt = weightdecay.AdamW(model.parameters(), lr=QUICK.lr, weight_decay=QUICK.weight_decay)
        loss_fn = step.loss_function(model, QUICK.replace(compile=compiled), [QUICK.batch_size],
                                     data.x_train.shape[1:])
        assert loss_fn.compiled == compiled, step.compile_unavailable()
        def steps():
            with (torch.backends.mkldnn.flags(enabled=False) if no_mkldnn
                  else contextlib.nullcontext()):
                for x, y in xs:
                    loss = loss_fn(x, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        steps()  # warm: allocator, oneDNN primitives
        return steps

    arms = {
        "today: eager, (B, C, L)": arm(quick_model(False)),
        "torch.compile of the step": arm(quick_model(False), compiled=True),
        "channels-last (B, C, 1, L) network": arm(quick_model(True)),
        "BN as BatchNorm2d on (B, C, L, 1)": arm(quick_model(False, BN2dView)),
        "BN on a channels-last copy": arm(quick_model(False, BNChannelsLast)),
        "BN written out with var_mean": arm(quick_model(False, BNVarMean)),
        "conv as channels-last 2-D conv (copies)": arm(quick_model(False, ConvChannelsLast)),
        "conv as unfold + GEMM": arm(quick_model(False, ConvUnfold)),
        "conv without oneDNN (mkldnn off)": arm(quick_model(False), no_mkldnn=True),
        "ADOPTED: compile + channels-last": arm(quick_model(True), compiled=True),
    }
    times = interleaved(arms, args.repeats)
    lines = table(times, args.steps * 1e-3, "ms/update", "today: eager, (B, C, L)")
    return lines, {k: statistics.median(v[0]) / args.steps for k, v in times.items()}


def around_the_step(data, args, step_cpu: float) -> list[str]:
    cfg = QUICK
    model = quick_model(True)
    opt = weightdecay.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    spe = -(-len(data.y_train) // cfg.batch_size)
    sched = weightdecay.schedules.as_torch_scheduler(opt, build_schedule(cfg, spe))
    F.cross_entropy(model(data.x_train[:cfg.batch_size]), data.y_train[:cfg.batch_size]
                    ).backward()
    opt.step()  # (the scheduler warns when it steps before the optimizer)
    gen = torch.Generator().manual_seed(0)

    def batching():
        for _ in data.batches(cfg.batch_size, shuffle=True, generator=gen):
            pass

    def zero_grad():  # the grads are put back: each call frees the same tensors
        grads = [p.grad for p in model.parameters()]
        opt.zero_grad(set_to_none=True)
        for p, g in zip(model.parameters(), grads):
            p.grad = g

    per_update = {"batching (one epoch / updates)": (batching, 1 / spe),
                  "eta_t scheduler step": (sched.step, 1.0),
                  "zero_grad(set_to_none=True) (+ putting grads back)": (zero_grad, 1.0),
                  "AdamW step": (opt.step, 1.0),
                  "weight norm (once per epoch / updates)": (lambda: weight_norm(model),
                                                             1 / spe)}
    reps = 50
    arms = {k: (lambda fn=fn: [fn() for _ in range(reps)]) for k, (fn, _) in per_update.items()}
    times = interleaved(arms, args.repeats)
    rows = ["| cost per update | CPU us | share of today's step |", "|---|---|---|"]
    for name, (_, scale) in per_update.items():
        us = statistics.median(times[name][0]) / reps * scale
        rows.append(f"| {name} | {us * 1e6:.1f} | {us / step_cpu:.1%} |")
    return rows


def eval_levers(data, args) -> list[str]:
    x, y = data.x_test, data.y_test

    def arm(model, chunk, inference=False):
        model.eval()
        ctx = torch.inference_mode if inference else torch.no_grad

        def evaluate():
            with ctx():
                return torch.cat([model(x[i:i + chunk]).argmax(1) != y[i:i + chunk]
                                  for i in range(0, len(y), chunk)]).sum().item()
        evaluate()
        return evaluate

    old, new = quick_model(False), quick_model(True)
    arms = {"today: chunks of 1000, no_grad, (B, C, L)": arm(old, 1000),
            "chunks of 250": arm(old, 250),
            "chunks of 2500": arm(old, 2500),
            "one batch of 10000": arm(old, len(y)),
            "inference_mode": arm(old, 1000, inference=True),
            "channels-last network (adopted model)": arm(new, 1000)}
    return table(interleaved(arms, args.repeats), 1e-3, "ms/eval",
                 "today: chunks of 1000, no_grad, (B, C, L)")


def run_levers(data, args) -> tuple[list[str], dict]:
    def arm(compiled: bool, layout_today: bool):
        cfg = QUICK.replace(compile=compiled)

        def one_run():
            with todays_layout() if layout_today else contextlib.nullcontext():
                return run(cfg, data=data)["final_test_error"]
        one_run()  # compiles (once per process) where the arm compiles
        return one_run

    from torch._dynamo.utils import counters

    arms = {"today: eager, (B, C, L)": arm(False, True),
            "torch.compile only": arm(True, True),
            "channels-last only": arm(False, False),
            "ADOPTED (default): compile + channels-last": arm(True, False)}
    graphs = dict(counters["stats"]).get("unique_graphs", 0)
    times = interleaved(arms, args.runs)
    recompiled = dict(counters["stats"]).get("unique_graphs", 0) - graphs
    lines = table(times, 1.0, "s/run", "today: eager, (B, C, L)")
    lines.append(f"\nGraphs compiled while the {args.runs} x {len(arms)} timed runs ran: "
                 f"{recompiled} (each (layout, batch size) was compiled once, before).")
    return lines, {k: statistics.median(v[0]) for k, v in times.items()}


_FRESH = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
from weightdecay.harness.build import get_dataset
from weightdecay.harness.config import RunConfig
from weightdecay.harness.train import run
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
cfg = RunConfig.from_dict(json.loads(sys.argv[1]))
data = get_dataset(cfg.dataset, cfg.device, cfg.test_size)
out = []
for _ in range(2):
    c, w = cpu(), time.perf_counter()
    run(cfg, data=data)
    out.append((cpu() - c, time.perf_counter() - w))
print(json.dumps(out))
"""


def fresh_process(cfg: RunConfig, cache_dir: str) -> list[tuple[float, float]]:
    """(CPU s incl. child processes, wall s) of the first and second run of a new process."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    import json

    proc = subprocess.run([sys.executable, "-c", _FRESH, json.dumps(cfg.to_dict())], env=env,
                          capture_output=True, text=True, check=True)
    return [tuple(t) for t in json.loads(proc.stdout.strip().splitlines()[-1])]


def compile_cost(run_cpu: dict) -> list[str]:
    eager_cfg, comp_cfg = QUICK.replace(compile=False), QUICK
    rows = ["| Inductor cache | compile CPU s | compile wall s | break-even vs today "
            "| vs eager channels-last |", "|---|---|---|---|---|"]
    saving_today = run_cpu["today: eager, (B, C, L)"] - run_cpu[
        "ADOPTED (default): compile + channels-last"]
    saving_cl = run_cpu["channels-last only"] - run_cpu[
        "ADOPTED (default): compile + channels-last"]
    with tempfile.TemporaryDirectory() as cache:
        eager = fresh_process(eager_cfg, cache)
        for label in ("empty (a fresh machine)", "filled (a later worker)"):
            comp = fresh_process(comp_cfg, cache)
            # first run minus second run, less the same difference of an eager process
            # (data set generation, first-call costs)
            extra = [(comp[0][i] - comp[1][i]) - (eager[0][i] - eager[1][i]) for i in (0, 1)]
            rows.append(f"| {label} | {extra[0]:.1f} | {extra[1]:.1f} | "
                        f"{extra[0] / saving_today:.0f} runs | {extra[0] / saving_cl:.0f} runs |")
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    isa = torch.backends.cpu.get_cpu_capability()
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({isa})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=9, help="repetitions of the step sections")
    p.add_argument("--steps", type=int, default=20, help="updates per timed repetition")
    p.add_argument("--runs", type=int, default=7, help="repetitions of the run section")
    p.add_argument("--no-fresh", action="store_true",
                   help="skip the fresh-process compilation section (minutes on 2 cores)")
    p.add_argument("--out", default=str(ROOT / "docs/results/bench_levers.txt"),
                   help="file written (atomically); '-' prints only")
    args = p.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    data = get_dataset(QUICK.dataset, QUICK.device, QUICK.test_size)

    out = ["Levers on the speed of the training step, each alone against today's step, and the "
           "combination the harness adopts (benchmarks/bench_levers.py, one run of it). "
           "Speed-up: today's median time / the arm's (> 1: faster).", "",
           f"Machine: {machine()}; one torch thread. It was shared with other jobs: load "
           f"average {load[0]:.1f} at the start (1 = one busy core), so wall times are "
           "stretched; process CPU time is the steadier measure.", "",
           f"### 1. Step levers, each alone ({args.steps} updates of batch 128 per repetition, "
           f"{args.repeats} repetitions, median)", ""]
    rows, step_cpu = step_levers(data, args)
    out += rows
    out += ["", "### 2. Costs around the step (today's step: "
            f"{step_cpu['today: eager, (B, C, L)'] * 1e3:.2f} ms CPU)", ""]
    out += around_the_step(data, args, step_cpu["today: eager, (B, C, L)"])
    out += ["", f"### 3. Evaluation levers (10,000 test signals, {args.repeats} repetitions)",
            ""]
    out += eval_levers(data, args)
    out += ["", f"### 4. One quick-preset run through train.run ({args.runs} repetitions; "
            "compiled before, once per process)", ""]
    rows, run_cpu = run_levers(data, args)
    out += rows
    if not args.no_fresh:
        out += ["", "### 5. Compilation in a fresh process (first run minus second run, less "
                "an eager process's difference; CPU includes the C++ compiler's processes)", ""]
        out += compile_cost(run_cpu)
    out += ["", f"Load average at the end: {os.getloadavg()[0]:.1f}."]
    text = "\n".join(out) + "\n"
    print(text, end="")
    if args.out != "-":
        write_atomic(args.out, text)


if __name__ == "__main__":
    main()

"""Step time of weightdecay's optimizers against torch.optim, measured in one process.

For N = 1e5, 1e6, 1e7 parameters, laid out as one tensor or as ~200 ResNet-shaped tensors,
it times one ``optimizer.step()`` (median over repeats, contenders interleaved so that machine
noise hits all alike) in two regimes — back to back as in a training loop, and a single step
with caches cold (see ``time_steps``) — and prints:
  - the ratio to torch's fused kernel (torch.optim.AdamW(fused=True) / SGD(fused=True)),
  - the fraction of the memory-bandwidth bound: AdamW moves 28 bytes per float32 parameter
    (read p, g, m, v; write p, m, v), SGD with momentum 20 (read p, g, m; write p, m); the
    bandwidth is measured here with streaming kernels on 80 MB arrays (best of copy, scale,
    triad). Small sizes can exceed 100%: their arrays stay in cache.

    python benchmarks/bench_optim.py [--sizes 1e5 1e6 1e7] [--repeats 15] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import weightdecay as wd  # noqa: E402
from _shapes import resnet_like_shapes  # noqa: E402

BYTES_PER_PARAM = {"adamw": 28, "sgd": 20}
#: variant -> the contender it is compared with in one more ratio (this library's own step)
VERSUS = {"wd.AdamW cautious": "wd.AdamW (auto)", "wd.AdamW cautious flat": "wd.AdamW flat"}


def contenders(kind: str) -> dict:
    """name -> factory(params). The first entry is the baseline of the ratios."""
    if kind == "adamw":
        lam, lr = 0.05, 1e-3
        return {
            "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=lam / lr,
                                                              fused=True),
            "torch AdamW foreach": lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=lam / lr,
                                                                foreach=True),
            "wd.AdamW (auto)": lambda ps: wd.AdamW(ps, lr=lr, weight_decay=lam),
            "wd.AdamW foreach": lambda ps: wd.AdamW(ps, lr=lr, weight_decay=lam, impl="foreach"),
            "wd.AdamW flat": lambda ps: wd.AdamW(ps, lr=lr, weight_decay=lam, flat=True),
            # cautious weight decay: no fused kernel; impl=None takes the compiled kernel for
            # tensors of >= 2**22 elements (flat buffers: >= 786,432), foreach below
            "wd.AdamW cautious": lambda ps: wd.AdamW(ps, lr=lr, weight_decay=lam,
                                                     cautious=True),
            "wd.AdamW cautious flat": lambda ps: wd.AdamW(ps, lr=lr, weight_decay=lam,
                                                          cautious=True, flat=True),
        }
    return {
        "torch SGD fused": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, fused=True),
        "torch SGD foreach": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=True),
        "wd.SGDW (auto)": lambda ps: wd.SGDW(ps, lr=0.1, momentum=0.9, weight_decay=5e-4),
        "wd.SGDW compiled": lambda ps: wd.SGDW(ps, lr=0.1, momentum=0.9, weight_decay=5e-4,
                                               impl="compiled"),
        "wd.SGDW flat": lambda ps: wd.SGDW(ps, lr=0.1, momentum=0.9, weight_decay=5e-4,
                                           flat=True),
    }


def measure_bandwidth(n: int = 20_000_000, repeats: int = 10) -> float:
    """Bytes per second of streaming kernels on 80 MB arrays: the best of a copy (8 bytes
    moved per float32 element), an in-place scale (8) and a triad c = a + b (12)."""
    a, b, c = torch.randn(n), torch.randn(n), torch.empty(n)
    kernels = [(lambda: c.copy_(a), 8), (lambda: a.mul_(1.0), 8),
               (lambda: torch.add(a, b, out=c), 12)]
    best = 0.0
    for fn, nbytes in kernels:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = max(best, nbytes * n / (time.perf_counter() - t0))
    return best


def make_params(n: int, layout: str) -> list[torch.nn.Parameter]:
    shapes = [(n,)] if layout == "1 tensor" else resnet_like_shapes(n)
    gen = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=gen))
        p.grad = torch.randn(s, generator=gen) * 1e-2
        params.append(p)
    return params


def time_steps(opts: dict, repeats: int) -> dict:
    """Median seconds per step for each optimizer in two regimes, contenders interleaved
    repeat by repeat so that machine noise hits all alike:

    - ``loop``: a sample is k consecutive steps of one optimizer (k per optimizer, so that a
      sample lasts >= 2 ms), as a training loop runs them and as torch.utils.benchmark's
      blocked timing measures: the optimizer's own buffers and objects stay in cache.
    - ``cold``: a sample is one step, right after the other contenders' steps have evicted
      this optimizer's buffers and Python objects from the caches (an upper bound on what a
      step costs after forward and backward have run over other memory).
    """
    for opt in opts.values():  # warm-up: state allocation, first-call overheads
        opt.step()
        opt.step()
    inner = {}
    for name, opt in opts.items():
        probe = time.perf_counter()
        opt.step()
        probe = time.perf_counter() - probe
        inner[name] = max(1, int(2e-3 / max(probe, 1e-6)))
    loop = {name: [] for name in opts}
    cold = {name: [] for name in opts}
    for _ in range(repeats):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                opt.step()
            loop[name].append((time.perf_counter() - t0) / inner[name])
        for name, opt in opts.items():
            t0 = time.perf_counter()
            opt.step()
            cold[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(loop[name]), statistics.median(cold[name]))
            for name in opts}


COMPILE_PROBE = """
import time, torch, weightdecay as wd
torch.set_num_threads(1)
ps = [torch.nn.Parameter(torch.randn(1000)) for _ in range(3)]
for p in ps:
    p.grad = torch.randn(1000)
cases = (("SGDW(impl='compiled')", wd.SGDW, dict(lr=0.1, impl="compiled")),
         ("AdamW(impl='compiled')", wd.AdamW, dict(impl="compiled")),
         ("SGDW(default; small buffer: foreach, no compilation)", wd.SGDW, dict(lr=0.1)))
for label, cls, kw in cases:
    opt = cls([p.detach().clone().requires_grad_() for p in ps], flat=True, **kw)
    for p in opt.param_groups[0]["params"]:
        p.grad.normal_()
    t0 = time.perf_counter()
    opt.step()
    print(f"{label}\t{time.perf_counter() - t0}")
"""


def one_time_costs(n: int = 1_000_000) -> None:
    """Re-homing time, and the first (compiling) step in a fresh process: cold cache, then
    warm cache (Inductor's on-disk cache, reused across processes)."""
    import os
    import subprocess
    import tempfile

    wd.AdamW(make_params(1000, "200 tensors"), flat=True)  # first use imports torch internals
    params = make_params(n, "200 tensors")
    t0 = time.perf_counter()
    wd.AdamW(params, lr=1e-3, flat=True)
    print(f"\n## one-time costs\nre-homing {len(params)} tensors, N={n:.0e}: "
          f"{(time.perf_counter() - t0) * 1e3:.1f} ms")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        for label in ("cold cache", "warm cache"):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", COMPILE_PROBE], env=env, check=True,
                                 capture_output=True, text=True).stdout.split("\n")
            total = time.perf_counter() - t0
            firsts = ", ".join(f"{case} {float(t):.2f} s"
                               for case, t in (line.split("\t") for line in out if line))
            print(f"first flat step ({label}): {firsts} (process total {total:.1f} s)")


def end_to_end(repeats: int) -> None:
    """Forward + backward + update of real models: flat AdamW vs torch fused AdamW."""
    from weightdecay.harness.models import build_model

    cases = [("mnist1d cnn1d_bn", "cnn1d_bn", (1, 40), 128),
             ("cifar resnet_small", "resnet_small", (3, 32, 32), 128)]
    print("\n## whole training step (forward, backward, update), median ms")
    print("| model | params | tensors | torch AdamW fused | wd.AdamW flat | ratio |")
    print("|---|---|---|---|---|---|")
    for label, name, shape, batch in cases:
        torch.manual_seed(0)
        x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
        models, opts = {}, {}
        for kind in ("torch", "flat"):
            torch.manual_seed(0)
            model = build_model(name, input_shape=shape, num_classes=10)
            models[kind] = model
            opts[kind] = (torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1,
                                            fused=True) if kind == "torch" else
                          wd.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, flat=True))

        def step(kind, models=models, opts=opts, x=x, y=y):
            opts[kind].zero_grad()
            torch.nn.functional.cross_entropy(models[kind](x), y).backward()
            opts[kind].step()

        samples = {k: [] for k in models}
        for kind in models:
            step(kind)
            step(kind)
        for _ in range(repeats):
            for kind in models:
                t0 = time.perf_counter()
                step(kind)
                samples[kind].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
        n_params = sum(p.numel() for p in models["torch"].parameters())
        n_tensors = len(list(models["torch"].parameters()))
        print(f"| {label} | {n_params:,} | {n_tensors} | {med['torch']:.2f} | "
              f"{med['flat']:.2f} | {med['flat'] / med['torch']:.2f} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6, 1e7])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--kinds", nargs="+", default=["adamw", "sgd"], choices=["adamw", "sgd"])
    ap.add_argument("--layouts", nargs="+", default=["1 tensor", "200 tensors"],
                    choices=["1 tensor", "200 tensors"])
    ap.add_argument("--contenders", nargs="+", default=None,
                    help="names of the contenders to time (default: all; the first of each "
                         "kind is always timed, as the baseline)")
    ap.add_argument("--sections", nargs="+", default=["steps", "once", "e2e"],
                    choices=["steps", "once", "e2e"],
                    help="step-time tables, one-time costs (re-homing, compilation), "
                         "whole training steps")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bw = measure_bandwidth()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"copy bandwidth {bw / 1e9:.1f} GB/s")
    for kind in args.kinds if "steps" in args.sections else ():
        print(f"\n## {kind}: median step time (ms) back to back (loop) and as a single step "
              f"after the other contenders (cold); ratios to the first row; fraction of the "
              f"{BYTES_PER_PARAM[kind]} B/param bandwidth bound reached in the loop")
        print(f"| {'N':>5} | {'layout':<12} | {'optimizer':<22} | {'loop ms':>8} | "
              f"{'ratio':>6} | {'cold ms':>8} | {'ratio':>6} | {'of bound':>8} |")
        print(f"|{'-' * 7}|{'-' * 14}|{'-' * 24}|{'-' * 10}|{'-' * 8}|{'-' * 10}|{'-' * 8}|"
              f"{'-' * 10}|")
        versus = []
        for n in (int(s) for s in args.sizes):
            for layout in args.layouts:
                opts = {}
                for i, (name, factory) in enumerate(contenders(kind).items()):
                    if i == 0 or args.contenders is None or name in args.contenders:
                        opts[name] = factory(make_params(n, layout))
                times = time_steps(opts, args.repeats)
                base_loop, base_cold = next(iter(times.values()))
                bound = BYTES_PER_PARAM[kind] * n / bw
                for name, (t_loop, t_cold) in times.items():
                    print(f"| {n:>5.0e} | {layout:<12} | {name:<22} | {t_loop * 1e3:>8.3f} | "
                          f"{t_loop / base_loop:>6.2f} | {t_cold * 1e3:>8.3f} | "
                          f"{t_cold / base_cold:>6.2f} | {bound / t_loop:>8.0%} |")
                    other = VERSUS.get(name)
                    if other in times:
                        versus.append(f"| {n:>5.0e} | {layout:<12} | {name} / {other} | "
                                      f"{t_loop / times[other][0]:.2f} | "
                                      f"{t_cold / times[other][1]:.2f} |")
                del opts
        if versus:
            print("\nvariants against this library's own step (same run): | N | layout | "
                  "ratio | loop | cold |")
            print("\n".join(versus))
    if "once" in args.sections:
        one_time_costs()
    if "e2e" in args.sections:
        end_to_end(args.repeats)


if __name__ == "__main__":
    main()

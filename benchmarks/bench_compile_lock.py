"""What the compile lock saves on a machine whose Inductor cache is empty: N processes that
each prepare the compiled training step of the quick preset's model (``cnn1d_bn``, 32
channels, batches of 128 and the last one of 32) at the same time, as the workers of a
local sweep do at their first run, with the lock (``weightdecay.harness.step.compile_lock``:
one compiles, the others wait and load) and without it (each compiles the same kernels).

Each arm starts N fresh processes on a fresh, empty cache folder; CPU-s = user + system time
of those processes and of the C++ compilers they start (``RUSAGE_CHILDREN``); wall = from the
start of the first to the end of the last. Arms alternate, ``--repeats`` times each; the
table shows medians and the ratio with the lock to without it, measured in this one run.

    .venv/bin/python benchmarks/bench_compile_lock.py [--workers 2] [--repeats 2]
        [--out docs/results/bench_compile_lock.txt]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: one worker's first run, up to its first update: the step compiled for both batch sizes
_CHILD = r"""
import contextlib, sys, time
import torch
torch.set_num_threads(1)
from weightdecay.harness import step
from weightdecay.harness.build import build_network, get_dataset
from weightdecay.harness.config import RunConfig
if sys.argv[1] == "off":
    step.compile_lock = lambda path=None: contextlib.nullcontext(False)
config = RunConfig(dataset="mnist1d", model="cnn1d_bn", batch_size=128, test_size=10_000,
                   optimizer="adamw", lr=2.0**-5, weight_decay=2.0**-7, epochs=1)
data = get_dataset("mnist1d", "cpu", 10_000)
fn = step.loss_function(build_network(config, data), config,
                        step.batch_sizes(len(data.y_train), 128), data.x_train.shape[1:],
                        data.x_train.dtype)
assert fn.compiled, step.compile_unavailable()
"""


def arm(lock: bool, workers: int) -> tuple[float, float]:
    """(CPU-s, wall s) of ``workers`` processes compiling at once into an empty cache."""
    with tempfile.TemporaryDirectory(prefix="bench-lock-") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache,
                   PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", _CHILD, "on" if lock else "off"],
                                  env=env) for _ in range(workers)]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(codes):
        raise SystemExit(f"bench_compile_lock: error: a process exited with {codes}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def table(results: dict[bool, list[tuple[float, float]]], workers: int, where: str) -> str:
    """The committed table: medians of each arm's (CPU-s, wall s), and their ratios to the
    arm without the lock."""
    med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v))
           for k, v in results.items()}
    lines = [
        f"{workers} processes preparing the compiled training step of cnn1d_bn (32 channels; "
        "batches of 128 and 32) at once on an empty Inductor cache "
        "(benchmarks/bench_compile_lock.py, one run of it; medians of "
        f"{len(results[False])} alternating repetitions per arm). Machine: {where}.", "",
        "| arm | CPU-s | wall s | CPU ÷ without the lock | wall ÷ without the lock |",
        "|---|---|---|---|---|",
    ]
    for lock, name in ((False, "each process compiles (no lock)"),
                       (True, "one compiles, the others wait and load (the lock)")):
        cpu, wall = med[lock]
        lines.append(f"| {name} | {cpu:.1f} | {wall:.1f} | {cpu / med[False][0]:.2f} | "
                     f"{wall / med[False][1]:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_compile_lock.txt"))
    args = ap.parse_args()
    if args.workers < 1 or args.repeats < 1:
        ap.error("--workers and --repeats must be at least 1")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_quick_cost import machine

    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.repeats):
        for lock in (False, True):
            results[lock].append(arm(lock, args.workers))
            print(f"lock={'on' if lock else 'off'}: {results[lock][-1][0]:.1f} CPU-s, "
                  f"{results[lock][-1][1]:.1f} s wall", flush=True)
    text = table(results, args.workers, machine())
    Path(args.out).write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

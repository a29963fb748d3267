"""The step benchmark before and after: ``bench_optim.py`` of an earlier commit and of this
checkout, alternately, in one session on one machine; each ratio to torch's fused step, as the
mean over the rounds, and after ÷ before (1.00: unchanged; the target of a change that must not
slow the step: within 3 %).

    .venv/bin/python benchmarks/bench_optim_compare.py [--before d4a3a5e] [--rounds 2] \
        [--repeats 15] > docs/results/bench_optim_compare.md
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ["wd.AdamW (auto)", "wd.AdamW flat", "wd.SGDW (auto)", "wd.SGDW flat"]
_ROW = re.compile(r"^\|\s*([\d.e+]+)\s*\|\s*(1 tensor|200 tensors)\s*\|\s*([^|]+?)\s*\|"
                  r"\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|")


def run_bench(tree: Path, repeats: int) -> dict[tuple, tuple[float, float]]:
    """(N, layout, contender) -> (loop ratio, cold ratio) of one run of bench_optim.py."""
    cmd = [sys.executable, str(tree / "benchmarks" / "bench_optim.py"), "--sections", "steps",
           "--repeats", str(repeats), "--contenders", *CONTENDERS]
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    text = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    out = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m and m[3] in CONTENDERS:
            out[(float(m[1]), m[2], m[3])] = (float(m[5]), float(m[7]))
    if not out:
        raise SystemExit(f"bench_optim_compare: error: no table rows in the output of {cmd}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="d4a3a5e")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-optim-"))
    tree = work / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                    args.before], check=True, capture_output=True)
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    try:
        for _ in range(args.rounds):  # alternately, so that drifts of the machine hit both
            runs["before"].append(run_bench(tree, args.repeats))
            runs["after"].append(run_bench(ROOT, args.repeats))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False, capture_output=True)
    import torch

    print(f"bench_optim.py --sections steps --repeats {args.repeats}, {args.rounds} rounds "
          f"alternately: {args.before} (before) and this checkout (after); torch "
          f"{torch.__version__}, {os.cpu_count()} logical CPUs. Ratios: step time ÷ torch's "
          "fused step in the same run (mean over rounds).\n")
    print("| N | layout | optimizer | loop before | loop after | after ÷ before | "
          "cold before | cold after | after ÷ before |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in sorted(runs["after"][0]):
        if not all(key in r for arm in runs.values() for r in arm):
            continue
        mean = {arm: [statistics.mean(r[key][i] for r in rs) for i in (0, 1)]
                for arm, rs in runs.items()}
        b, a = mean["before"], mean["after"]
        print(f"| {key[0]:.0e} | {key[1]} | {key[2]} | {b[0]:.2f} | {a[0]:.2f} | "
              f"{a[0] / b[0]:.2f} | {b[1]:.2f} | {a[1]:.2f} | {a[1] / b[1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

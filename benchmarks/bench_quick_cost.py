"""What `weightdecay reproduce --preset quick` costs: this checkout against an earlier commit.

Each arm runs the project's command on a fresh store (a new folder) under ``/usr/bin/time -v``,
one after the other on one machine; its CPU-seconds are user + system time of the whole
process tree (the local workers are waited for, so they count). Arms:

- ``before``: the commit ``--before`` (default d4a3a5e, the whole-grid design, eager step),
  run from a ``git worktree`` of it with this checkout's venv;
- ``after, cold``: this checkout with an empty Inductor cache (a first run on a new machine
  compiles the training step once per worker);
- ``after, warm``: this checkout again, on other seeds (same size), with that cache.

Every arm runs the command as a user types it, progress bar included (written to the arm's
log); ``--no-progress`` passes that flag to every arm instead.

    .venv/bin/python benchmarks/bench_quick_cost.py --run [--seeds-also 1000,1001]
        [--after-only 100,101] [--keep DIR] [--no-progress]
    .venv/bin/python benchmarks/bench_quick_cost.py        # render the committed measurements

``--after-only`` adds an ``after, warm`` arm on more seeds with no ``before`` of its own;
``--keep DIR`` keeps every arm's output folder (store, report) under DIR.

The raw ``time -v`` outputs go to ``docs/results/bench_quick/``; the table (ratios to the
``before`` arm of the same seeds) to ``docs/results/bench_quick.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "docs" / "results" / "bench_quick"
OUT = ROOT / "docs" / "results" / "bench_quick.md"
_FIELDS = {"user": r"User time \(seconds\): ([\d.]+)", "sys": r"System time \(seconds\): ([\d.]+)",
           "wall": r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)"}


def _seconds(clock: str) -> float:
    parts = [float(p) for p in clock.split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


def parse(path: Path) -> dict[str, float]:
    text = path.read_text(encoding="utf-8")
    out = {}
    for key, pattern in _FIELDS.items():
        m = re.search(pattern, text)
        if m is None:
            raise SystemExit(f"bench_quick_cost: error: {path} has no {key!r} line of time -v")
        out[key] = _seconds(m[1]) if key == "wall" else float(m[1])
    out["cpu"] = out["user"] + out["sys"]
    return out


def _runs(log: Path) -> str:
    m = re.search(r"reproduce: (\d+) of (\d+) runs", log.read_text(encoding="utf-8"))
    return m[2] if m else "?"


def run_arm(name: str, seeds: str | None, python_path: str | None, cache: Path,
            work: Path, progress: bool = True) -> None:
    out = work / name
    cmd = ["/usr/bin/time", "-v", "-o", str(RAW / f"{name}.time"), sys.executable, "-m",
           "weightdecay.cli", "reproduce", "--preset", "quick", "--out", str(out)]
    cmd += ([] if progress else ["--no-progress"]) + (["--seeds", seeds] if seeds else [])
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache))
    if python_path:
        env["PYTHONPATH"] = python_path
    print(f"[{name}] {' '.join(cmd[4:])}", flush=True)
    with (RAW / f"{name}.log").open("w", encoding="utf-8") as log:
        subprocess.run(cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, check=True)


def machine() -> str:
    """One line: the CPU model, its logical CPUs and torch's version."""
    import torch

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        model = m[1].strip() if m else model
        flags = re.search(r"^flags\s*:(.*)$", cpuinfo.read_text(), re.M)
        isa = flags and ("AVX-512" if " avx512f" in flags[1] else "AVX2" if " avx2" in flags[1]
                         else None)
        model += f" ({isa})" if isa else ""
    return f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"


def measure(before: str, seeds_also: str | None, after_only: list[str], keep: str | None,
            progress: bool) -> None:
    if RAW.exists():  # measurements of one session only
        shutil.rmtree(RAW)
    RAW.mkdir(parents=True)
    bar = "each with its progress bar" if progress else "each with --no-progress"
    (RAW / "machine.txt").write_text(f"{machine()}\n{bar}\n", encoding="utf-8")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=False)
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-quick-"))
    tree = work / "before-tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), before],
                   check=True, capture_output=True)
    try:
        cache = work / "inductor"
        run_arm("before", None, str(tree / "src"), work / "inductor-before", work, progress)
        run_arm("after-cold", None, None, cache, work, progress)
        if seeds_also:
            tag = seeds_also.replace(",", "-")
            run_arm(f"before-seeds-{tag}", seeds_also, str(tree / "src"),
                    work / "inductor-before", work, progress)
            run_arm(f"after-warm-seeds-{tag}", seeds_also, None, cache, work, progress)
        for seeds in after_only:
            run_arm(f"after-warm-seeds-{seeds.replace(',', '-')}", seeds, None, cache, work,
                    progress)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False, capture_output=True)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def render() -> str:
    rows = sorted(RAW.glob("*.time"), key=lambda p: (p.stem.split("-seeds-")[-1]
                                                     if "-seeds-" in p.stem else "",
                                                     not p.stem.startswith("before"), p.stem))
    if not rows:
        raise SystemExit(f"bench_quick_cost: error: no measurements in {RAW}; run with --run")
    base: dict[str, dict[str, float]] = {}
    where, bar = ((RAW / "machine.txt").read_text(encoding="utf-8").splitlines() + [""])[:2] \
        if (RAW / "machine.txt").exists() else ("machine not recorded", "")
    lines = ["`weightdecay reproduce --preset quick` on a fresh store, arms one after the other "
             f"on one machine ({where}; 2 workers{'; ' + bar if bar else ''}); CPU-s = user + "
             "system time of the process tree "
             "(benchmarks/bench_quick_cost.py, raw `time -v` output in "
             "docs/results/bench_quick/); ratios to the before arm of the same seeds, or of "
             "seeds 0,1 where there is none.", "",
             "| arm | seeds | runs | wall | CPU-s | CPU ÷ before | wall ÷ before |",
             "|---|---|---|---|---|---|---|"]
    for path in rows:
        t = parse(path)
        seeds = path.stem.split("-seeds-")[1].replace("-", ",") if "-seeds-" in path.stem \
            else "0,1"
        arm = path.stem.split("-seeds-")[0]
        if arm == "before":
            base[seeds] = t
        b = base.get(seeds, base.get("0,1"))
        ratio = (f"{t['cpu'] / b['cpu']:.2f}", f"{t['wall'] / b['wall']:.2f}") if b else ("—",) * 2
        log = path.with_suffix(".log")
        runs = _runs(log) if log.exists() else "?"
        lines.append(f"| {arm} | {seeds} | {runs} | {int(t['wall'] // 60)} min "
                     f"{t['wall'] % 60:.0f} s | {t['cpu']:.0f} | {ratio[0]} | {ratio[1]} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="store_true", help="measure (else: render the committed)")
    ap.add_argument("--before", default="d4a3a5e", help="the commit to compare with")
    ap.add_argument("--seeds-also", help="a second pair of arms on these seeds (warm cache)")
    ap.add_argument("--after-only", action="append", default=[], metavar="SEEDS",
                    help="an after arm (warm cache) on these seeds, with no before arm")
    ap.add_argument("--keep", metavar="DIR", help="keep the arms' folders in DIR (new)")
    ap.add_argument("--no-progress", action="store_true",
                    help="run every arm without its progress bar")
    args = ap.parse_args()
    if args.run:
        measure(args.before, args.seeds_also, args.after_only, args.keep, not args.no_progress)
    text = render()
    OUT.write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a progress bar's poll of the store costs: every trial read at every poll (the status of
d4a3a5e and of every commit before 9759511) against ``SweepStatus`` (the finished trials read
once, each poll reading the open ones), in one run; writes ``docs/results/bench_status.txt``.

A study of N finished trials is made in a fresh SQLite store, each carrying the user attributes
a run of the quick preset leaves (its config, a 10-epoch history, the packed misclassified
test examples of 10,000); for N = 240 (``quick`` before the band), 1,791 (``full``) and 5,000.
A local sweep's parent sleeps 0.5 s between two polls (``weightdecay.harness.local``), so the
share of one core that polling takes is cost / (cost + 0.5 s). Medians of process CPU time
over ``--repeats`` polls.

    .venv/bin/python benchmarks/bench_status.py [--sizes 240,1791,5000] [--repeats 7]
        [--out docs/results/bench_status.txt]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from weightdecay._io import write_atomic  # noqa: E402
from weightdecay.harness import store  # noqa: E402
from weightdecay.harness.config import RunConfig  # noqa: E402
from weightdecay.harness.study import SweepStatus  # noqa: E402
from weightdecay.harness.vectors import pack_wrong  # noqa: E402

POLL_INTERVAL = 0.5  # seconds between two polls of a local sweep's progress bar


def full_read(storage, study_name: str = "bench") -> dict[str, int]:
    """The status as every commit before 9759511 computed it: the study loaded and every
    trial read, at every poll (also the reference that tests/test_sweep.py holds
    SweepStatus to)."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    by_key: dict[str, set[str]] = {}
    diverged = set()
    for t in study.get_trials(deepcopy=False):
        key = t.user_attrs.get("key")
        if key is None:
            continue
        by_key.setdefault(key, set()).add(t.state.name)
        if t.state.name == "COMPLETE" and t.user_attrs.get("diverged"):
            diverged.add(key)
    counts = {"total": len(by_key), "complete": 0, "running": 0, "waiting": 0, "failed": 0,
              "diverged": len(diverged)}
    for states in by_key.values():
        name = next((n for n in ("COMPLETE", "RUNNING", "WAITING") if n in states), "FAIL")
        counts[{"FAIL": "failed"}.get(name, name.lower())] += 1
    return counts


def make_study(folder: Path, n: int):
    """A store with one study of ``n`` complete trials carrying a quick run's attributes."""
    import optuna
    from optuna.trial import TrialState, create_trial

    url = store.sqlite_url(folder / "store.db")
    storage = store.open_storage(url, heartbeat_interval=None, grace_period=None)
    study = optuna.create_study(study_name="bench", storage=storage)  # (this one caches)
    rng = np.random.default_rng(0)
    config = RunConfig(optimizer="adamw", lr=2**-5, weight_decay=2**-7, dataset="mnist1d",
                       model="cnn1d_bn", epochs=10, test_size=10_000).to_dict()
    history = {k: [float(v) for v in rng.random(10)] for k in
               ("train_loss", "test_error", "weight_norm", "eta", "effective_decay")}
    history["epoch"] = list(range(1, 11))
    trials = []
    for i in range(n):
        attrs = {"key": f"{i:016x}", "config": config, "experiment": "fig2", "figure": "fig2",
                 "history": history, "final_test_error": 0.03, "best_test_error": 0.03,
                 "final_train_loss": 0.1, "diverged": False, "num_test": 10_000,
                 "final_test_wrong": pack_wrong(rng.random(10_000) < 0.03),
                 "wall_seconds": 1.5, "worker": "host:1"}
        trials.append(create_trial(state=TrialState.COMPLETE, value=0.03, user_attrs=attrs))
    study.add_trials(trials)
    return url, storage, study


def cpu_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append((time.process_time() - t) * 1e3)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="240,1791,5000")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_status.txt"))
    args = ap.parse_args()
    lines = ["A progress bar's poll of a sweep's store (benchmarks/bench_status.py, one run): "
             "CPU ms per poll, median of "
             f"{args.repeats}; share of one core with {POLL_INTERVAL} s of sleep between polls.",
             "",
             "| finished trials | every trial read (before) | SweepStatus (after) | "
             "before ÷ after | core share before | core share after |",
             "|---|---|---|---|---|---|"]
    for n in (int(v) for v in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            url, storage, study = make_study(Path(tmp), n)
            status = SweepStatus(url, "bench", storage)
            if status.poll() != full_read(storage):
                raise SystemExit("bench_status: error: the two reads disagree")
            before = cpu_ms(lambda storage=storage: full_read(storage), args.repeats)
            after = cpu_ms(status.poll, args.repeats)
            storage.engine.dispose()
        share = [ms / 1e3 / (ms / 1e3 + POLL_INTERVAL) for ms in (before, after)]
        lines.append(f"| {n:,} | {before:.1f} | {after:.2f} | {before / after:.0f} | "
                     f"{share[0]:.0%} | {share[1]:.1%} |")
        print(lines[-1], flush=True)
    write_atomic(Path(args.out), "\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

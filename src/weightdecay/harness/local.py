"""A sweep on this machine: plan it, run it with spawned local workers, show progress.

:func:`run_local` creates (or resumes) the sweep's study, then runs N
:func:`weightdecay.harness.worker.run_worker` processes (``spawn``, one torch thread
each) while the parent shows a progress bar over the planned runs. Each worker writes
its log -- one line per trial, and the traceback of a failed one -- to
``OUT/logs/worker-<i>.log``; a worker that exits with an error is reported with its last
error line and the path of its log. ``workers=0`` runs the trials in this process.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from .spec import DEFAULT_MAX_RUNS, SweepPlan
from .store import DEFAULT_GRACE_PERIOD, DEFAULT_HEARTBEAT_INTERVAL, load_records, open_storage
from .study import create_sweep, sweep_status
from .worker import default_out_dir, run_worker

__all__ = ["enqueue_progress", "run_local", "worker_log_path"]

#: enqueues shorter than this are not worth a progress line
_QUIET_ENQUEUE = 1000


def enqueue_progress(stream: TextIO | None = None) -> Callable[[int, int], None]:
    """A ``progress`` callback for :func:`weightdecay.harness.study.create_sweep` that
    prints ``enqueued N of M runs`` to ``stream`` (stderr) when more than 1000 are due."""

    def report(done: int, todo: int) -> None:
        if todo > _QUIET_ENQUEUE:
            print(f"enqueued {done:,} of {todo:,} runs", file=stream or sys.stderr, flush=True)

    return report


def worker_log_path(out_dir: str | os.PathLike, index: int) -> Path:
    """The log file of local worker ``index`` of a sweep writing to ``out_dir``."""
    return Path(out_dir) / "logs" / f"worker-{index}.log"


def _worker_process(storage_url: str, study_name: str, out_dir: str, index: int,
                    heartbeat_interval: int, grace_period: int) -> None:
    """Entry point of a spawned local worker: one torch thread; stdout and stderr (trial
    lines, warnings, tracebacks) go to its log file."""
    fh = open(worker_log_path(out_dir, index), "a", buffering=1)  # noqa: SIM115 - the
    os.dup2(fh.fileno(), 1)  # process's own output until it exits: never closed here
    os.dup2(fh.fileno(), 2)
    sys.stdout = sys.stderr = fh
    try:
        run_worker(storage_url, study_name, out_dir=out_dir, threads=1,
                   heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    except BaseException:
        traceback.print_exc()  # into the log; the parent shows its last line
        raise SystemExit(1) from None


def _last_error(path: Path) -> str:
    """The last line of a worker's log that is not blank (its error, after a traceback)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "(no log)"
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else "(empty log)"


def _run_processes(storage_url: str, name: str, out: Path, workers: int, total: int,
                   counts: dict[str, int], progress: bool, heartbeat_interval: int,
                   grace_period: int, stream: TextIO) -> None:
    (out / "logs").mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_process,
                    args=(storage_url, name, str(out), i, heartbeat_interval, grace_period),
                    name=f"weightdecay-worker-{i}")
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    status_storage = open_storage(storage_url, heartbeat_interval=None, grace_period=None)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=counts["complete"], unit="run", file=stream,
                   desc=name, dynamic_ncols=True)
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(1.0)
            if bar is not None:
                counts = sweep_status(storage_url, name, status_storage)
                bar.n = counts["complete"]
                bar.set_postfix(running=counts["running"], failed=counts["failed"],
                                diverged=counts["diverged"], refresh=False)
                bar.refresh()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    finally:
        for p in procs:
            p.join()
        if bar is not None:
            bar.n = sweep_status(storage_url, name, status_storage)["complete"]
            bar.refresh()
            bar.close()
    for i, p in enumerate(procs):
        if p.exitcode != 0:
            path = worker_log_path(out, i)
            print(f"worker {i} exited with code {p.exitcode}: {_last_error(path)} "
                  f"(full log: {path})", file=stream, flush=True)


def run_local(
    spec: Mapping[str, Any] | SweepPlan,
    storage_url: str,
    study_name: str | None = None,
    *,
    workers: int = 1,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int = DEFAULT_GRACE_PERIOD,
    max_runs: int | None = DEFAULT_MAX_RUNS,
    stream: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Create/resume the sweep and run it with ``workers`` local processes; return records.

    Workers are started with the ``spawn`` context and one torch thread each, logging to
    ``OUT/logs/worker-<i>.log``; the parent shows a tqdm bar over the planned runs.
    ``workers=0`` runs the trials in this process (no subprocess, log lines on
    ``stream``). ``OUT`` is ``out_dir``, by default
    :func:`weightdecay.harness.worker.default_out_dir`. The records it returns are what
    :mod:`weightdecay.report.tables` summarises (the command line prints them).
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    stream = sys.stderr if stream is None else stream

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    result = create_sweep(spec, storage_url, study_name, max_runs=max_runs,
                          progress=enqueue_progress(stream))
    name = result.study_name
    out = Path(out_dir) if out_dir is not None else default_out_dir(storage_url, name)
    counts = sweep_status(storage_url, name)
    say(f"sweep {name!r}: {len(result.runs)} runs, {counts['complete']} already complete, "
        f"{result.enqueued} enqueued, {workers} worker(s)")
    if counts["running"]:
        then = ("this process does not wait for them: run it again after that" if workers == 0
                else "the workers wait up to that long for them")
        say(f"{counts['running']} run(s) are RUNNING in the store (another process's, or "
            f"left by a killed one): they are retried once they have had no heartbeat for "
            f"{grace_period} s; {then}")
    if workers == 0:
        run_worker(storage_url, name, out_dir=out, heartbeat_interval=heartbeat_interval,
                   grace_period=grace_period, wait=False, log=say)
    else:
        _run_processes(storage_url, name, out, workers, len(result.runs), counts, progress,
                       heartbeat_interval, grace_period, stream)
    return load_records(storage_url, name)

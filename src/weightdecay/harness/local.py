"""A sweep on this machine: plan it, run it with spawned local workers, show progress.

:func:`run_local` creates (or resumes) the sweep's study, then runs N
:func:`weightdecay.harness.worker.run_worker` processes (``spawn``, one torch thread
each) while the parent shows a progress bar over the planned runs. Each worker writes
its log -- its pid first, then one line per trial, and the traceback of a failed one -- to
``OUT/logs/worker-<i>.log``; a worker that exits with an error is reported with its last
error line and the path of its log. ``workers=0`` runs the trials in this process.

A band with ``extend`` (:mod:`weightdecay.harness.band`) adds cells once its rows have run:
the parent enqueues them when every trial has ended, and the workers, told that more may
come, wait for them instead of exiting -- started once, they compile once. Only when they
are gone with cells still to run (a worker died) does a new round of workers start.

The output folder ``OUT`` holds ``logs/worker-<i>.log``, ``ckpt/<key>.pt`` and the export
``trials.csv`` (and, by default, the store). Before anything is written, each of these
paths is checked: a symbolic link planted there that leads out of the user's folder
(``root``) is refused (:class:`weightdecay._io.UnsafePathError`), and nothing is written
through it.

**Stopping.** On SIGINT (Ctrl-C) or SIGTERM the parent stops its workers (SIGTERM, then
SIGKILL after :data:`STOP_TIMEOUT` seconds; each hands its trial back), hands back any trial
a stopped worker still held, and raises
:class:`~weightdecay.harness.interrupt.Interrupted` with one line to show (exit code
130 / 143): a rerun starts those trials at once. A worker whose parent vanishes (killed
with SIGKILL) stops itself the same way within a second, so no worker is left behind; a
worker that dies during the sweep has its trial handed back at once.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4.
"""

from __future__ import annotations

import contextlib
import faulthandler
import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from weightdecay._io import UnsafePathError, check_inside

from .interrupt import Interrupted, deferred_signals, interruptible, stop_on_signals
from .spec import DEFAULT_MAX_RUNS, SpecError, SweepPlan, band_extends, plan_sweep
from .store import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HEARTBEAT_INTERVAL,
    check_timing,
    load_records,
    open_storage,
)
from .study import SweepStatus, create_sweep, release_trials, sweep_status, worker_id
from .usercode import check_modules
from .worker import default_out_dir, run_worker

__all__ = ["STOP_TIMEOUT", "check_out_dir", "enqueue_progress", "grown", "outcomes",
           "run_local", "worker_log_path"]

#: enqueues shorter than this are not worth a progress line
_QUIET_ENQUEUE = 1000
#: seconds a stopped worker has to hand its trial back before it is killed
STOP_TIMEOUT = 30.0


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


def check_out_dir(out: str | os.PathLike, root: str | os.PathLike, keys: Iterable[str],
                  workers: int) -> None:
    """Refuse a symbolic link that leads out of ``root`` anywhere a local sweep writing to
    ``out`` writes -- ``trials.csv``, ``logs/`` and each worker's log, ``ckpt/`` and the
    checkpoint of each run key -- and a device or pipe planted at one of those files.
    Raises :class:`weightdecay._io.UnsafePathError`."""
    out = Path(out)
    files = [out / "trials.csv", *(worker_log_path(out, i) for i in range(workers)),
             *(out / "ckpt" / f"{key}.pt" for key in keys)]
    for path in (out / "logs", out / "ckpt", *files):
        check_inside(path, root)
    for path in files:
        if os.path.exists(path) and not os.path.isfile(path):
            raise UnsafePathError(f"refusing to write {path}: it is not a regular file")


def _open_log(path: Path, root: str) -> TextIO:
    """The worker's log, opened for appending: inside ``root``, never through a link."""
    real = os.path.realpath(check_inside(path, root))
    fd = os.open(real, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o666)
    return os.fdopen(fd, "a", buffering=1)


def _watch_parent(parent: int) -> None:
    """Stop this worker (SIGTERM to itself) once its parent has gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="weightdecay-parent-watch", daemon=True).start()


def _worker_process(storage_url: str, study_name: str, out_dir: str, root: str, index: int,
                    heartbeat_interval: int, grace_period: int, parent: int,
                    allow: tuple[str, ...] = (), paths: tuple[str, ...] = (),
                    more: Any = None) -> None:
    """Entry point of a spawned local worker: one torch thread; stdout and stderr (trial
    lines, warnings, tracebacks) go to its log file; ``paths`` first on ``sys.path`` (the
    spec's folder), ``allow``: the modules of user code it may import; ``more``: an event
    set while the parent may still add trials (the worker waits for them)."""
    try:
        fh = _open_log(worker_log_path(out_dir, index), root)
    except (OSError, UnsafePathError) as exc:  # a link planted since the parent checked
        print(f"worker {index}: cannot open its log: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    os.dup2(fh.fileno(), 1)  # the process's own output until it exits: never closed here
    os.dup2(fh.fileno(), 2)
    sys.stdout = sys.stderr = fh
    faulthandler.register(signal.SIGUSR1, file=fh, all_threads=True)
    print(f"worker {index}: pid {os.getpid()} on {socket.gethostname()}, study "
          f"{study_name!r}", flush=True)
    _watch_parent(parent)
    sys.path[:0] = [p for p in paths if p not in sys.path]
    try:
        run_worker(storage_url, study_name, out_dir=out_dir, threads=1,
                   heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                   allow_modules=allow, linger=None if more is None else more.is_set)
    except Interrupted as exc:
        print(f"worker {index}: stopped ({exc})", flush=True)
        raise SystemExit(exc.exit_code) from None
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


def _hand_back_dead(procs: list, done: set[int], storage: Any, name: str) -> list[int]:
    """Hand back the RUNNING trials of workers that have exited (once per worker)."""
    dead = [p for p in procs if p.pid is not None and not p.is_alive() and p.pid not in done]
    if not dead:
        return []
    done.update(p.pid for p in dead)
    return release_trials(storage, name, {worker_id(p.pid) for p in dead})


def _stop(procs: list) -> None:
    """SIGTERM to every worker; SIGKILL to any still running after STOP_TIMEOUT seconds."""
    started = [p for p in procs if p.pid is not None]
    for p in started:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for p in started:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in started:
        if p.is_alive():  # say where it hangs (faulthandler, into its log), then kill it
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGUSR1)
            time.sleep(0.5)
            p.kill()
            p.join()


def _printer(bar: Any, stream: TextIO) -> Callable[[str], None]:
    """Print a line on ``stream`` (above the progress bar ``bar``, if any)."""
    if bar is not None:
        return lambda line: bar.write(line, file=stream)
    return lambda line: print(line, file=stream, flush=True)


def _resume_hint(signum: int, what: str) -> Interrupted:
    return Interrupted(signum, f"interrupted by {signal.Signals(signum).name}: {what}; run "
                               "the same command to resume")


def _run_processes(storage_url: str, name: str, out: Path, root: Path, workers: int,
                   total: int, counts: dict[str, int], progress: bool,
                   heartbeat_interval: int, grace_period: int, stream: TextIO,
                   code: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
                   grow: Callable[[Callable[[str], None]], int] | None = None) -> None:
    """Run ``workers`` processes until the study has nothing left for them. ``grow``: once
    every trial has ended, called (with a function that prints a line) to add trials to the
    study; it returns how many it added, and while it adds some the workers wait for them
    instead of exiting (no new processes to start, nothing compiled again)."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    more = ctx.Event()  # set while ``grow`` may add trials: the workers wait for them
    if grow is not None:
        more.set()
    procs = [
        ctx.Process(target=_worker_process,
                    args=(storage_url, name, str(out), str(root), i, heartbeat_interval,
                          grace_period, os.getpid(), *code,
                          more if grow is not None else None),
                    name=f"weightdecay-worker-{i}")
        for i in range(workers)
    ]
    status_storage = open_storage(storage_url, heartbeat_interval=None, grace_period=None)
    status = SweepStatus(storage_url, name, status_storage)
    handed: set[int] = set()
    bar = None
    try:
        for p in procs:
            p.start()
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=counts["complete"], unit="run", file=stream,
                       desc=name, dynamic_ncols=True)
        while any(p.is_alive() for p in procs):
            with interruptible():  # the only place a signal lands at once (no store use)
                time.sleep(0.5)
            _hand_back_dead(procs, handed, status_storage, name)
            lingering = more.is_set()
            if lingering or bar is not None:
                counts = status.poll()  # one read of the store serves both
            if lingering and grow is not None and not (counts["waiting"] or counts["running"]):
                added = grow(_printer(bar, stream))
                if not added:
                    more.clear()  # the workers exit once they find nothing to do
                elif bar is not None:
                    bar.total += added
            if bar is not None:
                bar.n = counts["complete"]
                bar.set_postfix(running=counts["running"], failed=counts["failed"],
                                diverged=counts["diverged"], refresh=False)
                bar.refresh()
    except BaseException as exc:  # interrupted (or failing): no worker outlives the sweep
        if bar is not None:
            bar.close()
            bar = None
        _stop(procs)
        what = f"stopped {len(procs)} worker(s) and handed their running trials back"
        try:
            fresh = open_storage(storage_url, heartbeat_interval=None, grace_period=None)
            release_trials(fresh, name, {worker_id(p.pid) for p in procs if p.pid is not None})
        except Exception as err:  # the store is unreachable: the grace period retries them
            what = (f"stopped {len(procs)} worker(s); their running trials could not be "
                    f"handed back ({type(err).__name__}) and are retried after {grace_period} s")
        if isinstance(exc, KeyboardInterrupt):
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            raise _resume_hint(signum, what) from None
        raise
    finally:
        if bar is not None:
            bar.n = status.poll()["complete"]
            bar.refresh()
            bar.close()
    _hand_back_dead(procs, handed, status_storage, name)
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
    root: str | os.PathLike | None = None,
    progress: bool = True,
    heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int = DEFAULT_GRACE_PERIOD,
    max_runs: int | None = DEFAULT_MAX_RUNS,
    stream: TextIO | None = None,
    adopt_study: str | None = None,
    allow_modules: Sequence[str] = (),
    module_paths: Sequence[str | os.PathLike] = (),
) -> list[dict[str, Any]]:
    """Create/resume the sweep and run it with ``workers`` local processes; return records.

    Workers are started with the ``spawn`` context and one torch thread each, logging to
    ``OUT/logs/worker-<i>.log``; the parent shows a tqdm bar over the planned runs.
    ``workers=0`` runs the trials in this process (no subprocess, log lines on
    ``stream``). ``OUT`` is ``out_dir``, by default
    :func:`weightdecay.harness.worker.default_out_dir`; ``root`` is the folder the user
    named (default ``OUT``), out of which no link may lead (:func:`check_out_dir`).
    ``adopt_study``: see :func:`weightdecay.harness.study.create_sweep`. User code: the
    workers may import the modules ``allow_modules`` (and their submodules), from
    ``module_paths`` first (the spec's folder). The records it returns are what
    :mod:`weightdecay.report.tables` summarises (the command line prints them).

    Raises:
        Interrupted: SIGINT / SIGTERM; workers stopped and their trials handed back first
            (its message is the one line to show).
        weightdecay._io.UnsafePathError: a link in ``OUT`` leads out of ``root``.
        SpecError, StoreError: see :func:`weightdecay.harness.study.create_sweep`.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    check_timing(heartbeat_interval, grace_period)
    stream = sys.stderr if stream is None else stream

    say = _printer(None, stream)

    plan = spec if isinstance(spec, SweepPlan) else plan_sweep(spec, max_runs=max_runs)
    name = study_name or plan.name
    if not name:
        raise SpecError("the spec has no 'name'; give a study name")
    out = Path(out_dir) if out_dir is not None else default_out_dir(storage_url, name)
    root = out if root is None else Path(root)
    check_out_dir(out, root, [run.key for run in plan.runs], workers)
    code = (check_modules(allow_modules), tuple(os.fspath(p) for p in module_paths))
    with stop_on_signals(), deferred_signals():  # see harness/interrupt.py
        try:
            return _run(plan, storage_url, name, out, root, workers, progress,
                        heartbeat_interval, grace_period, stream, adopt_study, say, code)
        except Interrupted as exc:
            if exc.described:
                raise
            raise _resume_hint(exc.signum, "nothing was lost") from None


def _run(plan: SweepPlan, storage_url: str, name: str, out: Path, root: Path, workers: int,
         progress: bool, heartbeat_interval: int, grace_period: int, stream: TextIO,
         adopt_study: str | None, say: Callable[[str], None],
         code: tuple[tuple[str, ...], tuple[str, ...]]) -> list[dict[str, Any]]:
    """Rounds: the plan's runs, then, while a band with ``extend`` has a row whose optimum
    sits on its edge, the cells that bracket it (:func:`plan_sweep` with the outcomes so
    far), until every such row is bracketed or has used its ``extend``."""
    current = [plan]

    def grow(say_line: Callable[[str], None]) -> int:
        """Enqueue the cells that bracket the optima found so far (the running workers take
        them); how many runs that added."""
        more = _bracketed(current[0], load_records(storage_url, name), name, out, root,
                          workers, say_line)
        if more is None:
            return 0
        added = create_sweep(more, storage_url, name, adopt_study=adopt_study).enqueued
        current[0] = more
        return added

    while True:
        records = _run_round(current[0], storage_url, name, out, root, workers, progress,
                             heartbeat_interval, grace_period, stream, adopt_study, say, code,
                             grow if band_extends(plan.spec) else None)
        more = _bracketed(current[0], records, name, out, root, workers, say)
        if more is None:
            return records
        current[0] = more  # (a round the workers did not finish: new workers go on)


def _bracketed(plan: SweepPlan, records: Sequence[Mapping[str, Any]], name: str, out: Path,
               root: Path, workers: int, say: Callable[[str], None]) -> SweepPlan | None:
    """The plan grown by the cells that bracket the optima on a band's edge, once its
    folder is checked for them (:func:`check_out_dir`); None when no run is to be added."""
    more = grown(plan, records)
    if more is plan:
        return None
    added = {r.key for r in more.runs} - {r.key for r in plan.runs} - set(outcomes(records))
    if not added:  # (cells added in an earlier sweep are complete: nothing to run)
        return None
    say(f"sweep {name!r}: {len(added)} run(s) added to bracket the optima on the edge "
        "of a band")
    check_out_dir(out, root, [run.key for run in more.runs], workers)
    return more


def grown(plan: SweepPlan, records: Sequence[Mapping[str, Any]]) -> SweepPlan:
    """``plan`` with the cells its bands add given the outcomes in ``records``
    (:func:`plan_sweep` with ``outcomes``); ``plan`` itself when no band may grow."""
    if not band_extends(plan.spec):
        return plan
    return plan_sweep(plan.spec, max_runs=None, outcomes=outcomes(records))


def outcomes(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Run key -> final test error of the complete runs (``inf`` for a diverged one): what
    a band's ``extend`` decides on."""
    out = {}
    for r in records:
        if r.get("state", "COMPLETE") != "COMPLETE":
            continue
        err = r.get("final_test_error")
        if r.get("diverged") or not isinstance(err, (int, float)) or not math.isfinite(err):
            err = math.inf
        out[r["key"]] = float(err)
    return out


def _run_round(plan: SweepPlan, storage_url: str, name: str, out: Path, root: Path,
               workers: int, progress: bool, heartbeat_interval: int, grace_period: int,
               stream: TextIO, adopt_study: str | None, say: Callable[[str], None],
               code: tuple[tuple[str, ...], tuple[str, ...]],
               grow: Callable[[Callable[[str], None]], int] | None = None
               ) -> list[dict[str, Any]]:
    result = create_sweep(plan, storage_url, name, progress=enqueue_progress(stream),
                          adopt_study=adopt_study)
    counts = sweep_status(storage_url, name)
    say(f"sweep {name!r}: {len(result.runs)} runs, {counts['complete']} already complete, "
        f"{result.enqueued} enqueued, {workers} worker(s)")
    if counts["running"]:
        then = ("this process does not wait for them: run it again after that"
                if workers == 0 else "the workers wait up to that long for them")
        say(f"{counts['running']} run(s) are RUNNING in the store (another process's, or "
            f"left by a killed one): they are retried once they have had no heartbeat for "
            f"{grace_period} s; {then}")
    if not (counts["waiting"] or counts["running"]):
        return load_records(storage_url, name)  # every run is complete: no worker to start
    if workers == 0:
        try:
            run_worker(storage_url, name, out_dir=out, heartbeat_interval=heartbeat_interval,
                       grace_period=grace_period, wait=False, log=say, allow_modules=code[0])
        except Interrupted as exc:
            raise _resume_hint(exc.signum, "the running trial was handed back") from None
    else:
        _run_processes(storage_url, name, out, root, workers, len(result.runs), counts,
                       progress, heartbeat_interval, grace_period, stream, code, grow)
    return load_records(storage_url, name)

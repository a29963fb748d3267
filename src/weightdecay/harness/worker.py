"""``weightdecay worker``: claim a WAITING trial of a sweep, run it, store its result; repeat.

:func:`run_worker` joins the sweep's study from any machine that reaches the store. Each
trial is claimed with :func:`weightdecay.harness.study.claim_trial`, trained by
:func:`weightdecay.harness.train.run` with the checkpoint ``OUT/ckpt/<key>.pt`` under a
:class:`~weightdecay.harness.study.Heartbeat`, and told to the study (public
``Study.tell``) with the final test error. A diverged run is a result: COMPLETE with value
:data:`DIVERGED_VALUE` and ``diverged=True``. A run that raises is FAIL with the error in
its ``error`` attribute (and the traceback in the worker's log); the next
``create_sweep`` of the same spec re-enqueues it.

Nothing lost, nothing run twice:

- **Stopping.** Inside :func:`run_worker`, SIGINT and SIGTERM raise
  :class:`~weightdecay.harness.interrupt.Interrupted` (in the main thread; at once while
  training or waiting, else once the store operation under way is done): the trial being
  run is handed back at once (WAITING again; the next worker resumes it from its
  checkpoint, without waiting for the grace period) and the exception propagates (exit
  code 130 / 143 from the command line). No store operation -- claiming a trial, storing
  its result -- is split by a signal.
- **A late worker** -- paused longer than the grace period, so that another worker declared
  it dead and retried its trial -- stops training once its heartbeat sees the takeover, and
  discards its result with a log line: the retry's result is the one recorded.
- **Another version's trial** (a config field this version does not know) is handed back
  untouched and left to a worker that knows it.
- **User code** (a model or data set named ``"package.module:function"``) is imported only
  when the worker's own caller allows its module (``allow_modules``, ``--allow-module``): a
  store is shared, and naming a module in it must not be a way to run code on every worker.
  A trial whose module is not allowed, cannot be imported here, or whose source differs
  from the code the sweep was planned with (``RunConfig.source_hash``) is handed back
  untouched with one log line, for a worker that has that code. The module is imported
  from this process's ``sys.path`` (its working directory first).
- **Files** are written only inside ``out_dir``: a symbolic link in the checkpoint folder's
  path or at a checkpoint that leads out of it is refused
  (:class:`weightdecay._io.UnsafePathError`; the trial is handed back).

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightdecay._io import check_inside

from .config import RunConfig
from .interrupt import (
    Interrupted,
    check_interrupted,
    deferred_signals,
    interruptible,
    stop_on_signals,
)
from .spec import check_study_name
from .store import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HEARTBEAT_INTERVAL,
    StoreError,
    check_timing,
    is_weightdecay_study,
    open_storage,
    sqlite_path,
)
from .study import ClaimedTrial, claim_trial
from .usercode import check_modules, why_not_here

__all__ = ["DIVERGED_VALUE", "WorkerResult", "default_out_dir", "run_worker"]

#: value of a diverged run in the study (the objective is the final test error in [0, 1])
DIVERGED_VALUE = 1.0
# a trial's key names its checkpoint file: RunConfig.key() is 16 hex digits, and a key read
# from a shared store must not be able to name a path outside OUT/ckpt
_KEY = re.compile(r"[0-9a-f]{16}")
_RESULT_ATTRS = ("final_test_error", "best_test_error", "final_train_loss", "wall_seconds",
                 "num_test")


@dataclass
class WorkerResult:
    """What one worker did: trials it ran, and how they ended (``lost``: taken over by
    another worker while this one was paused; the retry records the result)."""

    ran: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0


class _TakenOver(Exception):
    """The running trial is no longer this worker's (raised from ``on_epoch``)."""


def default_out_dir(storage_url: str, study_name: str) -> Path:
    """Where a worker's checkpoints go without ``--out``: the folder of a SQLite store,
    else ``runs/<study_name>`` (the name is checked to be a plain folder name)."""
    path = sqlite_path(storage_url)
    if path is not None:
        return path.resolve().parent
    return Path("runs") / check_study_name(study_name)


def _finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fail(study, claimed: ClaimedTrial, message: str) -> str:
    import optuna
    from optuna.trial import TrialState

    try:
        claimed.set_user_attr("error", message)
        study.tell(claimed.number, state=TrialState.FAIL, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        return "LOST"  # another worker took it over meanwhile
    return "FAIL"


def _store_result(study, claimed: ClaimedTrial, result: Mapping[str, Any]) -> bool:
    """Write the run's results and tell the study; ``False`` when the trial is no longer
    this worker's (failed as stale by another worker): nothing is then recorded."""
    import optuna
    from optuna.trial import TrialState

    diverged = bool(result.get("diverged", False))
    value = DIVERGED_VALUE if diverged else float(result["final_test_error"])
    try:
        for name in _RESULT_ATTRS:
            claimed.set_user_attr(name, _finite_or_none(result.get(name)))
        claimed.set_user_attr("diverged", diverged)
        claimed.set_user_attr("history", result.get("history", {}))
        if result.get("final_test_wrong") is not None:
            claimed.set_user_attr("final_test_wrong", result["final_test_wrong"])
        told = study.tell(claimed.number, value, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return told.state == TrialState.COMPLETE


def _lost(study, key: str, ckpt: Path) -> str:
    """A taken-over trial: its checkpoint is left to the retry, unless the retry has
    already completed (then this worker's last write of it is garbage)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if any(t.user_attrs.get("key") == key for t in done):
        ckpt.unlink(missing_ok=True)
    return "LOST"


def _run_trial(study, claimed: ClaimedTrial, out: Path, ckpt_dir: Path,
               log: Callable[[str], None], progress: bool, keep_checkpoints: bool,
               allow: tuple[str, ...] = ()) -> str:
    """Run one claimed trial; return ``"COMPLETE"``, ``"FAIL"``, ``"LOST"`` or ``"SKIPPED"``
    (another version's trial, or user code left to another worker: handed back)."""
    from . import train

    attrs = claimed.user_attrs
    key = attrs.get("key")
    raw = attrs.get("config")
    unknown = sorted(map(str, set(raw) - set(RunConfig.field_names()))) \
        if isinstance(raw, Mapping) else []
    why = None
    if unknown:
        why = (f"its config has fields this version of weightdecay does not know "
               f"({', '.join(unknown)}); a worker of the version that planned it runs it")
    elif isinstance(raw, Mapping):
        why = why_not_here(raw, allow)
    if why is not None and isinstance(key, str) and _KEY.fullmatch(key):
        claimed.release()
        log(f"trial {claimed.number}: handed back untouched: {why}")
        return "SKIPPED"
    try:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"key={key!r} is not a run key of this harness")
        config = RunConfig.from_dict(raw)  # type: ignore[arg-type]  # checked
    except (ValueError, TypeError) as exc:
        log(f"trial {claimed.number}: FAILED: not a trial of this harness: {exc}")
        return _fail(study, claimed, f"not a trial of this harness: {exc}")
    ckpt = check_inside(ckpt_dir / f"{key}.pt", out)  # a planted link is refused
    label = (f"key={key} [{attrs.get('experiment')}] {config.optimizer} {config.schedule} "
             f"lr={config.lr:g} wd={config.weight_decay:g} seed={config.seed}")
    log(f"trial {claimed.number} {label}: started")
    with claimed.heartbeat() as beat:

        def on_epoch(epoch: int, metrics: Mapping[str, Any]) -> None:
            check_interrupted()
            if beat.lost.is_set():
                raise _TakenOver

        try:
            with interruptible():  # no store connection is used while training
                result = train.run(config, checkpoint_path=ckpt, progress=progress,
                                   on_epoch=on_epoch)
        except _TakenOver:
            log(f"trial {claimed.number} {label}: stopped: another worker took it over (this "
                "one missed its heartbeats for longer than the grace period); its retry "
                "records the result")
            return _lost(study, key, ckpt)
        except Exception as exc:  # a crashing run is recorded, not re-run forever
            log(f"trial {claimed.number} {label}: FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
            return _fail(study, claimed, f"{type(exc).__name__}: {exc}")
        stored = _store_result(study, claimed, result)
    if not stored:
        log(f"trial {claimed.number} {label}: result discarded: another worker took this trial "
            "over while this one was paused past the grace period; its retry records the "
            "result")
        return _lost(study, key, ckpt)
    if not keep_checkpoints:
        ckpt.unlink(missing_ok=True)
    status = ("diverged" if result.get("diverged")
              else f"test error {float(result['final_test_error']):.4f}")
    log(f"trial {claimed.number} {label}: {status}")
    return "COMPLETE"


def _hand_back(claimed: ClaimedTrial, storage_url: str, why: BaseException,
               log: Callable[[str], None]) -> None:
    """Give an interrupted trial back to the sweep (WAITING again), on a fresh connection."""
    reason = str(why) if isinstance(why, Interrupted) else f"{type(why).__name__}: {why}"
    try:
        fresh = open_storage(storage_url, heartbeat_interval=None, grace_period=None)
        released = claimed.release(fresh)
    except Exception as exc:  # the store is gone too: the grace period retries the trial
        log(f"trial {claimed.number}: could not be handed back ({type(exc).__name__}: {exc}); "
            "it is retried once it has had no heartbeat for the grace period")
        return
    if released:
        log(f"trial {claimed.number}: handed back, waiting again (the next worker resumes it "
            f"from its checkpoint): {' '.join(reason.split())}")


def run_worker(
    storage_url: str,
    study_name: str,
    *,
    out_dir: str | os.PathLike | None = None,
    max_trials: int | None = None,
    wait: bool = True,
    heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int = DEFAULT_GRACE_PERIOD,
    poll_interval: float | None = None,
    threads: int | None = None,
    progress: bool = False,
    keep_checkpoints: bool = False,
    log: Callable[[str], None] | None = None,
    allow_modules: Sequence[str] = (),
    linger: Callable[[], bool] | None = None,
) -> WorkerResult:
    """Join the sweep ``study_name`` and run WAITING trials until none is left.

    Args:
        storage_url: SQLAlchemy URL of the store (any machine that reaches it may join).
        study_name: the sweep's study (one that weightdecay created or adopted).
        out_dir: checkpoints go to ``out_dir/ckpt/<key>.pt``; default:
            :func:`default_out_dir`.
        max_trials: stop after this many trials (``None``: no limit).
        wait: when no trial is WAITING but some are RUNNING elsewhere, keep polling (a dead
            worker's trial comes back as WAITING after ``grace_period``; the worker says
            so once); ``False``: exit.
        heartbeat_interval, grace_period: seconds (see
            :func:`weightdecay.harness.store.open_storage`); the grace period must be at
            least two intervals (:func:`weightdecay.harness.store.check_timing`).
        poll_interval: seconds between polls while waiting (default: 2, or the heartbeat
            interval if shorter).
        threads: ``torch.set_num_threads`` for this process (``None``: leave as is).
        progress: per-epoch progress bar of each run.
        keep_checkpoints: keep ``<key>.pt`` after a run completes (default: delete it).
        log: called with one line per trial event (default: print to stderr).
        allow_modules: the modules (and their submodules) whose code this worker may import
            for a trial's model or data set (``"mylab"`` allows ``"mylab.models:net"``);
            trials naming any other are handed back untouched. The working directory is
            put first on ``sys.path`` when any is allowed.
        linger: when no trial is left to run, keep polling (every half second at most)
            while this returns true: more trials may come (the local sweep's parent adds
            the cells that bracket a band's optimum, :func:`weightdecay.harness.local.grown`,
            to the workers it has, instead of starting new ones). ``None``: exit.

    Returns:
        A :class:`WorkerResult`: the trials this worker ran and how they ended.

    Raises:
        Interrupted: SIGINT / SIGTERM (the running trial was handed back first).
        StoreError: bad timing values, an unknown study or one weightdecay did not create.
        weightdecay._io.UnsafePathError: a link in ``out_dir`` leads out of it.
    """
    import optuna

    if max_trials is not None and (not isinstance(max_trials, int) or max_trials < 0):
        raise ValueError(f"max_trials must be a non-negative integer, got {max_trials!r}")
    allow = check_modules(allow_modules)
    check_timing(heartbeat_interval, grace_period)
    if log is None:

        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

    out = Path(out_dir) if out_dir is not None else default_out_dir(storage_url, study_name)
    ckpt_dir = check_inside(out / "ckpt", out)
    storage = open_storage(storage_url, heartbeat_interval=heartbeat_interval,
                           grace_period=grace_period)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StoreError(f"study {study_name!r} not found in the storage") from None
    if not is_weightdecay_study(study.user_attrs):
        raise StoreError(f"study {study_name!r} was not created by weightdecay: a worker runs "
                         "only a weightdecay sweep's trials (`weightdecay sweep --plan-only`; "
                         "--adopt-study NAME takes another program's study over on purpose)")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if allow and os.getcwd() not in sys.path:  # user code: from where the worker was started
        sys.path.insert(0, os.getcwd())
    poll = min(2.0, heartbeat_interval) if poll_interval is None else poll_interval
    held: list[ClaimedTrial] = []  # the trial being run, for the message below
    with stop_on_signals():
        try:
            with deferred_signals():  # raised only at safe points: see interrupt.py
                return _work(study, storage, storage_url, out, ckpt_dir, max_trials, wait, poll,
                             grace_period, progress, keep_checkpoints, log, held, allow,
                             linger)
        except Interrupted as exc:
            if exc.described:
                raise
            what = "the running trial was handed back" if held else "no trial was running"
            raise Interrupted(exc.signum, f"{exc}: {what}; start a worker again to go on") \
                from None


def _work(study, storage, storage_url: str, out: Path, ckpt_dir: Path, max_trials: int | None,
          wait: bool, poll: float, grace_period: int, progress: bool, keep_checkpoints: bool,
          log: Callable[[str], None], held: list[ClaimedTrial], allow: tuple[str, ...] = (),
          linger: Callable[[], bool] | None = None) -> WorkerResult:
    """The worker's loop: claim, run, record; a trial held when it stops is handed back."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    result = WorkerResult()
    skip: set[int] = set()
    waiting_said = False
    while max_trials is None or result.ran < max_trials:
        held.clear()
        try:
            check_interrupted()  # a safe point: between trials
            fail_stale_trials(study)
            claimed = claim_trial(storage, study.study_name, skip)
            if claimed is not None:
                held.append(claimed)
            if claimed is None:
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if not (wait and running):
                    if linger is None or not linger():
                        break
                    with interruptible():  # more trials may come: see ``linger``
                        time.sleep(min(poll, 0.5))
                    continue
                if not waiting_said:
                    log(f"no trial is waiting; {len(running)} are running elsewhere: waiting "
                        f"for them (a trial whose worker is gone is retried here once it has "
                        f"had no heartbeat for {grace_period} s)")
                    waiting_said = True
                with interruptible():
                    time.sleep(poll)
                continue
            waiting_said = False
            state = _run_trial(study, claimed, out, ckpt_dir, log, progress, keep_checkpoints,
                               allow)
        except BaseException as exc:  # interrupted, or a refused path: hand it back
            for trial in held:
                _hand_back(trial, storage_url, exc, log)
            raise
        if state == "SKIPPED":
            skip.add(claimed.number)
            continue
        result.ran += 1
        if state == "COMPLETE":
            result.completed += 1
        elif state == "FAIL":
            result.failed += 1
        else:
            result.lost += 1
    return result

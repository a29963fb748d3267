"""``weightdecay worker``: claim a WAITING trial of a sweep, run it, store its result; repeat.

:func:`run_worker` joins the sweep's study from any machine that reaches the store. Each
trial is claimed with :func:`weightdecay.harness.study.claim_trial`, trained by
:func:`weightdecay.harness.train.run` with the checkpoint ``OUT/ckpt/<key>.pt`` under a
:class:`~weightdecay.harness.study.Heartbeat`, and told to the study (public
``Study.tell``) with the final test error. A diverged run is a result: COMPLETE with value
:data:`DIVERGED_VALUE` and ``diverged=True``. A run that raises is FAIL with the error in
its ``error`` attribute (and the traceback in the worker's log); the next
``create_sweep`` of the same spec re-enqueues it.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig
from .spec import check_study_name
from .store import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HEARTBEAT_INTERVAL,
    StoreError,
    open_storage,
    sqlite_path,
)
from .study import ClaimedTrial, claim_trial

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
    """What one worker did: trials it ran, and how they ended (``lost``: declared dead by
    another worker while running; its retry records the same result)."""

    ran: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0


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
    from optuna.trial import TrialState

    claimed.set_user_attr("error", message)
    study.tell(claimed.number, state=TrialState.FAIL, skip_if_finished=True)
    return "FAIL"


def _run_trial(study, claimed: ClaimedTrial, ckpt_dir: Path, log: Callable[[str], None],
               progress: bool, keep_checkpoints: bool) -> str:
    """Run one claimed trial; return ``"COMPLETE"``, ``"FAIL"`` or ``"LOST"``."""
    import optuna

    from . import train

    attrs = claimed.user_attrs
    key = attrs.get("key")
    try:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"key={key!r} is not a run key of this harness")
        config = RunConfig.from_dict(attrs.get("config"))  # type: ignore[arg-type]  # checked
    except (ValueError, TypeError) as exc:
        log(f"trial {claimed.number}: FAILED: not a trial of this harness: {exc}")
        return _fail(study, claimed, f"not a trial of this harness: {exc}")
    ckpt = ckpt_dir / f"{key}.pt"
    label = (f"key={key} [{attrs.get('experiment')}] {config.optimizer} {config.schedule} "
             f"lr={config.lr:g} wd={config.weight_decay:g} seed={config.seed}")
    log(f"trial {claimed.number} {label}: started")
    with claimed.heartbeat():
        try:
            result = train.run(config, checkpoint_path=ckpt, progress=progress)
        except Exception as exc:  # a crashing run is recorded, not re-run forever
            log(f"trial {claimed.number} {label}: FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
            return _fail(study, claimed, f"{type(exc).__name__}: {exc}")
        for name in _RESULT_ATTRS:
            claimed.set_user_attr(name, _finite_or_none(result.get(name)))
        diverged = bool(result.get("diverged", False))
        claimed.set_user_attr("diverged", diverged)
        claimed.set_user_attr("history", result.get("history", {}))
        if result.get("final_test_wrong") is not None:
            claimed.set_user_attr("final_test_wrong", result["final_test_wrong"])
        value = DIVERGED_VALUE if diverged else float(result["final_test_error"])
        try:
            study.tell(claimed.number, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            # another worker declared this trial dead (missed heartbeats); its retry resumes
            # from the finished checkpoint and records the same result
            log(f"trial {claimed.number} {label}: already failed by another worker")
            return "LOST"
    if not keep_checkpoints:
        ckpt.unlink(missing_ok=True)
    status = "diverged" if diverged else f"test error {value:.4f}"
    log(f"trial {claimed.number} {label}: {status}")
    return "COMPLETE"


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
) -> WorkerResult:
    """Join the sweep ``study_name`` and run WAITING trials until none is left.

    Args:
        storage_url: SQLAlchemy URL of the store (any machine that reaches it may join).
        study_name: the sweep's study.
        out_dir: checkpoints go to ``out_dir/ckpt/<key>.pt``; default:
            :func:`default_out_dir`.
        max_trials: stop after this many trials (``None``: no limit).
        wait: when no trial is WAITING but some are RUNNING elsewhere, keep polling (a dead
            worker's trial comes back as WAITING after ``grace_period``; the worker says
            so once); ``False``: exit.
        heartbeat_interval, grace_period: seconds (see
            :func:`weightdecay.harness.store.open_storage`).
        poll_interval: seconds between polls while waiting (default: 2, or the heartbeat
            interval if shorter).
        threads: ``torch.set_num_threads`` for this process (``None``: leave as is).
        progress: per-epoch progress bar of each run.
        keep_checkpoints: keep ``<key>.pt`` after a run completes (default: delete it).
        log: called with one line per trial event (default: print to stderr).

    Returns:
        A :class:`WorkerResult`: the trials this worker ran and how they ended.
    """
    import optuna
    from optuna.trial import TrialState

    if max_trials is not None and (not isinstance(max_trials, int) or max_trials < 0):
        raise ValueError(f"max_trials must be a non-negative integer, got {max_trials!r}")
    if log is None:

        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

    ckpt_dir = (Path(out_dir) if out_dir is not None
                else default_out_dir(storage_url, study_name)) / "ckpt"
    storage = open_storage(storage_url, heartbeat_interval=heartbeat_interval,
                           grace_period=grace_period)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StoreError(f"study {study_name!r} not found in the storage") from None
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    poll = min(2.0, heartbeat_interval) if poll_interval is None else poll_interval
    result = WorkerResult()
    waiting_said = False
    while max_trials is None or result.ran < max_trials:
        optuna.storages.fail_stale_trials(study)
        claimed = claim_trial(storage, study_name)
        if claimed is None:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if wait and running:
                if not waiting_said:
                    log(f"no trial is waiting; {len(running)} are running elsewhere: waiting "
                        f"for them (a trial whose worker is gone is retried here once it has "
                        f"had no heartbeat for {grace_period} s)")
                    waiting_said = True
                time.sleep(poll)
                continue
            break
        waiting_said = False
        state = _run_trial(study, claimed, ckpt_dir, log, progress, keep_checkpoints)
        result.ran += 1
        if state == "COMPLETE":
            result.completed += 1
        elif state == "FAIL":
            result.failed += 1
        else:
            result.lost += 1
    return result

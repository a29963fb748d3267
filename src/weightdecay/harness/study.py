"""The Optuna study of a sweep: exactly-once enqueue, claiming, heartbeats, status.

One sweep is one Optuna study (see :mod:`weightdecay.harness.store`). Each planned run is
enqueued once as a WAITING trial carrying the user attributes ``key``, ``config``,
``experiment`` and ``figure``; :func:`create_sweep` holds an inter-process lock
(:func:`weightdecay.harness.store.sweep_lock`) while it enqueues the keys the study lacks,
so running it twice, or from two processes at once, never duplicates a run.

A study that weightdecay did not create -- another program's, under the same name -- is
refused unless the caller names it on purpose (``adopt_study``); weightdecay's studies
carry :data:`weightdecay.harness.store.STUDY_MARK`.

Workers claim WAITING trials with :func:`claim_trial` (Optuna's atomic WAITING -> RUNNING
transition, made safe on SQLite by ``BEGIN IMMEDIATE``; the claimer's ``host:pid`` is
recorded) and keep a :class:`Heartbeat` while training. A worker that dies mid-trial stops
beating; after the grace period another worker's :func:`optuna.storages.fail_stale_trials`
fails its trial and re-enqueues a copy (same key), which resumes from the checkpoint. A
worker that stops on purpose (a signal) hands its trial back at once
(:meth:`ClaimedTrial.release`, :func:`release_trials`: RUNNING -> WAITING, the same trial),
so that a rerun starts it without waiting for the grace period.

**The one exception to Optuna's public API** is :class:`ClaimedTrial` / :func:`claim_trial`,
:func:`release_trials` and :class:`Heartbeat` below: they call the storage interface
(:class:`optuna.storages.BaseStorage` methods, which Optuna documents as internal) because
the public ``Study.ask`` creates a new trial when none is WAITING and starts no heartbeat,
and Optuna beats a trial only inside ``Study.optimize``. No raw SQL and no private
attribute is used; a claimed trial is told through the public ``Study.tell``. The claim
records a heartbeat *before* it moves a trial to RUNNING, so a worker killed between the
claim and its first regular beat still leaves a trial that goes stale (tested in
``tests/test_study.py``).

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4
(each figure is a sweep of such runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .interrupt import check_interrupted, deferred_signals
from .spec import DEFAULT_MAX_RUNS, PlannedRun, SpecError, SweepPlan, check_study_name, plan_sweep
from .store import (
    STUDY_MARK,
    WORKER_ATTR,
    StoreError,
    check_storage,
    describe_url,
    is_weightdecay_study,
    open_storage,
    sweep_lock,
    versions,
)

__all__ = [
    "ENQUEUE_BATCH",
    "ClaimedTrial",
    "Heartbeat",
    "SpecChanged",
    "SweepResult",
    "SweepStatus",
    "check_ours",
    "claim_trial",
    "create_sweep",
    "release_trials",
    "sweep_status",
    "worker_id",
]


class SpecChanged(StoreError):
    """The study already holds a sweep of another spec (its runs are not this spec's)."""


#: runs enqueued between two progress reports (Optuna enqueues one trial per transaction)
ENQUEUE_BATCH = 250


@dataclass
class SweepResult:
    """What :func:`create_sweep` did: the study, its planned runs, how many were enqueued."""

    study_name: str
    runs: list[PlannedRun]
    enqueued: int


def _spec_blob(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


def _mark(study, adopted: bool) -> None:
    import weightdecay

    study.set_user_attr(STUDY_MARK, {"version": weightdecay.__version__, "adopted": adopted})


def check_ours(study, storage_url: str, adopt_study: str | None = None) -> None:
    """Refuse a study weightdecay did not create, unless ``adopt_study`` names it: then it
    is marked as weightdecay's (its own trials, without a run key, are left alone).

    Raises:
        StoreError: a foreign study not named by ``adopt_study``, or one with more than one
            objective (a sweep minimizes the test error).
    """
    if is_weightdecay_study(study.user_attrs):
        return
    name = study.study_name
    if adopt_study != name:
        n = len(study.get_trials(deepcopy=False))
        raise StoreError(
            f"study {name!r} in {describe_url(storage_url)} was not created by weightdecay "
            f"(it holds {n} trial(s) of another program); use another study name (--study), "
            f"or take this one over on purpose with --adopt-study {name}")
    if len(study.directions) != 1:
        raise StoreError(f"study {name!r} has {len(study.directions)} objectives; a sweep "
                         "records one (the test error), so it cannot adopt this study")
    with deferred_signals():
        _mark(study, adopted=True)


def create_sweep(
    spec: Mapping[str, Any] | SweepPlan,
    storage_url: str,
    study_name: str | None = None,
    *,
    max_runs: int | None = DEFAULT_MAX_RUNS,
    progress: Callable[[int, int], None] | None = None,
    adopt_study: str | None = None,
) -> SweepResult:
    """Create (or resume) the study of ``spec`` in ``storage_url``; enqueue missing runs.

    The spec is checked completely (or taken as planned, a :class:`SweepPlan`) and the
    storage is reached before anything is written. The study records ``spec`` and
    ``versions`` in its user attributes. Under the sweep lock, every planned key that has
    no COMPLETE, RUNNING or WAITING trial is enqueued once (keys whose trials all FAILed
    are retried), in batches of :data:`ENQUEUE_BATCH`; an interrupted enqueue is
    completed by the next call.

    Args:
        spec: the sweep spec (see :mod:`weightdecay.harness.spec`) or its plan.
        storage_url: SQLAlchemy URL of the store.
        study_name: defaults to ``spec["name"]``; letters, digits, ``. _ -``.
        max_runs: refuse a spec planning more runs (``None``: no limit).
        progress: called as ``progress(enqueued, to_enqueue)`` after each batch.
        adopt_study: the name of an existing study that weightdecay did not create, to use
            it on purpose (see :func:`check_ours`); any other name is refused.

    Raises:
        SpecError: bad spec or study name; StoreError: bad or unreachable storage, a study
        of another program (not adopted), or a study that holds a different spec.
    """
    import optuna

    plan = spec if isinstance(spec, SweepPlan) else plan_sweep(spec, max_runs=max_runs)
    study_name = study_name or plan.name
    if not study_name:
        raise SpecError("the spec has no 'name'; give a study name")
    check_study_name(study_name)
    if adopt_study is not None and adopt_study != study_name:
        raise StoreError(f"--adopt-study {adopt_study} does not name this sweep's study "
                         f"{study_name!r}")
    check_storage(storage_url)
    # a signal stops the enqueue between two trials, never inside a store operation
    with deferred_signals(), sweep_lock(storage_url, study_name):
        storage = open_storage(storage_url)
        study = None
        if study_name not in optuna.get_all_study_names(storage):
            try:  # created and marked, or not created (no safe point in between)
                study = optuna.create_study(study_name=study_name, storage=storage,
                                            direction="minimize")
                _mark(study, adopted=False)
            except optuna.exceptions.DuplicatedStudyError:
                study = None  # another program created it just now
        if study is None:
            study = optuna.load_study(study_name=study_name, storage=storage)
            check_ours(study, storage_url, adopt_study)
            old = study.user_attrs.get("spec")
            if old is not None and _spec_blob(old) != _spec_blob(plan.spec):
                raise SpecChanged(
                    f"study {study_name!r} already holds a different sweep spec; "
                    "use another study name (--study) or the spec it was created with"
                )
        if "spec" not in study.user_attrs:
            study.set_user_attr("spec", plan.spec)
            study.set_user_attr("versions", versions())
        optuna.storages.fail_stale_trials(study)
        present = {
            t.user_attrs.get("key")
            for t in study.get_trials(deepcopy=False)
            if t.state.name in ("COMPLETE", "RUNNING", "WAITING")
        }
        missing = [run for run in plan.runs if run.key not in present]
        for start in range(0, len(missing), ENQUEUE_BATCH):
            for run in missing[start:start + ENQUEUE_BATCH]:
                check_interrupted()  # a safe point: between two enqueues
                study.enqueue_trial(params={}, user_attrs=run.user_attrs())
            if progress is not None:
                progress(min(start + ENQUEUE_BATCH, len(missing)), len(missing))
    return SweepResult(study_name=study_name, runs=plan.runs, enqueued=len(missing))


def sweep_status(storage_url: str, study_name: str, storage=None) -> dict[str, int]:
    """Counts per key: ``total`` planned keys, ``complete``, ``running``, ``waiting``,
    ``failed`` (keys whose trials all failed), ``diverged`` (complete but diverged)."""
    return SweepStatus(storage_url, study_name, storage).poll()


class SweepStatus:
    """:func:`sweep_status`, polled again and again at a cost that does not grow with the
    runs already finished: a finished trial (COMPLETE, FAIL, PRUNED) never changes again,
    so it is read once and remembered; each :meth:`poll` reads the open trials (WAITING,
    RUNNING) and the few that finished since the last one. Reading every trial at every
    poll (what :func:`sweep_status` does once) costs in proportion to the finished runs and
    their histories, twice a second under a progress bar: a large share of a core at the
    end of a big sweep (``benchmarks/bench_status.py``)."""

    #: more trials than this to read one by one: one bulk read of the finished ones instead
    BULK = 50

    def __init__(self, storage_url: str, study_name: str, storage=None):
        if storage is None:
            storage = open_storage(storage_url, heartbeat_interval=None, grace_period=None)
        self._storage = storage
        self._study_id = storage.get_study_id_from_name(study_name)
        self._done: dict[int, tuple[str | None, str, bool]] = {}  # number -> key, state, div
        self._n = 0  # trials seen so far (numbers 0 .. n-1)

    def _count(self) -> int:
        """The study's number of trials. Trial numbers run 0, 1, ... without gaps, so the
        count is the first number with no trial: found by doubling steps from the last count,
        then bisection (a few one-row reads; the storage's own ``get_n_trials`` reads every
        trial)."""
        def exists(number: int) -> bool:
            try:
                self._storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
            except KeyError:
                return False
            return True

        lo, step = self._n, 1  # invariant: every number below lo has a trial
        while exists(lo + step - 1):
            lo, step = lo + step, step * 2
        hi = lo + step - 1  # no trial numbered hi
        while lo < hi:
            mid = (lo + hi) // 2
            if exists(mid):
                lo = mid + 1
            else:
                hi = mid
        self._n = lo
        return lo

    @staticmethod
    def _entry(t) -> tuple[str | None, str, bool]:
        return (t.user_attrs.get("key"), t.state.name,
                t.state.name == "COMPLETE" and bool(t.user_attrs.get("diverged")))

    def poll(self) -> dict[str, int]:
        """The counts now (see :func:`sweep_status`)."""
        from optuna.trial import TrialState

        st, sid = self._storage, self._study_id
        n = self._count()
        opened = {t.number: self._entry(t) for t in
                  st.get_all_trials(sid, deepcopy=False,
                                    states=(TrialState.WAITING, TrialState.RUNNING))}
        missing = [i for i in range(n) if i not in self._done and i not in opened]
        if len(missing) > self.BULK:
            for t in st.get_all_trials(sid, deepcopy=False, states=(
                    TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)):
                self._done[t.number] = self._entry(t)
            missing = [i for i in missing if i not in self._done]
        for i in missing:
            t = st.get_trial(st.get_trial_id_from_study_id_trial_number(sid, i))
            if t.state.is_finished():
                self._done[i] = self._entry(t)
            else:  # reopened since (a stale trial handed back): counted as open
                opened[i] = self._entry(t)
        by_key: dict[str, set[str]] = {}
        diverged = set()
        for key, state, div in [*self._done.values(), *opened.values()]:
            if key is None:
                continue
            by_key.setdefault(key, set()).add(state)
            if div:
                diverged.add(key)
        counts = {"total": len(by_key), "complete": 0, "running": 0, "waiting": 0,
                  "failed": 0, "diverged": len(diverged)}
        for states in by_key.values():
            if "COMPLETE" in states:
                counts["complete"] += 1
            elif "RUNNING" in states:
                counts["running"] += 1
            elif "WAITING" in states:
                counts["waiting"] += 1
            else:
                counts["failed"] += 1
        return counts


# ------------------------------------------------------------------------------ claiming
# The isolated use of Optuna's storage interface (see the module docstring).


@dataclass(frozen=True)
class ClaimedTrial:
    """A trial this worker moved from WAITING to RUNNING: its number (for ``Study.tell``),
    its enqueued user attributes, and the storage handle to annotate and beat it."""

    storage: Any
    trial_id: int
    number: int
    user_attrs: dict[str, Any]

    def set_user_attr(self, key: str, value: Any) -> None:
        """Store a user attribute of the running trial."""
        self.storage.set_trial_user_attr(self.trial_id, key, value)

    def heartbeat(self) -> Heartbeat:
        """A :class:`Heartbeat` of this trial (a context manager)."""
        return Heartbeat(self.storage, self.trial_id)


    def release(self, storage: Any = None) -> bool:
        """Hand the trial back (RUNNING -> WAITING, the same trial and attributes, its claim
        cleared) so that any worker claims it at once; ``False`` if it has finished.

        ``storage``: another handle on the same store to do it with (e.g. a fresh one after
        an interruption that may have left this one's connection mid-transaction)."""
        return _release(self.storage if storage is None else storage, self.trial_id)


def worker_id(pid: int | None = None) -> str:
    """``host:pid`` of a worker process (this one by default): the claim a trial records."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def claim_trial(storage, study_name: str, skip: Collection[int] = ()) -> ClaimedTrial | None:
    """Atomically move one WAITING trial of ``study_name`` to RUNNING (``None``: none left).

    A heartbeat is recorded just before the transition (a WAITING trial's beat is ignored
    by Optuna's staleness check), so the claimed trial can go stale from its first moment;
    then the claimer's :func:`worker_id` is recorded (:data:`WORKER_ATTR`). Trials without a
    run key (another program's, in an adopted study) are never claimed, nor the trial
    numbers in ``skip``.
    """
    import optuna
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study_name)
    beats = storage.get_heartbeat_interval() is not None
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        if "key" not in trial.user_attrs or trial.number in skip:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if beats:
                storage.record_heartbeat(trial_id)
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                storage.set_trial_user_attr(trial_id, WORKER_ATTR, worker_id())
                return ClaimedTrial(storage, trial_id, trial.number, dict(trial.user_attrs))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker claimed it first
    return None


def _release(storage, trial_id: int) -> bool:
    import optuna
    from optuna.trial import TrialState

    try:
        storage.set_trial_user_attr(trial_id, WORKER_ATTR, None)
        return bool(storage.set_trial_state_values(trial_id, state=TrialState.WAITING))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # it finished (or another worker failed it as stale): nothing to hand back


def release_trials(storage, study_name: str, workers: Collection[str]) -> list[int]:
    """Hand back every RUNNING trial of ``study_name`` claimed by one of ``workers``
    (:func:`worker_id` values of processes known to have stopped); returns their numbers."""
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study_name)
    released = []
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) in workers:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            if _release(storage, trial_id):
                released.append(trial.number)
    return released


class Heartbeat:
    """Record a trial's heartbeat every ``storage.heartbeat_interval`` seconds in a thread.

    (Optuna starts such a thread only inside ``Study.optimize``; the harness drives trials
    with its own loop.) After each beat it reads the trial's state: one that is no longer
    RUNNING was taken over (another worker declared this one dead after a pause longer
    than the grace period) and :attr:`lost` is set, so the worker can stop early. Use as a
    context manager.
    """

    def __init__(self, storage, trial_id: int) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = threading.Event()

    def __enter__(self) -> Heartbeat:
        from optuna.trial import TrialState

        interval = self._storage.get_heartbeat_interval()
        if interval is None:
            return self
        self._storage.record_heartbeat(self._trial_id)

        def beat() -> None:
            while not self._stop.wait(interval):
                with contextlib.suppress(Exception):  # a missed beat is retried next time
                    self._storage.record_heartbeat(self._trial_id)
                    if self._storage.get_trial(self._trial_id).state != TrialState.RUNNING:
                        self.lost.set()

        self._thread = threading.Thread(target=beat, name="weightdecay-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

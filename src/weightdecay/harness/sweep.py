"""Sweeps: a spec (data) expanded into runs, stored in an Optuna study, run by workers.

A **sweep spec** is a dict (or a TOML file) declaring experiments; each experiment is a
grid over optimizers (each with its own learning-rate grid and weight-decay grid),
schedules, epoch budgets, batch sizes and seeds. :func:`expand_spec` turns it,
deterministically, into :class:`PlannedRun` s (a :class:`RunConfig` plus the experiment
name and paper figure)::

    name = "my-sweep"                  # default study name
    description = "free text"

    [defaults]                         # experiment keys shared by every experiment
    dataset = "mnist1d"
    model = "cnn1d_bn"

    [[experiments]]
    name = "fig2"                      # unique; part of each run's key
    figure = "fig2"                    # fig1 fig2 fig3 fig4 supp1 supp3 (optional)
    schedules = ["cosine"]             # grid: fixed step linear cosine restarts
    epochs = [20]                      # grid [epochs]
    seeds = [0, 1]                     # grid
    batch_size = 128                   # grid (an int or a list)
    # any other RunConfig field as a scalar: T_0, T_mult, milestones, drop_factor, ...

      [[experiments.optimizers]]       # one table per optimizer (or optimizer variant)
      optimizer = "sgdw"               # sgd sgdw adam adamw
      lr = [0.0125, 0.025, 0.05]       # grid of alpha (> 0)
      weight_decay = [1e-4, 2e-4]      # grid of raw lambda (>= 0), or instead:
      # weight_decay_norm = [0.025]    # grid of lambda_norm (paper App. B.1)
      # any experiment key here overrides it for this optimizer (e.g. schedules, T_0)

The grid order is: experiment, optimizer entry, schedule, epochs, batch size, lr, weight
decay, seed. Unknown keys and impossible grids (empty, duplicate values, non-positive lr,
negative decay, ...) raise :class:`SpecError` naming the key.

**Storage.** One sweep is one Optuna study (see :mod:`weightdecay.harness.store`). Each
planned run is enqueued once as a WAITING trial carrying the user attributes ``key``,
``config``, ``experiment`` and ``figure``; :func:`create_sweep` holds an inter-process
lock while it enqueues the keys the study lacks, so running it twice, or from two
processes at once, never duplicates a run.

**Workers.** :func:`run_worker` claims WAITING trials one at a time (Optuna's atomic
WAITING -> RUNNING transition, made safe on SQLite by ``BEGIN IMMEDIATE``), records a
heartbeat while training, runs :func:`weightdecay.harness.train.run` with the checkpoint
``OUT/ckpt/<key>.pt`` and tells the study the final test error. A worker that dies
mid-trial stops beating; after the grace period another worker fails its trial and
re-enqueues a copy (same key), which resumes from the checkpoint. A diverged run is a
result: COMPLETE with value 1.0 and ``diverged=True``. :func:`run_local` runs N such
workers as processes on this machine with a progress bar.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4
(grids in powers of 2 over (alpha, lambda), Figs. 1-4 and Supp. Figs. 1, 3).
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .config import DATASETS, FIGURES, MODELS, OPTIMIZERS, SCHEDULES, RunConfig
from .store import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HEARTBEAT_INTERVAL,
    Heartbeat,
    StoreError,
    check_storage,
    load_records,
    open_storage,
    sweep_lock,
    versions,
)

__all__ = [
    "DIVERGED_VALUE",
    "FIGURES",
    "PlannedRun",
    "SpecError",
    "SweepResult",
    "create_sweep",
    "expand_spec",
    "load_spec",
    "run_local",
    "run_worker",
    "summary_table",
    "sweep_status",
    "validate_spec",
]


_TOP_KEYS = ("name", "description", "defaults", "experiments")
# grid keys of an experiment (a list, or a scalar meaning a one-value grid)
_GRID_KEYS = ("schedules", "epochs", "batch_size", "seeds")
# RunConfig fields that an experiment or optimizer entry may set as a scalar
_SCALAR_KEYS = (
    "dataset",
    "model",
    "decay_convention",
    "T_0",
    "T_mult",
    "milestones",
    "drop_factor",
    "device",
    "momentum",
    "decay_all",
    "width",
    "test_size",
    "eval_every",
)
_EXPERIMENT_KEYS = ("name", "figure", "optimizers", *_GRID_KEYS, *_SCALAR_KEYS)
_OPTIMIZER_KEYS = ("optimizer", "lr", "weight_decay", "weight_decay_norm", *_GRID_KEYS,
                   *_SCALAR_KEYS)
_DEFAULT_KEYS = (*_GRID_KEYS, *_SCALAR_KEYS)
# value of a diverged run in the study (the objective is the final test error in [0, 1])
DIVERGED_VALUE = 1.0


class SpecError(ValueError):
    """A sweep spec with an unknown key or an impossible grid."""


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its config, experiment name, figure tag and stable key."""

    key: str
    experiment: str
    figure: str | None
    config: RunConfig

    def user_attrs(self) -> dict[str, Any]:
        """The trial user attributes it is enqueued with."""
        return {
            "key": self.key,
            "config": self.config.to_dict(),
            "experiment": self.experiment,
            "figure": self.figure,
        }


# ------------------------------------------------------------------------------ spec


def load_spec(path: str | os.PathLike) -> dict[str, Any]:
    """Read a sweep spec from a TOML (``.toml``) or JSON (``.json``) file.

    Raises:
        SpecError: the file is missing or is not valid TOML/JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            spec = json.loads(text)
        else:
            spec = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"spec file {str(path)!r} is not valid: {exc}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"spec file {str(path)!r} must hold a table, got {type(spec).__name__}")
    return spec


def _unknown(where: str, keys: Sequence[str], allowed: Sequence[str]) -> None:
    unknown = [k for k in keys if k not in allowed]
    if unknown:
        raise SpecError(
            f"unknown key {unknown[0]!r} in {where}; valid keys: {', '.join(allowed)}"
        )


def _grid(where: str, key: str, value: Any) -> list[Any]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise SpecError(f"{where}: grid {key!r} is empty")
    seen = []
    for v in values:
        if v in seen:
            raise SpecError(f"{where}: grid {key!r} lists {v!r} twice")
        seen.append(v)
    return values


def _check_numbers(where: str, key: str, values: list[Any], *, positive: bool,
                   integer: bool = False) -> None:
    for v in values:
        ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type:
            kind = "an integer" if integer else "a number"
            raise SpecError(f"{where}: {key}={v!r} must be {kind}")
        if not math.isfinite(v):
            raise SpecError(f"{where}: {key}={v!r} must be finite")
        if positive and v <= 0:
            raise SpecError(f"{where}: {key}={v!r} must be > 0")
        if not positive and v < 0:
            raise SpecError(f"{where}: {key}={v!r} must be >= 0")


def _check_names(where: str, key: str, values: list[Any], valid: Sequence[str]) -> None:
    for v in values:
        if v not in valid:
            raise SpecError(f"{where}: {key}={v!r} is not valid; valid: {', '.join(valid)}")


def validate_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Check a spec completely; return a JSON-normalised deep copy.

    Every key is checked (unknown key -> :class:`SpecError` naming it), every grid must be
    non-empty and free of duplicates, and every run it expands to must be a valid
    :class:`RunConfig` (the error names the experiment and the optimizer entry).
    """
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec must be a table/dict, got {type(spec).__name__}")
    try:
        spec = json.loads(json.dumps(spec, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"spec is not JSON-able: {exc}") from None
    _unknown("the spec", list(spec), _TOP_KEYS)
    name = spec.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise SpecError(f"spec name={name!r} must be a non-empty string")
    defaults = spec.get("defaults", {})
    if not isinstance(defaults, dict):
        raise SpecError(f"'defaults' must be a table, got {defaults!r}")
    _unknown("'defaults'", list(defaults), _DEFAULT_KEYS)
    experiments = spec.get("experiments")
    if not isinstance(experiments, list) or not experiments:
        raise SpecError("'experiments' must be a non-empty list of tables")
    names: set[str] = set()
    for i, exp in enumerate(experiments):
        if not isinstance(exp, dict):
            raise SpecError(f"experiments[{i}] must be a table, got {exp!r}")
        ename = exp.get("name")
        where = f"experiments[{i}]"
        if not isinstance(ename, str) or not ename.strip():
            raise SpecError(f"{where}: 'name' must be a non-empty string, got {ename!r}")
        where = f"experiment {ename!r}"
        if ename in names:
            raise SpecError(f"{where}: experiment name {ename!r} is used twice")
        names.add(ename)
        _unknown(where, list(exp), _EXPERIMENT_KEYS)
        figure = exp.get("figure")
        if figure is not None and figure not in FIGURES:
            raise SpecError(f"{where}: figure={figure!r} is not valid; valid: {', '.join(FIGURES)}")
        opts = exp.get("optimizers")
        if not isinstance(opts, list) or not opts:
            raise SpecError(f"{where}: 'optimizers' must be a non-empty list of tables")
        for j, entry in enumerate(opts):
            owhere = f"{where}, optimizers[{j}]"
            if not isinstance(entry, dict):
                raise SpecError(f"{owhere} must be a table, got {entry!r}")
            _unknown(owhere, list(entry), _OPTIMIZER_KEYS)
            if "optimizer" not in entry:
                raise SpecError(f"{owhere}: 'optimizer' is missing")
            _check_names(owhere, "optimizer", [entry["optimizer"]], OPTIMIZERS)
            if "lr" not in entry:
                raise SpecError(f"{owhere}: the grid 'lr' is missing")
            if "weight_decay" in entry and "weight_decay_norm" in entry:
                raise SpecError(
                    f"{owhere}: give either 'weight_decay' or 'weight_decay_norm', not both"
                )
            if "weight_decay" not in entry and "weight_decay_norm" not in entry:
                raise SpecError(f"{owhere}: the grid 'weight_decay' (or 'weight_decay_norm') "
                                "is missing")
            merged = {**defaults, **{k: v for k, v in exp.items() if k != "optimizers"}, **entry}
            _check_numbers(owhere, "lr", _grid(owhere, "lr", entry["lr"]), positive=True)
            for key in ("weight_decay", "weight_decay_norm"):
                if key in entry:
                    _check_numbers(owhere, key, _grid(owhere, key, entry[key]), positive=False)
            _check_names(owhere, "schedules", _grid(owhere, "schedules",
                                                    merged.get("schedules", "cosine")), SCHEDULES)
            _check_numbers(owhere, "epochs", _grid(owhere, "epochs", merged.get("epochs", 10)),
                           positive=True, integer=True)
            _check_numbers(owhere, "batch_size",
                           _grid(owhere, "batch_size", merged.get("batch_size", 128)),
                           positive=True, integer=True)
            _check_numbers(owhere, "seeds", _grid(owhere, "seeds", merged.get("seeds", [0])),
                           positive=False, integer=True)
            if "dataset" in merged:
                _check_names(owhere, "dataset", [merged["dataset"]], DATASETS)
            if "model" in merged:
                _check_names(owhere, "model", [merged["model"]], MODELS)
    # the expansion validates every RunConfig and rejects duplicate runs
    _expand(spec)
    return spec


def _expand(spec: Mapping[str, Any]) -> list[PlannedRun]:
    defaults = spec.get("defaults", {})
    runs: list[PlannedRun] = []
    keys: dict[str, str] = {}
    for exp in spec["experiments"]:
        ename = exp["name"]
        figure = exp.get("figure")
        for j, entry in enumerate(exp["optimizers"]):
            owhere = f"experiment {ename!r}, optimizers[{j}] ({entry['optimizer']})"
            merged = {**defaults, **{k: v for k, v in exp.items() if k != "optimizers"}, **entry}
            scalars = {k: merged[k] for k in _SCALAR_KEYS if k in merged}
            if "milestones" in scalars and isinstance(scalars["milestones"], list):
                scalars["milestones"] = tuple(scalars["milestones"])
            if "weight_decay_norm" in entry:
                decay_key, decays = "weight_decay_norm", _grid(owhere, "wdn",
                                                               entry["weight_decay_norm"])
            else:
                decay_key, decays = "weight_decay", _grid(owhere, "wd", entry["weight_decay"])
            grid = itertools.product(
                _grid(owhere, "schedules", merged.get("schedules", "cosine")),
                _grid(owhere, "epochs", merged.get("epochs", 10)),
                _grid(owhere, "batch_size", merged.get("batch_size", 128)),
                _grid(owhere, "lr", entry["lr"]),
                decays,
                _grid(owhere, "seeds", merged.get("seeds", [0])),
            )
            for schedule, epochs, batch_size, lr, decay, seed in grid:
                fields = dict(scalars, optimizer=entry["optimizer"], schedule=schedule,
                              epochs=epochs, batch_size=batch_size, lr=float(lr), seed=seed)
                fields[decay_key] = float(decay)
                if schedule != "restarts":
                    fields.pop("T_0", None)  # only restarts use T_0: do not split keys on it
                try:
                    config = RunConfig(**fields)
                except (ValueError, TypeError) as exc:
                    raise SpecError(f"{owhere}: {exc}") from None
                key = config.key({"experiment": ename})
                if key in keys:
                    raise SpecError(f"{owhere}: plans the same run twice ({keys[key]})")
                keys[key] = f"{ename}: {config.optimizer} lr={lr:g} {decay_key}={decay:g}"
                runs.append(PlannedRun(key=key, experiment=ename, figure=figure, config=config))
    return runs


def expand_spec(spec: Mapping[str, Any]) -> list[PlannedRun]:
    """Validate ``spec`` and expand it, deterministically, into its runs (in grid order)."""
    return _expand(validate_spec(spec))


# ------------------------------------------------------------------------------ creating


@dataclass
class SweepResult:
    """What :func:`create_sweep` did: the study, its planned runs, how many were enqueued."""

    study_name: str
    runs: list[PlannedRun]
    enqueued: int


def _spec_blob(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


def create_sweep(
    spec: Mapping[str, Any],
    storage_url: str,
    study_name: str | None = None,
) -> SweepResult:
    """Create (or resume) the study of ``spec`` in ``storage_url``; enqueue missing runs.

    The spec is validated completely and the storage is reached before anything is
    written. The study records ``spec`` and ``versions`` in its user attributes. Under
    :func:`weightdecay.harness.store.sweep_lock`, every planned key that has no COMPLETE,
    RUNNING or WAITING trial is enqueued once (keys whose trials all FAILed are retried).

    Args:
        spec: the sweep spec (see the module docstring).
        storage_url: SQLAlchemy URL of the store.
        study_name: defaults to ``spec["name"]``.

    Raises:
        SpecError: bad spec; StoreError: bad or unreachable storage, or the study already
        holds a different spec.
    """
    import optuna

    spec = validate_spec(spec)
    runs = _expand(spec)
    study_name = study_name or spec.get("name")
    if not study_name:
        raise SpecError("the spec has no 'name'; give a study name")
    check_storage(storage_url)
    with sweep_lock(storage_url, study_name):
        storage = open_storage(storage_url)
        if study_name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=study_name, storage=storage)
            old = study.user_attrs.get("spec")
            if old is not None and _spec_blob(old) != _spec_blob(spec):
                raise StoreError(
                    f"study {study_name!r} already holds a different sweep spec; "
                    "use another study name (--study) or the spec it was created with"
                )
        else:
            study = optuna.create_study(
                study_name=study_name, storage=storage, direction="minimize",
                load_if_exists=True,
            )
        if "spec" not in study.user_attrs:
            study.set_user_attr("spec", spec)
            study.set_user_attr("versions", versions())
        optuna.storages.fail_stale_trials(study)
        present = set()
        for trial in study.get_trials(deepcopy=False):
            if trial.state.name in ("COMPLETE", "RUNNING", "WAITING"):
                present.add(trial.user_attrs.get("key"))
        enqueued = 0
        for run in runs:
            if run.key in present:
                continue
            study.enqueue_trial(params={}, user_attrs=run.user_attrs())
            enqueued += 1
    return SweepResult(study_name=study_name, runs=runs, enqueued=enqueued)


# ------------------------------------------------------------------------------ workers


def _claim(storage, study_id: int) -> int | None:
    """Atomically move one WAITING trial to RUNNING; return its id (``None``: none left)."""
    import optuna
    from optuna.trial import TrialState

    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                return trial._trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _adopt_silent_trials(storage, study_id: int, grace: int) -> None:
    """Give a heartbeat to RUNNING trials that never had one and started > 2*grace ago.

    A worker killed between claiming a trial and its first heartbeat leaves a RUNNING
    trial that Optuna never sees as stale. Seeding one beat makes it stale after the grace
    period unless its owner is alive (the owner's own beats then keep it fresh).
    """
    import datetime

    from optuna.trial import TrialState

    now = datetime.datetime.now()
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        start = trial.datetime_start
        if start is None or (now - start).total_seconds() < 2 * grace:
            continue
        if trial.user_attrs.get("key") is None:
            continue
        if not _has_heartbeat(storage, trial._trial_id):
            storage.record_heartbeat(trial._trial_id)


def _has_heartbeat(storage, trial_id: int) -> bool:
    import sqlalchemy

    with storage.engine.connect() as conn:
        n = conn.execute(
            sqlalchemy.text("SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = :t"),
            {"t": trial_id},
        ).scalar()
        conn.commit()
    return bool(n)


def _default_out_dir(storage_url: str, study_name: str) -> Path:
    from .store import _sqlite_path

    path = _sqlite_path(storage_url)
    if path is not None:
        return path.resolve().parent
    return Path("runs") / study_name


def _finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _run_trial(study, storage, trial_id: int, ckpt_dir: Path, log: Callable[[str], None],
               progress: bool, keep_checkpoints: bool) -> str:
    import optuna
    from optuna.trial import TrialState

    from . import train

    trial = optuna.trial.Trial(study, trial_id)
    attrs = storage.get_trial(trial_id).user_attrs
    key = attrs["key"]
    config = RunConfig.from_dict(attrs["config"])
    ckpt = ckpt_dir / f"{key}.pt"
    label = (f"key={key} [{attrs.get('experiment')}] {config.optimizer} {config.schedule} "
             f"lr={config.lr:g} wd={config.weight_decay:g} seed={config.seed}")
    log(f"trial {trial.number} {label}: started")
    with Heartbeat(storage, trial_id):
        try:
            result = train.run(config, checkpoint_path=ckpt, progress=progress)
        except Exception as exc:  # a crashing run is recorded, not re-run forever
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            log(f"trial {trial.number} {label}: FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return "FAIL"
        for name in ("final_test_error", "best_test_error", "final_train_loss",
                     "wall_seconds", "num_test"):
            trial.set_user_attr(name, _finite_or_none(result.get(name)))
        trial.set_user_attr("diverged", bool(result.get("diverged", False)))
        trial.set_user_attr("history", result.get("history", {}))
        if result.get("final_test_wrong") is not None:
            trial.set_user_attr("final_test_wrong", result["final_test_wrong"])
        diverged = bool(result.get("diverged", False))
        value = DIVERGED_VALUE if diverged else float(result["final_test_error"])
        try:
            study.tell(trial, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            # another worker declared this trial dead (missed heartbeats); its retry resumes
            # from the finished checkpoint and records the same result
            log(f"trial {trial.number} {label}: already failed by another worker")
            return "LOST"
    if not keep_checkpoints:
        ckpt.unlink(missing_ok=True)
    status = "diverged" if diverged else f"test error {value:.4f}"
    log(f"trial {trial.number} {label}: {status}")
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
) -> int:
    """Join the sweep ``study_name`` and run WAITING trials until none is left.

    Args:
        storage_url: SQLAlchemy URL of the store (any machine that reaches it may join).
        study_name: the sweep's study.
        out_dir: checkpoints go to ``out_dir/ckpt/<key>.pt``; default: the directory of a
            SQLite database, else ``runs/<study_name>``.
        max_trials: stop after this many trials (``None``: no limit).
        wait: when no trial is WAITING but some are RUNNING elsewhere, keep polling (a dead
            worker's trial comes back as WAITING after ``grace_period``); ``False``: exit.
        heartbeat_interval, grace_period: seconds (see :func:`store.open_storage`).
        poll_interval: seconds between polls while waiting (default: 2, or the heartbeat
            interval if shorter).
        threads: ``torch.set_num_threads`` for this process (``None``: leave as is).
        progress: per-epoch progress bar of each run.
        keep_checkpoints: keep ``<key>.pt`` after a run completes (default: delete it).
        log: called with one line per finished trial (default: print to stderr).

    Returns:
        The number of trials this worker ran.
    """
    import optuna
    from optuna.trial import TrialState

    if max_trials is not None and (not isinstance(max_trials, int) or max_trials < 0):
        raise ValueError(f"max_trials must be a non-negative integer, got {max_trials!r}")
    if log is None:

        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    storage = open_storage(storage_url, heartbeat_interval=heartbeat_interval,
                           grace_period=grace_period)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StoreError(f"study {study_name!r} not found in the storage") from None
    study_id = storage.get_study_id_from_name(study_name)
    ckpt_dir = Path(out_dir) if out_dir is not None else _default_out_dir(storage_url, study_name)
    ckpt_dir = ckpt_dir / "ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    poll = min(2.0, heartbeat_interval) if poll_interval is None else poll_interval
    ran = 0
    while max_trials is None or ran < max_trials:
        _adopt_silent_trials(storage, study_id, grace_period)
        optuna.storages.fail_stale_trials(study)
        trial_id = _claim(storage, study_id)
        if trial_id is None:
            running = storage.get_all_trials(study_id, deepcopy=False,
                                             states=(TrialState.RUNNING,))
            if wait and running:
                time.sleep(poll)
                continue
            break
        _run_trial(study, storage, trial_id, ckpt_dir, log, progress, keep_checkpoints)
        ran += 1
    return ran


# ------------------------------------------------------------------------------ status


def sweep_status(storage_url: str, study_name: str, storage=None) -> dict[str, int]:
    """Counts per key: ``total`` planned keys, ``complete``, ``running``, ``waiting``,
    ``failed`` (keys whose trials all failed), ``diverged`` (complete but diverged)."""
    import optuna

    if storage is None:
        storage = open_storage(storage_url, heartbeat_interval=None, grace_period=None)
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
        if "COMPLETE" in states:
            counts["complete"] += 1
        elif "RUNNING" in states:
            counts["running"] += 1
        elif "WAITING" in states:
            counts["waiting"] += 1
        else:
            counts["failed"] += 1
    return counts


def summary_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A text table: per experiment, optimizer, schedule and epochs, the best run.

    Columns: runs, complete, diverged, best final test error [%] and its lr and decay
    (lambda, or lambda_norm marked ``n=``), mean over seeds of that setting.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        gk = (r.get("experiment"), r["optimizer"], r["schedule"], r["epochs"],
              "norm" if r.get("weight_decay_norm") is not None else "raw")
        groups.setdefault(gk, []).append(r)
    header = ("experiment", "optimizer", "schedule", "epochs", "runs", "done", "div",
              "best err %", "lr", "decay")
    rows = [header]
    for (exp, opt, sched, epochs, kind), rs in groups.items():
        done = [r for r in rs if r["state"] == "COMPLETE"]
        div = sum(1 for r in done if r.get("diverged"))
        settings: dict[tuple, list[float]] = {}
        for r in done:
            err = r.get("final_test_error")
            if r.get("diverged") or err is None or not math.isfinite(err):
                continue
            decay = r["weight_decay_norm"] if kind == "norm" else r["weight_decay"]
            settings.setdefault((r["lr"], decay), []).append(err)
        if settings:
            (lr, decay), errs = min(settings.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
            best = f"{100 * sum(errs) / len(errs):.2f}"
            lr_s = f"{lr:.3g}"
            decay_s = f"n={decay:.3g}" if kind == "norm" else f"{decay:.3g}"
        else:
            best, lr_s, decay_s = "-", "-", "-"
        rows.append((str(exp), opt, sched, str(epochs), str(len(rs)), str(len(done)),
                     str(div), best, lr_s, decay_s))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ local


def _worker_process(storage_url: str, study_name: str, out_dir: str | None,
                    heartbeat_interval: int, grace_period: int) -> None:
    """Entry point of a spawned local worker (one torch thread, logs to stderr)."""
    import warnings

    warnings.filterwarnings("ignore")
    run_worker(storage_url, study_name, out_dir=out_dir, threads=1,
               heartbeat_interval=heartbeat_interval, grace_period=grace_period,
               log=lambda line: None)


def run_local(
    spec: Mapping[str, Any],
    storage_url: str,
    study_name: str | None = None,
    *,
    workers: int = 1,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int = DEFAULT_GRACE_PERIOD,
    stream=None,
) -> list[dict[str, Any]]:
    """Create/resume the sweep and run it with ``workers`` local processes; return records.

    Workers are started with the ``spawn`` context and one torch thread each; the parent
    shows a tqdm bar over the planned runs and prints :func:`summary_table` at the end.
    ``workers=0`` runs the trials in this process (no subprocess).
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    stream = sys.stderr if stream is None else stream
    result = create_sweep(spec, storage_url, study_name)
    name = result.study_name
    out = str(out_dir) if out_dir is not None else None
    total = len(result.runs)
    status_storage = open_storage(storage_url, heartbeat_interval=None, grace_period=None)
    counts = sweep_status(storage_url, name, status_storage)
    print(f"sweep {name!r}: {total} runs, {counts['complete']} already complete, "
          f"{result.enqueued} enqueued, {workers} worker(s)", file=stream, flush=True)
    if workers == 0:
        run_worker(storage_url, name, out_dir=out, heartbeat_interval=heartbeat_interval,
                   grace_period=grace_period, wait=False,
                   log=lambda line: print(line, file=stream, flush=True))
    else:
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_worker_process,
                        args=(storage_url, name, out, heartbeat_interval, grace_period),
                        name=f"weightdecay-worker-{i}")
            for i in range(workers)
        ]
        for p in procs:
            p.start()
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
                counts = sweep_status(storage_url, name, status_storage)
                bar.n = counts["complete"]
                bar.refresh()
                bar.close()
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            print(f"warning: {len(bad)} worker(s) exited with codes {bad}", file=stream)
    records = load_records(storage_url, name)
    print(summary_table(records), file=stream, flush=True)
    return records


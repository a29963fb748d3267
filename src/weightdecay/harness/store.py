"""The result store of the experiment harness: one Optuna study per sweep.

Every planned run of a sweep is one Optuna trial, enqueued once with a ``"key"`` user
attribute (:meth:`weightdecay.harness.config.RunConfig.key` of the config and the
experiment name). A finished trial holds, in its user attributes, everything the report
reads: ``"config"``, ``"experiment"``, ``"figure"``, ``"history"``, ``"final_test_error"``,
``"best_test_error"``, ``"final_train_loss"``, ``"diverged"``, ``"wall_seconds"``,
``"key"``. The study's user attributes hold ``"spec"`` (the sweep spec) and
``"versions"``. Figures are drawn only from what :func:`load_records` returns: the
results live in the store, and the report reads nothing else.

Storage is any SQLAlchemy URL that Optuna's :class:`optuna.storages.RDBStorage` accepts:
``sqlite:///DIR/store.db`` by default, ``postgresql+psycopg2://user@host/db`` for many
machines. Two things are added on top of Optuna:

- SQLite transactions start with ``BEGIN IMMEDIATE``. pysqlite otherwise runs the read of
  Optuna's "pop a WAITING trial" outside a transaction, so two processes could both see a
  trial WAITING and both mark it RUNNING. PostgreSQL is safe as is: Optuna reads the row
  ``SELECT ... FOR UPDATE``.
- :func:`sweep_lock`, an inter-process lock (a lock file beside a SQLite database, an
  advisory lock on PostgreSQL) held while a sweep's trials are enqueued, so concurrent
  creators never enqueue a key twice.

Length (~490 lines): storage access (URLs, opening, the lock) and the record contract the
report reads (records, export) share the URL handling and the study loading; the
report imports this one module.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (the
experiments of Sec. 4 / Figs. 1-4 are sweeps of such runs).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import platform
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "EXPORT_COLUMNS",
    "StoreError",
    "check_storage",
    "describe_url",
    "export_trials",
    "load_records",
    "load_spec_attrs",
    "study_names",
    "open_storage",
    "sqlite_path",
    "sqlite_url",
    "sweep_lock",
    "trial_record",
    "versions",
]

#: default heartbeat of a running trial [seconds] and the silence after which another
#: worker declares it dead and re-enqueues it [seconds]
DEFAULT_HEARTBEAT_INTERVAL = 20
DEFAULT_GRACE_PERIOD = 120
#: SQLite waits this long for a lock held by another process [seconds]
_SQLITE_BUSY_TIMEOUT = 120.0

#: columns of :func:`export_trials`, in order
EXPORT_COLUMNS = (
    "trial_number",
    "experiment",
    "figure",
    "dataset",
    "model",
    "optimizer",
    "lr",
    "weight_decay",
    "weight_decay_norm",
    "decay_convention",
    "schedule",
    "epochs",
    "batch_size",
    "seed",
    "width",
    "test_size",
    "state",
    "diverged",
    "final_test_error",
    "best_test_error",
    "final_train_loss",
    "wall_seconds",
    "num_test",
    "key",
)

_RESULT_ATTRS = ("final_test_error", "best_test_error", "final_train_loss", "wall_seconds",
                 "num_test")


class StoreError(ValueError):
    """A storage URL that is malformed or cannot be reached, or a study that is missing."""


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def sqlite_url(path: str | os.PathLike) -> str:
    """``sqlite:///ABSOLUTE_PATH`` for a database file ``path``."""
    return f"sqlite:///{Path(path).resolve()}"


def _parse_url(url: str):
    import sqlalchemy.engine
    from sqlalchemy.exc import ArgumentError

    if not isinstance(url, str) or not url.strip():
        raise StoreError(f"storage URL must be a non-empty string, got {url!r}")
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(f"storage URL {url!r} is malformed: {exc}") from None
    return parsed


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL; ``None`` for any other backend.

    Raises:
        StoreError: a malformed URL, or an in-memory / URI-style SQLite database (it is
            not shared between processes and vanishes on exit: give a file).
    """
    parsed = _parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:") or "mode=memory" in str(url):
        raise StoreError(
            f"storage URL {url!r} is an in-memory SQLite database, which workers cannot "
            "share and which vanishes on exit; give a file, e.g. sqlite:///runs/x/store.db"
        )
    return Path(db)


def describe_url(url: str) -> str:
    """The URL with any password hidden (safe to print)."""
    try:
        return _parse_url(url).render_as_string(hide_password=True)
    except StoreError:
        return repr(url)


def check_storage(url: str, *, must_exist: bool = False) -> None:
    """Raise :class:`StoreError` unless ``url`` is a well-formed, reachable database.

    Nothing is created: a SQLite file must already exist (``must_exist``: commands that
    only read a store) or its directory must exist (the file is created later, by
    :func:`open_storage`); a server database is connected to and disconnected from at once.
    """
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    parsed = _parse_url(url)
    backend = parsed.get_backend_name()
    path = sqlite_path(url)
    if path is not None:
        if path.exists():
            if not path.is_file():
                raise StoreError(f"storage URL {url!r}: {str(path)!r} is not a file")
        elif must_exist:
            raise StoreError(f"storage URL {url!r}: the database {str(path)!r} does not exist")
        elif not path.parent.is_dir():
            raise StoreError(
                f"storage URL {url!r}: directory {str(path.parent)!r} does not exist"
            )
        return
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args=_connect_args(backend))
    except (SQLAlchemyError, ImportError, ValueError, TypeError) as exc:
        raise StoreError(
            f"storage URL {describe_url(url)} is not usable: {_first_line(exc)}"
        ) from None
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # driver errors do not share a base class
        raise StoreError(
            f"cannot connect to storage {describe_url(url)}: {_first_line(exc)}"
        ) from None
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _connect_args(backend: str) -> dict[str, Any]:
    if backend == "postgresql":
        return {"connect_timeout": 10}
    return {}


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int | None = DEFAULT_GRACE_PERIOD,
    max_retry: int | None = 3,
):
    """An :class:`optuna.storages.RDBStorage` for ``url`` with heartbeats and retries.

    Args:
        url: SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg2://...``, ...).
        heartbeat_interval: seconds between heartbeats of a running trial; ``None``
            disables heartbeats (then a killed worker's trial stays RUNNING).
        grace_period: seconds without a heartbeat after which a RUNNING trial is failed
            and re-enqueued as WAITING (same user attributes, so it resumes its checkpoint).
        max_retry: how often one trial is re-enqueued after going stale (``None``: always).

    Raises:
        StoreError: malformed or unreachable URL.
    """
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    optuna = _optuna()
    check_storage(url)
    for name, value in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name} must be a positive integer of seconds, got {value!r}")
    backend = _parse_url(url).get_backend_name()
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        # isolation_level=None: pysqlite emits no BEGIN of its own; the "begin" listener
        # below emits BEGIN IMMEDIATE, so that every transaction holds the write lock.
        engine_kwargs["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT, "isolation_level": None}
    else:
        engine_kwargs["connect_args"] = _connect_args(backend)
        engine_kwargs["pool_pre_ping"] = True
    callback = None
    if heartbeat_interval is not None:
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    try:
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=callback,
        )
    except (SQLAlchemyError, ImportError, RuntimeError) as exc:
        raise StoreError(f"cannot open storage {describe_url(url)}: {_first_line(exc)}") from None
    if backend == "sqlite":

        def _begin_immediate(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        sqlalchemy.event.listen(storage.engine, "begin", _begin_immediate)
    return storage


@contextlib.contextmanager
def sweep_lock(url: str, study_name: str, *, timeout: float = 600.0) -> Iterator[None]:
    """Hold an inter-process lock on ``study_name`` in ``url`` (blocking, ``timeout`` s).

    SQLite: ``flock`` on ``<database>.lock`` (SQLite is a local file; every process that
    writes it runs on this machine). PostgreSQL: ``pg_advisory_lock`` on a hash of the
    study name, held on a connection of its own. MySQL: ``GET_LOCK``. Other backends:
    no lock (a warning is issued).
    """
    import sqlalchemy

    parsed = _parse_url(url)
    backend = parsed.get_backend_name()
    digest = hashlib.sha256(f"weightdecay-sweep:{study_name}".encode()).digest()
    lock_id = int.from_bytes(digest[:8], "big", signed=True)
    if backend == "sqlite":
        path = sqlite_path(url)
        assert path is not None  # in-memory databases are refused by sqlite_path
        with open(f"{path}.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    if backend not in ("postgresql", "mysql", "mariadb"):
        warnings.warn(
            f"no inter-process lock for backend {backend!r}; do not create the same sweep "
            "from two processes at once",
            stacklevel=3,
        )
        yield
        return
    engine = sqlalchemy.create_engine(parsed, connect_args=_connect_args(backend))
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                conn.exec_driver_sql(f"SET lock_timeout = {int(timeout * 1000)}")
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": lock_id})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_id})
                    conn.commit()
            else:
                name = f"wd-{digest.hex()[:32]}"
                got = conn.execute(
                    sqlalchemy.text("SELECT GET_LOCK(:n, :t)"), {"n": name, "t": int(timeout)}
                ).scalar()
                if got != 1:
                    raise StoreError(f"could not lock study {study_name!r} in {timeout} s")
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
    finally:
        engine.dispose()


def versions() -> dict[str, str]:
    """Versions recorded with every sweep: python, torch, weightdecay, optuna (+ platform)."""
    import optuna
    import torch

    import weightdecay

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "weightdecay": weightdecay.__version__,
        "optuna": optuna.__version__,
        "platform": platform.platform(),
    }


def _load_study(url: str, study_name: str, storage=None):
    optuna = _optuna()
    if storage is None:
        check_storage(url, must_exist=True)  # reading a store never creates one
        storage = open_storage(url, heartbeat_interval=None, grace_period=None)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        known = ", ".join(names) if names else "none"
        raise StoreError(
            f"study {study_name!r} not found in {describe_url(url)} (studies there: {known})"
        ) from None


def study_names(url: str) -> list[str]:
    """Names of the studies in the store at ``url`` (which must exist)."""
    check_storage(url, must_exist=True)
    storage = open_storage(url, heartbeat_interval=None, grace_period=None)
    return list(_optuna().get_all_study_names(storage))


def load_spec_attrs(url: str, study_name: str) -> dict[str, Any]:
    """The study's user attributes (``"spec"``, ``"versions"``, ...)."""
    return dict(_load_study(url, study_name).user_attrs)


def _as_float(value: Any) -> float:
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def trial_record(trial) -> dict[str, Any]:
    """Flatten one :class:`optuna.trial.FrozenTrial` into the record of the contract.

    Keys: every RunConfig field, ``experiment``, ``figure``, ``trial_number``, ``state``,
    ``diverged``, ``final_test_error``, ``best_test_error``, ``final_train_loss``,
    ``wall_seconds`` (floats; NaN when unknown or diverged), ``history`` (dict of per-epoch
    lists; empty lists when the trial has not finished), ``final_test_wrong`` (which test
    examples the final model misclassifies, ``train.pack_wrong``; ``None`` when unknown)
    and ``key``.
    """
    from weightdecay.harness.config import RunConfig

    attrs = trial.user_attrs
    config = RunConfig.from_dict(attrs.get("config", {})).to_dict()
    record: dict[str, Any] = dict(config)
    record["experiment"] = attrs.get("experiment")
    record["figure"] = attrs.get("figure")
    record["key"] = attrs.get("key")
    record["trial_number"] = trial.number
    record["state"] = trial.state.name
    record["diverged"] = bool(attrs.get("diverged", False))
    for name in _RESULT_ATTRS:
        record[name] = _as_float(attrs.get(name))
    if record["diverged"]:
        record["final_test_error"] = float("nan")
    history = attrs.get("history") or {}
    record["history"] = {
        name: list(history.get(name, []))
        for name in ("epoch", "train_loss", "test_error", "weight_norm", "eta", "effective_decay",
                     "test_wrong")
    }
    for name, values in history.items():
        record["history"].setdefault(name, list(values))
    # which test examples the final model got wrong (train.pack_wrong), for paired
    # bootstraps over test examples; None for old stores, diverged or unfinished trials
    wrong = attrs.get("final_test_wrong")
    record["final_test_wrong"] = wrong if isinstance(wrong, str) else None
    if "error" in attrs:
        record["error"] = attrs["error"]
    return record


_STATE_RANK = {"COMPLETE": 3, "RUNNING": 2, "WAITING": 1}


def load_records(storage_url: str, study_name: str) -> list[dict[str, Any]]:
    """One record per planned run (key) of the sweep ``study_name`` in ``storage_url``.

    For each key the COMPLETE trial is returned if there is one, else the latest trial
    (highest trial number). Records come in the order the runs were planned. See
    :func:`trial_record` for the keys.

    Raises:
        StoreError: malformed/unreachable URL or unknown study.
    """
    study = _load_study(storage_url, study_name)
    chosen: dict[str, Any] = {}
    order: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        key = trial.user_attrs.get("key")
        if key is None or "config" not in trial.user_attrs:
            continue  # not a trial of this harness
        order.setdefault(key, trial.number)
        current = chosen.get(key)
        if current is None:
            chosen[key] = trial
            continue
        cur_complete = current.state.name == "COMPLETE"
        new_complete = trial.state.name == "COMPLETE"
        if new_complete and not cur_complete:
            chosen[key] = trial
        elif new_complete == cur_complete and trial.number > current.number and not cur_complete:
            chosen[key] = trial
    keys = sorted(chosen, key=lambda k: order[k])
    return [trial_record(chosen[k]) for k in keys]


def _export_row(record: Mapping[str, Any]) -> dict[str, Any]:
    row = {name: record.get(name) for name in EXPORT_COLUMNS}
    for name in _RESULT_ATTRS:
        value = row[name]
        if isinstance(value, float) and math.isnan(value):
            row[name] = None
    return row


def export_trials(
    storage_url: str,
    study_name: str,
    fmt: str = "csv",
    path: str | os.PathLike | None = None,
) -> str:
    """Every trial of the study (retries and failures included) as CSV or JSON.

    One row per trial with the columns :data:`EXPORT_COLUMNS` (dataset, model, optimizer,
    lr, weight_decay, decay_convention, schedule, epochs, batch_size, seed, state, final
    and best test error, final train loss, wall seconds, ...). Unknown values are empty
    (CSV) or ``null`` (JSON). Writes to ``path`` when given; returns the text.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"fmt={fmt!r} is not valid; use 'csv' or 'json'")
    study = _load_study(storage_url, study_name)
    rows = [
        _export_row(trial_record(t))
        for t in study.get_trials(deepcopy=False)
        if "config" in t.user_attrs
    ]
    if fmt == "json":
        text = json.dumps(rows, indent=1) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(EXPORT_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
        text = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return text

"""The result store of the experiment harness: one Optuna study per sweep.

Every planned run of a sweep is one Optuna trial, enqueued once with a ``"key"`` user
attribute (:meth:`weightdecay.harness.config.RunConfig.key` of the config and the
experiment name). A finished trial holds, in its user attributes, everything the report
reads: ``"config"``, ``"experiment"``, ``"figure"``, ``"history"``, ``"final_test_error"``,
``"best_test_error"``, ``"final_train_loss"``, ``"diverged"``, ``"wall_seconds"``,
``"key"``, and ``"worker"`` (``host:pid`` of the process that claimed it). The study's user
attributes hold ``"spec"`` (the sweep spec), ``"versions"`` and the mark
:data:`STUDY_MARK` of a study weightdecay created (or was told to adopt): a study without
it belongs to another program and is not touched (:func:`is_weightdecay_study`). Figures
are drawn only from what :func:`load_records` returns (:mod:`weightdecay.harness.records`,
whose names are importable from here too): the results live in the store, and the report
reads nothing else.

Storage is any SQLAlchemy URL that Optuna's :class:`optuna.storages.RDBStorage` accepts:
``sqlite:///DIR/store.db`` by default, ``postgresql+psycopg2://user@host/db`` for many
machines. Added on top of Optuna:

- SQLite transactions start with ``BEGIN IMMEDIATE``. pysqlite otherwise runs the read of
  Optuna's "pop a WAITING trial" outside a transaction, so two processes could both see a
  trial WAITING and both mark it RUNNING. PostgreSQL is safe as is: Optuna reads the row
  ``SELECT ... FOR UPDATE``.
- :func:`sweep_lock`, an inter-process lock (a lock file beside a SQLite database, an
  advisory lock on PostgreSQL) held while a sweep's trials are enqueued, so concurrent
  creators never enqueue a key twice.
- A trial that goes stale is re-enqueued without the claim of the worker that lost it
  (:data:`WORKER_ATTR`), and the heartbeat interval and grace period are checked against
  each other (:func:`check_timing`).

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (the
experiments of Sec. 4 / Figs. 1-4 are sweeps of such runs).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import platform
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from weightdecay._io import check_inside

__all__ = [
    "STUDY_MARK",
    "WORKER_ATTR",
    "StoreError",
    "check_storage",
    "check_timing",
    "describe_url",
    "is_weightdecay_study",
    "load_spec_attrs",
    "study_names",
    "open_storage",
    "sqlite_path",
    "sqlite_url",
    "sweep_lock",
    "versions",
]

#: default heartbeat of a running trial [seconds] and the silence after which another
#: worker declares it dead and re-enqueues it [seconds]
DEFAULT_HEARTBEAT_INTERVAL = 20
DEFAULT_GRACE_PERIOD = 120
#: SQLite waits this long for a lock held by another process [seconds]
_SQLITE_BUSY_TIMEOUT = 120.0

#: the study user attribute that marks a study weightdecay created (or adopted on purpose)
STUDY_MARK = "weightdecay"
#: the trial user attribute naming the worker that claimed it: ``"host:pid"``
WORKER_ATTR = "worker"

_RESULT_ATTRS = ("final_test_error", "best_test_error", "final_train_loss", "wall_seconds")


class StoreError(ValueError):
    """A storage URL that is malformed or cannot be reached, or a study that is missing."""


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def sqlite_url(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> str:
    """``sqlite:///ABSOLUTE_PATH`` for a database file ``path``, for any character in it.

    The path is percent-encoded (everything but letters, digits, ``_.-~`` and ``/``), so
    that ``?``, ``#``, ``%``, ``{``, spaces or non-ASCII letters in a folder name name that
    folder: :func:`sqlite_path` of the URL is ``path`` (absolute, links resolved).

    Raises:
        weightdecay._io.UnsafePathError: ``root`` is given (the user's output folder) and
            ``path``, or a folder on its way, is a symbolic link that leads out of it.
        StoreError: the path is not valid UTF-8 (no URL can name it).
    """
    if root is not None:
        check_inside(path, root)
    resolved = str(Path(path).resolve())
    try:
        resolved.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"the store path {resolved!r} is not valid UTF-8; rename the "
                         "folder") from None
    return "sqlite:///" + urllib.parse.quote(resolved, safe="/")


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


#: the query options a sqlite:/// URL may carry (pysqlite's connect arguments and SQLite's
#: URI parameters)
_SQLITE_QUERY = {"timeout", "isolation_level", "detect_types", "check_same_thread",
                 "cached_statements", "uri", "mode", "cache", "vfs", "immutable", "nolock",
                 "modeof"}


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
    if not db or db == ":memory:" or "mode=memory" in str(url):
        raise StoreError(
            f"storage URL {url!r} is an in-memory SQLite database, which workers cannot "
            "share and which vanishes on exit; give a file, e.g. sqlite:///runs/x/store.db"
        )
    if db.startswith("file:"):
        raise StoreError(
            f"storage URL {url!r} is a SQLite URI filename; give the file's path, e.g. "
            "sqlite:///runs/x/store.db (weightdecay.harness.store.sqlite_url builds one)"
        )
    query = url.partition("?")[2]
    unknown = sorted({k for k, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
                     - _SQLITE_QUERY)
    if unknown:  # most likely a '?' meant as part of the path: the store would land elsewhere
        raise StoreError(
            f"storage URL {url!r} puts the database at {db!r} and passes SQLite options it "
            f"does not take ({', '.join(unknown)}); a '?' in a path is written %3F in a URL "
            "(or give --out and let weightdecay build the URL)"
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
        StoreError: malformed or unreachable URL, or a grace period shorter than two
            heartbeat intervals (:func:`check_timing`).
    """
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    optuna = _optuna()
    check_timing(heartbeat_interval, grace_period)
    check_storage(url)
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
        callback = _retry_stale_callback(max_retry)
    try:
        storage = optuna.storages.RDBStorage(
            # Optuna fills its URL in with str.format: braces in a path must stay braces
            url.replace("{", "{{").replace("}", "}}"),
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


def check_timing(heartbeat_interval: int | None, grace_period: int | None) -> None:
    """Check a worker's heartbeat interval and grace period [seconds] against each other.

    Each must be a positive integer (or ``None``: no heartbeat / Optuna's default of two
    intervals). The grace period must be at least two heartbeat intervals: a trial is then
    declared dead only after it missed a whole beat, never between two beats of a worker
    that is alive (which would run the trial twice).

    Raises:
        ValueError: a value that is not a positive integer.
        StoreError: ``grace_period < 2 * heartbeat_interval``.
    """
    for name, value in (("heartbeat_interval", heartbeat_interval),
                        ("grace_period", grace_period)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            raise ValueError(f"{name} must be a positive integer of seconds, got {value!r}")
    if heartbeat_interval is not None and grace_period is not None \
            and grace_period < 2 * heartbeat_interval:
        raise StoreError(
            f"grace period {grace_period} s (--grace-period) must be at least twice the "
            f"heartbeat interval {heartbeat_interval} s (--heartbeat-interval): a worker "
            "that is alive would be declared dead between two beats and its trial run twice")


def _retry_stale_callback(max_retry: int | None):
    import optuna

    class RetryStale(optuna.storages.RetryHeartbeatStaleTrialCallback):
        """Optuna's retry of a stale trial, without the claim of the worker that lost it
        (the copy is claimed afresh) or any result it may have begun to write."""

        def __call__(self, study, trial) -> None:
            attrs = trial.user_attrs
            for name in (WORKER_ATTR, "error", "diverged", "history", "final_test_wrong",
                         "num_test", *_RESULT_ATTRS):
                attrs.pop(name, None)
            super().__call__(study, trial)

    return RetryStale(max_retry=max_retry)


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
        lock = f"{path}.lock"
        try:  # never through a link: the lock file is ours, beside the database
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreError(f"the lock file {lock!r} is a symbolic link; refusing to "
                                 "follow it (remove it)") from None
            raise
        with os.fdopen(fd, "r+") as fh:
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


def is_weightdecay_study(user_attrs: Mapping[str, Any]) -> bool:
    """Whether a study with these user attributes was created by weightdecay (or adopted on
    purpose): it carries :data:`STUDY_MARK`, or -- stores of versions before the mark --
    the ``spec`` and ``versions`` (naming weightdecay) that every sweep records."""
    if STUDY_MARK in user_attrs:
        return True
    old = user_attrs.get("versions")
    return "spec" in user_attrs and isinstance(old, Mapping) and "weightdecay" in old




_RECORDS = ("EXPORT_COLUMNS", "export_trials", "load_records", "trial_record")


def __getattr__(name: str) -> Any:
    """The record contract (:mod:`weightdecay.harness.records`), importable from here."""
    if name in _RECORDS:
        from . import records

        return getattr(records, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

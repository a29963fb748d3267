"""The record contract of a sweep's store: what the report and the export read.

:func:`load_records` returns one record per planned run of a sweep (the COMPLETE trial of
its key, else the latest), :func:`trial_record` flattens one trial, and
:func:`export_trials` writes every trial -- retries and failures included -- as CSV or
JSON with every RunConfig field and its type (:data:`EXPORT_COLUMNS`).

Stores written by another version are read where they can be: a config field this version
does not know is kept (``record["unknown_config"]``, an extra export column) and a config
it cannot validate is exported as stored but left out of the records; either is said in
one line on the ``weightdecay.harness.store`` logger (on stderr when logging is not
configured), never as a traceback. The names here are also importable from
:mod:`weightdecay.harness.store`.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (the
experiments of Sec. 4 / Figs. 1-4 are sweeps of such runs).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from weightdecay._io import check_inside, write_atomic

from .config import RunConfig
from .store import StoreError, _load_study, describe_url, sqlite_path

__all__ = ["EXPORT_COLUMNS", "export_trials", "load_records", "trial_record"]

logger = logging.getLogger("weightdecay.harness.store")

_RESULT_ATTRS = ("final_test_error", "best_test_error", "final_train_loss", "wall_seconds")
#: columns of :func:`export_trials`, in order: every RunConfig field (with its type), then
#: the results; a config field of another version that this one does not know is added
#: after them
EXPORT_COLUMNS = (
    "trial_number",
    "experiment",
    "figure",
    *RunConfig.field_names(),
    "state",
    "diverged",
    *_RESULT_ATTRS,
    "num_test",
    "error",
    "key",
)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _as_count(value: Any) -> int | None:
    """A count stored as an int (or by an older version as a float): an int, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if math.isfinite(value) and value == int(value) else None


def _read_config(raw: Any) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(config, unknown fields, problem) of a stored config: the fields this version knows,
    validated and with defaults filled in; those it does not know; and why the config is not
    valid here (then ``config`` holds the stored values as they are), else ``None``."""
    if not isinstance(raw, Mapping):
        return {}, {}, f"the config is a {type(raw).__name__}, not a mapping"
    names = RunConfig.field_names()
    known = {k: v for k, v in raw.items() if k in names}
    unknown = {str(k): v for k, v in raw.items() if k not in names}
    try:
        return RunConfig.from_dict(known).to_dict(), unknown, None
    except (ValueError, TypeError) as exc:
        defaults = {name: RunConfig.default(name) for name in names}
        return {**defaults, **known}, unknown, " ".join(str(exc).split())


def trial_record(trial) -> dict[str, Any]:
    """Flatten one :class:`optuna.trial.FrozenTrial` into the record of the contract.

    Keys: every RunConfig field, ``experiment``, ``figure``, ``trial_number``, ``state``,
    ``diverged``, ``final_test_error``, ``best_test_error``, ``final_train_loss``,
    ``wall_seconds`` (floats; NaN when unknown or diverged), ``num_test`` (an int, ``None``
    when unknown), ``history`` (dict of per-epoch lists; empty lists when the trial has not
    finished), ``final_test_wrong`` (which test examples the final model misclassifies,
    ``train.pack_wrong``; ``None`` when unknown) and ``key``; ``error`` for a failed
    trial. A store of another version adds ``unknown_config`` (the config fields this
    version does not know) or ``config_error`` (why its config is not valid here).
    """
    attrs = trial.user_attrs
    config, unknown, problem = _read_config(attrs.get("config", {}))
    record: dict[str, Any] = dict(config)
    record["experiment"] = attrs.get("experiment")
    record["figure"] = attrs.get("figure")
    record["key"] = attrs.get("key")
    record["trial_number"] = trial.number
    record["state"] = trial.state.name
    record["diverged"] = bool(attrs.get("diverged", False))
    for name in _RESULT_ATTRS:
        record[name] = _as_float(attrs.get(name))
    record["num_test"] = _as_count(attrs.get("num_test"))
    if record["diverged"]:
        record["final_test_error"] = float("nan")
    history = attrs.get("history")
    history = history if isinstance(history, Mapping) else {}
    record["history"] = {
        name: list(history.get(name) or [])
        for name in ("epoch", "train_loss", "test_error", "weight_norm", "eta", "effective_decay",
                     "test_wrong")
    }
    for name, values in history.items():
        if isinstance(values, list):
            record["history"].setdefault(name, list(values))
    # which test examples the final model got wrong (train.pack_wrong), for paired
    # bootstraps over test examples; None for old stores, diverged or unfinished trials
    wrong = attrs.get("final_test_wrong")
    record["final_test_wrong"] = wrong if isinstance(wrong, str) else None
    if "error" in attrs:
        record["error"] = attrs["error"]
    if unknown:
        record["unknown_config"] = unknown
    if problem is not None:
        record["config_error"] = problem
    return record


def _ours(trial) -> bool:
    return trial.user_attrs.get("key") is not None and "config" in trial.user_attrs


def _say_compat(url: str, study_name: str, records: list[dict[str, Any]], what: str) -> None:
    """One line on the store's logger about the records another version wrote."""
    unknown = sorted({n for r in records for n in r.get("unknown_config", ())})
    invalid = [r["config_error"] for r in records if "config_error" in r]
    parts = []
    if unknown:
        n = sum("unknown_config" in r for r in records)
        parts.append(f"{n} trial(s) hold config fields this version of weightdecay does not "
                     f"know ({', '.join(unknown)})")
    if invalid:
        parts.append(f"{len(invalid)} trial(s) hold a config this version cannot read "
                     f"(first: {invalid[0][:160]})")
    if parts:
        logger.warning("store %s, study %r: %s; %s", describe_url(url), study_name,
                       "; ".join(parts), what)


_STATE_RANK = {"COMPLETE": 3, "RUNNING": 2, "WAITING": 1}


def load_records(storage_url: str, study_name: str) -> list[dict[str, Any]]:
    """One record per planned run (key) of the sweep ``study_name`` in ``storage_url``.

    For each key the COMPLETE trial is returned if there is one, else the latest trial
    (highest trial number). Records come in the order the runs were planned. See
    :func:`trial_record` for the keys. Trials whose config this version cannot read are
    left out, and said so in one line (see the module docstring).

    Raises:
        StoreError: malformed/unreachable URL or unknown study.
    """
    study = _load_study(storage_url, study_name)
    chosen: dict[str, Any] = {}
    order: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        if not _ours(trial):
            continue  # not a trial of this harness
        key = str(trial.user_attrs["key"])
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
    records = [trial_record(chosen[k]) for k in keys]
    _say_compat(storage_url, study_name, records,
                "those it cannot read are left out, unknown fields are ignored")
    return [r for r in records if "config_error" not in r]


def _cell(value: Any) -> Any:
    """An export value: NaN/inf as None (empty in CSV, null in JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _check_not_the_store(path: str | os.PathLike, storage_url: str) -> None:
    """Refuse an export path that is the SQLite store (or one of its side files), by name
    or as the same file (symbolic or hard links)."""
    db = sqlite_path(storage_url)
    if db is None:
        return
    target = Path(os.path.realpath(path))
    for suffix in ("", "-journal", "-wal", "-shm", ".lock"):
        side = Path(f"{db}{suffix}")
        same = target == Path(os.path.realpath(side))
        with contextlib.suppress(OSError):
            same = same or os.path.samefile(path, side)
        if same:
            raise StoreError(f"refusing to export to {os.fspath(path)!r}: it is the store "
                             f"{describe_url(storage_url)} being read; choose another file")


def export_trials(
    storage_url: str,
    study_name: str,
    fmt: str = "csv",
    path: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
) -> str:
    """Every trial of the study (retries and failures included) as CSV or JSON.

    One row per trial with the columns :data:`EXPORT_COLUMNS`: every RunConfig field, with
    its type (ints stay ints, ``milestones`` a list -- JSON text in a CSV cell), the state,
    results and error; a config field of another version that this one does not know is an
    extra column (said in one line). Unknown values are empty (CSV) or ``null`` (JSON).

    Writes to ``path`` when given, atomically; ``root`` (the user's output folder): a
    symbolic link on the way that leads out of it is refused. Returns the text.

    Raises:
        StoreError: ``path`` is the store being read (by name or as the same file).
        weightdecay._io.UnsafePathError: ``path`` leads out of ``root``.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"fmt={fmt!r} is not valid; use 'csv' or 'json'")
    if path is not None:
        _check_not_the_store(path, storage_url)
        if root is not None:
            check_inside(path, root)
    study = _load_study(storage_url, study_name)
    records = [trial_record(t) for t in study.get_trials(deepcopy=False)
               if "config" in t.user_attrs]
    extra = sorted({n for r in records for n in r.get("unknown_config", ())})
    columns = [*EXPORT_COLUMNS, *(n if n not in EXPORT_COLUMNS else f"config.{n}"
                                  for n in extra)]
    rows = []
    for r in records:
        unknown = r.get("unknown_config", {})
        row = {name: _cell(r.get(name)) for name in EXPORT_COLUMNS}
        row.update({col: _cell(unknown.get(n)) for col, n in zip(columns[len(EXPORT_COLUMNS):],
                                                                  extra)})
        rows.append(row)
    _say_compat(storage_url, study_name, records, "exported as stored")
    if fmt == "json":
        text = json.dumps(rows, indent=1) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        text = buf.getvalue()
    if path is not None:
        write_atomic(path, text, root=root)
    return text


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value

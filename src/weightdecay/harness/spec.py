"""Sweep specs: a TOML/JSON file (or a dict) -> validated, expanded run configs, once.

A **sweep spec** declares experiments; each experiment is a grid over optimizers (each
with its own learning-rate grid and weight-decay grid), schedules, epoch budgets, batch
sizes and seeds. :func:`plan_sweep` checks it completely and expands it, deterministically,
into :class:`PlannedRun` s (a :class:`RunConfig` plus the experiment name and paper
figure)::

    name = "my-sweep"                  # default study name: letters, digits, . _ -
    description = "free text"

    [defaults]                         # experiment keys shared by every experiment
    dataset = "mnist1d"                # or your own: "package.module:function"
    model = "cnn1d_bn"                 # (docs/own-model.md)

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
      band = {lr = 0.025, weight_decay = 2e-4, slope = 0.0, cells = 5}   # optional

A ``band`` keeps, in every lr row of its entry, the ``cells`` decay values nearest (in log)
to a line through ``(lr, weight_decay)`` with ``slope`` (:mod:`.band`): the same cells for
every seed, schedule and budget. It is named by the entry's decay key. With ``extend = n``
it grows, given the outcomes of its runs (:func:`plan_sweep`), by up to n values per row
where the row's optimum sits on its edge.

A ``model`` or ``dataset`` named by an import string is imported when the spec is planned,
to record the hash of its source in every run (``RunConfig.source_hash``, part of the key):
planning a spec runs the code it names, as training it does.

A grid that is not given takes the :class:`RunConfig` default (one value). The grid
order is: experiment, optimizer entry, schedule, epochs, batch size, lr, weight decay,
seed. Unknown keys, impossible grids (empty, duplicate values, non-positive lr, negative
decay, ...) and invalid scalars (``T_0 = "abc"`` even where no restart schedule uses it)
raise :class:`SpecError` naming the key. A spec planning more than ``max_runs`` runs
(default :data:`DEFAULT_MAX_RUNS`) is refused after counting its grids, before a single
run config is built.

The same spec can be described by the flags of ``weightdecay sweep`` (one experiment):
:func:`grid_spec` builds it, and :func:`parse_number` reads their numbers (``2**-10``).

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4
(grids in powers of 2 over (alpha, lambda), Figs. 1-4 and Supp. Figs. 1, 3).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import registry
from ..registry import DATASETS, EXPERIMENTS, MODELS, OPTIMIZERS, SCHEDULES
from .band import band_cells, bracket_next, check_band
from .config import RunConfig, is_finite_number
from .flags import parse_ints, parse_names, parse_number, parse_numbers

__all__ = [
    "DEFAULT_MAX_RUNS",
    "PlannedRun",
    "SpecError",
    "SweepPlan",
    "check_study_name",
    "expand_spec",
    "GRID_KEYS",
    "grid_spec",
    "load_spec",
    "parse_ints",
    "parse_names",
    "parse_number",
    "parse_numbers",
    "plan_sweep",
    "validate_spec",
    "with_seeds",
]

#: the most runs one sweep may plan unless the caller raises it (``--max-runs``)
DEFAULT_MAX_RUNS = 10_000
#: the largest spec file read [bytes]; a real spec is a few kB
MAX_SPEC_BYTES = 16 * 2**20
#: the deepest nesting of tables and lists: a spec needs 6 (spec > experiments > [i] >
#: optimizers > [j] > lr)
MAX_SPEC_DEPTH = 8
#: study names become folder names (``runs/<study>``): a safe character set, no separators
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

_TOP_KEYS = ("name", "description", "defaults", "experiments")
# grid key of a spec -> the RunConfig field it sets (a list, or a scalar = a one-value grid)
_GRID_FIELDS = {"schedules": "schedule", "epochs": "epochs", "batch_size": "batch_size",
                "seeds": "seed"}
_GRID_KEYS = tuple(_GRID_FIELDS)
_ENTRY_FIELDS = ("optimizer", "lr", "weight_decay", "weight_decay_norm")
# RunConfig fields an experiment or optimizer entry may set as a scalar: all the others
# (source_hash: the planner's, never the spec's)
_SCALAR_KEYS = tuple(f for f in RunConfig.field_names() if f not in _ENTRY_FIELDS
                     and f not in _GRID_FIELDS.values() and f != "source_hash")
_EXPERIMENT_KEYS = ("name", "figure", "optimizers", *_GRID_KEYS, *_SCALAR_KEYS)
_OPTIMIZER_KEYS = (*_ENTRY_FIELDS, "band", *_GRID_KEYS, *_SCALAR_KEYS)
_BAND_KEYS = ("lr", "slope", "cells")  # + the entry's decay key
_DEFAULT_KEYS = (*_GRID_KEYS, *_SCALAR_KEYS)


class SpecError(ValueError):
    """A sweep spec with an unknown key, an impossible grid, or too many runs."""


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


@dataclass(frozen=True)
class SweepPlan:
    """A checked spec (JSON-normalised copy) and the runs it expands to, in grid order."""

    spec: dict[str, Any]
    runs: list[PlannedRun]

    @property
    def name(self) -> str | None:
        """The spec's ``name`` (the default study name), if it has one."""
        return self.spec.get("name")


def check_study_name(name: Any, what: str = "study name") -> str:
    """Return ``name`` if it is safe as a folder name, else raise :class:`SpecError`.

    1-200 characters from ``A-Z a-z 0-9 . _ -``, starting with a letter or digit, without
    ``..``: no path separator, no parent folder, no absolute path, so ``runs/<name>``
    always lies inside ``runs/``.
    """
    if not isinstance(name, str) or not _STUDY_NAME.fullmatch(name) or ".." in name:
        raise SpecError(
            f"{what} {name!r} is not valid: use 1-200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no path separators, no '..')"
        )
    return name


# ------------------------------------------------------------------------------ reading


def load_spec(path: str | os.PathLike) -> dict[str, Any]:
    """Read a sweep spec from a TOML (``.toml``) or JSON (``.json``) file (UTF-8 text).

    Raises:
        SpecError: the file is missing, unreadable, larger than :data:`MAX_SPEC_BYTES`,
            not UTF-8, not valid TOML/JSON, nested too deeply, or not a table.
    """
    path = Path(path)
    where = f"spec file {str(path)!r}"
    if not path.exists():
        raise SpecError(f"{where} does not exist")
    if not path.is_file():
        raise SpecError(f"{where} is not a file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{where} is larger than {MAX_SPEC_BYTES // 2**20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from None
    try:
        spec = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, JSONDecodeError, an int of 5000 digits
        raise SpecError(f"{where} is not valid: {exc}") from None
    except RecursionError:
        raise SpecError(f"{where} nests tables or lists too deeply") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{where} must hold a table, got {type(spec).__name__}")
    return spec


#: what :func:`grid_spec` takes (the flags of ``weightdecay sweep``): how a flag's text is
#: read, and what it is
GRID_KEYS: dict[str, tuple[Any, str]] = {
    "name": (str, "experiment and default study name"),
    "figure": (str, "figure tag (fig1 ... supp3)"),
    "dataset": (str, "data set (a built-in name, or package.module:function)"),
    "model": (str, "network (a built-in name, or package.module:function)"),
    "optimizers": (parse_names, "comma-separated optimizers (sgd,sgdw,adam,adamw)"),
    "lr": (parse_numbers, "learning-rate grid, e.g. 2**-10,2**-9"),
    "weight_decay": (parse_numbers, "lambda grid"),
    "weight_decay_norm": (parse_numbers, "lambda_norm grid"),
    "schedules": (parse_names, "schedule grid"),
    "epochs": (parse_ints, "epoch-budget grid"),
    "seeds": (parse_ints, "seed grid"),
    "batch_size": (parse_ints, "batch-size grid"),
    "T_0": (parse_number, "first restart period [epochs] (restarts)"),
}


def grid_spec(optimizers: Sequence[str] | None = None, lr: Sequence[float] | None = None, *,
              name: str | None = None, weight_decay: Sequence[float] | None = None,
              weight_decay_norm: Sequence[float] | None = None,
              **experiment: Any) -> dict[str, Any]:
    """A sweep spec of one experiment: every optimizer over the same ``lr`` grid and decay
    grid (``weight_decay``, default ``[0.0]``, or ``weight_decay_norm``), with the other grids
    and scalars of :data:`GRID_KEYS` in ``experiment`` (``None`` values are left out). The
    spec and experiment are named ``name`` (default ``"sweep"``). Checked later, by
    :func:`plan_sweep`.

    Raises:
        SpecError: no optimizer or no lr grid, both decay grids, or an unknown key.
    """
    for key, value in (("optimizers", optimizers), ("lr", lr)):
        if not value:
            raise SpecError(f"the grid needs {key!r} (--{key} is required without a SPEC file)")
    if weight_decay is not None and weight_decay_norm is not None:
        raise SpecError("give weight_decay or weight_decay_norm, not both")
    _unknown("the grid", list(experiment), [k for k in GRID_KEYS if k not in (
        "name", "optimizers", "lr", "weight_decay", "weight_decay_norm")])
    assert optimizers is not None and lr is not None
    name = name or "sweep"
    decay: dict[str, Any] = ({"weight_decay_norm": list(weight_decay_norm)}
                             if weight_decay_norm is not None
                             else {"weight_decay": list(weight_decay) if weight_decay else [0.0]})
    exp: dict[str, Any] = {"name": name, "optimizers": [
        {"optimizer": o, "lr": list(lr), **decay} for o in optimizers]}
    exp.update({k: v for k, v in experiment.items() if v is not None})
    return {"name": name, "experiments": [exp]}


def _depth(obj: Any) -> int:
    """Nesting depth of dicts and lists (iterative: a hostile spec may nest thousands deep)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_SPEC_DEPTH:
            return depth
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _normalise(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec must be a table/dict, got {type(spec).__name__}")
    if _depth(spec) > MAX_SPEC_DEPTH:
        raise SpecError(f"spec nests tables or lists more than {MAX_SPEC_DEPTH} deep")
    try:
        return json.loads(json.dumps(spec, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"spec is not JSON-able (finite numbers, strings, booleans, tables, "
                        f"lists): {exc}") from None


# ------------------------------------------------------------------------------ checking


def _unknown(where: str, keys: Sequence[str], allowed: Sequence[str]) -> None:
    unknown = [k for k in keys if k not in allowed]
    if unknown:
        raise SpecError(
            f"unknown key {unknown[0]!r} in {where}; valid keys: {', '.join(allowed)}"
        )


def _as_list(where: str, key: str, value: Any) -> list[Any]:
    values = list(value) if isinstance(value, list) else [value]
    if not values:
        raise SpecError(f"{where}: grid {key!r} is empty")
    return values


def _check_values(where: str, key: str, values: list[Any]) -> None:
    """Types and ranges of one grid's values, then duplicates."""
    for v in values:
        if key == "schedules":
            if v not in SCHEDULES:
                raise SpecError(f"{where}: {key}={v!r} is not valid; valid: "
                                f"{', '.join(SCHEDULES)}")
            continue
        integer = key in ("epochs", "batch_size", "seeds")
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
            kind = "an integer" if integer else "a number"
            raise SpecError(f"{where}: {key}={v!r} must be {kind}")
        if not is_finite_number(v):
            raise SpecError(f"{where}: {key}={v!r} must be finite")
        if key in ("lr", "epochs", "batch_size") and v <= 0:
            raise SpecError(f"{where}: {key}={v!r} must be > 0")
        if v < 0:
            raise SpecError(f"{where}: {key}={v!r} must be >= 0")
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise SpecError(f"{where}: grid {key!r} lists {v!r} twice")
        seen.add(v)


@dataclass(frozen=True)
class _Entry:
    """One optimizer entry of one experiment, merged with the experiment and defaults."""

    where: str
    experiment: str
    figure: str | None
    optimizer: str
    scalars: dict[str, Any]
    decay_key: str
    grids: dict[str, list[Any]]  # schedules, epochs, batch_size, lr, decay, seeds
    band: dict[str, Any] | None = None  # lr, <decay_key>, slope, cells (unchecked values)

    def count(self) -> int:
        """Its runs at most (a band's cells and the values it may extend by)."""
        sizes = {key: len(values) for key, values in self.grids.items()}
        if isinstance(self.band, dict) and isinstance(self.band.get("cells"), int):
            extend = self.band.get("extend", 0)
            extend = extend if isinstance(extend, int) else 0
            sizes[self.decay_key] = min(sizes[self.decay_key],
                                        max(0, self.band["cells"]) + max(0, extend))
        return math.prod(sizes.values())

    def decays(self, lr: float) -> list[Any]:
        """The decay values of the lr row ``lr``: the whole grid, or the band's cells."""
        values = self.grids[self.decay_key]
        if self.band is None:
            return values
        return band_cells(values, lr, self.band["lr"], self.band[self.decay_key],
                          self.band["slope"], self.band["cells"])


def _entries(spec: dict[str, Any]) -> list[_Entry]:
    """Check the spec's structure and names; return its optimizer entries (no values yet)."""
    _unknown("the spec", list(spec), _TOP_KEYS)
    if "name" in spec:
        check_study_name(spec["name"], "spec name")
    if not isinstance(spec.get("description", ""), str):
        raise SpecError(f"'description' must be a string, got {spec['description']!r}")
    defaults = spec.get("defaults", {})
    if not isinstance(defaults, dict):
        raise SpecError(f"'defaults' must be a table, got {defaults!r}")
    _unknown("'defaults'", list(defaults), _DEFAULT_KEYS)
    experiments = spec.get("experiments")
    if not isinstance(experiments, list) or not experiments:
        raise SpecError("'experiments' must be a non-empty list of tables")
    names: set[str] = set()
    out: list[_Entry] = []
    for i, exp in enumerate(experiments):
        if not isinstance(exp, dict):
            raise SpecError(f"experiments[{i}] must be a table, got {exp!r}")
        ename = exp.get("name")
        if not isinstance(ename, str) or not ename.strip():
            raise SpecError(f"experiments[{i}]: 'name' must be a non-empty string, "
                            f"got {ename!r}")
        where = f"experiment {ename!r}"
        if ename in names:
            raise SpecError(f"{where}: experiment name {ename!r} is used twice")
        names.add(ename)
        _unknown(where, list(exp), _EXPERIMENT_KEYS)
        figure = exp.get("figure")
        if figure is not None and figure not in EXPERIMENTS:
            raise SpecError(f"{where}: figure={figure!r} is not valid; valid: "
                            f"{', '.join(EXPERIMENTS)}")
        opts = exp.get("optimizers")
        if not isinstance(opts, list) or not opts:
            raise SpecError(f"{where}: 'optimizers' must be a non-empty list of tables")
        shared = {**defaults, **{k: v for k, v in exp.items() if k != "optimizers"}}
        for j, entry in enumerate(opts):
            out.append(_entry(f"{where}, optimizers[{j}]", ename, figure, shared, entry))
    return out


def _entry(where: str, ename: str, figure: str | None, shared: dict[str, Any],
           entry: Any) -> _Entry:
    if not isinstance(entry, dict):
        raise SpecError(f"{where} must be a table, got {entry!r}")
    _unknown(where, list(entry), _OPTIMIZER_KEYS)
    if "optimizer" not in entry:
        raise SpecError(f"{where}: 'optimizer' is missing")
    if entry["optimizer"] not in OPTIMIZERS:
        raise SpecError(f"{where}: optimizer={entry['optimizer']!r} is not valid; valid: "
                        f"{', '.join(OPTIMIZERS)}")
    if "lr" not in entry:
        raise SpecError(f"{where}: the grid 'lr' is missing")
    if "weight_decay" in entry and "weight_decay_norm" in entry:
        raise SpecError(f"{where}: give either 'weight_decay' or 'weight_decay_norm', not both")
    if "weight_decay" not in entry and "weight_decay_norm" not in entry:
        raise SpecError(f"{where}: the grid 'weight_decay' (or 'weight_decay_norm') is missing")
    merged = {**shared, **entry}
    for key, valid in (("dataset", DATASETS), ("model", MODELS)):
        if key in merged and registry.is_import_string(merged[key]):
            try:
                registry.check_import_string(key, merged[key])
            except ValueError as exc:
                raise SpecError(f"{where}: {exc}") from None
        elif key in merged and merged[key] not in valid:
            raise SpecError(f"{where}: {key}={merged[key]!r} is not valid; valid: "
                            f"{', '.join(valid)} or 'package.module:function'")
    decay_key = "weight_decay_norm" if "weight_decay_norm" in entry else "weight_decay"
    grid_value = {key: merged.get(key, [RunConfig.default(field)])
                  for key, field in _GRID_FIELDS.items()}
    grids = {
        "schedules": _as_list(where, "schedules", grid_value["schedules"]),
        "epochs": _as_list(where, "epochs", grid_value["epochs"]),
        "batch_size": _as_list(where, "batch_size", grid_value["batch_size"]),
        "lr": _as_list(where, "lr", entry["lr"]),
        decay_key: _as_list(where, decay_key, entry[decay_key]),
        "seeds": _as_list(where, "seeds", grid_value["seeds"]),
    }
    scalars = {k: merged[k] for k in _SCALAR_KEYS if k in merged}
    if isinstance(scalars.get("milestones"), list):
        scalars["milestones"] = tuple(scalars["milestones"])
    return _Entry(where=f"{where} ({entry['optimizer']})", experiment=ename, figure=figure,
                  optimizer=entry["optimizer"], scalars=scalars, decay_key=decay_key,
                  grids=grids, band=entry.get("band"))


def _config(where: str, fields: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig(**fields)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"{where}: {exc}") from None


def _cells(entry: _Entry, outcomes: Mapping[str, float] | None = None
           ) -> Iterator[RunConfig]:
    """The entry's run configs in grid order (T_0 only where a restart schedule uses it,
    so that keys do not split on it); a band with ``extend`` grows by the values that
    bracket each row's optimum, given the ``outcomes`` (run key -> final test error) of the
    runs done so far (:func:`.band.bracket_next`)."""
    names = ("schedule", "epochs", "batch_size", "lr", entry.decay_key, "seed")
    g = entry.grids
    rows = itertools.product(g["schedules"], g["epochs"], g["batch_size"], g["lr"])
    done: Mapping[str, float] = outcomes or {}
    extend = entry.band.get("extend", 0) if entry.band is not None and done else 0

    def keys(cs: list[RunConfig]) -> list[str]:
        return [c.key({"experiment": entry.experiment}) for c in cs]

    for *row, lr in rows:
        def configs(decay, row=row, lr=lr):
            return [_cell(entry, dict(zip(names, (*row, lr, decay, seed))))
                    for seed in g["seeds"]]

        cells = {d: configs(d) for d in entry.decays(lr)}
        row_keys = {d: keys(cs) for d, cs in cells.items()} if extend else {}
        for _ in range(extend):
            if not all(k in done for ks in row_keys.values() for k in ks):
                break  # the row's runs are not all done: nothing to decide yet
            error = {d: sum(done[k] for k in ks) / len(ks) for d, ks in row_keys.items()}
            nxt = bracket_next(g[entry.decay_key], list(cells), error)
            if nxt is None:
                break
            cells[nxt] = configs(nxt)
            row_keys[nxt] = keys(cells[nxt])
        for decay in g[entry.decay_key]:  # grid order
            if decay in cells:
                yield from cells[decay]


def _cell(entry: _Entry, grid: dict[str, Any]) -> RunConfig:
    fields = dict(entry.scalars, optimizer=entry.optimizer, **grid)
    fields["lr"] = float(fields["lr"])
    fields[entry.decay_key] = float(fields[entry.decay_key])
    if fields["schedule"] != "restarts":
        fields.pop("T_0", None)
    return _config(entry.where, fields)


# ------------------------------------------------------------------------------ planning


def plan_sweep(spec: Mapping[str, Any], *, max_runs: int | None = DEFAULT_MAX_RUNS,
               outcomes: Mapping[str, float] | None = None) -> SweepPlan:
    """Check ``spec`` completely and expand it into its runs, once.

    ``outcomes`` (run key -> final test error, ``inf`` for a diverged run) are the results
    of the runs done so far: a band with ``extend`` adds the cells that bracket the optima
    they show (see :mod:`weightdecay.harness.band`); without them, each band has its
    ``cells`` only.

    Order of the checks: structure and names; the number of runs (the product of the
    grids, refused above ``max_runs`` before any run config is built; ``None``: no limit);
    every grid value; every entry's scalars (a run config of its first cell, ``T_0``
    included); the user code it names (imported and hashed: ``source_hash``); then every
    run's :class:`RunConfig` and duplicate runs.

    Raises:
        SpecError: naming the experiment, the optimizer entry and the key.
    """
    if max_runs is not None and (isinstance(max_runs, bool) or not isinstance(max_runs, int)
                                 or max_runs < 1):
        raise SpecError(f"max_runs must be a positive integer or None, got {max_runs!r}")
    spec = _normalise(spec)
    entries = _entries(spec)
    total = sum(e.count() for e in entries)  # (a band's cells counted before they are checked)
    if max_runs is not None and total > max_runs:
        raise SpecError(f"the spec plans {total:,} runs, more than the limit of {max_runs:,}; "
                        "shrink its grids or raise the limit (--max-runs)")
    for e in entries:
        for key, values in e.grids.items():
            _check_values(e.where, key, values)
        if e.band is not None:
            try:
                check_band(e.band, e.decay_key, e.grids[e.decay_key], e.grids["lr"])
            except ValueError as exc:
                raise SpecError(f"{e.where}: band: {exc}") from None
        first = {key: values[0] for key, values in e.grids.items()}
        cfg = _config(e.where, dict(e.scalars, optimizer=e.optimizer,
                                    schedule=first["schedules"], epochs=first["epochs"],
                                    batch_size=first["batch_size"], lr=first["lr"],
                                    seed=first["seeds"], **{e.decay_key: first[e.decay_key]}))
        try:  # user code: imported, and its source's hash recorded in every run
            code = registry.source_hash(cfg.model, cfg.dataset)
        except ValueError as exc:
            raise SpecError(f"{e.where}: {exc}") from None
        if code is not None:
            e.scalars["source_hash"] = code
    runs: list[PlannedRun] = []
    planned: dict[str, str] = {}
    for e in entries:
        for config in _cells(e, outcomes):
            key = config.key({"experiment": e.experiment})
            decay = getattr(config, e.decay_key)
            if key in planned:
                raise SpecError(f"{e.where}: plans the same run twice ({planned[key]})")
            planned[key] = (f"{e.experiment}: {config.optimizer} lr={config.lr:g} "
                            f"{e.decay_key}={decay:g}")
            runs.append(PlannedRun(key=key, experiment=e.experiment, figure=e.figure,
                                   config=config))
    return SweepPlan(spec=spec, runs=runs)


def band_extends(spec: Mapping[str, Any]) -> bool:
    """Whether a band of the (checked) ``spec`` may grow with its outcomes (``extend`` > 0):
    then planning it again once runs are done may add runs."""
    return any(isinstance(entry.get("band"), Mapping) and entry["band"].get("extend", 0)
               for exp in spec.get("experiments", []) for entry in exp.get("optimizers", []))


def validate_spec(spec: Mapping[str, Any], *, max_runs: int | None = DEFAULT_MAX_RUNS
                  ) -> dict[str, Any]:
    """Check a spec completely (see :func:`plan_sweep`); return a JSON-normalised copy."""
    return plan_sweep(spec, max_runs=max_runs).spec


def expand_spec(spec: Mapping[str, Any], *, max_runs: int | None = DEFAULT_MAX_RUNS
                ) -> list[PlannedRun]:
    """Check ``spec`` and expand it, deterministically, into its runs (in grid order)."""
    return plan_sweep(spec, max_runs=max_runs).runs


def with_seeds(spec: Mapping[str, Any], seeds: Sequence[int]) -> SweepPlan:
    """The plan of ``spec`` rerun on other seeds: every optimizer entry runs every seed of
    ``seeds`` (the design is otherwise unchanged), and the spec is renamed
    ``<name>-seeds-S1-S2-...``, so that a replication never mixes into the original study,
    even in the same store.

    Raises:
        SpecError: no seed, a seed given twice or out of range, a name too long, or a bad
            spec.
    """
    seeds = list(seeds)
    _check_values("--seeds", "seeds", seeds)
    spec = _normalise(spec)
    _entries(spec)  # the structure, before it is changed
    for exp in spec["experiments"]:
        exp.pop("seeds", None)
        for opt in exp["optimizers"]:
            opt["seeds"] = seeds
    spec.get("defaults", {}).pop("seeds", None)
    name = spec.get("name") or "sweep"
    spec["name"] = check_study_name(f"{name}-seeds-{'-'.join(map(str, seeds))}",
                                    "the study name of these seeds")
    return plan_sweep(spec, max_runs=None)

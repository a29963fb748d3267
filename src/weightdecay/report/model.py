"""The Report: everything a report says, computed once from the stored trials.

:func:`build_report` reads the records of a study (``weightdecay.harness.store.load_records``)
and computes, once: the claims scorecard (:mod:`weightdecay.report.claims`), the replication
of an earlier scorecard, the heat-map tables with their slopes, the best settings (under the
one rule, :func:`weightdecay.registry.best_setting`), the decay variants, the trial counts
and which figures the records allow. Every view renders this object and computes nothing of
its own: report.html (:mod:`weightdecay.report.html`), the terminal tables
(:mod:`weightdecay.report.tables`), and ``stats.json``, its serialization
(:meth:`Report.to_dict`), which :mod:`weightdecay.report.publish` renders into the committed
results. The wall time of the run that produced the store (:class:`Timing`) is attached by
whoever measured it (``weightdecay.api.reproduce``).

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (Sec. 4).
"""

from __future__ import annotations

import datetime
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from .. import registry
from ..registry import BestSetting, best_setting
from .claims import Claim, Evidence, scorecard
from .figures import evidence_for, missing
from .mechanism import SUBSETS, MechanismRow, mechanism_table
from .mechanism import markdown as mechanism_markdown
from .resample import DEFAULT_REPLICATES
from .stats import HeatMap, SlopeFit
from .variants import VariantRow, variant_table
from .variants import markdown as variants_markdown

__all__ = ["HeatMapTable", "Replication", "Report", "SettingRow", "Timing", "TrialCount",
           "build_report", "setting_rows", "trial_counts"]

#: trial states in the order the tables count them
STATES = ("COMPLETE", "RUNNING", "WAITING", "FAIL")


def _clean(x: Any) -> Any:
    """A float for JSON: NaN and infinities become None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ------------------------------------------------------------------------------ pieces


@dataclass(frozen=True)
class TrialCount:
    """How many runs of an experiment (``"all"``: of the study) are in each state."""

    experiment: str
    states: dict[str, int]
    other: int
    diverged: int
    total: int

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, **self.states, "other": self.other,
                "diverged": self.diverged, "total": self.total}


def trial_counts(records: Sequence[Mapping[str, Any]]) -> list[TrialCount]:
    """Per experiment (sorted), then ``"all"``: runs per state, diverged, total."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(str(r.get("experiment") or r.get("figure") or "(none)"), []).append(r)
    out = []
    for name, rs in [*sorted(groups.items()), ("all", list(records))]:
        states = {s: sum(1 for r in rs if r.get("state", "COMPLETE") == s) for s in STATES}
        out.append(TrialCount(name, states, len(rs) - sum(states.values()),
                              sum(1 for r in rs if r.get("diverged")), len(rs)))
    return out


@dataclass(frozen=True)
class SettingRow:
    """One group of runs -- an experiment's optimizer, schedule, budget and kind of decay
    (``decay_key``: ``"weight_decay"`` or ``"weight_decay_norm"``) -- and its best setting."""

    experiment: str | None
    optimizer: str
    schedule: str
    epochs: int
    decay_key: str
    runs: int
    complete: int
    diverged: int
    best: BestSetting | None

    @property
    def label(self) -> str:
        """The paper's name of the optimizer (+ "R" with warm restarts)."""
        return registry.optimizer_label(self.optimizer, self.schedule)

    def to_dict(self) -> dict[str, Any]:
        best = None
        if self.best is not None:
            s = self.best.setting
            best = {"lr": s["lr"], "weight_decay": s["weight_decay"],
                    "weight_decay_norm": s["weight_decay_norm"], "seeds": len(self.best.runs),
                    "final_test_error": _clean(self.best.error),
                    "best_test_error": _clean(self.best.best_error), "setting": s}
        return {"experiment": self.experiment, "optimizer": self.optimizer,
                "label": self.label, "schedule": self.schedule, "epochs": self.epochs,
                "decay": self.decay_key, "runs": self.runs, "complete": self.complete,
                "diverged": self.diverged, "best": best}


def setting_rows(records: Sequence[Mapping[str, Any]]) -> list[SettingRow]:
    """The best setting of each group of runs, in record order (the terminal table and the
    report's "best settings" both show these)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        decay_key = "weight_decay_norm" if r.get("weight_decay_norm") is not None \
            else "weight_decay"
        key = (r.get("experiment") or r.get("figure"), r.get("optimizer"), r.get("schedule"),
               r.get("epochs"), decay_key)
        groups.setdefault(key, []).append(r)
    rows = []
    for (exp, opt, sched, epochs, decay_key), rs in groups.items():
        done = [r for r in rs if r.get("state", "COMPLETE") == "COMPLETE"]
        rows.append(SettingRow(exp, opt, sched, epochs, decay_key, len(rs), len(done),
                               sum(1 for r in done if r.get("diverged")), best_setting(done)))
    return rows


@dataclass(frozen=True)
class Replication:
    """A scorecard compared with the original one of the same design on other seeds."""

    claims: dict[str, str]  # the original verdict of every claim, by key
    compared: int
    replicated: int
    differ: list[str]
    readings_compared: int = 0
    readings_same: int = 0
    readings_differ: list[str] = field(default_factory=list)

    @classmethod
    def compare(cls, claims: Sequence[Claim], original: Mapping[str, Any] | Sequence
                ) -> Replication:
        """Which verdicts (and slope readings) of ``claims`` are those of ``original`` (a
        ``stats.json``/results dict with a ``"scorecard"``, or that list). Claims "not run"
        in either are left out."""
        rows = original.get("scorecard", original) if isinstance(original, Mapping) \
            else original
        orig = {c["key"]: c["verdict"] for c in rows}
        readings = {c["key"]: c.get("reading") for c in rows if c.get("reading")}
        unscored = ("not run", "not scored")
        compared = [c for c in claims if c.verdict not in unscored
                    and orig.get(c.key, "not run") not in unscored]
        read = [c for c in compared if c.reading and c.key in readings]
        return cls(orig, len(compared), sum(orig[c.key] == c.verdict for c in compared),
                   [c.key for c in compared if orig[c.key] != c.verdict], len(read),
                   sum(readings[c.key] == c.reading for c in read),
                   [f"{c.key}: {readings[c.key]} -> {c.reading}" for c in read
                    if readings[c.key] != c.reading])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Replication:
        """From :meth:`to_dict` output (older files lack the readings: none compared)."""
        return cls(dict(data.get("claims", {})), int(data["compared"]), int(data["replicated"]),
                   list(data["differ"]), int(data.get("readings_compared", 0)),
                   int(data.get("readings_same", 0)), list(data.get("readings_differ", [])))

    def to_dict(self) -> dict[str, Any]:
        return {"claims": self.claims, "compared": self.compared, "replicated": self.replicated,
                "differ": self.differ, "readings_compared": self.readings_compared,
                "readings_same": self.readings_same, "readings_differ": self.readings_differ}

    def sentence(self) -> str:
        """What replicated, in words (every view says it so)."""
        text = f"{self.replicated} of {self.compared} verdicts as on the original seeds"
        if self.differ:
            text += f" (differ: {', '.join(self.differ)})"
        if self.readings_compared:
            text += f"; {self.readings_same} of {self.readings_compared} slope readings the same"
            if self.readings_differ:
                text += f" (differ: {'; '.join(self.readings_differ)})"
        return text


@dataclass(frozen=True)
class Timing:
    """How long ``weightdecay reproduce`` took to train a preset and report it."""

    preset: str
    study: str
    runs: int
    ran: int
    complete: int
    workers: int
    cpu_count: int | None
    wall_seconds: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timing:
        return cls(str(data["preset"]), str(data.get("study", data["preset"])),
                   int(data["runs"]), int(data.get("ran", data["complete"])),
                   int(data["complete"]), int(data["workers"]), data.get("cpu_count"),
                   float(data["wall_seconds"]))

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "study": self.study, "runs": self.runs, "ran": self.ran,
                "complete": self.complete, "workers": self.workers,
                "cpu_count": self.cpu_count, "wall_seconds": self.wall_seconds}

    def sentence(self) -> str:
        w = self.wall_seconds
        return (f"Measured by `weightdecay reproduce --preset {self.preset}`: {self.ran} of "
                f"{self.runs} runs trained in {int(w // 60)} min {int(w % 60)} s wall (sweep "
                f"and report), {self.workers} workers on {self.cpu_count} CPU cores.")


@dataclass(frozen=True)
class HeatMapTable:
    """The numbers behind one heat-map panel: the map and (where fitted) its slope."""

    title: str
    heat_map: HeatMap
    slope: SlopeFit | None

    def to_dict(self) -> dict[str, Any]:
        return {"heat_map": self.heat_map.to_dict(),
                "slope": None if self.slope is None else self.slope.to_dict(self.heat_map)}


@dataclass(frozen=True)
class Design:
    """An experiment's runs, seeds and test-set sizes."""

    experiment: str
    runs: int
    seeds: list[int]
    num_test: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "runs": self.runs, "seeds": self.seeds,
                "num_test": self.num_test}


# ------------------------------------------------------------------------------ the report


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def current_versions() -> dict[str, str]:
    """The versions of the software installed now (when the study stored none)."""
    out = {"python": platform.python_version()}
    for pkg in ("weightdecay", "torch", "numpy", "optuna", "matplotlib", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@dataclass
class Report:
    """A study's report, computed once (:func:`build_report`); views render it.

    Attributes:
        title: the page's title.
        scorecard: every claim of the paper, scored or "not run".
        replication: the scorecard against the original seeds' (a replication), or None.
        figures: the figures the records allow, in report order (registry names).
        skipped: ``"name: reason"`` of each figure wanted but without records.
        tables: per figure (and ``"conventions"``), its heat maps by panel title.
        variants: the decay variants ranked (the ``variants`` experiment).
        mechanism: the monitored settings of the ``mechanism`` preset: the rotation over
            the stationary window against the prediction, the gradient-norm ratio
            (:func:`weightdecay.report.mechanism.mechanism_table`).
        trials: runs per experiment and state (the last row: all).
        settings: the best setting of each group of runs (:func:`setting_rows`).
        design: each experiment's runs, seeds and test-set sizes.
        spec, versions: the sweep spec and the software versions stored with the study
            (``versions_stored`` False: the versions installed when the report was made).
        timing: the wall time of the reproduce run that produced the store, if measured.
        notes: what the report could not do (e.g. no original study to compare with).
        records, evidence: the stored trials and their bootstrap (not serialized).
    """

    title: str = "weightdecay report"
    scorecard: list[Claim] = field(default_factory=list)
    replication: Replication | None = None
    figures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    tables: dict[str, dict[str, HeatMapTable]] = field(default_factory=dict)
    variants: list[VariantRow] = field(default_factory=list)
    mechanism: list[MechanismRow] = field(default_factory=list)
    trials: list[TrialCount] = field(default_factory=list)
    settings: list[SettingRow] = field(default_factory=list)
    design: list[Design] = field(default_factory=list)
    spec: Any = None
    versions: dict[str, Any] = field(default_factory=dict)
    versions_stored: bool = False
    timing: Timing | None = None
    notes: list[str] = field(default_factory=list)
    n_boot: int = DEFAULT_REPLICATES
    generated: str = field(default_factory=_now)
    records: list[Mapping[str, Any]] = field(default_factory=list, repr=False)
    evidence: Evidence | None = field(default=None, repr=False)

    @property
    def all_trials(self) -> TrialCount:
        """The counts over every run of the study."""
        return self.trials[-1] if self.trials else TrialCount("all", {}, 0, 0, 0)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data: the content of ``stats.json``."""
        out: dict[str, Any] = {"scorecard": [c.to_dict() for c in self.scorecard]}
        if self.replication is not None:
            out["replication"] = self.replication.to_dict()
        for name in self.figures:
            if name in self.tables:
                out[name] = {t: table.to_dict() for t, table in self.tables[name].items()}
            if name == "variants":
                out["variants"] = {"rows": [r.to_dict() for r in self.variants],
                                   "markdown": variants_markdown(self.variants)}
            if name == "equilibrium" and self.mechanism:
                out["mechanism"] = {"rows": [r.to_dict() for r in self.mechanism],
                                    "markdown": mechanism_markdown(self.mechanism)}
        if "conventions" in self.tables:
            out["conventions"] = {t: table.to_dict()
                                  for t, table in self.tables["conventions"].items()}
        out["skipped"] = list(self.skipped)
        out.update({
            "title": self.title, "generated": self.generated, "figures": list(self.figures),
            "trials": [t.to_dict() for t in self.trials],
            "best_settings": [s.to_dict() for s in self.settings],
            "design": [d.to_dict() for d in self.design], "n_boot": self.n_boot,
            "versions": self.versions, "timing": None if self.timing is None
            else self.timing.to_dict(), "notes": list(self.notes)})
        return out


def _wanted(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The figures of the registry that the records' experiment tags call for."""
    tags = {r.get("figure") for r in records}
    untagged = tags == {None}
    out = []
    for name in registry.FIGURES:
        entry = registry.figure(name)
        if entry.tag is None or (entry.untagged if untagged else entry.tag in tags):
            out.append(name)
    return out


def _panels(ev: Evidence, name: str) -> tuple[str | None, list[tuple[dict, str, bool]]]:
    """The heat-map panels of a figure's tables: (match, column, with slope) each."""
    key = name if ev.experiment(name) else None
    recs = [r for r in ev.records if r.get("figure") == key
            and r.get("state", "COMPLETE") == "COMPLETE"]

    def has(**match: Any) -> bool:
        return any(all(r.get(k) == v for k, v in match.items()) for r in recs)

    panels: list[tuple[dict, str, bool]] = []
    if name == "fig2":
        panels = [({"optimizer": o}, "weight_decay", True) for o in registry.OPTIMIZERS
                  if has(optimizer=o)]
    elif name == "fig1":
        panels = [({"optimizer": o, "schedule": s}, "weight_decay", False)
                  for o in ("adam", "adamw") for s in ("fixed", "step", "cosine")
                  if has(optimizer=o, schedule=s)]
    elif name == "supp3":
        for T in sorted({int(r["epochs"]) for r in recs}):
            panels.append(({"epochs": T, "weight_decay_norm": None}, "weight_decay", True))
            panels.append(({"epochs": T}, "weight_decay_norm", True))
    elif name == "decay_subsets":
        panels = [({"optimizer": o, **match}, "weight_decay", True)
                  for o in registry.OPTIMIZERS for match in SUBSETS.values()
                  if has(optimizer=o, **match)]
    elif name == "conventions":
        panels = [({"optimizer": o, "decay_convention": c}, "weight_decay", True)
                  for o in registry.OPTIMIZERS if registry.is_decoupled(o)
                  for c in ("schedule", "lr")
                  if has(optimizer=o, decay_convention=c)]
    return key, panels


def heat_map_tables(ev: Evidence, name: str) -> dict[str, HeatMapTable]:
    """The heat maps of figure ``name`` (fig1, fig2, supp3) or of the conventions runs, by
    panel title; a panel whose runs vary in another setting is split (one map per value,
    :meth:`Evidence.split`), as the figures split it."""
    key, panels = _panels(ev, name)
    out = {}
    for base, col, with_fit in panels:
        for match in ev.split(key, col, **base):
            hm = ev.heat_map(key, col, **match)
            if hm is None:
                continue
            title = ", ".join(f"{k}={v}" for k, v in match.items() if v is not None)
            title += f" ({hm.lam_label})"
            out[title] = HeatMapTable(title, hm,
                                      ev.slope(key, col, **match) if with_fit else None)
    return out


def one_code_version(records: Sequence[Mapping[str, Any]]
                     ) -> tuple[list[Mapping[str, Any]], list[str]]:
    """The records to report when runs of a user's model or data set hold more than one
    version of its code (``source_hash``): for each (model, data set), those of the newest
    version (the one of the latest trial) -- runs of changed code are never averaged with
    the old ones. Returns them and one note per version left out."""
    newest: dict[tuple, tuple[int, str]] = {}
    for i, r in enumerate(records):
        if r.get("source_hash") is not None:
            number = r.get("trial_number")
            order = number if isinstance(number, int) else i
            pair = (r.get("model"), r.get("dataset"))
            if pair not in newest or order >= newest[pair][0]:
                newest[pair] = (order, r["source_hash"])
    keep: list[Mapping[str, Any]] = []
    left: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        pair = (r.get("model"), r.get("dataset"))
        if r.get("source_hash") is None or r["source_hash"] == newest[pair][1]:
            keep.append(r)
        else:
            left.setdefault((*pair, r["source_hash"]), []).append(r)
    notes = [f"{len(rs)} run(s) of {m} on {d} trained with other code (source sha256 "
             f"{h[:12]}...) are left out: this report shows the runs of the newest code "
             f"({newest[(m, d)][1][:12]}...)" for (m, d, h), rs in left.items()]
    return keep, notes


def build_report(
    records: Sequence[Mapping[str, Any]],
    *,
    spec: Any = None,
    versions: Mapping[str, Any] | None = None,
    original: Mapping[str, Any] | None = None,
    title: str = "weightdecay report",
    n_boot: int = DEFAULT_REPLICATES,
    notes: Sequence[str] = (),
) -> Report:
    """The :class:`Report` of a study's records, computed once.

    Args:
        records: trial records (``weightdecay.harness.store.load_records``).
        spec: the sweep spec (kept for the page).
        versions: software versions stored with the study; None: those installed now.
        original: the scorecard of the same design on other seeds (``stats.json`` content
            or a results file): the report then says which verdicts replicated.
        title: the report's title.
        n_boot: bootstrap replicates of every interval.
        notes: lines for the report to carry (e.g. why there is no replication).
    """
    if isinstance(records, (Mapping, str, bytes)):
        raise ValueError(f"records must be a list of trial dicts, got {type(records).__name__}")
    records, code_notes = one_code_version(list(records))
    notes = [*notes, *code_notes]
    ev = evidence_for(records)
    ev.n_boot = n_boot
    claims = scorecard(ev.records, n_boot=n_boot, evidence=ev)
    figures: list[str] = []
    skipped: list[str] = []
    tables: dict[str, dict[str, HeatMapTable]] = {}
    for name in _wanted(records):
        reason = missing(ev, name)
        if reason is None and registry.figure(name).tables:
            try:
                tables[name] = heat_map_tables(ev, name)
            except ValueError as err:
                reason = str(err)
        if reason is not None:
            skipped.append(f"{name}: {reason}")
        else:
            figures.append(name)
    if "conventions" in {r.get("figure") for r in records}:
        try:
            tables["conventions"] = heat_map_tables(ev, "conventions")
        except ValueError as err:
            skipped.append(f"conventions: {err}")
    variants: list[VariantRow] = []
    if "variants" in figures:
        try:
            variants = variant_table(ev)
        except ValueError as err:
            figures.remove("variants")
            skipped.append(f"variants: {err}")
    design = []
    for tag in registry.EXPERIMENTS:
        recs = ev.experiment(tag)
        if recs:
            design.append(Design(tag, len(recs), sorted({int(r["seed"]) for r in recs}),
                                 sorted({int(r["num_test"]) for r in recs if r.get("num_test")})))
    return Report(
        title=title, scorecard=claims,
        replication=None if original is None else Replication.compare(claims, original),
        figures=figures, skipped=skipped, tables=tables,
        variants=variants,
        mechanism=mechanism_table(ev) if "equilibrium" in figures else [],
        trials=trial_counts(records), settings=setting_rows(records), design=design,
        spec=spec, versions=dict(versions) if versions else current_versions(),
        versions_stored=bool(versions), notes=list(notes), n_boot=n_boot, records=records,
        evidence=ev)

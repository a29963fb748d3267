"""The decay variants compared on equal terms (the ``variants`` preset): for each optimizer
and decay rule, the best final test error with its interval, its difference from the
paper's decay (paired bootstrap: same seeds, same test examples), and the Fig. 2 slope of
its best λ against α with its reading.

A variant is identified by the settings that distinguish it in the records: the decay
convention (``"schedule"`` = the paper's η_t·λ, ``"lr"`` = torch's lr_t·λ, ``"corrected"``
= AdamC's lr_t·(lr_t/lr_max)·λ), ``cautious`` and ``scale_invariant_only``. Their λ grids
are in each convention's own units, so λ values are not compared across variants — best
errors and slopes are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..registry import optimizer_label
from .claims import Evidence
from .stats import SLOPE_READINGS, Interval, SlopeFit, interval

__all__ = ["VariantRow", "markdown", "summary", "variant_table"]


@dataclass
class VariantRow:
    """One variant: what it is, how well it does, and how its best λ moves with α."""

    optimizer: str
    name: str
    match: dict
    best_error: Interval
    vs_paper: Interval | None  # relative difference of best errors, paired; None: the paper's
    slope: SlopeFit

    def to_dict(self) -> dict:
        return {"optimizer": self.optimizer, "variant": self.name,
                "best_error": self.best_error.to_dict(),
                "vs_paper": None if self.vs_paper is None else self.vs_paper.to_dict(),
                "slope": self.slope.slope.to_dict(), "reading": self.slope.reading}


def _name(r: Mapping) -> str:
    conv = r.get("decay_convention", "schedule")
    base = {"schedule": "paper (η_t·λ)", "lr": "torch (lr_t·λ)",
            "corrected": "corrected (lr_t²/lr_max·λ)", "constant": "constant (λ)"}.get(conv, conv)
    if r.get("cautious"):
        base = "cautious, " + base
    if r.get("scale_invariant_only"):
        base = "scale-invariant weights only, " + base
    return base


def variant_table(ev: Evidence, figure: str = "variants") -> list[VariantRow]:
    """One row per (optimizer, variant) of the experiment ``figure``, each optimizer's rows
    ranked by best error (lowest first). Empty when the experiment is not in the store."""
    reps = ev.reps(figure)
    if reps is None:
        return []
    keys: dict[tuple, dict] = {}
    for r in reps.records:
        match = {"optimizer": r.get("optimizer"), "decay_convention": r.get("decay_convention"),
                 "cautious": bool(r.get("cautious")),
                 "scale_invariant_only": bool(r.get("scale_invariant_only"))}
        keys.setdefault(tuple(match.items()), match)
    rows = []
    for base in keys.values():
        for match in ev.split(figure, **base):  # other settings that vary: one row each
            hm, fit = ev.heat_map(figure, **match), ev.slope(figure, **match)
            if hm is not None and fit is not None:
                rows.append((match, {k: v for k, v in match.items() if k not in base},
                             hm.best_error(), fit))
    out = []
    for opt in sorted({m["optimizer"] for m, *_ in rows}):
        mine = [row for row in rows if row[0]["optimizer"] == opt]
        papers = {repr(extra): b for m, extra, b, _ in mine if m["decay_convention"] ==
                  "schedule" and not m["cautious"] and not m["scale_invariant_only"]}
        table = []
        for m, extra, b, f in mine:
            paper = papers.get(repr(extra))
            vs = None if paper is None or b is paper else interval((b - paper) / paper)
            name = _name(m) + "".join(f", {k}={v}" for k, v in extra.items())
            table.append(VariantRow(opt, name, m, interval(b), vs, f))
        table.sort(key=lambda row: row.best_error.estimate
                   if np.isfinite(row.best_error.estimate) else np.inf)
        out += table
    return out


def markdown(rows: list[VariantRow]) -> str:
    """The table as markdown (best error and the difference in %)."""
    lines = ["| optimizer | decay | best test error [90 %] | vs the paper's decay "
             "(relative) | slope d log λ*/d log α | reading |", "|---|---|---|---|---|---|"]
    for r in rows:
        vs = "—" if r.vs_paper is None else r.vs_paper.format("{:+.1f} %", 100)
        lines.append(f"| {optimizer_label(r.optimizer)} | {r.name} | "
                     f"{r.best_error.format('{:.2f} %', 100)} | {vs} | "
                     f"{r.slope.value_text()} | {r.slope.reading} |")
    lines.append("")
    lines += summary(rows)
    lines.append("")
    lines.append("Readings: " + "; ".join(f"*{k}*: {v}" for k, v in SLOPE_READINGS.items()
                                          if k != "insufficient data") + ".")
    return "\n".join(lines)


def summary(rows: list[VariantRow]) -> list[str]:
    """What the data support, per optimizer, in sentences built from the intervals."""
    out = []
    for opt in dict.fromkeys(r.optimizer for r in rows):
        vs = [(r.name, r.vs_paper) for r in rows if r.optimizer == opt and r.vs_paper is not None]
        label = optimizer_label(opt)
        better = [name for name, ci in vs if ci.finite and ci.hi < 0]
        worse = [name for name, ci in vs if ci.finite and ci.lo > 0]
        said = []
        if better:
            said.append(f"better than the paper's decay: {_names(better)}")
        if worse:
            said.append(f"worse: {_names(worse)}")
        text = "; ".join(said) or ("no rule's best test error differs from the paper's decay "
                                   "beyond its interval")
        separable = [r.name for r in rows if r.optimizer == opt
                     and r.slope.reading == "separable"]
        out.append(f"- **{label}**: {text}. Best λ separable from α (reading *separable*): "
                   + (_names(separable) if separable else "none") + ".")
    return out


def _names(names: list[str]) -> str:
    return ", ".join(f"“{n}”" for n in names)

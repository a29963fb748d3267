"""The stored trials of a report as evidence: grouped by experiment, one bootstrap each.

:class:`Evidence` holds a study's records and builds, on demand and once each, the
bootstrap replicates of an experiment (:class:`weightdecay.report.resample.Replicates`),
its heat maps and their slopes (:mod:`weightdecay.report.stats`): the claims, the figures
and the tables all read the same numbers from it.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (Sec. 4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .resample import DEFAULT_REPLICATES, Replicates
from .stats import HeatMap, SlopeFit, completed, heat_map, slope_fit, varying

__all__ = ["Evidence", "NoEvidence"]


@dataclass
class Evidence:
    """The stored trials of a report, grouped by experiment, with one bootstrap per
    experiment (all comparisons inside an experiment are paired)."""

    records: Sequence[Mapping]
    n_boot: int = DEFAULT_REPLICATES
    _reps: dict = field(default_factory=dict)  # figure tag (None: untagged) -> Replicates
    _maps: dict = field(default_factory=dict)
    _fits: dict = field(default_factory=dict)
    #: other statistics computed once per Evidence (e.g. the mechanism claims' per-run ones)
    cache: dict = field(default_factory=dict)

    def experiment(self, figure: str | None) -> list[Mapping]:
        return [r for r in completed(self.records) if r.get("figure") == figure]

    def reps(self, figure: str | None) -> Replicates | None:
        if figure not in self._reps:
            recs = self.experiment(figure)
            self._reps[figure] = Replicates(recs, self.n_boot) if recs else None
        return self._reps[figure]

    def heat_map(self, figure: str | None, col: str = "weight_decay",
                 **match) -> HeatMap | None:
        key = (figure, col, repr(sorted(match.items(), key=str)))
        if key not in self._maps:
            reps = self.reps(figure)
            hm = None
            if reps is not None and any(
                    all(r.get(k) == v for k, v in match.items()) and r.get(col) is not None
                    for r in reps.records):
                hm = heat_map(reps, lambda r: all(r.get(k) == v for k, v in match.items())
                              and r.get(col) is not None, col=col)
            self._maps[key] = hm
        return self._maps[key]

    def slope(self, figure: str | None, col: str = "weight_decay",
              **match) -> SlopeFit | None:
        key = (figure, col, repr(sorted(match.items(), key=str)))
        if key not in self._fits:
            hm = self.heat_map(figure, col, **match)
            self._fits[key] = None if hm is None else slope_fit(hm)
        return self._fits[key]

    def split(self, figure: str | None, col: str = "weight_decay", **match) -> list[dict]:
        """``match`` extended by each combination of the settings that vary among its runs
        (:func:`weightdecay.report.stats.varying`), in record order: one heat map each."""
        recs = [r for r in self.experiment(figure) if r.get(col) is not None
                and all(r.get(k) == v for k, v in match.items())]
        keys = varying(recs, {"lr", col, *match} | ({"weight_decay"}
                                                   if col == "weight_decay_norm" else set()))
        out: dict[str, dict] = {}
        for r in recs:
            sub = dict(match, **{k: r.get(k) for k in keys})
            out.setdefault(repr(sorted(sub.items(), key=str)), sub)
        return list(out.values()) or [match]


class NoEvidence:
    """Evidence without runs: a claim function given it returns its "not run" claims, which
    is how :func:`weightdecay.report.claims.scorecard` learns their keys and texts."""

    def __init__(self) -> None:
        self.cache: dict = {}

    def experiment(self, figure: str | None) -> list[Mapping]:
        return []

    def reps(self, figure: str | None) -> None:
        return None

    def heat_map(self, *args, **match) -> None:
        return None

    def slope(self, *args, **match) -> None:
        return None

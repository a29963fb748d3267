"""Why AdamW's best λ moves with α: the mechanism claims, decided from stored runs.

The runs of the ``mechanism`` preset carry the equilibrium monitor's per-category summaries
(``RunConfig.monitor_every``; :mod:`weightdecay.harness.monitoring`) or restrict the decay to
a subset of the parameters. Four claims, each with a rule fixed before the runs were made
(docs/experiment-design.md, "The mechanism preset"):

(a) **Equilibrium reached.** For the scale-invariant weights (the convolutions before
    BatchNorm), the measured ÷ predicted angular update per step, r = sqrt(2d(1−b)/(1+b))
    (van Laarhoven 2017, arXiv 1706.05350; Wan et al. 2021, arXiv 2006.08419; Kosson,
    Messmer & Jaggi, ICML 2024, arXiv 2305.17212), RMS over a *stationary window*: the
    updates after >= 3 timescales 1/(2d) where η_t >= ½·η_max (at a constant schedule, all
    of them after the first 3 timescales). Per optimizer (AdamW, SGDW), the geometric mean
    over its settings. Holds if the 90 % interval lies within [0.8, 1.25]; refuted if it
    lies outside that range; else inconclusive.
(b) **Convention.** The slope of log(measured rotation) on log α (constant schedule, one λ
    in the convention's own units; settings of several λ share the slope, each its own
    intercept). Paper's convention (d = η_t·λ): r does not depend on α — holds if the
    interval contains 0 and excludes 0.5, refuted if it excludes 0. torch's ("lr", d =
    lr_t·λ): r ∝ √α — holds if it contains 0.5 and excludes 0, refuted if it excludes 0.5.
(c) **The opposite ablation.** AdamW's Fig. 2 (cosine) with the decay restricted to the
    parameters that are *not* scale-invariant (the head, BatchNorm's scale and shift:
    Xie & Li, ICML 2024, arXiv 2404.04454, their fixed points lie in ||θ||∞ <= α/λ, so their
    best λ should scale with α, slope ≈ +1) and to the scale-invariant ones only (slope ≈ 0),
    against every parameter decayed. Slopes d log λ*/d log α by the Fig. 2 machinery
    (:func:`weightdecay.report.stats.slope_fit`), paired differences on one bootstrap. The
    pilot found no interior optimum for the non-scale-invariant subset (its decay never
    helped, only hurt past a point); so one more claim, fixed on the pilot seeds before the
    reported ones ran, measures that point: the *edge* of each learning rate's basin
    (:func:`basin_edge`), whose slope the box α/λ predicts ≈ +1.
(d) **Corrected decay.** Under cosine AdamW, the scale-invariant layers' gradient norm in the
    last 10 % of training ÷ its value at the middle (the updates within ±5 % of T/2): it
    should exceed 1 with the paper's decay and be lowered by the corrected convention
    (d ∝ η_t², Defazio 2025, arXiv 2506.02285). Geometric mean over the settings.

Intervals: the project's bootstrap (:class:`weightdecay.report.resample.Replicates`: S−1 seed
draws per replicate, test examples resampled where errors are involved); a run statistic is
averaged over the drawn seeds of its setting (each seed weighted by its draws), so every
comparison inside one experiment tag is paired.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..diagnostics.summary import equilibrium_ratio
from ..harness.monitoring import monitor_rows, total_updates
from ..registry import optimizer_label, setting_key
from .claims import Claim, Evidence
from .resample import Replicates
from .stats import HeatMap, Interval, format_value, interval, ols_slopes

__all__ = [
    "EDGE_FACTOR", "EQUILIBRIUM_RANGE", "SUBSETS", "TAG_EQUILIBRIUM", "TAG_SUBSETS",
    "MechanismRow", "RunEquilibrium", "basin_edge", "convention_label", "edge_slope", "markdown",
    "mechanism_claims", "mechanism_table", "run_equilibrium", "seed_mean",
]

#: experiment tags of the monitored runs (a, b, d) and of the decay-subset heat maps (c)
TAG_EQUILIBRIUM, TAG_SUBSETS = "equilibrium", "decay_subsets"
#: (a): the range of measured ÷ predicted rotation that counts as "at equilibrium"
EQUILIBRIUM_RANGE = (0.8, 1.25)
#: the stationary window: timescales 1/(2d) elapsed, and eta_t >= this fraction of eta_max
MIN_TIMESCALES, MIN_ETA_FRACTION = 3.0, 0.5
#: (d): the end of training (its last fraction) and the middle (updates within T/2 ± this·T)
END_FRACTION, MIDDLE_HALF_WIDTH = 0.1, 0.05
#: (c): the upper edge of a learning rate's basin: its error first exceeds this factor times
#: the row's own best error (fixed on the pilot seeds, docs/experiment-design.md)
EDGE_FACTOR = 2.0
#: (b): the slope of log rotation on log alpha each convention predicts
CONVENTION_SLOPE = {"schedule": 0.0, "lr": 0.5}
#: (c): the decay subsets, with the records' fields that select them
SUBSETS: dict[str, dict[str, Any]] = {
    "all": {"decay_subset": None, "scale_invariant_only": False},
    "scale_invariant": {"decay_subset": None, "scale_invariant_only": True},
    "not_scale_invariant": {"decay_subset": "not_scale_invariant",
                            "scale_invariant_only": False},
}
SUBSET_LABELS = {"all": "every parameter decayed", "scale_invariant":
                 "only the scale-invariant weights", "not_scale_invariant":
                 "only the others (head, BN scale/shift)"}
_CONVENTIONS = {"schedule": "paper (η_t·λ)", "lr": "torch (lr_t·λ)",
                "corrected": "corrected (lr_t²/lr_max·λ)", "constant": "constant (λ)"}
_NOT_RUN = "no mechanism runs (weightdecay reproduce --preset mechanism)"


# ------------------------------------------------------------------------------ per run


@dataclass(frozen=True)
class RunEquilibrium:
    """What one monitored run says about the scale-invariant weights (None: not measured).

    ``ratio``: measured ÷ predicted RMS rotation over the stationary window (``measured``,
    ``predicted`` in radians per update; ``first_step``..``last_step`` the window);
    ``grad_ratio``: the mean gradient norm over the last 10 % of the updates ÷ its mean
    over the middle ones (T/2 ± 5 %; the table shows it for schedules that anneal)."""

    ratio: float | None = None
    measured: float | None = None
    predicted: float | None = None
    first_step: int | None = None
    last_step: int | None = None
    grad_ratio: float | None = None


def run_equilibrium(record: Mapping) -> RunEquilibrium:
    """The :class:`RunEquilibrium` of a run's record (its ``history["monitor"]``)."""
    if record.get("diverged"):
        return RunEquilibrium()
    rows = monitor_rows(record.get("history"), "scale_invariant")
    if not rows:
        return RunEquilibrium()
    w = equilibrium_ratio(rows, min_timescales=MIN_TIMESCALES,
                          min_eta_fraction=MIN_ETA_FRACTION) or {}
    grad = None
    T = total_updates(record.get("history"))
    if T:
        end = [r["grad_norm"] for r in rows
               if r["grad_norm"] is not None and r["step"] > (1 - END_FRACTION) * T]
        mid = [r["grad_norm"] for r in rows
               if r["grad_norm"] is not None and abs(r["step"] - T / 2) <= MIDDLE_HALF_WIDTH * T]
        if end and mid and sum(mid) > 0:
            grad = (sum(end) / len(end)) / (sum(mid) / len(mid))
    return RunEquilibrium(w.get("ratio"), w.get("measured"), w.get("predicted"),
                          w.get("first_step"), w.get("last_step"), grad)


def _per_run(ev: Evidence) -> tuple[Replicates | None, list[RunEquilibrium]]:
    """The monitored runs' bootstrap and their statistics, computed once per Evidence."""
    key = ("mechanism", TAG_EQUILIBRIUM)
    if key not in ev.cache:
        reps = ev.reps(TAG_EQUILIBRIUM)
        ev.cache[key] = (reps, [] if reps is None else [run_equilibrium(r)
                                                        for r in reps.records])
    return ev.cache[key]


def seed_mean(reps: Replicates, runs: Sequence[int], values: np.ndarray) -> np.ndarray:
    """``(B + 1,)``: the mean of a per-run value over ``runs`` (one setting, one run per
    seed), each run weighted by its seed's draws in each replicate -- the resampling of
    :meth:`Replicates.mean`, for any statistic of a run. NaN where a drawn run has none or
    no run's seed is drawn."""
    idx = np.asarray(list(runs), dtype=int)
    w = reps.seed_counts[:, reps.seed_index[idx]].astype(float)
    v = np.asarray(values, dtype=float)[idx]
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (w * np.nan_to_num(v)).sum(axis=1) / total
    out[total == 0] = np.nan
    out[((w > 0) & np.isnan(v)[None, :]).any(axis=1)] = np.nan
    return out


def _settings(records: Sequence[Mapping], keep: Callable[[Mapping], bool]) -> list[list[int]]:
    """Indices of the kept records, grouped by setting (everything but the seed)."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        if keep(r):
            groups.setdefault(setting_key(r), []).append(i)
    return list(groups.values())


def _logs(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.log(v) if v is not None and v > 0 else np.nan for v in values])


def _complete(groups: list[list[int]], values: np.ndarray) -> list[list[int]]:
    """The settings where every run has a value (a setting is in or out as a whole)."""
    return [g for g in groups if np.isfinite(values[g]).all()]


# ------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class MechanismRow:
    """One monitored setting: its window's rotation, measured against predicted, and (cosine
    runs) the gradient-norm ratio, each over its seeds with a bootstrap interval."""

    experiment: str | None
    optimizer: str
    decay_convention: str
    schedule: str
    lr: float
    weight_decay: float
    seeds: int
    window: tuple[int, int] | None
    predicted: float | None
    rotation: Interval | None
    ratio: Interval | None
    grad_ratio: Interval | None

    def to_dict(self) -> dict:
        def ci(x: Interval | None) -> dict | None:
            return None if x is None else x.to_dict()

        return {"experiment": self.experiment, "optimizer": self.optimizer,
                "decay_convention": self.decay_convention, "schedule": self.schedule,
                "lr": self.lr, "weight_decay": self.weight_decay, "seeds": self.seeds,
                "window": None if self.window is None else list(self.window),
                "predicted_rotation": self.predicted, "rotation": ci(self.rotation),
                "ratio": ci(self.ratio), "grad_ratio": ci(self.grad_ratio)}


def mechanism_table(ev: Evidence) -> list[MechanismRow]:
    """One row per monitored setting (tag ``equilibrium``), in record order."""
    reps, stats = _per_run(ev)
    if reps is None:
        return []
    ratio = _logs([s.ratio for s in stats])
    rotation = _logs([s.measured for s in stats])
    grad = _logs([s.grad_ratio for s in stats])

    def ci(runs: list[int], logs: np.ndarray) -> Interval | None:
        if not np.isfinite(logs[runs]).all():
            return None
        return interval(np.exp(seed_mean(reps, runs, logs)))

    out = []
    for runs in _settings(reps.records, lambda r: True):
        r0 = reps.records[runs[0]]
        firsts = [f for i in runs if (f := stats[i].first_step) is not None]
        lasts = [t for i in runs if (t := stats[i].last_step) is not None]
        preds = [p for i in runs if (p := stats[i].predicted) is not None]
        out.append(MechanismRow(
            r0.get("experiment"), str(r0["optimizer"]), str(r0.get("decay_convention")),
            str(r0.get("schedule")), float(r0["lr"]), float(r0["weight_decay"]), len(runs),
            (min(firsts), max(lasts)) if firsts and lasts else None,
            sum(preds) / len(preds) if preds else None, ci(runs, rotation), ci(runs, ratio),
            None if r0.get("schedule") == "fixed" else ci(runs, grad)))
    return out


def convention_label(name: str) -> str:
    """A decay convention's name with what λ is multiplied by ("paper (η_t·λ)", ...)."""
    return _CONVENTIONS.get(name, name)


def markdown(rows: Sequence[MechanismRow]) -> str:
    """The table as markdown."""
    lines = ["| experiment | optimizer | decay | schedule | α | λ | window (updates) | "
             "predicted r (rad) | measured r [90 %] | measured ÷ predicted [90 %] | "
             "grad. norm end ÷ middle [90 %] |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(x: Interval | None, fmt: str) -> str:
            return "—" if x is None else x.format(fmt)

        lines.append(
            f"| {r.experiment} | {optimizer_label(r.optimizer)} | "
            f"{convention_label(r.decay_convention)} | {r.schedule} | "
            f"{format_value(r.lr)} | {format_value(r.weight_decay)} | "
            f"{'—' if r.window is None else f'{r.window[0]}–{r.window[1]}'} | "
            f"{'—' if r.predicted is None else f'{r.predicted:.4f}'} | "
            f"{f(r.rotation, '{:.4f}')} | {f(r.ratio, '{:.3f}')} | "
            f"{f(r.grad_ratio, '{:.2f}')} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ claims


def _not_run(key: str, source: str, claim: str, metric: str, why: str = _NOT_RUN) -> Claim:
    return Claim(key, source, claim, metric, None, "not run", "—", why)


def _claim_equilibrium(ev: Evidence, opt: str) -> Claim:
    label = optimizer_label(opt)
    lo, hi = EQUILIBRIUM_RANGE
    key, source = f"mech.equilibrium.{opt}", "mechanism (a)"
    claim = (f"{label}: the scale-invariant weights reach the rotational equilibrium "
             "r = √(2d(1−b)/(1+b)) (Kosson et al. 2024, arXiv 2305.17212; Wan et al. 2021)")
    metric = ("measured ÷ predicted RMS rotation per update over the stationary window, "
              "geometric mean over the settings")
    reps, stats = _per_run(ev)
    if reps is None:
        return _not_run(key, source, claim, metric)
    logs = _logs([s.ratio for s in stats])
    groups = _complete(_settings(reps.records, lambda r: r["optimizer"] == opt), logs)
    if not groups:
        return _not_run(key, source, claim, metric,
                        f"no monitored {label} run with a stationary window")
    ci = interval(np.exp(np.mean([seed_mean(reps, g, logs) for g in groups], axis=0)))
    verdict = ("inconclusive" if not ci.finite else "holds" if lo <= ci.lo and ci.hi <= hi
               else "refuted" if ci.hi < lo or ci.lo > hi else "inconclusive")
    per = [float(np.exp(np.mean(logs[g]))) for g in groups]
    convs = sorted({str(reps.records[g[0]].get("decay_convention")) for g in groups})
    return Claim(key, source, claim, metric, ci, verdict,
                 f"holds if the interval lies within [{lo}, {hi}]; refuted if it lies outside "
                 "it; else inconclusive",
                 f"{len(groups)} settings (conventions {', '.join(convs)}); window: after "
                 f"{MIN_TIMESCALES:g} timescales 1/(2d), η_t ≥ {MIN_ETA_FRACTION:g}·η_max; "
                 f"per setting {min(per):.3f}–{max(per):.3f}", fmt="{:.3f}")


def _pooled_slope(x: np.ndarray, groups: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Per replicate (rows of ``Y``, ``(B + 1, K)``): the least-squares slope of Y on x with
    one intercept per group (x and Y centred within each group)."""
    dx = np.zeros_like(x)
    dY = np.zeros_like(Y)
    for g in np.unique(groups):
        m = groups == g
        dx[m] = x[m] - x[m].mean()
        dY[:, m] = Y[:, m] - Y[:, m].mean(axis=1, keepdims=True)
    den = float((dx * dx).sum())
    return (dY * dx[None, :]).sum(axis=1) / den if den > 0 else np.full(len(Y), np.nan)


def convention_slope(ev: Evidence, opt: str, convention: str
                     ) -> tuple[np.ndarray, list[list[int]]] | None:
    """(b): the slope of log measured rotation on log α per replicate, and the settings
    used; None without at least 3 constant-schedule settings over at least 2 learning rates
    of one λ."""
    reps, stats = _per_run(ev)
    if reps is None:
        return None
    logs = _logs([s.measured for s in stats])
    groups = _complete(_settings(reps.records, lambda r: r["optimizer"] == opt
                                 and r.get("decay_convention") == convention
                                 and r.get("schedule") == "fixed"), logs)
    if len(groups) < 3:
        return None
    x = np.log([float(reps.records[g[0]]["lr"]) for g in groups])
    lam = np.array([float(reps.records[g[0]]["weight_decay"]) for g in groups])
    if all(np.unique(x[lam == v]).size < 2 for v in np.unique(lam)):
        return None
    Y = np.stack([seed_mean(reps, g, logs) for g in groups], axis=1)
    return _pooled_slope(x, lam, Y), groups


def _claim_convention(ev: Evidence, opt: str, convention: str) -> Claim:
    label, name = optimizer_label(opt), _CONVENTIONS[convention]
    expect = CONVENTION_SLOPE[convention]
    other = 0.5 if expect == 0 else 0.0
    key, source = f"mech.convention.{opt}.{convention}", "mechanism (b)"
    claim = (f"{label}, {name}: the rotation of the scale-invariant weights "
             + ("does not depend on α" if expect == 0 else "grows as √α"))
    metric = "slope d log r / d log α at a constant schedule (r: measured RMS rotation)"
    fit = convention_slope(ev, opt, convention)
    if fit is None:
        return _not_run(key, source, claim, metric)
    ci = interval(fit[0])
    verdict = ("inconclusive" if not ci.finite else
               "holds" if ci.contains(expect) and ci.excludes(other) else
               "refuted" if ci.excludes(expect) else "inconclusive")
    reps = ev.reps(TAG_EQUILIBRIUM)
    assert reps is not None
    lrs = sorted({float(reps.records[g[0]]["lr"]) for g in fit[1]})
    lams = sorted({float(reps.records[g[0]]["weight_decay"]) for g in fit[1]})
    return Claim(key, source, claim, metric, ci, verdict,
                 f"holds if the interval contains {expect:g} and excludes {other:g}; refuted "
                 f"if it excludes {expect:g}; else inconclusive",
                 f"{len(lrs)} α from {format_value(lrs[0])} to {format_value(lrs[-1])}, λ "
                 f"{', '.join(format_value(v) for v in lams)} (own units)")


def _subset_fit(ev: Evidence, subset: str):
    return ev.slope(TAG_SUBSETS, optimizer="adamw", **SUBSETS[subset])


def basin_edge(hm: HeatMap, factor: float = EDGE_FACTOR) -> np.ndarray:
    """``(B + 1, R)``: log λ of the upper edge of each learning rate's basin, per replicate --
    the decay at which the row's error first rises above ``factor`` × the row's own best
    error, right of that best (log error interpolated linearly in log λ between the last
    cell below the threshold and the first above it; at a diverged first cell, halfway).
    NaN where a row has no cell above the threshold after its best (no edge in the grid)."""
    keep = hm.cols > 0
    x = np.log(hm.cols[keep])
    boot = hm.boot[:, :, keep]
    out = np.full(boot.shape[:2], np.nan)
    for b in range(boot.shape[0]):
        for i in range(boot.shape[1]):
            y = boot[b, i]
            if not np.isfinite(y).any():
                continue
            j0 = int(np.nanargmin(y))
            thr = factor * y[j0]
            above = np.flatnonzero(~(y <= thr))  # a diverged (NaN) cell is above
            above = above[above > j0]
            if above.size == 0:
                continue
            j = int(above[0])
            lo = max(float(y[j - 1]), 1e-9)  # an error of 0 has no logarithm
            y0, y1 = math.log(lo), (math.log(y[j]) if np.isfinite(y[j]) else None)
            frac = 0.5 if y1 is None or y1 <= y0 else (math.log(max(thr, lo)) - y0) / (y1 - y0)
            out[b, i] = x[j - 1] + (x[j] - x[j - 1]) * frac
    return out


def edge_slope(ev: Evidence) -> Interval | None:
    """(c): the slope d log λ_edge / d log α of the non-scale-invariant subset's basin edge
    (:func:`basin_edge`, rows with an edge inside the grid, at least 3), with its interval."""
    hm = ev.heat_map(TAG_SUBSETS, optimizer="adamw", **SUBSETS["not_scale_invariant"])
    if hm is None:
        return None
    return interval(ols_slopes(np.log(hm.rows), basin_edge(hm)))


def _rises_verdict(ci: Interval) -> str:
    """Holds above 0; refuted below 0, or containing 0 but not +1; else inconclusive (the
    mirror image of the Fig. 2 rule for L2's falling optimum)."""
    if not ci.finite:
        return "inconclusive"
    if ci.lo > 0:
        return "holds"
    if ci.hi < 0 or (ci.contains(0.0) and ci.excludes(1.0)):
        return "refuted"
    return "inconclusive"


def _claims_subsets(ev: Evidence) -> list[Claim]:
    src = "mechanism (c)"
    metric = "slope d log λ* / d log α (AdamW, Fig. 2 grid, cosine)"
    c_not = ("AdamW with only the parameters that are not scale-invariant decayed (head, "
             "BatchNorm scale/shift): the best λ rises with α (Xie & Li 2024: ‖θ‖∞ ≤ α/λ, "
             "slope ≈ +1)")
    c_si = "AdamW with only the scale-invariant weights decayed: the best λ does not move with α"
    c_low = ("removing the decay of the parameters that are not scale-invariant lowers AdamW's "
             "Fig. 2 slope")
    c_high = ("decaying only the parameters that are not scale-invariant raises AdamW's "
              "Fig. 2 slope")
    fits = {s: _subset_fit(ev, s) for s in SUBSETS}
    out = []
    f = fits["not_scale_invariant"]
    if f is None:
        out.append(_not_run("mech.subsets.not_si", src, c_not, metric))
    else:
        ci = f.slope
        out.append(Claim("mech.subsets.not_si", src, c_not, metric, ci, _rises_verdict(ci),
                         "holds if the interval lies above 0; refuted if it lies below 0 or "
                         "contains 0 but not +1; else inconclusive",
                         f"reading: {f.reading}; +1 {'inside' if ci.contains(1.0) else 'outside'}"
                         " the interval", reading=f.reading))
    f = fits["scale_invariant"]
    if f is None:
        out.append(_not_run("mech.subsets.si", src, c_si, metric))
    else:
        ci = f.slope
        verdict = ("inconclusive" if not ci.finite else
                   "holds" if ci.contains(0.0) and ci.excludes(1.0) else
                   "refuted" if ci.excludes(0.0) else "inconclusive")
        out.append(Claim("mech.subsets.si", src, c_si, metric, ci, verdict,
                         "holds if the interval contains 0 and excludes +1; refuted if it "
                         "excludes 0; else inconclusive", f"reading: {f.reading}",
                         reading=f.reading))
    edge = edge_slope(ev)
    c_edge = ("AdamW with only the parameters that are not scale-invariant decayed: the decay "
              "that breaks training scales with α (Xie & Li 2024: ‖θ‖∞ ≤ α/λ; slope ≈ +1)")
    m_edge = (f"slope d log λ_edge / d log α, λ_edge: where a row's error first exceeds "
              f"{EDGE_FACTOR:g}× its best")
    if edge is None:
        out.append(_not_run("mech.subsets.edge", src, c_edge, m_edge))
    else:
        out.append(Claim("mech.subsets.edge", src, c_edge, m_edge, edge,
                         _rises_verdict(edge),
                         "holds if the interval lies above 0; refuted if it lies below 0 or "
                         "contains 0 but not +1; else inconclusive",
                         f"+1 {'inside' if edge.contains(1.0) else 'outside'} the interval; the "
                         "edge is log-interpolated between the grid's cells"))
    base = fits["all"]
    for key, claim, subset, sign in (("mech.subsets.lower", c_low, "scale_invariant", -1),
                                     ("mech.subsets.higher", c_high, "not_scale_invariant", 1)):
        fit = fits[subset]
        metric_d = f"s({SUBSET_LABELS[subset]}) − s(all decayed), paired"
        if fit is None or base is None:
            out.append(_not_run(key, src, claim, metric_d))
            continue
        ci = interval(fit.replicates - base.replicates)
        neg, pos = ci.finite and ci.hi < 0, ci.finite and ci.lo > 0
        verdict = ("holds" if (neg if sign < 0 else pos) else
                   "refuted" if (pos if sign < 0 else neg) else "inconclusive")
        out.append(Claim(key, src, claim, metric_d, ci, verdict,
                         f"holds if the interval lies {'below' if sign < 0 else 'above'} 0; "
                         f"refuted if {'above' if sign < 0 else 'below'} 0; else inconclusive",
                         f"s(all decayed) = {base.slope.format()} ({base.reading}); "
                         f"s({SUBSET_LABELS[subset]}) = {fit.slope.format()} ({fit.reading})"))
    return out


def gradnorm_ratios(ev: Evidence) -> dict[str, np.ndarray] | None:
    """(d): per replicate, the geometric mean over the settings of the gradient-norm ratio,
    for the paper's decay (``"schedule"``) and the corrected one, over the learning rates
    both ran (cosine AdamW, every parameter decayed); None without both."""
    reps, stats = _per_run(ev)
    if reps is None:
        return None
    logs = _logs([s.grad_ratio for s in stats])
    by_lr: dict[str, dict[float, list[list[int]]]] = {}
    for conv in ("schedule", "corrected"):
        def keep(r: Mapping, conv: str = conv) -> bool:
            return (r["optimizer"] == "adamw" and r.get("schedule") == "cosine"
                    and r.get("decay_convention") == conv and r.get("decay_subset") is None
                    and not r.get("scale_invariant_only"))

        for g in _complete(_settings(reps.records, keep), logs):
            by_lr.setdefault(conv, {}).setdefault(float(reps.records[g[0]]["lr"]), []).append(g)
    shared = sorted(set(by_lr.get("schedule", {})) & set(by_lr.get("corrected", {})))
    if not shared:
        return None
    return {conv: np.exp(np.mean([seed_mean(reps, g, logs) for lr in shared
                                  for g in by_lr[conv][lr]], axis=0))
            for conv in ("schedule", "corrected")}


def _claims_gradnorm(ev: Evidence) -> list[Claim]:
    src = "mechanism (d)"
    c1 = ("cosine AdamW, paper's decay: the scale-invariant layers' gradient norm rises toward "
          "the end of training (Defazio 2025, arXiv 2506.02285)")
    m1 = "gradient norm, last 10 % of training ÷ middle, geometric mean over settings"
    c2 = "the corrected decay (lr_t²/lr_max·λ) lowers that rise"
    m2 = "ratio(corrected) − ratio(paper), paired"
    g = gradnorm_ratios(ev)
    if g is None:
        return [_not_run("mech.gradnorm.paper", src, c1, m1),
                _not_run("mech.gradnorm.corrected", src, c2, m2)]
    ci1 = interval(g["schedule"])
    v1 = ("inconclusive" if not ci1.finite else "holds" if ci1.lo > 1 else
          "refuted" if ci1.hi < 1 else "inconclusive")
    ci2 = interval(g["corrected"] - g["schedule"])
    v2 = ("inconclusive" if not ci2.finite else "holds" if ci2.hi < 0 else
          "refuted" if ci2.lo > 0 else "inconclusive")
    corr = interval(g["corrected"])
    return [
        Claim("mech.gradnorm.paper", src, c1, m1, ci1, v1, "holds if the interval lies above "
              "1; refuted if below 1; else inconclusive", "cosine schedule, every parameter "
              "decayed", fmt="{:.2f}"),
        Claim("mech.gradnorm.corrected", src, c2, m2, ci2, v2, "holds if the interval lies "
              "below 0; refuted if above 0; else inconclusive",
              f"ratio(corrected) = {corr.format('{:.2f}')}", fmt="{:+.2f}"),
    ]


def mechanism_claims(ev: Evidence) -> list[Claim]:
    """Claims (a)-(d), in order; "not run" without the ``mechanism`` preset's runs."""
    out = [_claim_equilibrium(ev, o) for o in ("adamw", "sgdw")]
    out += [_claim_convention(ev, o, c) for o in ("adamw", "sgdw") for c in ("schedule", "lr")]
    out += _claims_subsets(ev)
    out += _claims_gradnorm(ev)
    return out

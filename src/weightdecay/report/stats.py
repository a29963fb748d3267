"""Statistics over stored trials: heat maps with standard errors, the best λ of each
learning rate, and how it moves with the learning rate — each with a bootstrap interval.

Everything here reads only *records* (``weightdecay.harness.store.load_records``) and the
bootstrap replicates built from them (:class:`weightdecay.report.resample.Replicates`).

The question of Loshchilov & Hutter (ICLR 2019, Sec. 4, Fig. 2): with an L2 penalty the
best decay λ' moves with the learning rate α (Prop. 1: λ' = λ/α for SGD, a *diagonal
valley*, slope −1 on log–log axes), with decoupled decay it should not (a *separable
basin*, slope 0). This module measures the slope

    s = d log λ*(α) / d log α

of the best λ of each learning-rate row (:func:`row_optima`), fitted over the rows that
train well, with a 90 % percentile-bootstrap interval over seeds and test examples, and
reads it with a fixed rule (:func:`slope_reading`). The direct test of decoupling is the
paired difference Δ = s(L2) − s(decoupled) (Prop. 1 predicts Δ ≈ −1 for SGD).

Units: α and λ (or λ_norm of App. B.1) are the raw stored values; slopes are in
log λ / log α (base-free); test errors are fractions in [0, 1].
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .resample import Replicates

__all__ = [
    "BASIN_FACTOR",
    "INTERVAL_LEVEL",
    "MIN_ROWS",
    "OPTIMUM_WINDOW",
    "HeatMap",
    "Interval",
    "SlopeFit",
    "completed",
    "format_value",
    "heat_map",
    "interval",
    "ols_slopes",
    "row_optima",
    "slope_fit",
    "slope_reading",
    "SLOPE_READINGS",
]

#: coverage of every interval in the report (two-sided, percentile bootstrap)
INTERVAL_LEVEL = 0.90
#: grid steps on each side of a row's best cell that enter its local parabola
OPTIMUM_WINDOW = 2
#: a learning-rate row enters the slope when its best error is at most this factor times
#: the best error of the whole heat map ("the rows that train well"; chosen on the pilot
#: seeds, docs/experiment-design.md)
BASIN_FACTOR = 1.5
#: the fewest learning-rate rows with an interior optimum that a slope is fitted through (two
#: points always lie on a line: a third is the first that can disagree with it)
MIN_ROWS = 3

# Config keys that must be constant inside one heat map (besides its row and column keys):
# averaging over e.g. two schedules or two epoch budgets would silently mix experiments, and
# over two versions of a user's model (source_hash) two different models.
CONSTANT_KEYS = (
    "dataset", "model", "optimizer", "schedule", "epochs", "batch_size", "decay_convention",
    "momentum", "decay_all", "T_0", "T_mult", "milestones", "drop_factor", "width",
    "test_size", "cautious", "l1", "scale_invariant_only", "source_hash", "lr",
    "weight_decay", "weight_decay_norm", "decay_subset",
)


def completed(records: Iterable[Mapping]) -> list[Mapping]:
    """The records of finished trials: state ``"COMPLETE"`` (diverged ones included).

    Records without a ``state`` key count as complete, so hand-made records work.
    """
    return [r for r in records if r.get("state", "COMPLETE") == "COMPLETE"]


def format_value(x: float | None) -> str:
    """Short label for a grid value: ``2^-10`` for powers of two, else 3 significant digits."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if x > 0:
        e = math.log2(x)
        if abs(e - round(e)) < 1e-9 and abs(e) <= 60:
            return f"2^{int(round(e))}"
    return f"{x:.3g}"


# ------------------------------------------------------------------------------ intervals


@dataclass(frozen=True)
class Interval:
    """A point estimate (from the data) and its percentile-bootstrap interval.

    ``lo``/``hi`` are NaN when fewer than half of the replicates give a finite value (the
    statistic is undefined too often to bound); ``valid`` is that fraction.
    """

    estimate: float
    lo: float
    hi: float
    level: float = INTERVAL_LEVEL
    valid: float = 1.0

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.estimate) and np.isfinite(self.lo) and np.isfinite(self.hi))

    def excludes(self, value: float) -> bool:
        return self.finite and not self.lo <= value <= self.hi

    def contains(self, value: float) -> bool:
        return self.finite and self.lo <= value <= self.hi

    def format(self, fmt: str = "{:+.2f}", scale: float = 1.0) -> str:
        """``"+0.58 [+0.27, +0.81]"`` (values times ``scale``)."""
        if not np.isfinite(self.estimate):
            return "n/a"
        est = fmt.format(self.estimate * scale)
        if not (np.isfinite(self.lo) and np.isfinite(self.hi)):
            return f"{est} [interval undefined]"
        return f"{est} [{fmt.format(self.lo * scale)}, {fmt.format(self.hi * scale)}]"

    def to_dict(self) -> dict:
        def f(x):
            return None if not np.isfinite(x) else float(x)

        return {"estimate": f(self.estimate), "lo": f(self.lo), "hi": f(self.hi),
                "level": self.level, "valid": float(self.valid)}


def interval(values: np.ndarray, level: float = INTERVAL_LEVEL) -> Interval:
    """:class:`Interval` from replicate values: ``values[0]`` is the estimate on the data,
    ``values[1:]`` the bootstrap replicates (NaN replicates are left out)."""
    values = np.asarray(values, dtype=float)
    est = float(values[0])
    boot = values[1:]
    ok = np.isfinite(boot)
    valid = float(ok.mean()) if boot.size else 0.0
    if valid < 0.5:
        return Interval(est, float("nan"), float("nan"), level, valid)
    a = (1 - level) / 2
    lo, hi = np.quantile(boot[ok], [a, 1 - a])
    return Interval(est, float(lo), float(hi), level, valid)


# ------------------------------------------------------------------------------ heat maps


@dataclass
class HeatMap:
    """One α×λ heat map of the final test error, with bootstrap replicates per cell.

    Attributes:
        row_key, col_key: record keys on the axes (``"lr"``; ``"weight_decay"`` or
            ``"weight_decay_norm"``).
        rows, cols: sorted distinct values (raw units).
        runs: ``runs[i][j]`` indices (into ``reps.records``) of the cell's runs, one per seed.
        boot: ``(B + 1, R, C)`` mean error of each cell in each replicate (row 0: the data);
            NaN where a run diverged or the cell is empty.
        diverged: ``(R, C)`` True where some run of the cell diverged (never "best").
        counts: ``(R, C)`` completed runs per cell.
        meta: the settings shared by all cells (optimizer, schedule, epochs, ...).
    """

    row_key: str
    col_key: str
    rows: np.ndarray
    cols: np.ndarray
    runs: list[list[list[int]]]
    boot: np.ndarray
    diverged: np.ndarray
    counts: np.ndarray
    meta: dict

    @property
    def mean(self) -> np.ndarray:
        """``(R, C)`` mean final test error over seeds (NaN: diverged or empty)."""
        return self.boot[0]

    @property
    def se(self) -> np.ndarray:
        """``(R, C)`` bootstrap standard error of each cell's mean (seeds and test examples);
        NaN where fewer than two replicates are finite (diverged or empty cells)."""
        b = self.boot[1:]
        ok = np.isfinite(b)
        n = ok.sum(axis=0)
        filled = np.where(ok, b, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = filled.sum(axis=0) / n
            var = np.where(ok, (b - mean) ** 2, 0.0).sum(axis=0) / (n - 1)
        return np.where(n > 1, np.sqrt(var), np.nan)

    @property
    def lam_label(self) -> str:
        return "λ_norm" if self.col_key == "weight_decay_norm" else "λ"

    def top_k(self, k: int = 10) -> list[tuple[int, int]]:
        """Indices ``(i, j)`` of the ``k`` lowest finite cells, best first (ties by
        position, so deterministic)."""
        flat = self.mean.ravel()
        finite = np.flatnonzero(np.isfinite(flat))
        order = finite[np.argsort(flat[finite], kind="stable")]
        cols = self.mean.shape[1]
        return [(int(f) // cols, int(f) % cols) for f in order[:k]]

    def best_error(self) -> np.ndarray:
        """``(B + 1,)`` the lowest cell mean of each replicate (NaN if none is finite)."""
        flat = self.boot.reshape(self.boot.shape[0], -1)
        if flat.shape[1] == 0:
            return np.full(flat.shape[0], np.nan)
        with np.errstate(invalid="ignore"):
            out = np.where(np.isfinite(flat).any(axis=1),
                           np.nanmin(np.where(np.isfinite(flat), flat, np.inf), axis=1),
                           np.nan)
        return out

    def to_dict(self) -> dict:
        def clean(a):
            return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]

        return {"row_key": self.row_key, "col_key": self.col_key,
                "rows": [float(v) for v in self.rows], "cols": [float(v) for v in self.cols],
                "mean": clean(self.mean), "se": clean(self.se),
                "diverged": self.diverged.tolist(), "counts": self.counts.tolist(),
                "meta": self.meta}


def _hashable(value):
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def varying(records: Iterable[Mapping], skip: Iterable[str] = ()) -> list[str]:
    """The :data:`CONSTANT_KEYS` (but ``skip``) that take more than one value in
    ``records``: what must be split before their runs fill one heat map."""
    recs = list(records)
    return [k for k in CONSTANT_KEYS if k not in set(skip)
            and len({_hashable(r.get(k)) for r in recs}) > 1]


def heat_map(
    reps: Replicates,
    select: Callable[[Mapping], bool] | None = None,
    row: str = "lr",
    col: str = "weight_decay",
    epoch: int | None = None,
) -> HeatMap:
    """The ``row`` × ``col`` heat map of the runs of ``reps`` that ``select`` keeps.

    The selected runs must share every other setting (``ValueError`` names the key that
    varies): select one optimizer, schedule and budget first. ``epoch=None`` uses the final
    test error, else the error after that epoch.
    """
    idx = [i for i, r in enumerate(reps.records)
           if r.get("state", "COMPLETE") == "COMPLETE" and (select is None or select(r))]
    if not idx:
        raise ValueError(f"no completed run to place in a {row}×{col} heat map")
    recs = [reps.records[i] for i in idx]
    for key in (row, col):
        if any(r.get(key) is None for r in recs):
            raise ValueError(f"some runs have no {key!r}; cannot place them in a {row}×{col} "
                             "heat map")
    skip = {row, col} | ({"weight_decay"} if col == "weight_decay_norm" else set())
    for key in varying(recs, skip):
        seen = sorted({_hashable(r.get(key)) for r in recs}, key=str)
        raise ValueError(f"the runs of one {row}×{col} heat map mix several values of {key!r} "
                         f"({', '.join(map(str, seen))}); plan each as its own experiment")
    meta = {key: recs[0].get(key) for key in CONSTANT_KEYS if key not in skip}
    rows = np.array(sorted({float(r[row]) for r in recs}))
    cols = np.array(sorted({float(r[col]) for r in recs}))
    runs: list[list[list[int]]] = [[[] for _ in cols] for _ in rows]
    for i, r in zip(idx, recs):
        runs[int(np.searchsorted(rows, float(r[row])))][
            int(np.searchsorted(cols, float(r[col])))].append(i)
    R, C = len(rows), len(cols)
    boot = np.full((reps.n_boot + 1, R, C), np.nan)
    diverged = np.zeros((R, C), dtype=bool)
    counts = np.zeros((R, C), dtype=int)
    errors = reps.errors(epoch)
    for a in range(R):
        for b in range(C):
            cell = runs[a][b]
            counts[a, b] = len(cell)
            if cell:
                diverged[a, b] = bool(np.isnan(errors[0, cell]).any())
                boot[:, a, b] = reps.mean(cell, epoch)
    return HeatMap(row, col, rows, cols, runs, boot, diverged, counts, meta)


# ------------------------------------------------------------------------------ optima


def _local_vertex(x: np.ndarray, y: np.ndarray, j: int, window: int) -> float:
    """log λ of the optimum near cell ``j``: vertex of the least-squares parabola of
    log(error) over the finite cells within ``window`` steps of ``j``, kept within one grid
    step of ``j``; ``x[j]`` when the parabola does not open upwards."""
    lo, hi = max(0, j - window), min(len(x), j + window + 1)
    xs, ys = x[lo:hi], y[lo:hi]
    ok = np.isfinite(ys)
    xs, ys = xs[ok], np.log(np.maximum(ys[ok], 1e-6))
    if len(xs) >= 3:
        a, b, _ = np.polyfit(xs, ys, 2)
        if a > 0:
            left = x[j - 1] if j > 0 else x[j]
            right = x[j + 1] if j + 1 < len(x) else x[j]
            return float(np.clip(-b / (2 * a), left, right))
    return float(x[j])


def row_optima(hm: HeatMap, window: int = OPTIMUM_WINDOW,
               basin_factor: float = BASIN_FACTOR) -> tuple[np.ndarray, np.ndarray]:
    """The best log λ of every learning-rate row, in every replicate.

    For each row: the cell with the lowest mean error, refined by a local parabola of
    log(error) over log λ through it and up to ``window`` neighbours on each side (so one
    noisy cell moves the optimum by less than a grid step). A row enters the slope only when

    * its best cell is not at the edge of the grid's finite cells (else the optimum is not
      bracketed: the true one may lie outside the grid), and
    * its best error is at most ``basin_factor`` times the heat map's best error (the rows
      that train well: the hypotheses are about the basin of good settings).

    Returns:
        ``log_lambda`` ``(B + 1, R)`` (natural log; NaN for rows that do not enter) and
        ``edge`` ``(B + 1, R)`` (True where a row's optimum sits at a grid edge).
    """
    if np.any(hm.cols <= 0):
        keep = hm.cols > 0  # λ = 0 columns (no-decay baselines) have no place on a log axis
        hm = HeatMap(hm.row_key, hm.col_key, hm.rows, hm.cols[keep],
                     [[c for c, k in zip(r, keep) if k] for r in hm.runs],
                     hm.boot[:, :, keep], hm.diverged[:, keep], hm.counts[:, keep], hm.meta)
    x = np.log(hm.cols)
    nb, R, C = hm.boot.shape
    out = np.full((nb, R), np.nan)
    edge = np.zeros((nb, R), dtype=bool)
    best_all = hm.best_error()
    for b in range(nb):
        for i in range(R):
            y = hm.boot[b, i]
            ok = np.flatnonzero(np.isfinite(y))
            if ok.size == 0:
                continue
            j = int(ok[np.argmin(y[ok])])
            if j == ok[0] or j == ok[-1]:
                edge[b, i] = True
                continue
            if not y[j] <= basin_factor * best_all[b]:
                continue
            out[b, i] = _local_vertex(x, y, j, window)
    return out, edge


# ------------------------------------------------------------------------------ slopes

#: the readings of a slope interval, each with its rule (printed beside every verdict)
SLOPE_READINGS = {
    "L2 valley": "interval below 0 and containing −1 (Prop. 1: λ* ∝ 1/α)",
    "separable": "interval contains 0 and excludes −1 (the best λ does not move with α)",
    "rises with α": "interval above 0",
    "partly coupled": "interval strictly between −1 and 0",
    "steeper than L2": "interval below −1",
    "inconclusive": "interval contains both −1 and 0",
    "insufficient data": f"fewer than {MIN_ROWS} rows with a bracketed optimum in the basin",
}


def slope_reading(ci: Interval) -> str:
    """The reading of a slope interval (rules in :data:`SLOPE_READINGS`)."""
    if not ci.finite:
        return "insufficient data"
    if ci.lo > 0:
        return "rises with α"
    if ci.hi < 0:
        if ci.lo <= -1 <= ci.hi:
            return "L2 valley"
        return "steeper than L2" if ci.hi < -1 else "partly coupled"
    return "separable" if ci.lo > -1 else "inconclusive"


@dataclass
class SlopeFit:
    """How the best λ moves with α in one heat map.

    Attributes:
        slope: d log λ* / d log α with its interval (replicates: :attr:`replicates`).
        replicates: ``(B + 1,)`` slope per replicate (NaN where < 3 rows entered).
        log_lambda: ``(B + 1, R)`` per-row optima (natural log; NaN: row left out).
        edge: ``(R,)`` True where the data's optimum of a row sits at the grid's edge.
        rows_used: ``(R,)`` True where the data's row entered the slope.
        reading: :func:`slope_reading` of the interval.
        intercept: log λ* at log α = 0 of the fitted line (data; NaN with < 3 rows).
        reason: why the data give no slope ("not estimable: no row has an interior
            optimum"), or why its interval is undefined; "" when both are defined.
    """

    slope: Interval
    replicates: np.ndarray
    log_lambda: np.ndarray
    edge: np.ndarray
    rows_used: np.ndarray
    reading: str
    intercept: float = float("nan")
    reason: str = ""

    def text(self) -> str:
        """The slope as every view shows it: ``"+0.12 [-0.20, +0.31] (separable)"``, or why
        there is none."""
        if not np.isfinite(self.slope.estimate):
            return self.reason
        return f"{self.value_text()} ({self.reading})"

    def value_text(self) -> str:
        """The slope and its interval without the reading (for tables with a column of
        their own for it), or why there is none."""
        return self.slope.format() if np.isfinite(self.slope.estimate) else self.reason

    def line(self, rows: np.ndarray) -> np.ndarray:
        """The fitted log λ* at the learning rates ``rows`` (data)."""
        return self.intercept + self.slope.estimate * np.log(rows)

    def to_dict(self, hm: HeatMap | None = None) -> dict:
        out = {"slope": self.slope.to_dict(), "reading": self.reading,
               "rule": SLOPE_READINGS[self.reading], "reason": self.reason,
               "best_lambda": [None if not np.isfinite(v) else float(np.exp(v))
                               for v in self.log_lambda[0]],
               "edge_rows": self.edge.tolist(), "rows_used": self.rows_used.tolist()}
        if hm is not None:
            out["rows"] = [float(v) for v in hm.rows]
        return out


def ols_slopes(x: np.ndarray, Y: np.ndarray, min_rows: int = MIN_ROWS) -> np.ndarray:
    """Least-squares slope of each row of ``Y`` (``(B, R)``, NaN = left out) on ``x``."""
    ok = np.isfinite(Y)
    n = ok.sum(axis=1)
    xw = np.where(ok, x[None, :], 0.0)
    yw = np.where(ok, Y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = xw.sum(axis=1) / n
        my = yw.sum(axis=1) / n
        dx = np.where(ok, x[None, :] - mx[:, None], 0.0)
        dy = np.where(ok, Y - my[:, None], 0.0)
        s = (dx * dy).sum(axis=1) / (dx * dx).sum(axis=1)
    s[n < min_rows] = np.nan
    return s


def slope_fit(hm: HeatMap, window: int = OPTIMUM_WINDOW,
              basin_factor: float = BASIN_FACTOR) -> SlopeFit:
    """The slope s = d log λ* / d log α of a heat map, with its bootstrap interval.

    Per replicate: the per-row optima of :func:`row_optima`, then the least-squares slope of
    log λ* on log α over the rows that entered (at least 3). The interval is the 90 %
    percentile interval of the replicate slopes; the reading follows
    :data:`SLOPE_READINGS`.
    """
    log_lam, edge = row_optima(hm, window, basin_factor)
    x = np.log(hm.rows)
    s = ols_slopes(x, log_lam)
    ci = interval(s)
    used = np.isfinite(log_lam[0])
    intercept = (float(np.mean(log_lam[0, used]) - s[0] * np.mean(x[used]))
                 if np.isfinite(s[0]) else float("nan"))
    return SlopeFit(ci, s, log_lam, edge[0], used, slope_reading(ci), intercept,
                    _slope_reason(hm, ci, int(used.sum()), int(edge[0].sum())))


def _slope_reason(hm: HeatMap, ci: Interval, used: int, edges: int) -> str:
    """Why a heat map gives no slope (or no interval for it), in words; "" if it does."""
    if np.isfinite(ci.estimate):
        return "" if ci.finite else (
            f"interval undefined: fewer than half of the bootstrap replicates have "
            f"{MIN_ROWS} rows with an interior optimum")
    lams = int((hm.cols > 0).sum())
    if lams < 3:
        return (f"not estimable: {lams} {hm.lam_label} value{'s' * (lams != 1)} > 0, and an "
                f"interior optimum needs 3")
    if len(hm.rows) < MIN_ROWS:
        return (f"not estimable: {len(hm.rows)} learning rate{'s' * (len(hm.rows) != 1)}, and "
                f"a slope needs {MIN_ROWS} rows with an interior optimum")
    finite = int(np.isfinite(hm.mean[:, hm.cols > 0]).any(axis=1).sum())
    parts = [f"{n} {what}" for n, what in ((edges, "at the edge of the cells run"),
                                          (finite - edges - used, "outside the basin"),
                                          (len(hm.rows) - finite, "without a finite cell")) if n]
    why = f" ({', '.join(parts)})" if parts else ""
    if used == 0:
        return f"not estimable: no row has an interior optimum{why}"
    return (f"not estimable: {used} row{'s' * (used != 1)} with an interior optimum{why}, and "
            f"a slope needs {MIN_ROWS}")

"""Statistics over stored trials: heat-map tables and the decoupling statistic.

Everything here reads only *records* — the list of dicts returned by
``weightdecay.harness.store.load_records`` (one dict per trial, config fields flattened,
plus ``state``, ``diverged``, ``final_test_error``, ``history`` ...). Nothing here touches an
optimizer or a trainer.

The central claim of Loshchilov & Hutter (ICLR 2019, Sec. 4 and Fig. 2) is that with an L2
penalty the best weight decay moves with the learning rate (Prop. 1: λ' = λ/α, a *diagonal
valley* in the α×λ heat map), while with decoupled decay the best λ stays put (a *separable
basin*). :func:`decoupling_statistic` turns a heat map into numbers and a sentence that says
which of the two shapes the data show.

Units: learning rates and weight decays are the raw values stored in the records (α and the
paper's λ, or λ_norm of App. B.1); test errors are fractions in [0, 1]; shifts of the best λ
are in *decades* (log10 units; one step of a powers-of-two grid is log10(2) ≈ 0.30 decades).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "COUPLED_MIN_DECADES",
    "COUPLED_MIN_RHO",
    "DECOUPLED_MAX_DECADES",
    "DecouplingStatistic",
    "HeatmapTable",
    "best_cell",
    "best_lambda_by_budget",
    "budget_shift",
    "completed",
    "decoupling_statistic",
    "format_value",
    "heatmap_table",
    "top_k_cells",
]

# --- verdict thresholds (documented in decoupling_statistic) -------------------------------
#: best λ staying within this many decades over all learning rates reads as "decoupled".
#: 0.35 decades is one step of a powers-of-two grid (0.30) plus slack for seed noise.
DECOUPLED_MAX_DECADES = 0.35
#: a shift of at least this many decades (two powers-of-two grid steps, 0.60, minus slack) ...
COUPLED_MIN_DECADES = 0.55
#: ... together with a monotone trend at least this strong (|Spearman ρ|) reads as "coupled".
COUPLED_MIN_RHO = 0.7

# Config keys that must be constant inside one heat map (besides its row and column keys):
# averaging over e.g. two schedules or two epoch budgets would silently mix experiments.
_CONSTANT_KEYS = (
    "dataset",
    "model",
    "optimizer",
    "schedule",
    "epochs",
    "batch_size",
    "decay_convention",
    "momentum",
    "decay_all",
    "T_0",
    "T_mult",
    "milestones",
    "drop_factor",
    "lr",
    "weight_decay",
    "weight_decay_norm",
)

_REL_TIE = 1e-9  # two cells whose errors differ by less than this (relative) are tied


def completed(records: Iterable[Mapping]) -> list[Mapping]:
    """Return the records of finished trials: state ``"COMPLETE"`` (diverged ones included).

    Records without a ``state`` key are treated as complete, so hand-made records work.
    RUNNING, WAITING and FAIL trials carry no final metrics and are left out.
    """
    return [r for r in records if r.get("state", "COMPLETE") == "COMPLETE"]


def _hashable(value):
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


@dataclass
class HeatmapTable:
    """A heat map of one metric over two config keys, averaged over seeds.

    Attributes:
        row_key, col_key, value_key: the record keys used (e.g. ``"lr"``,
            ``"weight_decay"``, ``"final_test_error"``).
        rows, cols: sorted distinct values of ``row_key`` / ``col_key`` (raw units).
        values: ``(len(rows), len(cols))`` mean of ``value_key`` over seeds; NaN where a
            cell has no completed trial or diverged.
        diverged: True where at least one seed of the cell diverged (or reported a
            non-finite value). Such a cell's value is NaN: a setting that blows up for some
            seeds is not a usable setting, so it is never "best".
        counts: number of completed trials per cell (all seeds, diverged ones included).
        num_test: test-set size of the trials (from the records' ``"num_test"``), or None
            when unknown; with it a test error has a known binomial noise.
    """

    row_key: str
    col_key: str
    value_key: str
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    diverged: np.ndarray
    counts: np.ndarray
    num_test: float | None = None

    @property
    def missing(self) -> np.ndarray:
        """True where a cell has no completed trial at all."""
        return self.counts == 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape

    def to_dict(self) -> dict:
        """JSON-able form (NaN written as ``None``)."""

        def clean(a):
            return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]

        return {
            "row_key": self.row_key,
            "col_key": self.col_key,
            "value_key": self.value_key,
            "rows": [float(v) for v in self.rows],
            "cols": [float(v) for v in self.cols],
            "values": clean(self.values),
            "diverged": self.diverged.tolist(),
            "counts": self.counts.tolist(),
            "num_test": self.num_test,
        }


def heatmap_table(
    records: Sequence[Mapping],
    row: str = "lr",
    col: str = "weight_decay",
    value: str = "final_test_error",
) -> HeatmapTable:
    """Build the ``row`` × ``col`` table of ``value`` (mean over seeds) from trial records.

    Only completed trials count (see :func:`completed`). A cell is marked diverged — and its
    value set to NaN — if any of its trials has ``diverged=True`` or a non-finite ``value``.

    Args:
        records: trial records (dicts). They must all share the same experiment settings
            apart from ``row``, ``col`` and ``seed``: a table that mixes, for example, two
            optimizers or two epoch budgets raises ``ValueError`` (select first).
        row: record key on the vertical axis (default ``"lr"``, the paper's α).
        col: record key on the horizontal axis (default ``"weight_decay"``, the paper's λ;
            use ``"weight_decay_norm"`` for λ_norm of App. B.1).
        value: the metric to average (default ``"final_test_error"``, a fraction).

    Raises:
        ValueError: no completed record has both keys, a record lacks a value for ``row``
            or ``col``, or the records mix other settings.
    """
    if row == col:
        raise ValueError(f"row and col must differ, got row={row!r}, col={col!r}")
    done = completed(records)
    if not done:
        raise ValueError(
            f"heatmap_table needs completed trials; got {len(records)} record(s), none with "
            "state 'COMPLETE'"
        )
    for key in (row, col):
        bad = [r.get("trial_number", i) for i, r in enumerate(done) if r.get(key) is None]
        if bad:
            raise ValueError(
                f"records lack a value for {key!r} (trials {bad[:5]}); cannot place them in a "
                f"{row}×{col} heat map"
            )
    skip = {row, col}
    if "weight_decay_norm" in skip:  # with λ_norm set, the stored raw λ is derived, not swept
        skip.add("weight_decay")
    for key in _CONSTANT_KEYS:
        if key in skip:
            continue
        seen = {_hashable(r.get(key)) for r in done}
        if len(seen) > 1:
            shown = sorted(seen, key=str)
            raise ValueError(
                f"records mix several values of {key!r} ({shown}); select one before building "
                f"a {row}×{col} heat map"
            )

    rows = np.array(sorted({float(r[row]) for r in done}))
    cols = np.array(sorted({float(r[col]) for r in done}))
    row_index = {v: i for i, v in enumerate(rows)}
    col_index = {v: j for j, v in enumerate(cols)}
    sums = np.zeros((len(rows), len(cols)))
    n_ok = np.zeros((len(rows), len(cols)), dtype=int)
    counts = np.zeros((len(rows), len(cols)), dtype=int)
    diverged = np.zeros((len(rows), len(cols)), dtype=bool)
    for r in done:
        i, j = row_index[float(r[row])], col_index[float(r[col])]
        counts[i, j] += 1
        v = r.get(value)
        if bool(r.get("diverged", False)) or v is None or not np.isfinite(float(v)):
            if v is None and not r.get("diverged", False):
                # a completed, non-diverged trial without the metric: a store problem
                raise ValueError(
                    f"completed trial {r.get('trial_number', '?')} has no {value!r}; "
                    "cannot build the heat map"
                )
            diverged[i, j] = True
            continue
        sums[i, j] += float(v)
        n_ok[i, j] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where((n_ok > 0) & ~diverged, sums / np.maximum(n_ok, 1), np.nan)
    sizes = [float(r["num_test"]) for r in done
             if r.get("num_test") is not None and np.isfinite(float(r["num_test"]))
             and float(r["num_test"]) > 0]
    return HeatmapTable(row, col, value, rows, cols, values, diverged, counts,
                        min(sizes) if sizes else None)


def top_k_cells(table: HeatmapTable, k: int = 10) -> list[tuple[int, int]]:
    """Indices ``(i, j)`` of the ``k`` lowest finite cells, best first.

    Ties are broken by position (row-major), so the result is deterministic. Diverged and
    empty cells are never included; fewer than ``k`` cells are returned if fewer are finite.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    flat = table.values.ravel()
    finite = np.flatnonzero(np.isfinite(flat))
    order = finite[np.argsort(flat[finite], kind="stable")]
    return [tuple(int(x) for x in np.unravel_index(f, table.shape)) for f in order[:k]]


def best_cell(table: HeatmapTable) -> tuple[float, float, float]:
    """``(row value, col value, metric)`` of the best (lowest) finite cell.

    Raises ValueError if the table has no finite cell (everything diverged or missing).
    """
    top = top_k_cells(table, 1)
    if not top:
        raise ValueError(
            f"heat map of {table.value_key} has no finite cell (all diverged or missing)"
        )
    i, j = top[0]
    return float(table.rows[i]), float(table.cols[j]), float(table.values[i, j])


def format_value(x: float) -> str:
    """Short label for a grid value: ``2^-10`` for powers of two, else 3 significant digits."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if x > 0:
        e = math.log2(x)
        if abs(e - round(e)) < 1e-9 and abs(e) <= 60:
            return f"2^{int(round(e))}"
    return f"{x:.3g}"


def _format_ratio(ratio: float) -> str:
    if abs(ratio - round(ratio)) < 1e-6:
        return f"{int(round(ratio))}×"
    return f"{ratio:.3g}×"


@dataclass
class DecouplingStatistic:
    """How much the best λ moves with the learning rate in one heat map.

    Attributes:
        rows: the learning rates (row values) that have at least one finite cell.
        best_lambda: best λ of each of those rows: the vertex of a parabola fitted over
            log λ (see :func:`decoupling_statistic`), so it may lie between grid values.
        rho: Spearman rank correlation between log(lr) and log(best λ) over those rows.
            0.0 when the best λ is identical in every row (no association); NaN with fewer
            than two usable rows.
        decades: log10(max best λ / min best λ) — how far the best λ moves, in decades.
        lr_ratio: max/min learning rate over the usable rows.
        slope: least-squares slope of log10(best λ) on log10(lr); Prop. 1 of the paper
            predicts -1 for SGD with L2, 0 for decoupled decay. NaN with < 2 rows.
        top_k_rho: Spearman ρ between log α and log λ over the ``k`` best cells (the
            orientation of the good region): strongly negative for a diagonal valley
            (Prop. 1: λ·α constant along it), near 0 for a separable basin. NaN with fewer
            than 3 finite cells or when α or λ is constant among them.
        verdict: ``"coupled"``, ``"decoupled"``, ``"partly coupled"``, ``"inconclusive"`` or
            ``"insufficient data"``.
        text: the verdict in plain words with the numbers, for titles and the report.
    """

    rows: np.ndarray
    best_lambda: np.ndarray
    rho: float
    decades: float
    lr_ratio: float
    slope: float
    top_k_rho: float
    verdict: str
    text: str
    k: int = 10
    short: str = field(default="")

    def to_dict(self) -> dict:
        def f(x):
            return None if x is None or not np.isfinite(x) else float(x)

        return {
            "rows": [float(v) for v in self.rows],
            "best_lambda": [float(v) for v in self.best_lambda],
            "rho": f(self.rho),
            "decades": f(self.decades),
            "lr_ratio": f(self.lr_ratio),
            "slope": f(self.slope),
            "top_k_rho": f(self.top_k_rho),
            "verdict": self.verdict,
            "text": self.text,
        }


def row_tolerance(table: HeatmapTable, i: int) -> float:
    """How much worse than row ``i``'s best cell a cell may be and still count as tied.

    For a test *error* with a known test-set size n this is one binomial standard error of
    the row's best cell, sqrt(p(1-p) / (n * seeds)): cells closer than that cannot be told
    apart by the measurement, and picking one of them as "the best λ" would measure noise.
    Otherwise (unknown n, another metric) only exact ties count.
    """
    line = table.values[i]
    ok = np.isfinite(line)
    m = float(line[ok].min())
    if table.num_test and table.value_key.endswith("error") and 0 <= m <= 1:
        j = int(np.nanargmin(np.where(ok, line, np.nan)))
        seeds = max(1, int(table.counts[i, j]))
        p = min(max(m, 1.0 / table.num_test), 1 - 1.0 / table.num_test)  # never 0 noise
        return float(np.sqrt(p * (1 - p) / (table.num_test * seeds)))
    return _REL_TIE * max(abs(m), 1e-12)


def _row_optimum(logs: np.ndarray, line: np.ndarray, tol: float) -> float:
    """log λ of a row's optimum: the vertex of the least-squares parabola of log(value)
    through its finite cells (every cell counts, so one noisy cell cannot move it far; the
    log keeps a blown-up corner from dominating the fit), clamped to the grid; when the
    parabola does not open upwards, the centre of the cells tied with the best."""
    ok = np.isfinite(line)
    x, y = logs[ok], line[ok]
    if len(x) >= 3:
        a, b, _ = np.polyfit(x, np.log(np.maximum(y, 1e-9)), 2)
        if a > 0:
            return float(np.clip(-b / (2 * a), x.min(), x.max()))
    tied = y - y.min() <= tol * (1 + 1e-9)
    return float(np.mean(x[tied]))


def _best_lambda_per_row(table: HeatmapTable) -> tuple[np.ndarray, np.ndarray]:
    positive = table.cols > 0  # the statistic lives on a log scale: λ = 0 columns are left out
    logs = np.log(np.where(positive, table.cols, 1.0))
    rows, best = [], []
    for i, lr in enumerate(table.rows):
        line = np.where(positive, table.values[i], np.nan)
        if not np.isfinite(line).any():
            continue  # a row with every cell diverged/missing says nothing about the best λ
        rows.append(float(lr))
        best.append(float(np.exp(_row_optimum(logs, line, row_tolerance(table, i)))))
    return np.array(rows), np.array(best)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y).statistic)


def _top_k_rho(table: HeatmapTable, k: int) -> float:
    top = top_k_cells(table, k)
    if len(top) < 3:
        return float("nan")
    return _spearman(np.array([i for i, _ in top], float), np.array([j for _, j in top], float))


def decoupling_statistic(table: HeatmapTable, k: int = 10) -> DecouplingStatistic:
    """Does the best λ move with the learning rate? Numbers and a verdict in words.

    For every learning-rate row with at least one finite cell, take the best λ: the vertex
    of the least-squares parabola of log(value) over log λ through the row's finite cells,
    clamped to the grid (with one seed and a 1000-example test set the arg-min of a flat
    basin is noise; the fitted optimum uses every cell). Where the parabola does not open
    upwards (fewer than 3 cells, or a monotone row), the centre of the cells tied with the
    row's best — within one binomial standard error when the records carry the test-set
    size (:func:`row_tolerance`), else exact ties. Columns with λ <= 0 (a no-decay baseline)
    are left out, as the statistic lives on a log scale. Then:

    * ``rho`` — Spearman ρ between log(lr) and log(best λ) (scipy.stats.spearmanr);
    * ``decades`` — log10(max/min best λ) over the rows;
    * ``slope`` — least-squares slope of log10 best λ on log10 lr (Prop. 1: −1 for SGD+L2);
    * ``top_k_rho`` — Spearman ρ of log α vs log λ over the k best cells (shape of the
      good region; not used by the verdict).

    Verdict thresholds (module constants; one powers-of-two grid step is 0.30 decades):

    * ``decades <= 0.35`` → **decoupled — a separable basin**: the best λ stays within one
      grid step whatever the learning rate (Fig. 2, SGDW/AdamW);
    * ``decades >= 0.55`` and ``|rho| >= 0.7`` → **coupled — a diagonal valley**: the best λ
      moves by two or more grid steps, monotonically with α (Fig. 2, SGD/Adam with L2);
    * ``decades >= 0.55`` and ``|rho| < 0.5`` → **inconclusive**: it moves, but without trend
      (noise, or too few seeds);
    * otherwise → **partly coupled**: a weak or short trend.

    Fewer than two usable rows gives ``"insufficient data"``.

    Args:
        table: from :func:`heatmap_table` with learning rates on rows and λ on columns.
        k: how many top cells enter ``top_k_rho`` (the paper circles the top 10).
    """
    rows, best = _best_lambda_per_row(table)
    top_rho = _top_k_rho(table, k)
    nan = float("nan")
    lam = "λ_norm" if table.col_key == "weight_decay_norm" else "λ"
    if len(rows) < 2:
        text = (
            f"insufficient data: {len(rows)} learning rate(s) with a finite cell; the best "
            f"{lam} cannot be compared across learning rates"
        )
        return DecouplingStatistic(
            rows, best, nan, nan, nan, nan, top_rho, "insufficient data", text, k,
            "insufficient data",
        )
    if np.any(rows <= 0):
        raise ValueError(f"learning rates must be positive for a log scale, got {rows.tolist()}")
    log_lr, log_best = np.log10(rows), np.log10(best)
    decades = float(log_best.max() - log_best.min())
    if decades < 1e-12:
        decades = 0.0  # identical optima up to rounding of the fitted vertex
    lr_ratio = float(rows.max() / rows.min())
    if np.ptp(log_best) < 1e-12:
        rho = 0.0  # best λ identical in every row: no association (Spearman is undefined)
    else:
        rho = _spearman(log_lr, log_best)
    slope = float(np.polyfit(log_lr, log_best, 1)[0])

    if decades <= DECOUPLED_MAX_DECADES:
        verdict, shape = "decoupled", "a separable basin"
    elif decades >= COUPLED_MIN_DECADES and abs(rho) >= COUPLED_MIN_RHO:
        # L2 (Prop. 1) predicts the best lambda falling as alpha grows; a rise is a coupling
        # too, but not the L2 valley: say which
        verdict = "coupled"
        shape = ("a diagonal valley" if rho < 0 else
                 "the best λ grows with the learning rate (not the L2 direction)")
    elif decades >= COUPLED_MIN_DECADES and abs(rho) < 0.5:
        verdict, shape = "inconclusive", "the best λ wanders without a trend"
    else:
        verdict, shape = "partly coupled", "a weak drift with the learning rate"
    shape = shape.replace("λ", lam)
    rho_s = f"ρ = {rho:+.2f}" if np.isfinite(rho) else "ρ undefined"
    span = f"across a {_format_ratio(lr_ratio)} range of learning rates ({rho_s})"
    if verdict == "decoupled":
        text = f"best {lam} stays within {decades:.1f} decades {span}: decoupled — {shape}"
    else:
        text = f"best {lam} moves {decades:.1f} decades {span}: {verdict} — {shape}"
    short = f"{verdict}: {lam}* shift {decades:.1f} dec, {rho_s}"
    return DecouplingStatistic(
        rows, best, rho, decades, lr_ratio, slope, top_rho, verdict, text, k, short
    )


def best_lambda_by_budget(
    records: Sequence[Mapping],
    col: str = "weight_decay",
    row: str = "lr",
    value: str = "final_test_error",
) -> dict[float, tuple[float, float, float]]:
    """Best cell of the ``row``×``col`` heat map at each epoch budget.

    Returns ``{epochs: (best row value, best col value, best metric)}`` sorted by epochs.
    Budgets whose heat map has no finite cell are left out.
    """
    done = completed(records)
    budgets = sorted({float(r["epochs"]) for r in done if r.get("epochs") is not None})
    if not budgets:
        raise ValueError("best_lambda_by_budget needs completed records with an 'epochs' value")
    out = {}
    for e in budgets:
        sub = [r for r in done if r.get("epochs") is not None and float(r["epochs"]) == e]
        try:
            out[e] = best_cell(heatmap_table(sub, row=row, col=col, value=value))
        except ValueError as err:
            if "no finite cell" in str(err):
                continue
            raise
    return out


def budget_shift(best_by_budget: Mapping[float, tuple[float, float, float]], label: str) -> str:
    """One sentence: how far the best ``label`` (λ or λ_norm) moves across epoch budgets.

    ``best_by_budget`` is the output of :func:`best_lambda_by_budget`. The shift is
    log10(max/min) of the best column value over budgets, in decades.
    """
    if not best_by_budget:
        return f"best {label}: no finite heat-map cell at any budget"
    budgets = sorted(best_by_budget)
    lams = np.array([best_by_budget[b][1] for b in budgets])
    path = " → ".join(format_value(v) for v in lams)
    ep = "/".join(f"{b:g}" for b in budgets)
    if len(budgets) < 2:
        return f"best {label} = {path} at {ep} epochs (a single budget)"
    if np.any(lams <= 0):
        return f"best {label} over {ep} epochs: {path}"
    decades = float(np.log10(lams.max() / lams.min()))
    verb = "stays within" if decades <= DECOUPLED_MAX_DECADES else "moves"
    return f"best {label} {verb} {decades:.1f} decades over {ep} epochs ({path})"

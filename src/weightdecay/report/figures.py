"""The figures of Loshchilov & Hutter (ICLR 2019), drawn from stored trial records only.

One function per figure of the paper (see ``PAPER.md`` §8); each takes the list of record
dicts returned by ``weightdecay.harness.store.load_records`` and returns a
:class:`matplotlib.figure.Figure`. Nothing here imports an optimizer or the trainer.

Figures are built with the object API (``Figure(...)``, never ``pyplot``), so drawing them
neither changes the global matplotlib backend nor opens a window; save them with
``fig.savefig(path)``.

Record selection: a figure function uses the records tagged with its ``"figure"`` name
(e.g. ``"fig2"``) when there are any, otherwise the untagged ones, so both a whole study and
a hand-made list work. Only completed trials count; diverged trials are marked, never used
as "best". A figure whose records are missing raises ``ValueError``.

Units on the plots: learning rate α and weight decay λ (or λ_norm, App. B.1) as raw values
on log2 axes; test error in percent; epochs as stored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from weightdecay.harness.config import FIGURES  # figure tags, in report order
from weightdecay.report.stats import (
    DecouplingStatistic,
    HeatmapTable,
    best_lambda_by_budget,
    budget_shift,
    completed,
    decoupling_statistic,
    format_value,
    heatmap_table,
    top_k_cells,
)

__all__ = [
    "FIGURES",
    "fig1",
    "fig2",
    "fig3",
    "fig4",
    "fig_heatmaps",
    "heatmap_panels",
    "optimizer_label",
    "records_for",
    "supp1",
    "supp3",
    "supp3_sentences",
]


_OPT_ORDER = ("sgd", "sgdw", "adam", "adamw")
_OPT_LABEL = {"sgd": "SGD", "sgdw": "SGDW", "adam": "Adam", "adamw": "AdamW"}
_SCHED_LABEL = {
    "fixed": "fixed",
    "step": "step-drop",
    "linear": "linear",
    "cosine": "cosine",
    "restarts": "warm restarts",
}
_COLORS = {
    "SGD": "tab:orange",
    "SGDW": "tab:red",
    "Adam": "tab:blue",
    "AdamW": "tab:green",
    "SGDR": "tab:pink",
    "SGDWR": "tab:brown",
    "AdamR": "tab:cyan",
    "AdamWR": "tab:purple",
}
_FONT = {"title": 10, "label": 9, "tick": 8}


# ----------------------------------------------------------------------------- helpers


def optimizer_label(record: Mapping) -> str:
    """Paper name of a record's optimizer: SGD, SGDW, Adam, AdamW; + "R" with restarts."""
    opt = str(record.get("optimizer", "?"))
    name = _OPT_LABEL.get(opt, opt)
    return name + "R" if record.get("schedule") == "restarts" else name


def records_for(name: str, records: Sequence[Mapping]) -> list[Mapping]:
    """Completed records for figure ``name``: those tagged ``name``, else the untagged ones."""
    done = completed(records)
    tagged = [r for r in done if r.get("figure") == name]
    if tagged:
        return tagged
    return [r for r in done if r.get("figure") is None]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", dpi=100)


def _tick(x: float) -> str:
    if x > 0:
        e = math.log2(x)
        if abs(e - round(e)) < 1e-9:
            return f"$2^{{{int(round(e))}}}$"
    return f"{x:.3g}"


def _lambda_axis_label(table: HeatmapTable, optimizer: str | None) -> str:
    if table.col_key == "weight_decay_norm":
        return "normalized weight decay λ_norm"
    if table.col_key != "weight_decay":
        return table.col_key
    if optimizer in ("sgd", "adam"):
        return "L2 factor λ (added to the gradient)"
    return "weight decay λ (decoupled)"


def _row_axis_label(table: HeatmapTable) -> str:
    return "learning rate α" if table.row_key == "lr" else table.row_key


def _empty_panel(ax, title: str, message: str) -> None:
    ax.set_title(title, fontsize=_FONT["title"])
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=_FONT["label"], color="0.4",
            transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_color("0.8")


def _color_limits(values_pct: np.ndarray) -> tuple[float, float, bool]:
    """(vmin, vmax, clipped) of the colour scale, in percent.

    The scale stops at the 75th percentile of the finite cells (colour bar with an arrow):
    the paper's question is where the *good* region lies, and a few near-divergent cells
    at 80-90% error would otherwise flatten it. The printed values stay exact.
    """
    finite = values_pct[np.isfinite(values_pct)]
    if finite.size == 0:
        return 0.0, 100.0, False
    lo, hi = float(finite.min()), float(finite.max())
    clipped = False
    if finite.size >= 10:
        p75 = float(np.percentile(finite, 75))
        if hi > p75 > lo:
            hi, clipped = p75, True
    if hi - lo < 1e-9:
        hi = lo + 1.0
    return lo, hi, clipped


def _draw_heatmap(
    fig,
    ax,
    table: HeatmapTable,
    *,
    title: str,
    optimizer: str | None = None,
    top_k: int = 10,
    annotate: bool = True,
    with_statistic: bool = True,
    limits: tuple[float, float, bool] | None = None,
    colorbar: bool = True,
) -> tuple[DecouplingStatistic | None, object]:
    """Draw ``table`` into ``ax``: colours, values (%), top-k circles, diverged hatching."""
    import matplotlib
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    values = table.values * 100.0
    lo, hi, clipped = limits if limits is not None else _color_limits(values)
    norm = Normalize(vmin=lo, vmax=hi)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.93")
    im = ax.imshow(np.ma.masked_invalid(values), origin="lower", aspect="auto", cmap=cmap,
                   norm=norm, interpolation="nearest")
    nr, nc = table.shape
    ax.set_xticks(range(nc))
    ax.set_xticklabels([_tick(v) for v in table.cols], fontsize=_FONT["tick"],
                       rotation=45 if nc > 7 else 0)
    ax.set_yticks(range(nr))
    ax.set_yticklabels([_tick(v) for v in table.rows], fontsize=_FONT["tick"])
    ax.set_xlabel(_lambda_axis_label(table, optimizer), fontsize=_FONT["label"])
    ax.set_ylabel(_row_axis_label(table), fontsize=_FONT["label"])

    size = max(nr, nc)
    fs = 8.0 if size <= 6 else 7.0 if size <= 9 else 6.0
    for i in range(nr):
        for j in range(nc):
            if table.diverged[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xxx",
                                       edgecolor="0.45", linewidth=0))
                ax.text(j, i, "div", ha="center", va="center", fontsize=fs + 0.5,
                        color="0.1", fontweight="bold",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                              "alpha": 0.8})
            elif table.counts[i, j] == 0:
                ax.text(j, i, "–", ha="center", va="center", fontsize=fs, color="0.55")
            elif annotate:
                v = values[i, j]
                dark = norm(min(max(v, lo), hi)) < 0.55  # viridis is dark at the low end
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=fs,
                        color="white" if dark else "black")
    top = top_k_cells(table, top_k) if top_k else []
    if top:
        ii = [c[0] for c in top]
        jj = [c[1] for c in top]
        marker_size = 620 if size <= 6 else 380 if size <= 9 else 260
        ax.scatter(jj[1:], ii[1:], s=marker_size, facecolors="none", edgecolors="red",
                   linewidths=1.3, label=f"top {len(top)}")
        ax.scatter(jj[:1], ii[:1], s=marker_size, facecolors="none", edgecolors="red",
                   linewidths=2.6)
    ax.set_xlim(-0.5, nc - 0.5)
    ax.set_ylim(-0.5, nr - 0.5)

    stat = None
    full_title = title
    if with_statistic:
        stat = decoupling_statistic(table, k=max(top_k, 2))
        full_title = f"{title}\n{stat.short}"
    ax.set_title(full_title, fontsize=_FONT["title"])
    if colorbar:
        cb = fig.colorbar(im, ax=ax, extend="max" if clipped else "neither", shrink=0.9)
        cb.set_label("test error (%)", fontsize=_FONT["label"])
        cb.ax.tick_params(labelsize=_FONT["tick"])
    return stat, im


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(n, max_cols)
    return math.ceil(n / ncols), ncols


# ----------------------------------------------------------------------------- heat maps

_Panel = tuple  # (title, records | None, optimizer | None, col_key)


def _fig1_panels(records: Sequence[Mapping]) -> tuple[list[_Panel], int, int]:
    recs = records_for("fig1", records)
    opts = [o for o in ("adam", "adamw") if any(r.get("optimizer") == o for r in recs)]
    scheds = [s for s in ("fixed", "step", "cosine") if any(r.get("schedule") == s for r in recs)]
    if not opts or not scheds:
        raise ValueError(
            "fig1 needs completed adam/adamw trials with schedule fixed, step or cosine; found "
            f"{len(recs)} usable record(s) (optimizers "
            f"{sorted({str(r.get('optimizer')) for r in recs})}, schedules "
            f"{sorted({str(r.get('schedule')) for r in recs})})"
        )
    panels = []
    for opt in ("adam", "adamw"):
        for s in scheds:
            sub = [r for r in recs if r.get("optimizer") == opt and r.get("schedule") == s]
            title = f"{_OPT_LABEL[opt]}, {_SCHED_LABEL[s]} schedule"
            panels.append((title, sub or None, opt, "weight_decay"))
    return panels, 2, len(scheds)


def _fig2_panels(records: Sequence[Mapping]) -> tuple[list[_Panel], int, int]:
    recs = records_for("fig2", records)
    if not any(r.get("optimizer") in _OPT_ORDER for r in recs):
        raise ValueError(
            "fig2 needs completed trials of sgd, sgdw, adam or adamw; found "
            f"{len(recs)} usable record(s)"
        )
    panels = []
    for opt in _OPT_ORDER:
        sub = [r for r in recs if r.get("optimizer") == opt]
        panels.append((_OPT_LABEL[opt], sub or None, opt, "weight_decay"))
    return panels, 2, 2


def _supp3_groups(records: Sequence[Mapping]):
    """{optimizer: {"raw": records, "norm": records}} for supp3, and the sorted budgets."""
    recs = records_for("supp3", records)
    recs = [r for r in recs if r.get("epochs") is not None]
    if not recs:
        raise ValueError("supp3 needs completed trials with an 'epochs' value; found none")
    groups: dict[str, dict[str, list]] = {}
    for r in recs:
        kind = "raw" if r.get("weight_decay_norm") is None else "norm"
        groups.setdefault(str(r.get("optimizer")), {}).setdefault(kind, []).append(r)
    budgets = sorted({float(r["epochs"]) for r in recs})
    order = sorted(groups, key=lambda o: (_OPT_ORDER.index(o) if o in _OPT_ORDER else 99, o))
    return {o: groups[o] for o in order}, budgets


def _supp3_panels(records: Sequence[Mapping]) -> tuple[list[_Panel], int, int]:
    groups, budgets = _supp3_groups(records)
    panels = []
    nrows = 0
    for opt, kinds in groups.items():
        for kind in ("raw", "norm"):
            if kind not in kinds:
                continue
            nrows += 1
            col = "weight_decay" if kind == "raw" else "weight_decay_norm"
            for b in budgets:
                sub = [r for r in kinds[kind] if float(r["epochs"]) == b]
                label = "raw λ" if kind == "raw" else "λ_norm"
                title = f"{_OPT_LABEL.get(opt, opt)}, {b:g} epochs, {label}"
                panels.append((title, sub or None, opt, col))
    return panels, nrows, len(budgets)


_PANELS = {"fig1": _fig1_panels, "fig2": _fig2_panels, "supp3": _supp3_panels}


def heatmap_panels(
    name: str, records: Sequence[Mapping], top_k: int = 10
) -> list[tuple[str, HeatmapTable | None, DecouplingStatistic | None]]:
    """The heat maps of figure ``name`` ("fig1", "fig2" or "supp3") as tables + statistics.

    Returns ``[(panel title, table or None, statistic or None), ...]`` in panel order; a
    panel without trials has ``None`` table. Used by the HTML report to print the same
    numbers the figure shows.
    """
    if name not in _PANELS:
        raise ValueError(f"name must be one of {sorted(_PANELS)}, got {name!r}")
    panels, _, _ = _PANELS[name](records)
    out = []
    for title, sub, _opt, col in panels:
        if sub is None:
            out.append((title, None, None))
            continue
        table = heatmap_table(sub, row="lr", col=col)
        out.append((title, table, decoupling_statistic(table, k=max(top_k, 2))))
    return out


def _draw_panels(fig, axes, panels, *, top_k, with_statistic=True, limits=None,
                 colorbar=True):
    flat = list(np.asarray(axes).ravel())
    last_im = None
    for ax, (title, sub, opt, col) in zip(flat, panels):
        if sub is None:
            _empty_panel(ax, title, "no completed trials")
            continue
        table = heatmap_table(sub, row="lr", col=col)
        _, last_im = _draw_heatmap(fig, ax, table, title=title, optimizer=opt, top_k=top_k,
                                   with_statistic=with_statistic, limits=limits,
                                   colorbar=colorbar)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
        fig.delaxes(ax)
    return last_im


def fig_heatmaps(
    records: Sequence[Mapping],
    title: str | None = None,
    *,
    by: str | None = "optimizer",
    row: str = "lr",
    col: str = "weight_decay",
    value: str = "final_test_error",
    top_k: int = 10,
):
    """Generic α×λ heat-map panels: one panel per distinct value of ``by``.

    Each panel shows mean ``value`` over seeds (in %), the top-``top_k`` cells circled (the
    best one with a thicker ring), diverged cells hatched and labelled "div", empty cells
    "–", log2 tick labels, a colour bar, and the decoupling statistic in its title
    (:func:`weightdecay.report.stats.decoupling_statistic`). ``by=None`` draws one panel.

    Raises:
        ValueError: no completed record, or a panel mixes settings (see ``heatmap_table``).
    """
    done = completed(records)
    if not done:
        raise ValueError(f"fig_heatmaps needs completed trials; got {len(records)} record(s)")
    if by is None:
        groups = {"": done}
    else:
        keys = sorted({str(r.get(by)) for r in done},
                      key=lambda k: (_OPT_ORDER.index(k) if k in _OPT_ORDER else 99, k))
        groups = {k: [r for r in done if str(r.get(by)) == k] for k in keys}
    nrows, ncols = _grid(len(groups))
    fig = _figure(5.6 * ncols, 4.6 * nrows + (0.4 if title else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (k, sub) in zip(axes.ravel(), groups.items()):
        table = heatmap_table(sub, row=row, col=col, value=value)
        opt = k if by == "optimizer" else None
        label = _OPT_LABEL.get(k, k) if by == "optimizer" else (f"{by} = {k}" if by else "")
        _draw_heatmap(fig, ax, table, title=label or (title or ""), optimizer=opt, top_k=top_k)
    for ax in axes.ravel()[len(groups):]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def _epochs_note(recs: Sequence[Mapping]) -> str:
    ep = sorted({r.get("epochs") for r in recs if r.get("epochs") is not None})
    ds = sorted({str(r.get("dataset")) for r in recs if r.get("dataset")})
    parts = []
    if ds:
        parts.append("/".join(ds))
    if ep:
        parts.append("/".join(f"{e:g}" for e in ep) + " epochs")
    return ", ".join(parts)


def fig1(records: Sequence[Mapping], top_k: int = 10):
    """Paper Fig. 1: final test error over (α, λ); rows Adam and AdamW, columns the fixed,
    step-drop and cosine schedules (those present in the records).

    Raises ValueError when no adam/adamw trial with one of these schedules is stored.
    """
    panels, nrows, ncols = _fig1_panels(records)
    fig = _figure(5.4 * ncols, 4.7 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    _draw_panels(fig, axes, panels, top_k=top_k)
    note = _epochs_note(records_for("fig1", records))
    fig.suptitle(f"Fig. 1 — Adam (L2) vs AdamW across schedules ({note})", fontsize=12)
    return fig


def fig2(records: Sequence[Mapping], top_k: int = 10):
    """Paper Fig. 2: (α, λ) heat maps for SGD, SGDW, Adam and AdamW, top-10 circled.

    With an L2 penalty (SGD, Adam) the good region is a diagonal valley — the best λ moves
    with α (Prop. 1); with decoupled decay (SGDW, AdamW) it is a separable basin. Each
    panel's title carries the decoupling statistic. Missing optimizers get an empty panel.

    Raises ValueError when none of the four optimizers has a completed trial.
    """
    panels, nrows, ncols = _fig2_panels(records)
    fig = _figure(11.5, 10.0)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    _draw_panels(fig, axes, panels, top_k=top_k)
    note = _epochs_note(records_for("fig2", records))
    fig.suptitle(f"Fig. 2 — L2 regularization vs decoupled weight decay ({note})",
                 fontsize=12)
    return fig


# ----------------------------------------------------------------------------- curves


def _setting_key(r: Mapping) -> tuple:
    return (r.get("lr"), r.get("weight_decay"), r.get("weight_decay_norm"), r.get("schedule"),
            r.get("epochs"), r.get("T_0"), r.get("T_mult"))


def _settings(recs: Sequence[Mapping]) -> list[dict]:
    """Group records by setting (all but seed); mean final metrics and mean curves."""
    groups: dict[tuple, list[Mapping]] = {}
    for r in recs:
        groups.setdefault(_setting_key(r), []).append(r)
    out = []
    for runs in groups.values():
        ok = [r for r in runs if not r.get("diverged")
              and r.get("final_test_error") is not None
              and np.isfinite(float(r["final_test_error"]))]
        entry = {"record": runs[0], "n": len(runs), "diverged": len(runs) - len(ok)}
        entry["final_test_error"] = (float(np.mean([r["final_test_error"] for r in ok]))
                                     if ok and len(ok) == len(runs) else float("nan"))
        losses = [float(r["final_train_loss"]) for r in ok
                  if r.get("final_train_loss") is not None]
        entry["final_train_loss"] = float(np.mean(losses)) if losses else float("nan")
        curves = {}
        hists = [r.get("history") or {} for r in ok]
        for name in ("train_loss", "test_error", "eta"):
            series = [h.get(name) or [] for h in hists]
            epochs = [h.get("epoch") or list(range(1, len(s) + 1)) for h, s in zip(hists, series)]
            n = min((len(s) for s in series), default=0)
            if n:
                curves[name] = (np.asarray(epochs[0][:n], dtype=float),
                                np.mean([np.asarray(s[:n], dtype=float) for s in series], 0))
        entry["curves"] = curves
        out.append(entry)
    return out


def _best(settings: list[dict]) -> dict | None:
    ok = [s for s in settings if np.isfinite(s["final_test_error"])]
    return min(ok, key=lambda s: s["final_test_error"]) if ok else None


def _lambda_key(recs: Sequence[Mapping]) -> str:
    if recs and all(r.get("weight_decay_norm") is not None for r in recs):
        return "weight_decay_norm"
    return "weight_decay"


def fig3(records: Sequence[Mapping]):
    """Paper Fig. 3: Adam (L2) vs AdamW over a long run, four panels.

    (a) training loss vs epoch and (b) test error vs epoch — each optimizer's best setting
    bold, the other λ values faint; (c) final test error vs λ (best α per λ); (d) final
    test error vs final training loss, one point per setting: at equal training loss AdamW
    should generalize better.

    Raises ValueError unless both adam and adamw have completed trials with histories.
    """
    recs = records_for("fig3", records)
    by_opt = {o: [r for r in recs if r.get("optimizer") == o and r.get("schedule") != "restarts"]
              for o in ("adam", "adamw")}
    missing = [o for o, rs in by_opt.items()
               if not any((r.get("history") or {}).get("test_error") for r in rs)]
    if missing:
        raise ValueError(
            f"fig3 needs completed adam and adamw trials with per-epoch histories; missing: "
            f"{missing} (found {len(recs)} usable record(s))"
        )
    fig = _figure(11.5, 8.5)
    axes = fig.subplots(2, 2)
    (a_loss, a_err), (a_lam, a_gen) = axes
    lam_key = _lambda_key([r for rs in by_opt.values() for r in rs])
    lam_name = "λ_norm" if lam_key == "weight_decay_norm" else "λ"
    for opt, rs in by_opt.items():
        label = _OPT_LABEL[opt]
        color = _COLORS[label]
        settings = _settings(rs)
        best = _best(settings)
        for s in settings:
            bold = s is best
            kw = {"color": color, "lw": 2.0 if bold else 0.8, "alpha": 1.0 if bold else 0.3}
            if bold:
                lam = s["record"].get(lam_key)
                kw["label"] = (f"{label} (best: α={format_value(s['record'].get('lr'))}, "
                               f"{lam_name}={format_value(lam)})")
            if "train_loss" in s["curves"]:
                a_loss.plot(*s["curves"]["train_loss"], **kw)
            if "test_error" in s["curves"]:
                x, y = s["curves"]["test_error"]
                a_err.plot(x, 100 * y, **kw)
        # (c) test error vs λ: best α for each λ
        per_lam: dict[float, float] = {}
        for s in settings:
            lam, err = s["record"].get(lam_key), s["final_test_error"]
            if lam is None or not np.isfinite(err) or lam <= 0:
                continue
            per_lam[lam] = min(err, per_lam.get(lam, np.inf))
        if per_lam:
            xs = sorted(per_lam)
            a_lam.plot(xs, [100 * per_lam[x] for x in xs], "o-", color=color, label=label)
        # (d) generalization: test error vs training loss
        pts = [(s["final_train_loss"], s["final_test_error"]) for s in settings
               if np.isfinite(s["final_train_loss"]) and np.isfinite(s["final_test_error"])]
        if pts:
            xs, ys = zip(*pts)
            a_gen.scatter(xs, [100 * y for y in ys], color=color, label=label, s=28, alpha=0.8)
    a_loss.set_yscale("log")
    a_loss.set(xlabel="epoch", ylabel="training loss", title="(a) training loss")
    a_err.set(xlabel="epoch", ylabel="test error (%)", title="(b) test error")
    a_lam.set_xscale("log", base=2)
    a_lam.set(xlabel=f"{lam_name} (raw; Adam: L2 factor, AdamW: decoupled decay)",
              ylabel="final test error (%)", title=f"(c) test error vs {lam_name} (best α)")
    a_gen.set_xscale("log")
    a_gen.set(xlabel="final training loss", ylabel="final test error (%)",
              title="(d) test error vs training loss (one point per setting)")
    for ax in (a_loss, a_err, a_lam, a_gen):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=_FONT["tick"])
    fig.suptitle(f"Fig. 3 — Adam vs AdamW, long run ({_epochs_note(recs)})", fontsize=12)
    return fig


def _period_end_epochs(T_0: float, T_mult: float, until: float) -> list[float]:
    """Epochs at which warm-restart periods end (η_t → 0): T_0, T_0(1+T_mult), ..."""
    ends, t, length = [], 0.0, float(T_0)
    while length > 0 and t + length <= until + 1e-9 and len(ends) < 1000:
        t += length
        ends.append(t)
        length *= float(T_mult)
    return ends


def fig4(records: Sequence[Mapping]):
    """Paper Fig. 4: test error vs epoch of Adam, AdamW, SGDW, AdamWR and SGDWR.

    Restart variants are records with ``schedule == "restarts"`` (label + "R"). Each curve is
    the best setting of its optimizer (lowest mean final test error, mean over seeds); the
    ends of restart periods — the anytime checkpoints — are marked with dots. One panel per
    dataset.

    Raises ValueError when none of these optimizers has a completed trial with a history.
    """
    recs = [r for r in records_for("fig4", records)
            if (r.get("history") or {}).get("test_error")]
    wanted = ("Adam", "AdamW", "SGD", "SGDW", "AdamR", "AdamWR", "SGDR", "SGDWR")
    recs = [r for r in recs if optimizer_label(r) in wanted]
    if not recs:
        raise ValueError(
            "fig4 needs completed adam/adamw/sgdw trials (schedule 'restarts' for AdamWR/SGDWR) "
            "with per-epoch test-error histories; found none"
        )
    datasets = sorted({str(r.get("dataset")) for r in recs})
    fig = _figure(6.8 * len(datasets), 4.8)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, ds in zip(axes, datasets):
        sub = [r for r in recs if str(r.get("dataset")) == ds]
        for label in wanted:
            rs = [r for r in sub if optimizer_label(r) == label]
            best = _best(_settings(rs)) if rs else None
            if best is None or "test_error" not in best["curves"]:
                continue
            x, y = best["curves"]["test_error"]
            r0 = best["record"]
            restarts = label.endswith("R")
            lam_key = "weight_decay_norm" if r0.get("weight_decay_norm") is not None else None
            lam = (f"λ_norm={format_value(r0['weight_decay_norm'])}" if lam_key
                   else f"λ={format_value(r0.get('weight_decay') or 0.0)}")
            ax.plot(x, 100 * y, color=_COLORS.get(label), lw=1.6,
                    ls="-" if restarts else "--",
                    label=f"{label} (α={format_value(r0.get('lr'))}, {lam}): "
                          f"{100 * y[-1]:.1f}%")
            if restarts and r0.get("T_0"):
                ends = _period_end_epochs(r0["T_0"], r0.get("T_mult") or 2.0, x[-1])
                idx = [int(np.argmin(np.abs(x - e))) for e in ends]
                ax.scatter(x[idx], 100 * y[idx], color=_COLORS.get(label), s=30, zorder=3)
        ax.set(xlabel="epoch", ylabel="test error (%)", title=f"{ds}: test error vs epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=_FONT["tick"])
    fig.suptitle("Fig. 4 — anytime performance of warm restarts "
                 "(dots: ends of restart periods)", fontsize=12)
    return fig


def supp1(records: Sequence[Mapping] | None = None, *, T_0: float = 100, T_mult: float = 2.0,
          epochs: float | None = None, steps_per_epoch: int = 10):
    """Paper Supp. Fig. 1: the schedule multiplier η_t over epochs for warm restarts.

    From stored ``"eta"`` histories when records with ``schedule == "restarts"`` (tagged
    "supp1" first) carry them — one line per distinct (T_0, T_mult, epochs) — else computed
    with :func:`weightdecay.schedules.cosine_restarts` for ``T_0`` epochs (default 100) and
    ``T_mult`` (default 2) over ``epochs`` (default: the end of the 4th period, 1500), at
    ``steps_per_epoch`` updates per epoch. Period ends (η_t → 0, the recommended checkpoints:
    100, 300, 700, 1500) are marked.
    """
    if T_0 <= 0 or T_mult <= 0:
        raise ValueError(f"T_0 and T_mult must be > 0, got T_0={T_0!r}, T_mult={T_mult!r}")
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch!r}")
    curves = []
    if records:
        done = completed(records)
        cand = [r for r in done if r.get("figure") == "supp1"] or done
        cand = [r for r in cand if r.get("schedule") == "restarts"
                and (r.get("history") or {}).get("eta")]
        seen = set()
        for r in cand:
            key = (r.get("T_0"), r.get("T_mult"), r.get("epochs"))
            if key in seen:
                continue
            seen.add(key)
            h = r["history"]
            eta = np.asarray(h["eta"], dtype=float)
            ep = np.asarray(h.get("epoch") or range(1, len(eta) + 1), dtype=float)
            curves.append((f"stored: T_0={r.get('T_0'):g}, T_mult={r.get('T_mult'):g} "
                           "(η at end of each epoch)", ep, eta, r.get("T_0"), r.get("T_mult"),
                           float(ep[-1])))
    if not curves:
        from weightdecay.schedules import cosine_restarts

        if epochs is None:
            epochs = sum(T_0 * T_mult**i for i in range(4))
        if epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {epochs!r}")
        s = cosine_restarts(T_0=T_0 * steps_per_epoch, T_mult=T_mult)
        # updates 0 .. N-1: update N would start the next period (η back to 1)
        t = np.arange(0, int(round(epochs * steps_per_epoch)), dtype=float)
        eta = np.asarray(s(t), dtype=float)
        curves.append((f"T_0={T_0:g} epochs, T_mult={T_mult:g}", t / steps_per_epoch, eta,
                       T_0, T_mult, float(epochs)))
    fig = _figure(8.0, 3.8)
    ax = fig.subplots()
    for i, (label, x, eta, t0, tm, until) in enumerate(curves):
        color = f"C{i}"
        ax.plot(x, eta, color=color, lw=1.4, label=label)
        if t0:
            ends = _period_end_epochs(t0, tm or 2.0, until)
            if ends:
                ax.scatter(ends, np.zeros(len(ends)), color=color, marker="v", s=36, zorder=3)
                for e in ends:
                    ax.annotate(f"{e:g}", (e, 0), textcoords="offset points", xytext=(-5, 6),
                                ha="right", va="bottom", fontsize=_FONT["tick"], color=color,
                                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                                      "alpha": 0.85})
    ax.set(xlabel="epoch", ylabel="η_t (multiplier of α and λ)", ylim=(-0.05, 1.1),
           title="Supp. Fig. 1 — cosine annealing with warm restarts "
                 "(▼: period ends = recommended checkpoints)")
    ax.title.set_fontsize(_FONT["title"] + 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=_FONT["tick"], loc="upper right")
    return fig


def supp3_sentences(records: Sequence[Mapping]) -> list[str]:
    """Per optimizer, how the best raw λ and the best λ_norm move with the epoch budget."""
    groups, _ = _supp3_groups(records)
    out = []
    for opt, kinds in groups.items():
        parts = []
        if "raw" in kinds:
            parts.append(budget_shift(best_lambda_by_budget(kinds["raw"], "weight_decay"),
                                      "raw λ"))
        if "norm" in kinds:
            parts.append(budget_shift(
                best_lambda_by_budget(kinds["norm"], "weight_decay_norm"), "λ_norm"))
        out.append(f"{_OPT_LABEL.get(opt, opt)}: " + "; ".join(parts))
    return out


def supp3(records: Sequence[Mapping], top_k: int = 1):
    """Paper Supp. Fig. 3: (α, λ) heat maps at several epoch budgets, raw λ vs λ_norm.

    Rows: each optimizer with raw λ (records with ``weight_decay_norm`` None) and with
    normalized λ_norm (App. B.1, λ = λ_norm·√(b/(B·T))); columns: epoch budgets. The best cell
    of each panel is circled; one colour scale for the whole figure. The line at the bottom
    says how far the best raw λ moves with the budget, and how far the best λ_norm does.

    Raises ValueError when no completed record with an epoch budget is stored.
    """
    panels, nrows, ncols = _supp3_panels(records)
    tables = [heatmap_table(sub, row="lr", col=col) for _t, sub, _o, col in panels
              if sub is not None]
    if not tables:
        raise ValueError("supp3 found no completed trials to draw")
    allv = np.concatenate([t.values.ravel() * 100 for t in tables])
    limits = _color_limits(allv)
    fig = _figure(3.9 * ncols + 1.0, 3.6 * nrows + 1.0)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = _draw_panels(fig, axes, panels, top_k=top_k, with_statistic=False, limits=limits,
                      colorbar=False)
    if im is not None:
        cb = fig.colorbar(im, ax=list(np.asarray(axes).ravel()), shrink=0.8,
                          extend="max" if limits[2] else "neither")
        cb.set_label("test error (%)", fontsize=_FONT["label"])
    fig.suptitle("Supp. Fig. 3 — best setting per epoch budget: raw λ vs normalized λ_norm "
                 "(red ring: best cell)", fontsize=12)
    fig.supxlabel("\n".join(supp3_sentences(records)), fontsize=_FONT["label"] + 1)
    return fig

"""The figures of Loshchilov & Hutter (ICLR 2019), drawn from stored trial records only.

One function per figure of the paper (Sec. 4: Figs. 1-4, Supp. Figs. 1 and 3), plus
:func:`fig_slopes`, the best λ of each learning rate with the fitted slope and its interval,
and the mechanism preset's figures (:mod:`weightdecay.report.mechanism_figures`).
Each takes the records of a study (``weightdecay.harness.store.load_records``) — or the
:class:`weightdecay.report.claims.Evidence` built from them, which carries the bootstrap —
and returns a :class:`matplotlib.figure.Figure`. Nothing here trains or imports an optimizer.

Figures use the object API (``Figure(...)``, never ``pyplot``): drawing neither changes the
global backend nor opens a window. Heat maps print each cell's mean test error and its
bootstrap standard error (seeds and test examples), circle the 10 best cells, hatch
diverged ones, and mark each learning rate's best λ (◆) with the fitted line through them;
curves show the mean over seeds with a ±1 standard-error band.

Record selection: a figure uses the records tagged with its experiment (its registry entry's
``tag``: ``"fig2"``, ...), else the untagged ones. A figure without records raises
``ValueError`` (:func:`missing` says so without drawing). The names, captions and order of
the figures are :data:`weightdecay.registry.FIGURES`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import registry
from ..registry import best_setting, optimizer_label, schedule_label, setting_key
from .claims import Evidence
from .mechanism_figures import fig_decay_subsets, fig_equilibrium, fig_gradnorm, fig_rotation
from .stats import HeatMap, SlopeFit, completed, format_value

__all__ = [
    "draw_heat_map",
    "evidence_for",
    "fig1",
    "fig2",
    "fig3",
    "fig4",
    "fig_decay_subsets",
    "fig_equilibrium",
    "fig_gradnorm",
    "fig_rotation",
    "fig_slopes",
    "fig_variants",
    "missing",
    "supp1",
    "supp3",
]

_COLORS = {"SGD": "tab:orange", "SGDW": "tab:red", "Adam": "tab:blue", "AdamW": "tab:green",
           "SGDR": "tab:pink", "SGDWR": "tab:brown", "AdamR": "tab:cyan",
           "AdamWR": "tab:purple"}
_FONT = {"title": 10, "label": 9, "tick": 8}


def evidence_for(records: Sequence[Mapping] | Evidence) -> Evidence:
    """``records`` as :class:`Evidence` (untagged records count for every figure)."""
    if isinstance(records, Evidence):
        return records
    done = completed(records)
    if done and not any(r.get("figure") for r in done):
        # hand-made or untagged records: let every figure see them
        done = [dict(r, figure=None) for r in done]
    return Evidence(done)


def _records(ev: Evidence, figure: str) -> list[Mapping]:
    tagged = ev.experiment(figure)
    if tagged:
        return tagged
    return [r for r in completed(ev.records) if r.get("figure") is None]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", dpi=100)


def _tick(x: float) -> str:
    if x > 0:
        e = math.log2(x)
        if abs(e - round(e)) < 1e-9:
            return f"$2^{{{int(round(e))}}}$"
    return f"{x:.3g}"


def _empty_panel(ax, title: str, message: str) -> None:
    ax.set_title(title, fontsize=_FONT["title"])
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=_FONT["label"], color="0.4",
            transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _color_limits(values_pct: np.ndarray) -> tuple[float, float, bool]:
    """(vmin, vmax, clipped) in percent: the scale stops at the 75th percentile of the
    finite cells, so that near-divergent cells do not flatten the good region."""
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


def _lambda_axis_label(hm: HeatMap) -> str:
    if hm.col_key == "weight_decay_norm":
        return "normalized weight decay λ_norm"
    conv = hm.meta.get("decay_convention")
    unit = "" if conv in (None, "schedule") else f" (convention \"{conv}\")"
    if hm.meta.get("optimizer") in registry.OPTIMIZERS and \
            not registry.is_decoupled(hm.meta["optimizer"]):
        return "L2 factor λ' (added to the gradient)" + unit
    return "weight decay λ (decoupled)" + unit


def _col_position(hm: HeatMap, log_lam: np.ndarray) -> np.ndarray:
    """Fractional column index of log λ values (columns are equally spaced in log λ)."""
    positive = hm.cols > 0
    idx = np.arange(len(hm.cols))[positive]
    return np.interp(log_lam, np.log(hm.cols[positive]), idx, left=np.nan, right=np.nan)


def draw_heat_map(fig, ax, hm: HeatMap, fit: SlopeFit | None = None, *, title: str,
                  top_k: int = 10, limits=None, colorbar: bool = True):
    """Draw ``hm`` into ``ax``: colours and "mean ± SE" (%) per cell, the ``top_k`` best
    cells circled (the best with a thick ring), diverged cells hatched, and — with ``fit`` —
    each row's best λ (◆) and the fitted line; returns the image (for a shared colour bar)."""
    import matplotlib
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    values = hm.mean * 100.0
    se = hm.se * 100.0
    lo, hi, clipped = limits if limits is not None else _color_limits(values)
    norm = Normalize(vmin=lo, vmax=hi)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.93")
    im = ax.imshow(np.ma.masked_invalid(values), origin="lower", aspect="auto", cmap=cmap,
                   norm=norm, interpolation="nearest")
    nr, nc = values.shape
    ax.set_xticks(range(nc))
    ax.set_xticklabels([_tick(v) for v in hm.cols], fontsize=_FONT["tick"],
                       rotation=45 if nc > 6 else 0)
    ax.set_yticks(range(nr))
    ax.set_yticklabels([_tick(v) for v in hm.rows], fontsize=_FONT["tick"])
    ax.set_xlabel(_lambda_axis_label(hm), fontsize=_FONT["label"])
    ax.set_ylabel("learning rate α", fontsize=_FONT["label"])
    size = max(nr, nc)
    fs = 7.0 if size <= 6 else 6.0 if size <= 8 else 5.0
    for i in range(nr):
        for j in range(nc):
            if hm.diverged[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xxx",
                                       edgecolor="0.45", linewidth=0))
                ax.text(j, i, "div", ha="center", va="center", fontsize=fs, color="0.1",
                        fontweight="bold")
            elif hm.counts[i, j] == 0:
                ax.text(j, i, "–", ha="center", va="center", fontsize=fs, color="0.55")
            else:
                v = values[i, j]
                dark = norm(min(max(v, lo), hi)) < 0.55  # viridis is dark at the low end
                text = f"{v:.1f}" if not np.isfinite(se[i, j]) else f"{v:.1f}\n±{se[i, j]:.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=fs, linespacing=0.9,
                        color="white" if dark else "black")
    top = hm.top_k(top_k) if top_k else []
    if top:
        ii, jj = [c[0] for c in top], [c[1] for c in top]
        ms = 620 if size <= 6 else 380 if size <= 9 else 260
        ax.scatter(jj[1:], ii[1:], s=ms, facecolors="none", edgecolors="red", linewidths=1.2)
        ax.scatter(jj[:1], ii[:1], s=ms, facecolors="none", edgecolors="red", linewidths=2.6)
    if fit is not None:
        used = fit.rows_used
        if used.any():
            xs = _col_position(hm, fit.log_lambda[0, used])
            ax.scatter(xs, np.flatnonzero(used), marker="D", s=34, facecolors="white",
                       edgecolors="black", linewidths=1.0, zorder=4)
        if np.isfinite(fit.intercept):
            rows = np.flatnonzero(used)
            line = _col_position(hm, fit.line(hm.rows[rows]))
            ax.plot(line, rows, color="white", lw=1.4, ls="--", zorder=3)
    ax.set_xlim(-0.5, nc - 0.5)
    ax.set_ylim(-0.5, nr - 0.5)
    if fit is not None:
        title = f"{title}\nslope {fit.slope.format()}: {fit.reading}"
    ax.set_title(title, fontsize=_FONT["title"])
    if colorbar:
        cb = fig.colorbar(im, ax=ax, extend="max" if clipped else "neither", shrink=0.9)
        cb.set_label("test error (%)", fontsize=_FONT["label"])
        cb.ax.tick_params(labelsize=_FONT["tick"])
    return im


@dataclass(frozen=True)
class Panel:
    """One heat-map panel: where its runs are and how to title it."""

    title: str
    figure: str
    col: str
    match: tuple  # (key, value) pairs selecting the runs
    slope: bool = True


def _draw_panels(fig, panels: list[Panel], ev: Evidence, nrows: int, ncols: int,
                 *, top_k: int = 10, shared_scale: bool = False):
    axes = list(np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    maps = [ev.heat_map(p.figure, p.col, **dict(p.match)) for p in panels]
    limits = None
    if shared_scale:
        allv = [m.mean.ravel() * 100 for m in maps if m is not None]
        limits = _color_limits(np.concatenate(allv)) if allv else None
    im = None
    for ax, p, hm in zip(axes, panels, maps):
        if hm is None:
            _empty_panel(ax, p.title, "no completed trials")
            continue
        fit = ev.slope(p.figure, p.col, **dict(p.match)) if p.slope else None
        im = draw_heat_map(fig, ax, hm, fit, title=p.title, top_k=top_k, limits=limits,
                           colorbar=not shared_scale)
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    if shared_scale and im is not None:
        cb = fig.colorbar(im, ax=axes[:len(panels)], shrink=0.8,
                          extend="max" if limits and limits[2] else "neither")
        cb.set_label("test error (%)", fontsize=_FONT["label"])


def _note(recs: Sequence[Mapping]) -> str:
    parts = []
    for key, fmt in (("dataset", "{}"), ("model", "{}"), ("epochs", "{} epochs"),
                     ("test_size", "{} test examples")):
        vals = sorted({r.get(key) for r in recs if r.get(key) is not None},
                      key=lambda v: (isinstance(v, str), v))  # numbers in numeric order
        if vals:
            parts.append(fmt.format("/".join(map(str, vals))))
    seeds = sorted({int(r["seed"]) for r in recs if r.get("seed") is not None})
    if seeds:
        parts.append(f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}")
    return ", ".join(parts)


def missing(ev: Evidence, name: str) -> str | None:
    """Why figure ``name`` cannot be drawn from ``ev`` (no records of its experiment), or
    None when it can."""
    entry = registry.figure(name)
    if entry.tag is None or _records(ev, entry.tag):
        return None
    return f"{entry.tag} needs completed trials of {entry.needs}; found none"


def _need(ev: Evidence, name: str) -> list[Mapping]:
    """The records figure ``name`` draws (``ValueError`` when there are none)."""
    reason = missing(ev, name)
    if reason is not None:
        raise ValueError(reason)
    return _records(ev, registry.figure(name).tag or name)


def _fig_key(ev: Evidence, recs: Sequence[Mapping], figure: str) -> str:
    # Evidence groups by figure tag; untagged records are grouped under None
    return figure if ev.experiment(figure) else None  # type: ignore[return-value]


def fig2(records, top_k: int = 10):
    """Paper Fig. 2: final test error over (α, λ) for SGD, SGDW, Adam and AdamW, each with
    the best λ of every learning rate and the fitted slope d log λ*/d log α."""
    ev = evidence_for(records)
    recs = _need(ev, "fig2")
    key = _fig_key(ev, recs, "fig2")
    opts = [o for o in registry.OPTIMIZERS if any(r.get("optimizer") == o for r in recs)]
    panels = [Panel(optimizer_label(o), key, "weight_decay", (("optimizer", o),))
              for o in opts]
    nrows, ncols = (2, 2) if len(panels) > 2 else (1, len(panels))
    fig = _figure(6.4 * ncols, 5.2 * nrows + 0.5)
    _draw_panels(fig, panels, ev, nrows, ncols, top_k=top_k)
    fig.suptitle(f"Fig. 2 — final test error (%, mean ± SE); ◆ best λ of each α, dashed: "
                 f"fitted slope ({_note(recs)})", fontsize=12)
    return fig


def fig1(records, top_k: int = 10):
    """Paper Fig. 1: final test error over (α, λ); rows Adam and AdamW, columns the fixed,
    step-drop and cosine schedules (those stored)."""
    ev = evidence_for(records)
    recs = _need(ev, "fig1")
    key = _fig_key(ev, recs, "fig1")
    scheds = [s for s in ("fixed", "step", "cosine") if any(r.get("schedule") == s
                                                            for r in recs)]
    opts = [o for o in ("adam", "adamw") if any(r.get("optimizer") == o for r in recs)]
    panels = [Panel(f"{optimizer_label(o)}, {schedule_label(s)}", key, "weight_decay",
                    (("optimizer", o), ("schedule", s)), slope=False)
              for o in opts for s in scheds]
    fig = _figure(5.6 * len(scheds), 4.8 * len(opts) + 0.5)
    _draw_panels(fig, panels, ev, len(opts), len(scheds), top_k=top_k)
    fig.suptitle(f"Fig. 1 — Adam (L2) vs AdamW across schedules ({_note(recs)})", fontsize=12)
    return fig


def supp3(records, top_k: int = 1):
    """Paper Supp. Fig. 3: heat maps at several epoch budgets, raw λ (top rows) vs
    normalized λ_norm (App. B.1, λ = λ_norm·√(b/(B·T)); bottom rows); each row's best λ
    marked; one colour scale."""
    ev = evidence_for(records)
    recs = _need(ev, "supp3")
    key = _fig_key(ev, recs, "supp3")
    budgets = sorted({int(r["epochs"]) for r in recs})
    kinds = [k for k in ("raw", "norm")
             if any((r.get("weight_decay_norm") is not None) == (k == "norm") for r in recs)]
    panels = []
    for kind in kinds:
        for T in budgets:
            if kind == "raw":
                panels.append(Panel(f"raw λ, {T} epochs", key, "weight_decay",
                                    (("epochs", T), ("weight_decay_norm", None))))
            else:
                panels.append(Panel(f"λ_norm, {T} epochs", key, "weight_decay_norm",
                                    (("epochs", T),)))
    fig = _figure(4.6 * len(budgets) + 1.0, 4.2 * len(kinds) + 0.5)
    _draw_panels(fig, panels, ev, len(kinds), len(budgets), top_k=top_k, shared_scale=True)
    fig.suptitle("Supp. Fig. 3 — the best setting per budget: raw λ vs normalized λ_norm "
                 f"({_note(recs)})", fontsize=12)
    return fig


def fig_variants(records, top_k: int = 10):
    """The ``variants`` preset: one heat map per optimizer and decay rule (rows SGDW and
    AdamW; columns the paper's decay, torch's, corrected, cautious, scale-invariant weights
    only), each with its best λ per α and the fitted slope; λ in each rule's own units."""
    ev = evidence_for(records)
    recs = _need(ev, "variants")
    key = _fig_key(ev, recs, "variants")
    settings = (("paper", {"decay_convention": "schedule", "cautious": False,
                           "scale_invariant_only": False}),
                ("torch (lr_t·λ)", {"decay_convention": "lr"}),
                ("corrected", {"decay_convention": "corrected"}),
                ("cautious", {"cautious": True}),
                ("scale-invariant only", {"scale_invariant_only": True}))
    opts = [o for o in registry.OPTIMIZERS if registry.is_decoupled(o)
            and any(r.get("optimizer") == o for r in recs)]
    panels = [Panel(f"{optimizer_label(o)}, {label}", key, "weight_decay",
                    tuple({"optimizer": o, **match}.items()))
              for o in opts for label, match in settings]
    fig = _figure(5.2 * len(settings), 4.8 * len(opts) + 0.5)
    _draw_panels(fig, panels, ev, len(opts), len(settings), top_k=top_k)
    fig.suptitle(f"Decay variants — final test error (%), ◆ best λ of each α ({_note(recs)})",
                 fontsize=12)
    return fig


def fig_slopes(records):
    """The best λ of each learning rate (◆, bootstrap 90 % range as bars) for the Fig. 2
    optimizers, with the fitted lines; grey guides show slope 0 (separable) and −1 (L2)."""
    ev = evidence_for(records)
    recs = _need(ev, "slopes")
    key = _fig_key(ev, recs, "fig2")
    fig = _figure(11.0, 4.4)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for ax, pair in zip(axes, (("sgd", "sgdw"), ("adam", "adamw"))):
        for opt in pair:
            fit = ev.slope(key, optimizer=opt)
            hm = ev.heat_map(key, optimizer=opt)
            if fit is None or hm is None:
                continue
            label = optimizer_label(opt)
            used = fit.rows_used
            a = hm.rows[used]
            with np.errstate(invalid="ignore"):
                boot = np.exp(fit.log_lambda[1:, used])
                lo = np.nanquantile(boot, 0.05, axis=0) if boot.size else []
                hi = np.nanquantile(boot, 0.95, axis=0) if boot.size else []
            y = np.exp(fit.log_lambda[0, used])
            ax.errorbar(a, y, yerr=[y - lo, hi - y] if len(a) else None, fmt="D",
                        color=_COLORS[label], capsize=3,
                        label=f"{label}: s = {fit.slope.format()} ({fit.reading})")
            if np.isfinite(fit.intercept) and len(a):
                ax.plot(a, np.exp(fit.line(a)), color=_COLORS[label], lw=1.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set(xlabel="learning rate α", ylabel="best λ (L2: λ'; decoupled: λ)",
               title=f"{optimizer_label(pair[0])} vs {optimizer_label(pair[1])}")
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=_FONT["tick"])
    fig.suptitle("Best decay of each learning rate (90 % bootstrap range) and the fitted "
                 "slope d log λ*/d log α: Prop. 1 predicts −1 with L2, 0 decoupled",
                 fontsize=11)
    return fig


# ----------------------------------------------------------------------------- curves


def _group(recs: Sequence[Mapping]) -> dict[tuple, list[int]]:
    """Run indices grouped by setting (:func:`weightdecay.registry.setting_key`: everything
    but the seed)."""
    out: dict[tuple, list[int]] = {}
    for i, r in enumerate(recs):
        out.setdefault(setting_key(r), []).append(i)
    return out


def _curve(recs: Sequence[Mapping], runs: list[int], name: str):
    """Epochs, mean and standard error over seeds of a history series (NaN-free epochs)."""
    hists = [recs[i].get("history") or {} for i in runs]
    n = min(len(h.get(name) or []) for h in hists)
    if n == 0:
        return None
    ep = np.asarray((hists[0].get("epoch") or range(1, n + 1))[:n], dtype=float)
    ys = np.array([[np.nan if v is None else float(v) for v in h[name][:n]] for h in hists])
    ok = np.isfinite(ys).all(axis=0)
    mean = ys.mean(axis=0)
    se = ys.std(axis=0, ddof=1) / np.sqrt(len(ys)) if len(ys) > 1 else np.zeros(n)
    return ep[ok], mean[ok], se[ok]


def _final(recs, runs, key):
    vals = [float(recs[i][key]) for i in runs if recs[i].get(key) is not None]
    return float(np.mean(vals)) if vals and len(vals) == len(runs) else float("nan")


def _best_error(recs: Sequence[Mapping]) -> float:
    """The mean final test error of the best setting among ``recs`` (NaN: none)."""
    best = best_setting(recs)
    return float("nan") if best is None else best.error


def _plot_band(ax, curve, scale=1.0, **kw):
    x, m, s = curve
    (line,) = ax.plot(x, m * scale, **kw)
    ax.fill_between(x, (m - s) * scale, (m + s) * scale, color=line.get_color(),
                    alpha=0.15 * kw.get("alpha", 1.0), lw=0)


def fig3(records):
    """Paper Fig. 3: Adam (L2) vs AdamW over a long run: (a) training loss and (b) test
    error per epoch (best setting bold, ±1 SE over seeds), (c) final test error vs λ,
    (d) final test error vs final training loss, one point per setting."""
    ev = evidence_for(records)
    recs = [r for r in _need(ev, "fig3") if r.get("schedule") != "restarts"]
    fig = _figure(11.5, 8.5)
    (a_loss, a_err), (a_lam, a_gen) = fig.subplots(2, 2)
    for opt in ("adam", "adamw"):
        mine = [r for r in recs if r.get("optimizer") == opt]
        sub = [r for r in mine if not r.get("diverged")]  # the curves of runs that trained
        if not sub:
            continue
        label = optimizer_label(opt)
        color = _COLORS[label]
        groups = _group(sub)
        finals = {k: _final(sub, v, "final_test_error") for k, v in groups.items()}
        best = best_setting(mine)
        for k, runs in groups.items():
            bold = best is not None and k == setting_key(best.runs[0])
            kw = {"color": color, "lw": 2.0 if bold else 0.8, "alpha": 1.0 if bold else 0.35}
            if bold:
                r0 = sub[runs[0]]
                kw["label"] = (f"{label} (best: α={format_value(r0.get('lr'))}, "
                               f"λ={format_value(r0.get('weight_decay'))})")
            for ax, name, scale in ((a_loss, "train_loss", 1.0), (a_err, "test_error", 100.0)):
                c = _curve(sub, runs, name)
                if c is not None:
                    _plot_band(ax, c, scale, **kw)
        lams = sorted({r["weight_decay"] for r in sub if r.get("weight_decay")
                       and r["weight_decay"] > 0})
        per_lam = [_best_error([r for r in mine if r.get("weight_decay") == lam])
                   for lam in lams]
        a_lam.plot(lams, 100 * np.array(per_lam), "o-", color=color, label=label)
        pts = [(_final(sub, v, "final_train_loss"), finals[k]) for k, v in groups.items()]
        pts = [p for p in pts if np.isfinite(p[0]) and np.isfinite(p[1])]
        if pts:
            xs, ys = zip(*pts)
            a_gen.scatter(xs, 100 * np.array(ys), color=color, label=label, s=28, alpha=0.8)
    a_loss.set_yscale("log")
    a_loss.set(xlabel="epoch", ylabel="training loss", title="(a) training loss")
    a_err.set(xlabel="epoch", ylabel="test error (%)", title="(b) test error", yscale="log")
    a_lam.set_xscale("log", base=2)
    a_lam.set(xlabel="λ (Adam: L2 factor λ'; AdamW: decoupled λ)",
              ylabel="final test error (%)", title="(c) test error vs λ (best α)")
    a_gen.set_xscale("log")
    a_gen.set(xlabel="final training loss", ylabel="final test error (%)",
              title="(d) test error vs training loss (one point per setting)")
    for ax in (a_loss, a_err, a_lam, a_gen):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=_FONT["tick"])
    fig.suptitle(f"Fig. 3 — Adam vs AdamW, long run ({_note(recs)})", fontsize=12)
    return fig


def fig4(records):
    """Paper Fig. 4: test error per epoch of each optimizer with one cosine cycle and with
    warm restarts (label + "R"), mean ±1 SE over seeds; dots at the ends of restart periods
    (the anytime checkpoints)."""
    from weightdecay.schedules import period_ends

    ev = evidence_for(records)
    recs = _need(ev, "fig4")
    fig = _figure(8.0, 5.0)
    ax = fig.subplots()
    for runs in _group(recs).values():
        r0 = recs[runs[0]]
        label = optimizer_label(r0.get("optimizer"), r0.get("schedule"))
        c = _curve(recs, runs, "test_error")
        if c is None:
            continue
        restarts = label.endswith("R")
        _plot_band(ax, c, 100.0, color=_COLORS.get(label), lw=1.6, ls="-" if restarts else "--",
                   label=f"{label} (α={format_value(r0.get('lr'))}, "
                         f"λ={format_value(r0.get('weight_decay'))}): {100 * c[1][-1]:.2f}%")
        if restarts and r0.get("T_0"):
            ends = [e for e in period_ends(c[0][-1], float(r0["T_0"]), float(r0["T_mult"]))]
            idx = [int(np.argmin(np.abs(c[0] - e))) for e in ends]
            ax.scatter(c[0][idx], 100 * c[1][idx], color=_COLORS.get(label), s=30, zorder=3)
    ax.set(xlabel="epoch", ylabel="test error (%)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=_FONT["tick"])
    fig.suptitle(f"Fig. 4 — anytime performance of warm restarts\n({_note(recs)}; dots: ends "
                 "of the restart periods)", fontsize=11)
    return fig


def supp1(records: Sequence[Mapping] | Evidence | None = None, *, T_0: float = 100,
          T_mult: float = 2.0, epochs: float | None = None, steps_per_epoch: int = 10):
    """Paper Supp. Fig. 1: the schedule multiplier η_t over epochs for warm restarts.

    From stored ``"eta"`` histories of runs with ``schedule == "restarts"`` (tagged "supp1"
    first) — one line per (T_0, T_mult, epochs) — else computed with
    :func:`weightdecay.schedules.cosine_restarts` for ``T_0`` epochs and ``T_mult`` over
    ``epochs`` (default: four periods), at ``steps_per_epoch`` updates per epoch. Period
    ends (η_t → 0, the recommended checkpoints) are marked.
    """
    from weightdecay.schedules import cosine_restarts, period_ends

    if T_0 <= 0 or T_mult < 1:
        raise ValueError(f"T_0 must be > 0 and T_mult >= 1, got T_0={T_0!r}, "
                         f"T_mult={T_mult!r}")
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch!r}")
    if isinstance(records, Evidence):
        records = records.records
    curves = []
    if records:
        done = completed(records)
        cand = [r for r in done if r.get("figure") == "supp1"] or done
        seen = set()
        for r in cand:
            h = r.get("history") or {}
            key = (r.get("T_0"), r.get("T_mult"), r.get("epochs"))
            if r.get("schedule") != "restarts" or not h.get("eta") or key in seen:
                continue
            seen.add(key)
            eta = np.asarray(h["eta"], dtype=float)
            ep = np.asarray(h.get("epoch") or range(1, len(eta) + 1), dtype=float)
            curves.append((f"stored: T_0={r['T_0']:g}, T_mult={r['T_mult']:g} (η at the end "
                           "of each epoch)", ep, eta, float(r["T_0"]), float(r["T_mult"])))
    if not curves:
        if epochs is None:
            epochs = sum(T_0 * T_mult**i for i in range(4))
        if epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {epochs!r}")
        s = cosine_restarts(T_0=T_0 * steps_per_epoch, T_mult=T_mult)
        t = np.arange(0, int(round(epochs * steps_per_epoch)), dtype=float)
        curves.append((f"T_0={T_0:g} epochs, T_mult={T_mult:g}", t / steps_per_epoch,
                       np.asarray(s(t), dtype=float), T_0, T_mult))
    fig = _figure(8.0, 3.8)
    ax = fig.subplots()
    for i, (label, x, eta, t0, tm) in enumerate(curves):
        color = f"C{i}"
        ax.plot(x, eta, color=color, lw=1.4, label=label)
        ends = period_ends(float(x[-1]) + 1e-9, t0, tm)
        ax.scatter(ends, np.zeros(len(ends)), color=color, marker="v", s=36, zorder=3)
        for e in ends:
            ax.annotate(f"{e:g}", (e, 0), textcoords="offset points", xytext=(-5, 6),
                        ha="right", va="bottom", fontsize=_FONT["tick"], color=color)
    ax.set(xlabel="epoch", ylabel="η_t (multiplier of α and λ)", ylim=(-0.05, 1.1),
           title="Supp. Fig. 1 — cosine annealing with warm restarts "
                 "(▼: period ends = recommended checkpoints)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=_FONT["tick"], loc="upper right")
    return fig

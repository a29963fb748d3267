"""The figures of Loshchilov & Hutter (ICLR 2019), drawn from stored trial records only.

One function per heat-map figure of the paper (Sec. 4: Figs. 1 and 2, Supp. Fig. 3), plus
:func:`fig_slopes`, the best λ of each learning rate with the fitted slope and its interval,
the mechanism preset's figures (:mod:`weightdecay.report.mechanism_figures`)
and :func:`fig_variants` (the curves, Figs. 3-4 and Supp. Fig. 1, are in
:mod:`weightdecay.report.curves`).
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

import dataclasses
import math
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import registry
from ..registry import optimizer_label, schedule_label
from .claims import Evidence
from .mechanism_figures import (
    fig_decay_subsets,
    fig_equilibrium,
    fig_gradnorm,
    fig_rotation,
    unavailable,
)
from .stats import HeatMap, SlopeFit, completed, format_value

__all__ = [
    "Panel",
    "draw_heat_map",
    "evidence_for",
    "fig1",
    "fig2",
    "fig_decay_subsets",
    "fig_equilibrium",
    "fig_gradnorm",
    "fig_rotation",
    "fig_slopes",
    "fig_variants",
    "missing",
    "split_panels",
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


def _wrap(text: str, width: int = 44) -> str:
    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())


def _empty_panel(ax, title: str, message: str) -> None:
    ax.set_title(title, fontsize=_FONT["title"])
    ax.text(0.5, 0.5, _wrap(message), ha="center", va="center", fontsize=_FONT["label"],
            color="0.4", transform=ax.transAxes)
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
        title = f"{title}\nslope " + "\n".join(textwrap.wrap(fit.text(), 56))
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


def _short(value) -> str:
    text = format_value(value) if isinstance(value, float) else str(value)
    return text if len(text) <= 16 else text[:12] + "…"


def split_panels(ev: Evidence, panels: list[Panel]) -> list[Panel]:
    """Each panel split by the settings that vary among its runs (:meth:`Evidence.split`):
    one heat map per combination, its title naming it ("epochs=5")."""
    out = []
    for p in panels:
        base = dict(p.match)
        for sub in ev.split(p.figure, p.col, **base):
            extra = ", ".join(f"{k}={_short(v)}" for k, v in sub.items() if k not in base)
            out.append(dataclasses.replace(p, title=p.title + (f"\n{extra}" if extra else ""),
                                           match=tuple(sub.items())))
    return out


def _draw_panels(fig, panels: list[Panel], ev: Evidence, nrows: int, ncols: int,
                 *, top_k: int = 10, shared_scale: bool = False, needs: str = ""):
    wanted = len(panels)
    panels = split_panels(ev, panels)
    if not panels:  # runs of the experiment, but none of what the figure shows
        _empty_panel(fig.subplots(), "", f"no completed runs of {needs}")
        return
    if len(panels) != wanted:  # settings split the panels: a grid of at most 3 columns
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig.set_size_inches(5.6 * ncols, 4.8 * nrows + 0.5)
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


def missing(ev: Evidence, name: str, detail: bool = True) -> str | None:
    """Why figure ``name`` cannot be drawn from ``ev`` (no records of its experiment; with
    ``detail``, also records of it without what the figure draws, e.g. the monitor's blocks),
    or None when it can."""
    entry = registry.figure(name)
    if entry.tag is not None and not _records(ev, entry.tag):
        return f"{entry.tag} needs completed trials of {entry.needs}; found none"
    return unavailable(ev, name) if detail else None


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
    nrows, ncols = (2, 2) if len(panels) > 2 else (1, max(1, len(panels)))
    fig = _figure(6.4 * ncols, 5.2 * nrows + 0.5)
    _draw_panels(fig, panels, ev, nrows, ncols, top_k=top_k,
                 needs=registry.figure("fig2").needs)
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
    fig = _figure(5.6 * max(1, len(scheds)), 4.8 * max(1, len(opts)) + 0.5)
    _draw_panels(fig, panels, ev, len(opts), len(scheds), top_k=top_k,
                 needs=registry.figure("fig1").needs)
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
    fig = _figure(5.2 * len(settings), 4.8 * max(1, len(opts)) + 0.5)
    _draw_panels(fig, panels, ev, len(opts), len(settings), top_k=top_k,
                 needs=registry.figure("variants").needs)
    fig.suptitle(f"Decay variants — final test error (%), ◆ best λ of each α ({_note(recs)})",
                 fontsize=12)
    return fig


def _optima(ax, fit: SlopeFit, hm: HeatMap, label: str, color) -> bool:
    """Draw a heat map's per-row best λ (◆, 90 % bootstrap range) and its fitted line into
    ``ax``; False when no row has an optimum to draw."""
    used = fit.rows_used
    a = hm.rows[used]
    if not len(a):
        return False
    y = np.exp(fit.log_lambda[0, used])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row no replicate brackets
        boot = np.exp(fit.log_lambda[1:, used])
        lo = np.nanquantile(boot, 0.05, axis=0) if len(boot) else y
        hi = np.nanquantile(boot, 0.95, axis=0) if len(boot) else y
    err = [np.nan_to_num(np.maximum(y - lo, 0.0)), np.nan_to_num(np.maximum(hi - y, 0.0))]
    text = f"s = {fit.text()}" if np.isfinite(fit.slope.estimate) else fit.reason
    ax.errorbar(a, y, yerr=err, fmt="D", color=color, capsize=3,
                label=_wrap(f"{label}: {text}", 56))
    if np.isfinite(fit.intercept):
        ax.plot(a, np.exp(fit.line(a)), color=color, lw=1.2)
    return True


def fig_slopes(records):
    """The best λ of each learning rate (◆, bootstrap 90 % range as bars) for the Fig. 2
    optimizers, with the fitted lines; a heat map without optima to draw says why in its
    place ("not estimable: no row has an interior optimum")."""
    ev = evidence_for(records)
    recs = _need(ev, "slopes")
    key = _fig_key(ev, recs, "fig2")
    fig = _figure(11.0, 4.4)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for ax, pair in zip(axes, (("sgd", "sgdw"), ("adam", "adamw"))):
        title = f"{optimizer_label(pair[0])} vs {optimizer_label(pair[1])}"
        notes = []
        for opt in pair:
            if not any(r.get("optimizer") == opt for r in recs):
                continue
            for match in ev.split(key, optimizer=opt):
                fit, hm = ev.slope(key, **match), ev.heat_map(key, **match)
                extra = ", ".join(f"{k}={_short(v)}" for k, v in match.items() if k != "optimizer")
                label = optimizer_label(opt) + (f" ({extra})" if extra else "")
                if fit is not None and hm is not None and not _optima(
                        ax, fit, hm, label, _COLORS[optimizer_label(opt)]):
                    notes.append(f"{label}: {fit.reason}")
        if not ax.has_data():
            _empty_panel(ax, title, "\n".join(notes) or "no runs of these optimizers")
            continue
        for note in notes:  # beside the drawn ones, in the legend
            ax.plot([], [], " ", label=_wrap(note, 56))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set(xlabel="learning rate α", ylabel="best λ (L2: λ'; decoupled: λ)")
        ax.set_title(title, fontsize=_FONT["title"])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=_FONT["tick"])
    fig.suptitle("Best decay of each learning rate (90 % bootstrap range) and the fitted "
                 "slope d log λ*/d log α: Prop. 1 predicts −1 with L2, 0 decoupled",
                 fontsize=11)
    return fig

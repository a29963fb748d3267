"""The paper's figures drawn as curves, from stored trial records only: Fig. 3 (Adam vs AdamW
over a long run), Fig. 4 (anytime performance of warm restarts) and Supp. Fig. 1 (the
schedule multiplier of warm restarts).

Like :mod:`weightdecay.report.figures` (the heat maps), each function takes a study's records
or their :class:`weightdecay.report.claims.Evidence` and returns a
:class:`matplotlib.figure.Figure`; curves show the mean over seeds with a ±1 standard-error
band. A figure whose records hold nothing it can draw says so inside its axes.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (Sec. 4,
Figs. 3 and 4; Supp. Fig. 1); SGDR, ICLR 2017 (warm restarts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..registry import best_setting, optimizer_label, setting_key
from .claims import Evidence
from .figures import _COLORS, _FONT, _empty_panel, _figure, _need, _note, evidence_for
from .stats import completed, format_value

__all__ = ["fig3", "fig4", "supp1"]


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
    epochs = hists[0].get("epoch") or []
    ep = np.asarray(epochs[:n] if len(epochs) >= n else range(1, n + 1), dtype=float)
    ys = np.array([[np.nan if v is None else float(v) for v in h[name][:n]] for h in hists])
    ok = np.isfinite(ys).all(axis=0)
    if not ok.any():
        return None
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


def _log(ax, axis: str = "y", base: float = 10) -> None:
    """A log scale on ``axis`` where the axes hold a value > 0 (a log axis without one cannot
    be drawn: it stays linear)."""
    lim = ax.dataLim
    if ax.has_data() and (lim.y1 if axis == "y" else lim.x1) > 0:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log", base=base)


def _finish(ax, title: str, empty: str) -> None:
    """Grid and legend, or ``empty`` in its place when the axes hold nothing."""
    if not ax.has_data():
        _empty_panel(ax, title, empty)
        return
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=_FONT["tick"])


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
        if lams:
            a_lam.plot(lams, 100 * np.array(per_lam), "o-", color=color, label=label)
        pts = [(_final(sub, v, "final_train_loss"), finals[k]) for k, v in groups.items()]
        pts = [p for p in pts if np.isfinite(p[0]) and np.isfinite(p[1])]
        if pts:
            xs, ys = zip(*pts)
            a_gen.scatter(xs, 100 * np.array(ys), color=color, label=label, s=28, alpha=0.8)
    for ax, axis, base in ((a_loss, "y", 10), (a_err, "y", 10), (a_lam, "x", 2),
                           (a_gen, "x", 10)):
        _log(ax, axis, base)
    a_loss.set(xlabel="epoch", ylabel="training loss")
    a_err.set(xlabel="epoch", ylabel="test error (%)")
    a_lam.set(xlabel="λ (Adam: L2 factor λ'; AdamW: decoupled λ)",
              ylabel="final test error (%)")
    a_gen.set(xlabel="final training loss", ylabel="final test error (%)")
    for ax, title in ((a_loss, "(a) training loss"), (a_err, "(b) test error"),
                      (a_lam, "(c) test error vs λ (best α)"),
                      (a_gen, "(d) test error vs training loss (one point per setting)")):
        ax.set_title(title)
        _finish(ax, title, "nothing to draw: no Adam or AdamW run with a finite history "
                           "(diverged, or its test error never evaluated)")
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
    _log(ax)
    _finish(ax, "", "nothing to draw: no run with a finite test-error history (diverged, "
                    "or never evaluated)")
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

"""The figures of the mechanism claims (:mod:`weightdecay.report.mechanism`), drawn from
stored runs only, like every figure of the report (object API, no ``pyplot``).

- :func:`fig_equilibrium`: the angular update per step, measured (solid) against predicted
  at equilibrium (dashed), over training, for the scale-invariant convolutions, BatchNorm's
  scale and shift and the head; one row per optimizer, decay convention and schedule, one
  colour per learning rate (mean over seeds).
- :func:`fig_rotation`: the rotation over the stationary window against α, per decay
  convention, with the prediction and the fitted slope of claim (b).
- :func:`fig_gradnorm`: the scale-invariant layers' gradient norm over a cosine run, relative
  to the middle of training, with the paper's decay and the corrected one (claim (d)).
- :func:`fig_decay_subsets`: AdamW's Fig. 2 heat maps with every parameter decayed, only the
  scale-invariant weights, only the others (claim (c)).

The figures module imports these (the registry names them there); they import its helpers
when called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .. import registry
from ..harness.monitoring import monitor_rows, total_updates
from ..registry import optimizer_label
from .mechanism import (
    _CONVENTIONS,
    EDGE_FACTOR,
    END_FRACTION,
    MIDDLE_HALF_WIDTH,
    SUBSET_LABELS,
    SUBSETS,
    TAG_SUBSETS,
    _per_run,
    basin_edge,
    convention_slope,
    edge_slope,
    gradnorm_ratios,
)
from .stats import format_value, interval

__all__ = ["fig_decay_subsets", "fig_equilibrium", "fig_gradnorm", "fig_rotation"]

_CATEGORIES = {"scale_invariant": "scale-invariant convs", "normalization":
               "BatchNorm scale & shift", "other": "head (and other)"}
_FONT = 8


def _monitored(recs: Sequence[Mapping]) -> dict[tuple, dict[tuple, list[Mapping]]]:
    """Runs with monitor blocks: (optimizer, convention, schedule) -> (lr, λ) -> runs."""
    out: dict[tuple, dict[tuple, list[Mapping]]] = {}
    for r in recs:
        if r.get("diverged") or not (r.get("history") or {}).get("monitor"):
            continue
        row = (r["optimizer"], r.get("decay_convention"), r.get("schedule"))
        out.setdefault(row, {}).setdefault((float(r["lr"]), float(r["weight_decay"])),
                                           []).append(r)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][2] != "fixed", kv[0][0],
                                                    kv[0][1] != "schedule", kv[0][1])))


# -- what each figure needs beyond runs of its tag (one place: the figure and `unavailable`)

_UNAVAILABLE = {
    "equilibrium": "equilibrium needs runs with the equilibrium monitor (monitor_every)",
    "rotation": "rotation needs monitored AdamW or SGDW runs at a constant schedule",
    "gradnorm": "gradnorm needs monitored cosine AdamW runs (the paper's or the corrected "
                "decay)",
    "decay_subsets": "decay_subsets needs AdamW runs",
}


def _tagged(ev, name: str) -> list[Mapping]:
    """The records figure ``name`` draws from (its tag's, or untagged ones), maybe none."""
    from .figures import _records, missing

    if missing(ev, name, detail=False) is not None:
        return []
    return _records(ev, registry.figure(name).tag or name)


def _equilibrium_rows(ev) -> dict[tuple, dict[tuple, list[Mapping]]]:
    return _monitored(_tagged(ev, "equilibrium"))


def _rotation_optimizers(ev) -> list[str]:
    rows = _monitored(_tagged(ev, "rotation"))
    return [o for o in ("adamw", "sgdw") if any(row[0] == o and row[2] == "fixed"
                                                for row in rows)]


def _gradnorm_rows(ev) -> dict[tuple, dict[tuple, list[Mapping]]]:
    recs = [r for r in _tagged(ev, "gradnorm") if r.get("schedule") == "cosine"
            and r["optimizer"] == "adamw" and not r.get("decay_subset")
            and not r.get("scale_invariant_only")]
    return {k: v for k, v in _monitored(recs).items() if k[1] in ("schedule", "corrected")}


def _subset_names(ev) -> list[str]:
    recs = _tagged(ev, "decay_subsets")
    return [name for name, match in SUBSETS.items()
            if any(r["optimizer"] == "adamw" and all(r.get(k) == v for k, v in match.items())
                   for r in recs)]


_AVAILABLE = {"equilibrium": _equilibrium_rows, "rotation": _rotation_optimizers,
              "gradnorm": _gradnorm_rows, "decay_subsets": _subset_names}


def unavailable(ev, name: str) -> str | None:
    """Why mechanism figure ``name`` cannot be drawn from ``ev`` although it holds runs of
    its tag (e.g. none of them carries the monitor's blocks), or None when it can."""
    return None if name not in _AVAILABLE or _AVAILABLE[name](ev) else _UNAVAILABLE[name]


#: measured angles are drawn as the RMS over this many consecutive measured updates (one
#: update's angle is a random draw around the RMS the formula predicts)
_SMOOTH = 5


def _seed_curve(runs: Sequence[Mapping], category: str, key: str, smooth: int = 1):
    """Steps and the RMS over seeds of a monitor column (steps every seed measured), then
    over ``smooth`` consecutive measurements (centred)."""
    per = [{r["step"]: r[key] for r in monitor_rows(run.get("history"), category)
            if r[key] is not None} for run in runs]
    steps = sorted(set.intersection(*(set(p) for p in per))) if per else []
    if not steps:
        return None
    sq = np.array([np.mean([p[s] ** 2 for p in per]) for s in steps])
    if smooth > 1 and len(sq) >= smooth:
        kernel = np.ones(smooth) / smooth
        sq = np.convolve(np.pad(sq, smooth // 2, mode="edge"), kernel, mode="valid")
    return np.array(steps), np.sqrt(sq)


_SHORT = {"schedule": "paper η_t·λ", "lr": "torch lr_t·λ", "corrected": "corrected",
          "constant": "constant λ"}


def _row_title(row: tuple) -> str:
    opt, conv, sched = row
    return f"{optimizer_label(opt)}, {_SHORT.get(conv, conv)}, {sched}"


def fig_equilibrium(records):
    """Measured (solid) against predicted (dashed) angular update per step over training,
    per category (columns) and optimizer × decay convention × schedule (rows), one colour
    per learning rate; measured: RMS over seeds and over 5 consecutive measured updates.
    The scale-invariant weights should meet the prediction after a few timescales 1/(2d);
    the other categories are drawn against the same formula as a reference (it does not
    apply to them)."""
    from .figures import _figure, _need, _note, evidence_for

    ev = evidence_for(records)
    recs = _need(ev, "equilibrium")
    rows = _equilibrium_rows(ev)  # not empty: _need asked unavailable()
    cats = [c for c in _CATEGORIES if any(monitor_rows(runs[0].get("history"), c)
                                          for g in rows.values() for runs in g.values())]
    fig = _figure(3.3 * len(cats) + 1.8, 2.2 * len(rows) + 0.9)
    axes = np.asarray(fig.subplots(len(rows), len(cats), squeeze=False, sharex="row"))
    for i, (row, settings) in enumerate(rows.items()):
        for j, cat in enumerate(cats):
            ax = axes[i, j]
            for k, ((lr, lam), runs) in enumerate(sorted(settings.items())):
                color = f"C{k % 10}"
                m = _seed_curve(runs, cat, "angular_update", _SMOOTH)
                p = _seed_curve(runs, cat, "predicted_angular_update")
                label = f"α={format_value(lr)}" + ("" if len({s[1] for s in settings}) == 1
                                                   else f", λ={format_value(lam)}")
                if m is not None:
                    ax.plot(*m, color=color, lw=1.1, label=label)
                if p is not None:
                    ax.plot(*p, color=color, lw=1.1, ls="--")
            ax.set_yscale("log")
            ax.tick_params(labelsize=_FONT)
            ax.grid(alpha=0.3, which="both")
            lams = sorted({s[1] for s in settings})
            lam_text = "" if len(lams) > 2 else ", λ=" + ", ".join(map(format_value, lams))
            ax.set_title(f"{_row_title(row)}{lam_text}\n{_CATEGORIES[cat]}",
                         fontsize=_FONT + 1)
            if j == 0:
                ax.set_ylabel("angle per update (rad)", fontsize=_FONT)
            if j == len(cats) - 1 and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=_FONT - 1, loc="upper left", bbox_to_anchor=(1.02, 1.0))
            if i == len(rows) - 1:
                ax.set_xlabel("update t", fontsize=_FONT)
    fig.suptitle("Rotation per update, measured (solid, RMS over seeds and 5 measured updates) "
                 f"against the equilibrium √(2d(1−b)/(1+b)) (dashed)\n{_note(recs)}",
                 fontsize=11)
    return fig


def fig_rotation(records):
    """The scale-invariant weights' RMS rotation over the stationary window against α at a
    constant schedule (claim (b)): markers, the mean over seeds (bars: the seeds' range);
    dashed, the prediction; in the legend the fitted slope d log r / d log α with its 90 %
    interval (0 predicted in the paper's convention, 0.5 in torch's)."""
    from .figures import _figure, _need, _note, evidence_for

    ev = evidence_for(records)
    _need(ev, "rotation")
    opts = _rotation_optimizers(ev)  # not empty: _need asked unavailable()
    reps, stats = _per_run(ev)
    if reps is None:  # monitored runs, but not tagged as the preset tags them
        raise ValueError(_UNAVAILABLE["rotation"])
    recs = reps.records
    fig = _figure(5.2 * len(opts), 4.2)
    axes = fig.subplots(1, len(opts), squeeze=False)[0]
    for ax, opt in zip(axes, opts):
        for k, conv in enumerate(c for c in ("schedule", "lr") if any(
                r["optimizer"] == opt and r.get("decay_convention") == c for r in recs)):
            pts: dict[tuple, list[int]] = {}
            for i, r in enumerate(recs):
                if (r["optimizer"] == opt and r.get("decay_convention") == conv
                        and r.get("schedule") == "fixed" and stats[i].measured is not None):
                    pts.setdefault((float(r["weight_decay"]), float(r["lr"])), []).append(i)
            fit = convention_slope(ev, opt, conv)
            slope = "" if fit is None else f": slope {interval(fit[0]).format()}"
            for n, lam in enumerate(sorted({key[0] for key in pts})):
                keys = sorted(key for key in pts if key[0] == lam)
                a = np.array([key[1] for key in keys])
                vals = [[float(stats[i].measured or np.nan) for i in pts[key]] for key in keys]
                mean = np.array([np.mean(v) for v in vals])
                err = [mean - [min(v) for v in vals], [max(v) for v in vals] - mean]
                color = f"C{2 * k + n}"
                ax.errorbar(a, mean, yerr=err, fmt="o-", color=color, capsize=3, ms=4,
                            label=f"{_CONVENTIONS[conv]}, λ={format_value(lam)}"
                                  + (slope if n == 0 else ""))
                pred = [np.mean([float(stats[i].predicted or np.nan) for i in pts[key]])
                        for key in keys]
                ax.plot(a, pred, "--", color=color, lw=1.0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel="learning rate α", ylabel="RMS rotation per update (rad)",
               title=f"{optimizer_label(opt)}: window rotation (dashed: predicted)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=_FONT - 1)
    fig.suptitle(f"Claim (b): rotation against α at a constant schedule\n{_note(recs)}",
                 fontsize=11)
    return fig


def fig_gradnorm(records):
    """Claim (d): the scale-invariant layers' gradient norm over a cosine run, divided by its
    mean over the middle of training (T/2 ± 5 %, shaded), for the paper's decay and the
    corrected one (one panel each, one colour per α, mean over seeds); the last 10 % of the
    updates (shaded) give the ratio of the claim."""
    from .figures import _figure, _need, _note, evidence_for

    ev = evidence_for(records)
    recs = _need(ev, "gradnorm")
    rows = _gradnorm_rows(ev)  # not empty: _need asked unavailable()
    ratios = gradnorm_ratios(ev)
    fig = _figure(5.0 * len(rows), 4.0)
    axes = fig.subplots(1, len(rows), squeeze=False, sharey=True)[0]
    for ax, (row, settings) in zip(axes, rows.items()):
        for k, ((lr, lam), runs) in enumerate(sorted(settings.items())):
            curves = []
            for run in runs:
                T = total_updates(run.get("history"))
                rs = [r for r in monitor_rows(run.get("history"), "scale_invariant")
                      if r["grad_norm"] is not None]
                mid = [r["grad_norm"] for r in rs
                       if T and abs(r["step"] - T / 2) <= MIDDLE_HALF_WIDTH * T]
                if T and mid:
                    curves.append({r["step"] / T: r["grad_norm"] / np.mean(mid) for r in rs})
            if not curves:
                continue
            xs = sorted(set.intersection(*(set(c) for c in curves)))
            ax.plot(xs, [np.mean([c[x] for c in curves]) for x in xs], color=f"C{k % 10}",
                    lw=1.2, label=f"α={format_value(lr)}, λ={format_value(lam)}")
        ax.axvspan(0.5 - MIDDLE_HALF_WIDTH, 0.5 + MIDDLE_HALF_WIDTH, color="0.85", lw=0)
        ax.axvspan(1 - END_FRACTION, 1.0, color="0.75", lw=0)
        ax.axhline(1.0, color="0.4", lw=0.8, ls=":")
        ax.set_yscale("log")
        ratio = "" if ratios is None else (
            f"\nend ÷ middle (geometric mean): {interval(ratios[row[1]]).format('{:.2f}')}")
        ax.set(xlabel="fraction of training t/T", title=f"{_row_title(row)}{ratio}")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=_FONT - 1, loc="lower right", ncol=2)
    axes[0].set_ylabel("‖g‖ of the scale-invariant weights ÷ its middle value")
    fig.suptitle(f"Claim (d): gradient norm under cosine annealing\n{_note(recs)}",
                 fontsize=11)
    return fig


def fig_decay_subsets(records, top_k: int = 10):
    """Claim (c): AdamW's Fig. 2 heat maps with every parameter decayed, only the
    scale-invariant weights, and only the others, each with its best λ per α (◆) and the
    fitted slope (the Fig. 2 machinery)."""
    from .figures import Panel, _col_position, _draw_panels, _figure, _need, _note, evidence_for

    ev = evidence_for(records)
    recs = _need(ev, "decay_subsets")
    key = TAG_SUBSETS if ev.experiment(TAG_SUBSETS) else None
    panels = [Panel(f"AdamW, {SUBSET_LABELS[name]}", key, "weight_decay",  # type: ignore[arg-type]
                    tuple({"optimizer": "adamw", **SUBSETS[name]}.items()))
              for name in _subset_names(ev)]  # not empty: _need asked unavailable()
    fig = _figure(6.2 * len(panels), 5.6)
    _draw_panels(fig, panels, ev, 1, len(panels), top_k=top_k)
    edge = SUBSETS["not_scale_invariant"]
    for ax, panel in zip(fig.axes, panels):  # the basin's upper edge of the non-invariant map
        if dict(panel.match).get("decay_subset") != edge["decay_subset"]:
            continue
        hm = ev.heat_map(key, "weight_decay", **dict(panel.match))
        if hm is None:
            continue
        e = basin_edge(hm)[0]
        ok = np.isfinite(e)
        ax.scatter(_col_position(hm, e[ok]), np.flatnonzero(ok), marker="^", s=46,
                   facecolors="red", edgecolors="white", linewidths=0.8, zorder=5,
                   label=f"edge: error > {EDGE_FACTOR:g}× the row's best")
        fit = edge_slope(ev)
        ax.set_title(ax.get_title() + ("" if fit is None else
                                       f"\n▲ basin edge, slope {fit.format()}"),
                     fontsize=10)
        ax.legend(fontsize=_FONT - 1, loc="lower right")
    fig.suptitle("Claim (c): which decay moves AdamW's best λ — final test error (%), ◆ best "
                 f"λ of each α, dashed: fitted slope\n{_note(recs)}", fontsize=12)
    return fig

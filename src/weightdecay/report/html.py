"""report.html: the claims scorecard first, then every figure the stored trials allow, with
the numbers behind them, a trials summary, the best settings, the sweep spec and the
software versions.

The page is self-contained (inline CSS, no scripts, no network) apart from the PNG files
written beside it; all text from records or the spec is HTML-escaped. ``stats.json`` beside
it holds the same scorecard, heat maps (mean and standard error per cell) and slopes.

Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019; the
figure names (fig1 ... fig4, supp1, supp3) follow the paper's Sec. 4 and supplement.

Length (~510 lines): the page's sections (scorecard, design, figures, tables, variants,
trials, spec, versions) are small functions of one template.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import figures as F
from .claims import Claim, Evidence, scorecard
from .resample import DEFAULT_REPLICATES
from .stats import (
    BASIN_FACTOR,
    INTERVAL_LEVEL,
    OPTIMUM_WINDOW,
    SLOPE_READINGS,
    HeatMap,
    SlopeFit,
    completed,
    format_value,
)
from .variants import VariantRow, variant_table
from .variants import markdown as variants_markdown

__all__ = ["replication", "write_report"]

_DPI = 120
_STATES = ("COMPLETE", "RUNNING", "WAITING", "FAIL")
_CAPTIONS = {
    "fig2": "Fig. 2 — final test error (%) over (α, λ) for SGD, SGDW, Adam and AdamW: each "
            "cell's mean over seeds ± its bootstrap standard error (seeds and test "
            "examples); red rings: the 10 best cells; ◆: the best λ of each learning rate "
            "(a local parabola through the row's best cell), dashed: the fitted slope.",
    "slopes": "The best decay of each learning rate with its 90 % bootstrap range, and the "
              "fitted line; Prop. 1 predicts slope −1 with L2 (SGD), 0 when decoupled.",
    "fig1": "Fig. 1 — final test error over (α, λ) for Adam (L2) and AdamW under the fixed, "
            "step-drop and cosine schedules.",
    "fig3": "Fig. 3 — Adam vs AdamW over a long run: learning curves (±1 SE over seeds), "
            "test error vs λ and test error vs training loss.",
    "fig4": "Fig. 4 — test error per epoch with one cosine cycle and with warm restarts "
            "(anytime performance), ±1 SE over seeds.",
    "supp1": "Supp. Fig. 1 — the schedule multiplier η_t of cosine annealing with warm "
             "restarts; the ends of the periods are the recommended checkpoints.",
    "variants": "Decay variants — SGDW and AdamW under the paper's decay (η_t·λ), torch's "
                "(lr_t·λ), corrected (AdamC, lr_t²/lr_max·λ), cautious decay, and decay of the "
                "scale-invariant weights only; each heat map in its rule's own λ units.",
    "supp3": "Supp. Fig. 3 — heat maps at several epoch budgets, raw λ vs normalized λ_norm "
             "(App. B.1): the best raw λ should move with the budget, the best λ_norm less.",
}
_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1250px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
.meta { color: #666; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.55em; text-align: right; }
th { background: #f3f3f3; }
td.l, th.l { text-align: left; }
td.top { font-weight: bold; background: #e8f4e8; }
td.best { font-weight: bold; background: #bfe3bf; }
td.div { color: #a00; background: #f8e6e6; }
td.missing { color: #aaa; }
td.holds { background: #d9f0d9; font-weight: bold; }
td.refuted { background: #f6d5d5; font-weight: bold; }
td.inconclusive { background: #fbf0c9; font-weight: bold; }
td.notrun { color: #999; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #8a5a00; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, fmt: str = "{:.4g}") -> str:
    if x is None:
        return "–"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return _e(x)
    return "–" if not math.isfinite(v) else fmt.format(v)


def _pct(x: Any) -> str:
    return _num(None if x is None else 100 * float(x), "{:.2f}%")


def _default_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("weightdecay", "torch", "numpy", "optuna", "matplotlib", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# ----------------------------------------------------------------------------- sections


def _summary_table(records: Sequence[Mapping]) -> str:
    groups: dict[str, list[Mapping]] = {}
    for r in records:
        groups.setdefault(str(r.get("experiment") or r.get("figure") or "(none)"), []).append(r)
    head = "".join(f"<th>{s}</th>" for s in (*_STATES, "diverged", "total"))
    rows = []
    for name, rs in [*sorted(groups.items()), ("all", list(records))]:
        counts = [sum(1 for r in rs if r.get("state", "COMPLETE") == s) for s in _STATES]
        other = len(rs) - sum(counts)
        div = sum(1 for r in rs if r.get("diverged"))
        cells = "".join(f"<td>{c}</td>" for c in counts)
        label = _e(name) + (f" (+{other} other)" if other else "")
        tag = "th" if name == "all" else "td"
        rows.append(f"<tr><{tag} style='text-align:left'>{label}</{tag}>{cells}"
                    f"<td>{div}</td><td>{len(rs)}</td></tr>")
    return (f"<table><tr><th>experiment</th>{head}</tr>\n" + "\n".join(rows) + "</table>")


def _best_settings_html(records: Sequence[Mapping]) -> str:
    groups: dict[tuple, list[Mapping]] = {}
    for r in completed(records):
        exp = str(r.get("experiment") or r.get("figure") or "(none)")
        groups.setdefault((exp, F.optimizer_label(r)), []).append(r)
    rows = []
    for (exp, label), rs in sorted(groups.items()):
        settings: dict[tuple, list[Mapping]] = {}
        for r in rs:
            key = (r.get("lr"), r.get("weight_decay"), r.get("weight_decay_norm"),
                   r.get("schedule"), r.get("epochs"), r.get("T_0"))
            settings.setdefault(key, []).append(r)
        best, best_err = None, math.inf
        for runs in settings.values():
            errs = [r.get("final_test_error") for r in runs]
            if any(r.get("diverged") for r in runs) or any(
                e is None or not math.isfinite(float(e)) for e in errs
            ):
                continue
            err = float(np.mean([float(e) for e in errs if e is not None]))
            if err < best_err:
                best, best_err = runs, err
        if best is None:
            rows.append(f"<tr><td style='text-align:left'>{_e(exp)}</td><td>{_e(label)}</td>"
                        "<td colspan='7' style='text-align:left'>every setting diverged</td>"
                        "</tr>")
            continue
        r0 = best[0]
        best_seen = [float(b) for b in (r.get("best_test_error") for r in best)
                     if b is not None and math.isfinite(float(b))]
        rows.append(
            f"<tr><td style='text-align:left'>{_e(exp)}</td><td>{_e(label)}</td>"
            f"<td>{_num(r0.get('lr'))}</td><td>{_num(r0.get('weight_decay'))}</td>"
            f"<td>{_num(r0.get('weight_decay_norm'))}</td><td>{_e(r0.get('schedule'))}</td>"
            f"<td>{_num(r0.get('epochs'), '{:g}')}</td><td>{len(best)}</td>"
            f"<td>{_pct(best_err)}</td>"
            f"<td>{_pct(np.mean(best_seen)) if best_seen else '–'}</td></tr>"
        )
    head = ("<tr><th>experiment</th><th>optimizer</th><th>α</th><th>λ</th><th>λ_norm</th>"
            "<th>schedule</th><th>epochs</th><th>seeds</th><th>final test error</th>"
            "<th>best test error</th></tr>")
    if not rows:
        return "<p class='note'>no completed trials yet</p>"
    return "<table>" + head + "\n".join(rows) + "</table>"


def _spec_html(spec: Any) -> str:
    if spec is None:
        return "<p class='note'>no sweep spec recorded</p>"
    if isinstance(spec, str):
        text = spec
    else:
        text = json.dumps(spec, indent=2, sort_keys=True, default=str)
    return f"<pre>{_e(text)}</pre>"


def _versions_html(versions: Mapping[str, Any] | None) -> str:
    note = ""
    if not versions:
        versions = _default_versions()
        note = ("<p class='meta'>Not stored with the study; these are the versions at "
                "report time.</p>")
    rows = "".join(f"<tr><th style='text-align:left'>{_e(k)}</th><td>{_e(v)}</td></tr>"
                   for k, v in versions.items())
    return note + f"<table>{rows}</table>"




def _scorecard_html(claims: Sequence[Claim], replicated: Mapping[str, Any] | None) -> str:
    head = ("<tr><th class='l'>source</th><th class='l'>claim</th><th class='l'>metric</th>"
            "<th>estimate [90 % interval]</th><th>verdict</th>"
            + ("<th>original verdict</th>" if replicated else "")
            + "<th class='l'>rule · detail</th></tr>")
    rows = []
    for c in claims:
        if c.verdict == "not run":
            continue
        orig = ""
        if replicated:
            o = replicated["claims"].get(c.key)
            mark = "" if o is None else (" ✓" if o == c.verdict else " ✗")
            orig = f"<td>{_e(o or '—')}{mark}</td>"
        rows.append(
            f"<tr><td class='l'>{_e(c.source)}</td><td class='l'>{_e(c.claim)}</td>"
            f"<td class='l'>{_e(c.metric)}</td><td>{_e(c.estimate_text())}</td>"
            f"<td class='{_e(c.verdict)}'>{_e(c.verdict)}</td>{orig}"
            f"<td class='l'>{_e(c.rule)}<br><span class='meta'>{_e(c.detail)}</span></td>"
            "</tr>")
    not_run = [c for c in claims if c.verdict == "not run"]
    tail = ""
    if not_run:
        tail = ("<p class='meta'>Not scored by these trials (their experiments are in the "
                "<code>full</code> preset): " + _e("; ".join(f"{c.source}: {c.claim}"
                                                             for c in not_run)) + ".</p>")
    return "<table>" + head + "\n".join(rows) + "</table>" + tail


def _design_html(ev: Evidence) -> str:
    parts = []
    for fig in ("fig2", "fig1", "fig3", "fig4", "supp3", "conventions", "ablation", "variants"):
        recs = ev.experiment(fig)
        if not recs:
            continue
        seeds = sorted({int(r["seed"]) for r in recs})
        n = sorted({int(r["num_test"]) for r in recs if r.get("num_test")})
        parts.append(f"<li><b>{_e(fig)}</b>: {len(recs)} runs, seeds {_e(seeds)}, "
                     f"{_e('/'.join(map(str, n)) or '?')} test examples per run</li>")
    rules = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in SLOPE_READINGS.items())
    return (
        "<ul>" + "".join(parts) + "</ul>"
        f"<p class='meta'>Intervals: {int(INTERVAL_LEVEL * 100)} % percentile bootstrap, "
        f"{ev.n_boot} replicates resampling seeds and test examples together (paired across "
        "settings). The best λ of a learning-rate row is the vertex of a parabola of "
        f"log(error) through the row's best cell and up to {OPTIMUM_WINDOW} neighbours on "
        "each side; a row enters the slope when its optimum is bracketed by the grid and its "
        f"best error is within {BASIN_FACTOR}× the heat map's best. Slope readings:</p>"
        f"<ul class='meta'>{rules}</ul>")


def _heat_map_html(hm: HeatMap, fit: SlopeFit | None, k: int = 10) -> str:
    top = hm.top_k(k)
    rank = {cell: n for n, cell in enumerate(top)}
    head = "".join(f"<th>{_e(format_value(c))}</th>" for c in hm.cols)
    extra = "<th>best λ</th>" if fit is not None else ""
    lines = [f"<table><tr><th>α \\ {hm.lam_label}</th>{head}{extra}</tr>"]
    mean, se = hm.mean * 100, hm.se * 100
    for i in reversed(range(len(hm.rows))):  # largest α on top, as in the figure
        cells = []
        for j in range(len(hm.cols)):
            if hm.diverged[i, j]:
                cells.append("<td class='div'>div</td>")
            elif hm.counts[i, j] == 0:
                cells.append("<td class='missing'>–</td>")
            else:
                cls = ""
                if (i, j) in rank:
                    cls = " class='best'" if rank[(i, j)] == 0 else " class='top'"
                pm = "" if not np.isfinite(se[i, j]) else f" ± {se[i, j]:.2f}"
                cells.append(f"<td{cls}>{mean[i, j]:.2f}{pm}</td>")
        if fit is not None:
            ll = fit.log_lambda[0, i]
            best = (format_value(float(np.exp(ll))) if np.isfinite(ll) else
                    "edge" if fit.edge[i] else "outside basin")
            cells.append(f"<td>{_e(best)}</td>")
        lines.append(f"<tr><th>{_e(format_value(hm.rows[i]))}</th>{''.join(cells)}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _tables_html(ev: Evidence, name: str) -> tuple[str, dict]:
    """The numbers behind a heat-map figure, and their JSON."""
    key = name if ev.experiment(name) else None
    out: list[str] = []
    js: dict[str, Any] = {}
    panels: list[tuple[dict[str, Any], str, bool]] = []
    recs = [r for r in ev.records if r.get("figure") == key and
            r.get("state", "COMPLETE") == "COMPLETE"]
    panels = []
    if name == "fig2":
        panels = [({"optimizer": o}, "weight_decay", True)
                  for o in ("sgd", "sgdw", "adam", "adamw") if any(r["optimizer"] == o
                                                                  for r in recs)]
    elif name == "fig1":
        panels = [({"optimizer": o, "schedule": s}, "weight_decay", False)
                  for o in ("adam", "adamw") for s in ("fixed", "step", "cosine")
                  if any(r["optimizer"] == o and r.get("schedule") == s for r in recs)]
    elif name == "supp3":
        for T in sorted({int(r["epochs"]) for r in recs}):
            panels.append(({"epochs": T, "weight_decay_norm": None}, "weight_decay", True))
            panels.append(({"epochs": T}, "weight_decay_norm", True))
    elif name == "conventions":
        panels = [({"optimizer": o, "decay_convention": c}, "weight_decay", True)
                  for o in ("sgdw", "adamw") for c in ("schedule", "lr")
                  if any(r["optimizer"] == o and r.get("decay_convention") == c
                         for r in recs)]
    for match, col, with_fit in panels:
        hm = ev.heat_map(key, col, **match)
        if hm is None:
            continue
        fit = ev.slope(key, col, **match) if with_fit else None
        title = ", ".join(f"{k}={v}" for k, v in match.items() if v is not None)
        title += f" ({hm.lam_label})"
        summary = f"{title}" + ("" if fit is None else
                                f": slope {fit.slope.format()} — {fit.reading}")
        out.append(f"<details><summary>{_e(summary)}</summary>"
                   f"{_heat_map_html(hm, fit)}</details>")
        js[title] = {"heat_map": hm.to_dict(),
                     "slope": None if fit is None else fit.to_dict(hm)}
    if out:
        out.append("<p class='meta'>Final test error in % (mean over seeds ± bootstrap "
                   "standard error); bold: top 10 (darkest: best); <em>div</em>: a seed "
                   "diverged; –: no trial.</p>")
    return "\n".join(out), js


def _variants_html(rows: Sequence[VariantRow]) -> str:
    if not rows:
        return ""
    head = ("<tr><th class='l'>optimizer</th><th class='l'>decay</th><th>best test error "
            "[90 %]</th><th>vs the paper's decay</th><th>slope d log λ*/d log α</th>"
            "<th class='l'>reading</th></tr>")
    body = "".join(
        f"<tr><td class='l'>{_e(r.optimizer)}</td><td class='l'>{_e(r.name)}</td>"
        f"<td>{_e(r.best_error.format('{:.2f} %', 100))}</td>"
        f"<td>{_e('—' if r.vs_paper is None else r.vs_paper.format('{:+.1f} %', 100))}</td>"
        f"<td>{_e(r.slope.slope.format())}</td><td class='l'>{_e(r.slope.reading)}</td></tr>"
        for r in rows)
    return ("<p>Each optimizer's decay rules, ranked by best final test error (best cell of "
            "the heat map; the difference from the paper's decay is paired: same seeds, same "
            "test examples). λ grids are in each rule's own units, so only errors and slopes "
            "compare across rules.</p><table>" + head + body + "</table>")


def replication(claims: Sequence[Claim], original: Mapping[str, Any]) -> dict[str, Any]:
    """Compare a scorecard with an original one (``stats.json`` ``"scorecard"`` list or a
    results file with it): which verdicts replicated. Claims "not run" in either are left
    out."""
    rows = original.get("scorecard", original) if isinstance(original, Mapping) else original
    orig = {c["key"]: c["verdict"] for c in rows}
    readings = {c["key"]: c.get("reading") for c in rows if c.get("reading")}
    compared = [c for c in claims if c.verdict != "not run"
                and orig.get(c.key, "not run") != "not run"]
    same = [c.key for c in compared if orig[c.key] == c.verdict]
    read = [c for c in compared if c.reading and c.key in readings]
    return {"claims": orig, "compared": len(compared), "replicated": len(same),
            "differ": [c.key for c in compared if orig[c.key] != c.verdict],
            "readings_compared": len(read),
            "readings_same": sum(readings[c.key] == c.reading for c in read),
            "readings_differ": [f"{c.key}: {readings[c.key]} -> {c.reading}" for c in read
                                if readings[c.key] != c.reading]}


# ----------------------------------------------------------------------------- main


def _draw(name: str, ev: Evidence):
    if name == "supp1":
        return F.supp1(ev.records)
    if name in ("slopes", "variants"):
        return getattr(F, f"fig_{name}")(ev)
    return getattr(F, name)(ev)


def write_report(
    records: Sequence[Mapping],
    out_dir: str | Path,
    spec: Any = None,
    versions: Mapping[str, Any] | None = None,
    *,
    title: str = "weightdecay report",
    n_boot: int = DEFAULT_REPLICATES,
    original: Mapping[str, Any] | None = None,
) -> Path:
    """Score the paper's claims and draw every figure the records allow into
    ``out_dir/report.html`` (PNGs and ``stats.json`` beside it).

    A paper figure is drawn when some record carries its tag (untagged records count for
    every figure); supp1 (η_t of warm restarts) is always drawn. A figure that cannot be
    drawn is listed with the reason instead of failing the report.

    Args:
        records: trial records from ``weightdecay.harness.store.load_records``.
        out_dir: folder for the files; created if needed.
        spec: the sweep spec (dict, shown as JSON; or text, shown verbatim).
        versions: software versions stored with the study; None shows the current ones.
        title: page title.
        n_boot: bootstrap replicates of every interval.
        original: the scorecard of the same design on other seeds (``stats.json`` content
            or a results file): the report then says which verdicts replicated.

    Returns:
        The path of ``report.html``.
    """
    if isinstance(records, Mapping) or isinstance(records, (str, bytes)):
        raise ValueError(f"records must be a list of trial dicts, got {type(records).__name__}")
    records = list(records)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a directory, got existing file {str(out)!r}")
    ev = F.evidence_for(records)
    ev.n_boot = n_boot
    claims = scorecard(ev.records, n_boot=n_boot, evidence=ev)
    replicated = replication(claims, original) if original is not None else None
    out.mkdir(parents=True, exist_ok=True)

    tags = {r.get("figure") for r in records}
    untagged = tags == {None}
    wanted = [n for n in ("fig2", "slopes", "fig1", "fig3", "fig4", "supp3")
              if untagged or (n if n != "slopes" else "fig2") in tags]
    wanted.insert(len(wanted) - ("supp3" in wanted), "supp1")
    if "variants" in tags:
        wanted.insert(0, "variants")

    sections: list[str] = []
    stats_json: dict[str, Any] = {"scorecard": [c.to_dict() for c in claims]}
    if replicated is not None:
        stats_json["replication"] = replicated
    skipped: list[str] = []
    for name in wanted:
        try:
            fig = _draw(name, ev)
        except ValueError as err:
            skipped.append(f"{name}: {err}")
            continue
        png = out / f"{name}.png"
        fig.savefig(png, dpi=_DPI)
        parts = [f"<h2 id='{name}'>{_e(name)}</h2>",
                 f"<p>{_e(_CAPTIONS.get(name, ''))}</p>",
                 f"<img src='{_e(png.name)}' alt='{_e(name)}'>"]
        if name in ("fig1", "fig2", "supp3"):
            tables, js = _tables_html(ev, name)
            parts.append(tables)
            stats_json[name] = js
        if name == "variants":
            rows = variant_table(ev)
            parts.insert(2, _variants_html(rows))
            stats_json["variants"] = {"rows": [r.to_dict() for r in rows],
                                      "markdown": variants_markdown(rows)}
        sections.append("\n".join(parts))
    if "conventions" in tags:
        tables, js = _tables_html(ev, "conventions")
        sections.append("<h2 id='conventions'>conventions</h2><p>The same heat maps under "
                        "torch's decay convention (lr_t·λ) and the paper's (η_t·λ).</p>"
                        + tables)
        stats_json["conventions"] = js

    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    n_done = len(completed(records))
    n_div = sum(1 for r in records if r.get("diverged"))
    skipped_html = ""
    if skipped:
        skipped_html = ("<h2>Figures not drawn</h2><ul>" +
                        "".join(f"<li class='note'>{_e(s)}</li>" for s in skipped) + "</ul>")
    rep_html = ""
    if replicated is not None:
        rep_html = (f"<p><b>Replication:</b> {replicated['replicated']} of "
                    f"{replicated['compared']} verdicts are the same as on the original seeds"
                    + (f"; differ: {_e(', '.join(replicated['differ']))}"
                       if replicated["differ"] else "")
                    + f"; {replicated['readings_same']} of {replicated['readings_compared']} "
                    "slope readings the same"
                    + (f" (differ: {_e('; '.join(replicated['readings_differ']))})"
                       if replicated["readings_differ"] else "") + ".</p>")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="meta">Generated {_e(now)} · {len(records)} trial record(s), {n_done} completed,
{n_div} diverged · Loshchilov &amp; Hutter, <em>Decoupled Weight Decay Regularization</em>,
ICLR 2019.</p>
<h2 id="scorecard">Claims scorecard</h2>
{rep_html}
{_scorecard_html(claims, replicated)}
<h3>Design and rules</h3>
{_design_html(ev)}
{''.join(sections)}
{skipped_html}
<h2>Trials</h2>
{_summary_table(records)}
<h2>Best settings per optimizer</h2>
<p class="meta">Lowest mean final test error over seeds among settings where no seed
diverged.</p>
{_best_settings_html(records)}
<h2>Sweep spec</h2>
{_spec_html(spec)}
<h2>Software versions</h2>
{_versions_html(versions)}
</body>
</html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    stats_json["skipped"] = skipped
    (out / "stats.json").write_text(json.dumps(stats_json, indent=2, default=str),
                                    encoding="utf-8")
    return path

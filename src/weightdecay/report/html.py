"""report.html: a renderer of the :class:`~weightdecay.report.model.Report`.

The page opens with the claims scorecard, then every figure the Report lists (drawn here,
from the Report's evidence, by the functions the registry names), with the numbers behind
them, a trials summary, the best settings, the sweep spec and the software versions. It
computes nothing the Report does not hold, apart from drawing.

The page is self-contained -- inline CSS, no scripts, no network, every figure embedded as a
PNG data URI -- so the file alone shows everything; the same PNGs are also written beside it
(for the committed results, :mod:`weightdecay.report.publish`). All text from records or the
spec is HTML-escaped. Every file is written atomically and never through a symbolic link
that leads out of the folder the user named (``root``; :func:`weightdecay._io.write_atomic`).
``stats.json`` is not written here: it is the Report's serialization, which its orchestrator
writes (:func:`weightdecay.api.report`).

Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019; the
figure names (fig1 ... fig4, supp1, supp3) follow the paper's Sec. 4 and supplement.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from .._io import check_inside, write_atomic
from .claims import Claim
from .mechanism import MechanismRow, convention_label
from .model import STATES, HeatMapTable, Replication, Report, SettingRow
from .stats import (
    BASIN_FACTOR,
    INTERVAL_LEVEL,
    OPTIMUM_WINDOW,
    SLOPE_READINGS,
    HeatMap,
    SlopeFit,
    format_value,
)
from .variants import VariantRow

__all__ = ["write_html"]

_DPI = 120
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
td.notscored { color: #666; background: #eee; }
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


# ----------------------------------------------------------------------------- sections


def _summary_table(report: Report) -> str:
    head = "".join(f"<th>{s}</th>" for s in (*STATES, "diverged", "total"))
    rows = []
    for t in report.trials:
        cells = "".join(f"<td>{t.states[s]}</td>" for s in STATES)
        label = _e(t.experiment) + (f" (+{t.other} other)" if t.other else "")
        tag = "th" if t.experiment == "all" else "td"
        rows.append(f"<tr><{tag} style='text-align:left'>{label}</{tag}>{cells}"
                    f"<td>{t.diverged}</td><td>{t.total}</td></tr>")
    return f"<table><tr><th>experiment</th>{head}</tr>\n" + "\n".join(rows) + "</table>"


def _best_settings_html(settings: Sequence[SettingRow]) -> str:
    rows = []
    for row in settings:
        if not row.complete:
            continue
        first = (f"<tr><td class='l'>{_e(row.experiment or '(none)')}</td>"
                 f"<td>{_e(row.label)}</td>")
        if row.best is None:
            rows.append(first + "<td colspan='8' class='l'>every setting diverged</td></tr>")
            continue
        s, best = row.best.setting, row.best.best_error
        rows.append(
            first + f"<td>{_num(s['lr'])}</td><td>{_num(s['weight_decay'])}</td>"
            f"<td>{_num(s['weight_decay_norm'])}</td><td>{_e(s['schedule'])}</td>"
            f"<td>{_num(s['epochs'], '{:g}')}</td><td>{len(row.best.runs)}</td>"
            f"<td>{_pct(row.best.error)}</td><td>{_pct(best) if math.isfinite(best) else '–'}"
            "</td></tr>")
    if not rows:
        return "<p class='note'>no completed trials yet</p>"
    head = ("<tr><th>experiment</th><th>optimizer</th><th>α</th><th>λ</th><th>λ_norm</th>"
            "<th>schedule</th><th>epochs</th><th>seeds</th><th>final test error</th>"
            "<th>best test error</th></tr>")
    return "<table>" + head + "\n".join(rows) + "</table>"


def _spec_html(spec: Any) -> str:
    if spec is None:
        return "<p class='note'>no sweep spec recorded</p>"
    text = spec if isinstance(spec, str) else json.dumps(spec, indent=2, sort_keys=True,
                                                           default=str)
    return f"<pre>{_e(text)}</pre>"


def _versions_html(report: Report) -> str:
    note = "" if report.versions_stored else (
        "<p class='meta'>Not stored with the study; these are the versions at report time.</p>")
    rows = "".join(f"<tr><th style='text-align:left'>{_e(k)}</th><td>{_e(v)}</td></tr>"
                   for k, v in report.versions.items())
    return note + f"<table>{rows}</table>"


def _scorecard_html(claims: Sequence[Claim], replicated: Replication | None) -> str:
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
            o = replicated.claims.get(c.key)
            mark = "" if o is None else (" ✓" if o == c.verdict else " ✗")
            orig = f"<td>{_e(o or '—')}{mark}</td>"
        rows.append(
            f"<tr><td class='l'>{_e(c.source)}</td><td class='l'>{_e(c.claim)}</td>"
            f"<td class='l'>{_e(c.metric)}</td><td>{_e(c.estimate_text())}</td>"
            f"<td class='{_e(c.verdict.replace(' ', ''))}'>{_e(c.verdict)}</td>{orig}"
            f"<td class='l'>{_e(c.rule)}<br><span class='meta'>{_e(c.detail)}</span></td>"
            "</tr>")
    not_run = [c for c in claims if c.verdict == "not run"]
    tail = ""
    if not_run:
        tail = ("<p class='meta'>Not scored by these trials (their experiments are in the "
                "<code>full</code> preset, the mechanism claims in the <code>mechanism</code> "
                "preset): " + _e("; ".join(f"{c.source}: {c.claim}" for c in not_run))
                + ".</p>")
    return "<table>" + head + "\n".join(rows) + "</table>" + tail


def _design_html(report: Report) -> str:
    parts = [f"<li><b>{_e(d.experiment)}</b>: {d.runs} runs, seeds {_e(d.seeds)}, "
             f"{_e('/'.join(map(str, d.num_test)) or '?')} test examples per run</li>"
             for d in report.design]
    rules = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in SLOPE_READINGS.items())
    return (
        "<ul>" + "".join(parts) + "</ul>"
        f"<p class='meta'>Intervals: {int(INTERVAL_LEVEL * 100)} % percentile bootstrap, "
        f"{report.n_boot} replicates resampling seeds and test examples together (paired "
        "across settings). The best λ of a learning-rate row is the vertex of a parabola of "
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


def _tables_html(tables: Mapping[str, HeatMapTable]) -> str:
    """The numbers behind a heat-map figure, one collapsible table per panel."""
    out = []
    for title, t in tables.items():
        summary = title + ("" if t.slope is None else
                           f": slope {t.slope.text()}")
        out.append(f"<details><summary>{_e(summary)}</summary>"
                   f"{_heat_map_html(t.heat_map, t.slope)}</details>")
    if out:
        out.append("<p class='meta'>Final test error in % (mean over seeds ± bootstrap "
                   "standard error); bold: top 10 (darkest: best); <em>div</em>: a seed "
                   "diverged; –: no trial.</p>")
    return "\n".join(out)


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
        f"<td>{_e(r.slope.value_text())}</td><td class='l'>{_e(r.slope.reading)}</td></tr>"
        for r in rows)
    return ("<p>Each optimizer's decay rules, ranked by best final test error (best cell of "
            "the heat map; the difference from the paper's decay is paired: same seeds, same "
            "test examples). λ grids are in each rule's own units, so only errors and slopes "
            "compare across rules.</p><table>" + head + body + "</table>")


def _mechanism_html(rows: Sequence[MechanismRow]) -> str:
    """The monitored settings: window rotation, measured against predicted (mechanism)."""
    if not rows:
        return ""
    head = ("<tr><th class='l'>experiment</th><th class='l'>optimizer</th><th class='l'>decay"
            "</th><th class='l'>schedule</th><th>α</th><th>λ</th><th>window (updates)</th>"
            "<th>predicted r (rad)</th><th>measured r [90 %]</th><th>measured ÷ predicted "
            "[90 %]</th><th>grad. norm end ÷ middle [90 %]</th></tr>")

    def ci(x: Any, fmt: str) -> str:
        return "–" if x is None else _e(x.format(fmt))

    body = "".join(
        f"<tr><td class='l'>{_e(r.experiment)}</td><td class='l'>"
        f"{_e(registry.optimizer_label(r.optimizer))}</td><td class='l'>"
        f"{_e(convention_label(r.decay_convention))}</td><td class='l'>{_e(r.schedule)}</td>"
        f"<td>{_e(format_value(r.lr))}</td><td>{_e(format_value(r.weight_decay))}</td>"
        f"<td>{'–' if r.window is None else f'{r.window[0]}–{r.window[1]}'}</td>"
        f"<td>{_num(r.predicted, '{:.4f}')}</td><td>{ci(r.rotation, '{:.4f}')}</td>"
        f"<td>{ci(r.ratio, '{:.3f}')}</td><td>{ci(r.grad_ratio, '{:.2f}')}</td></tr>"
        for r in rows)
    return ("<p>The scale-invariant weights of each monitored setting: the RMS rotation per "
            "update over the stationary window (after 3 timescales 1/(2d), where η_t ≥ "
            "½·η_max), against the equilibrium predicted for the optimizer and its decay "
            "convention; for cosine runs, the gradient norm over the last 10 % of training ÷ "
            "its value at the middle. Intervals: 90 % bootstrap over seeds.</p><table>"
            + head + body + "</table>")


# ----------------------------------------------------------------------------- main


def _draw(report: Report, name: str) -> bytes:
    """Figure ``name`` of the Report as PNG bytes."""
    fig = registry.resolve("figure", name)(report.evidence)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _figure_sections(report: Report, out: Path, root: Path) -> tuple[list[str], list[str]]:
    """Draw the Report's figures, embedded in their sections and written into ``out`` (PNG);
    the sections, and the figures that failed to draw (``"name: reason"``)."""
    sections, failed = [], []
    for name in report.figures:
        entry = registry.figure(name)
        try:  # a figure function that fails is listed, never the end of the page
            png = _draw(report, name)
        except Exception as err:
            failed.append(f"{name}: failed to draw ({type(err).__name__}: {err})")
            continue
        write_atomic(out / f"{name}.png", png, root=root)
        data = base64.b64encode(png).decode("ascii")
        parts = [f"<h2 id='{name}'>{_e(name)}</h2>", f"<p>{_e(entry.caption)}</p>",
                 f"<img src='data:image/png;base64,{data}' alt='{_e(name)}'>"]
        if name in report.tables:
            parts.append(_tables_html(report.tables[name]))
        if name == "variants":
            parts.insert(2, _variants_html(report.variants))
        if name == "equilibrium":
            parts.append(_mechanism_html(report.mechanism))
        sections.append("\n".join(parts))
    if "conventions" in report.tables:
        sections.append("<h2 id='conventions'>conventions</h2><p>The same heat maps under "
                        "torch's decay convention (lr_t·λ) and the paper's (η_t·λ).</p>"
                        + _tables_html(report.tables["conventions"]))
    return sections, failed


def write_html(report: Report, out_dir: str | os.PathLike,
               root: str | os.PathLike | None = None) -> Path:
    """Draw ``report``'s figures and write ``out_dir/report.html``, the figures embedded
    (and as PNGs beside it).

    A figure that cannot be drawn is listed with the reason instead of failing the page.
    ``root``: the folder the user named (default ``out_dir``); a symbolic link that leads out
    of it is refused (:class:`weightdecay._io.UnsafePathError`) before anything is written.
    Returns the path of ``report.html``.
    """
    out = Path(out_dir)
    root = out if root is None else Path(root)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a directory, got existing file {str(out)!r}")
    for name in ("report.html", *(f"{n}.png" for n in report.figures)):
        check_inside(out / name, root)
    out.mkdir(parents=True, exist_ok=True)
    sections, failed = _figure_sections(report, out, root)
    not_drawn = [*report.skipped, *failed]
    skipped_html = "" if not not_drawn else (
        "<h2>Figures not drawn</h2><ul>"
        + "".join(f"<li class='note'>{_e(s)}</li>" for s in not_drawn) + "</ul>")
    rep = report.replication
    rep_html = "" if rep is None else (
        f"<p><b>Replication on other seeds:</b> {_e(rep.sentence())}.</p>")
    notes = "".join(f"<p class='note'>{_e(n)}</p>" for n in report.notes)
    everything = report.all_trials
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_e(report.title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(report.title)}</h1>
<p class="meta">Generated {_e(report.generated)} · {everything.total} trial record(s),
{everything.states.get("COMPLETE", 0)} completed, {everything.diverged} diverged · Loshchilov
&amp; Hutter, <em>Decoupled Weight Decay Regularization</em>, ICLR 2019.</p>
{notes}
<h2 id="scorecard">Claims scorecard</h2>
{rep_html}
{_scorecard_html(report.scorecard, rep)}
<h3>Design and rules</h3>
{_design_html(report)}
{''.join(sections)}
{skipped_html}
<h2>Trials</h2>
{_summary_table(report)}
<h2>Best settings</h2>
<p class="meta">Per experiment, optimizer, schedule, budget and kind of decay: the setting
with the lowest mean final test error over its seeds, among the settings where no seed
diverged (<code>weightdecay.registry.best_setting</code>, the rule every view uses).</p>
{_best_settings_html(report.settings)}
<h2>Sweep spec</h2>
{_spec_html(report.spec)}
<h2>Software versions</h2>
{_versions_html(report)}
</body>
</html>
"""
    return write_atomic(out / "report.html", page, root=root)

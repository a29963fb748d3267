"""report.html: every figure the stored trials allow, the decoupling statistics in words and
tables, a trials summary, the best settings, the sweep spec and the software versions.

The page is self-contained (inline CSS, no scripts, no network) apart from the PNG files
written beside it; all text coming from records or the spec is HTML-escaped. A
machine-readable ``stats.json`` with the same statistics is written next to it.

Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 — the
figure names (fig1, fig2, fig3, fig4, supp1, supp3) follow the paper (see ``PAPER.md`` §8).
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

from weightdecay.report import figures as F
from weightdecay.report.stats import (
    DecouplingStatistic,
    HeatmapTable,
    completed,
    format_value,
    top_k_cells,
)

__all__ = ["write_report"]

_DPI = 120
_STATES = ("COMPLETE", "RUNNING", "WAITING", "FAIL")
_CAPTIONS = {
    "fig1": "Fig. 1 — final test error over (α, λ) for Adam (L2) and AdamW under the fixed, "
            "step-drop and cosine schedules.",
    "fig2": "Fig. 2 — (α, λ) heat maps for SGD, SGDW, Adam and AdamW; the top-10 settings are "
            "circled, diverged cells hatched. L2 variants are expected to show a diagonal "
            "valley, decoupled ones a separable basin.",
    "fig3": "Fig. 3 — Adam vs AdamW over a long run: learning curves, test error vs λ and "
            "test error vs training loss.",
    "fig4": "Fig. 4 — test error vs epoch for Adam, AdamW, SGDW, AdamWR and SGDWR (anytime "
            "performance of warm restarts).",
    "supp1": "Supp. Fig. 1 — the schedule multiplier η_t of cosine annealing with warm "
             "restarts; the ends of the periods are the recommended checkpoints.",
    "supp3": "Supp. Fig. 3 — heat maps at several epoch budgets, raw λ vs normalized λ_norm "
             "(App. B.1): the best raw λ moves with the budget, the best λ_norm should not.",
    "heatmaps": "Heat maps of the untagged trials, one panel per optimizer.",
}
_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
.meta { color: #666; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.55em; text-align: right; }
th { background: #f3f3f3; }
td.top { font-weight: bold; background: #e8f4e8; }
td.best { font-weight: bold; background: #bfe3bf; }
td.div { color: #a00; background: #f8e6e6; }
td.missing { color: #aaa; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #8a5a00; }
.verdict { font-size: 1.02em; }
.coupled { color: #a33; } .decoupled { color: #176317; }
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


def _heatmap_html(table: HeatmapTable, k: int = 10) -> str:
    top = top_k_cells(table, k)
    rank = {cell: n for n, cell in enumerate(top)}
    lam = "λ_norm" if table.col_key == "weight_decay_norm" else "λ"
    head = "".join(f"<th>{_e(format_value(c))}</th>" for c in table.cols)
    lines = [f"<table><tr><th>α \\ {lam}</th>{head}</tr>"]
    for i in reversed(range(len(table.rows))):  # largest α on top, as in the figure
        cells = []
        for j in range(len(table.cols)):
            if table.diverged[i, j]:
                cells.append("<td class='div'>div</td>")
            elif table.counts[i, j] == 0:
                cells.append("<td class='missing'>–</td>")
            else:
                cls = ""
                if (i, j) in rank:
                    cls = " class='best'" if rank[(i, j)] == 0 else " class='top'"
                cells.append(f"<td{cls}>{100 * table.values[i, j]:.2f}</td>")
        lines.append(f"<tr><th>{_e(format_value(table.rows[i]))}</th>{''.join(cells)}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _statistics_html(panels) -> str:
    out = []
    for title, table, stat in panels:
        if table is None:
            out.append(f"<h4>{_e(title)}</h4><p class='note'>no completed trials</p>")
            continue
        out.append(f"<h4>{_e(title)}</h4>")
        out.append(_verdict_html(stat))
        out.append(_heatmap_html(table, stat.k if stat else 10))
    out.append("<p class='meta'>Test error in % (mean over seeds); bold: top 10 (darkest: "
               "best); <em>div</em>: at least one seed diverged; –: no trial. The verdict "
               "reads the best λ of every learning-rate row: within 0.35 decades → decoupled; "
               "≥ 0.55 decades with |ρ| ≥ 0.7 → coupled.</p>")
    return "\n".join(out)


def _verdict_html(stat: DecouplingStatistic | None) -> str:
    if stat is None:
        return ""
    cls = {"coupled": "coupled", "decoupled": "decoupled"}.get(stat.verdict, "")
    extra = []
    if np.isfinite(stat.slope):
        extra.append(f"slope d log λ*/d log α = {stat.slope:+.2f}")
    if np.isfinite(stat.top_k_rho):
        extra.append(f"top-{stat.k} cells: ρ(log α, log λ) = {stat.top_k_rho:+.2f}, "
                     "< 0 along an L2 diagonal")
    more = f" <span class='meta'>({_e('; '.join(extra))})</span>" if extra else ""
    return f"<p class='verdict {cls}'>{_e(stat.text)}{more}</p>"


def _best_settings_html(records: Sequence[Mapping]) -> str:
    groups: dict[tuple, list[Mapping]] = {}
    for r in completed(records):
        exp = str(r.get("experiment") or r.get("figure") or "(none)")
        groups.setdefault((exp, F.optimizer_label(r)), []).append(r)
    rows = []
    for (exp, label), rs in sorted(groups.items()):
        settings = {}
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
            err = float(np.mean(errs))
            if err < best_err:
                best, best_err = runs, err
        if best is None:
            rows.append(f"<tr><td style='text-align:left'>{_e(exp)}</td><td>{_e(label)}</td>"
                        "<td colspan='7' style='text-align:left'>every setting diverged</td>"
                        "</tr>")
            continue
        r0 = best[0]
        best_seen = [r.get("best_test_error") for r in best]
        best_seen = [float(b) for b in best_seen if b is not None and math.isfinite(float(b))]
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


# ----------------------------------------------------------------------------- main


def _draw(name: str, records: Sequence[Mapping]):
    if name == "heatmaps":
        return F.fig_heatmaps(F.records_for("heatmaps", records),
                              title="Heat maps (untagged trials)")
    return getattr(F, name)(records)


def write_report(
    records: Sequence[Mapping],
    out_dir: str | Path,
    spec: Any = None,
    versions: Mapping[str, Any] | None = None,
    *,
    title: str = "weightdecay report",
) -> Path:
    """Draw every figure the records allow and write ``out_dir/report.html``.

    A paper figure (fig1, fig2, fig3, fig4, supp3) is drawn when some record carries its
    ``"figure"`` tag; supp1 (η_t of warm restarts) is always drawn, from stored ``"eta"``
    histories when there are restart runs, else from the schedule with T_0 = 100, T_mult = 2.
    Untagged completed records get a generic heat-map figure. A figure that cannot be drawn
    (e.g. no completed trials yet) is listed with the reason instead of failing the report.

    Args:
        records: trial records from ``weightdecay.harness.store.load_records``.
        out_dir: folder for ``report.html``, the PNGs (``fig2.png`` ..., dpi 120) and
            ``stats.json``; created if needed.
        spec: the sweep spec (dict, shown as JSON; or a string, e.g. TOML, shown verbatim).
        versions: software versions stored with the study; if None the current ones are shown.
        title: page title.

    Returns:
        The path of ``report.html``.
    """
    if isinstance(records, Mapping) or isinstance(records, (str, bytes)):
        raise ValueError(
            f"records must be a list of trial dicts, got {type(records).__name__}"
        )
    records = list(records)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a directory, got existing file {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)

    tags = {r.get("figure") for r in records}
    wanted = [n for n in ("fig1", "fig2", "fig3", "fig4") if n in tags] + ["supp1"]
    if "supp3" in tags:
        wanted.append("supp3")
    if any(r.get("figure") is None for r in completed(records)):
        wanted.append("heatmaps")

    sections: list[str] = []
    stats_json: dict[str, Any] = {}
    skipped: list[str] = []
    for name in wanted:
        try:
            fig = _draw(name, records)
        except ValueError as err:
            skipped.append(f"{name}: {err}")
            continue
        png = out / f"{name}.png"
        fig.savefig(png, dpi=_DPI)
        parts = [f"<h2 id='{name}'>{_e(name)}</h2>",
                 f"<p>{_e(_CAPTIONS.get(name, ''))}</p>",
                 f"<img src='{_e(png.name)}' alt='{_e(name)}'>"]
        if name in ("fig1", "fig2", "supp3"):
            panels = F.heatmap_panels(name, records)
            stats_json[name] = {
                t: {"table": tb.to_dict(), "statistic": st.to_dict()}
                for t, tb, st in panels if tb is not None
            }
            if name == "supp3":
                lines = F.supp3_sentences(records)
                stats_json["supp3"]["budget_shift"] = lines
                parts.append("<ul>" + "".join(f"<li class='verdict'>{_e(s)}</li>"
                                              for s in lines) + "</ul>")
            parts.append("<h3>Decoupling statistics</h3>")
            parts.append(_statistics_html(panels))
        sections.append("\n".join(parts))

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    n_done = len(completed(records))
    n_div = sum(1 for r in records if r.get("diverged"))
    skipped_html = ""
    if skipped:
        skipped_html = ("<h2>Figures not drawn</h2><ul>" +
                        "".join(f"<li class='note'>{_e(s)}</li>" for s in skipped) + "</ul>")
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
<h2>Trials</h2>
{_summary_table(records)}
{''.join(sections)}
{skipped_html}
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

"""Report layer: the claims scorecard, figures and report.html, from stored trials only.

Reads the records of ``weightdecay.harness.store.load_records`` (list of dicts) — never a
trainer. :func:`build_report` computes a :class:`Report` once (scorecard, replication,
tables, best settings, variants); report.html (:func:`write_html`), the terminal tables
(:mod:`weightdecay.report.tables`), ``stats.json`` (:meth:`Report.to_dict`) and the
committed results (:mod:`weightdecay.report.publish`) render it. matplotlib is imported only
when a figure is drawn, and figures use the object API (no ``pyplot``, no backend switch, no
windows)::

    from weightdecay.harness.store import load_records
    from weightdecay.report import build_report, fig2, write_html
    records = load_records("sqlite:///runs/quick/store.db", "quick")
    report = build_report(records)
    for claim in report.scorecard:
        print(claim.line())
    fig2(report.evidence).savefig("fig2.png", dpi=120)
    write_html(report, "runs/quick/report")

``weightdecay.api.report`` does all of it from a store, and writes ``stats.json``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Report": "weightdecay.report.model",
    "build_report": "weightdecay.report.model",
    "write_html": "weightdecay.report.html",
    "scorecard": "weightdecay.report.claims",
    "Claim": "weightdecay.report.claims",
    "Evidence": "weightdecay.report.claims",
    "fig1": "weightdecay.report.figures",
    "fig2": "weightdecay.report.figures",
    "fig3": "weightdecay.report.figures",
    "fig4": "weightdecay.report.figures",
    "fig_slopes": "weightdecay.report.figures",
    "supp1": "weightdecay.report.figures",
    "supp3": "weightdecay.report.figures",
    "FIGURES": "weightdecay.registry",
    "Replicates": "weightdecay.report.resample",
    "HeatMap": "weightdecay.report.stats",
    "Interval": "weightdecay.report.stats",
    "SlopeFit": "weightdecay.report.stats",
    "heat_map": "weightdecay.report.stats",
    "slope_fit": "weightdecay.report.stats",
    "slope_reading": "weightdecay.report.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'weightdecay.report' has no attribute {name!r}")


def __dir__():
    return __all__

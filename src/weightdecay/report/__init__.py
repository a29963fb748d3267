"""Report layer: the claims scorecard, figures and report.html, from stored trials only.

Reads the records of ``weightdecay.harness.store.load_records`` (list of dicts) — never an
optimizer or a trainer. matplotlib is imported only when a figure is drawn, and figures use
the object API (no ``pyplot``, no backend switch, no windows)::

    from weightdecay.harness.store import load_records
    from weightdecay.report import write_report, fig2, scorecard
    records = load_records("sqlite:///runs/quick/store.db", "quick")
    for claim in scorecard(records):
        print(claim.line())
    fig2(records).savefig("fig2.png", dpi=120)
    write_report(records, "runs/quick/report")
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "write_report": "weightdecay.report.html",
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
    "FIGURES": "weightdecay.report.figures",
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

"""Report layer: figures, decoupling statistics and report.html, from stored trials only.

Reads the records of ``weightdecay.harness.store.load_records`` (list of dicts) — never an
optimizer or a trainer. matplotlib is imported only when a figure is drawn, and figures use
the object API (no ``pyplot``, no backend switch, no windows)::

    from weightdecay.harness.store import load_records
    from weightdecay.report import write_report, fig2
    records = load_records("sqlite:///runs/quick/study.db", "quick")
    fig2(records).savefig("fig2.png", dpi=120)
    write_report(records, "runs/quick/report")
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "write_report": "weightdecay.report.html",
    "fig_heatmaps": "weightdecay.report.figures",
    "fig1": "weightdecay.report.figures",
    "fig2": "weightdecay.report.figures",
    "fig3": "weightdecay.report.figures",
    "fig4": "weightdecay.report.figures",
    "supp1": "weightdecay.report.figures",
    "supp3": "weightdecay.report.figures",
    "heatmap_panels": "weightdecay.report.figures",
    "FIGURES": "weightdecay.report.figures",
    "heatmap_table": "weightdecay.report.stats",
    "decoupling_statistic": "weightdecay.report.stats",
    "HeatmapTable": "weightdecay.report.stats",
    "DecouplingStatistic": "weightdecay.report.stats",
    "top_k_cells": "weightdecay.report.stats",
    "best_cell": "weightdecay.report.stats",
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

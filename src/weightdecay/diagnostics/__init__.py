"""What weight decay does while a model trains: equilibrium diagnostics.

- :class:`EquilibriumMonitor` — per tensor, every k updates: norm, angular update, relative
  update, gradient norm, scale invariance, and the equilibrium predicted for the optimizer,
  decay convention and hyperparameters at the current eta_t (hooks on ``optimizer.step()``).
- :mod:`~weightdecay.diagnostics.theory` — the formulas, each with its source.
- :func:`summarize`, :func:`stationary_window`, :func:`equilibrium_ratio` — per-category rows
  and window statistics computed from records.
- :func:`plot_equilibrium` — measured against predicted over training (matplotlib).
- Integrations, imported only when used: ``weightdecay.diagnostics.lightning``
  (``EquilibriumCallback``, PyTorch Lightning) and ``weightdecay.diagnostics.huggingface``
  (``EquilibriumTrainerCallback``, the Hugging Face Trainer).

This is library code: it knows nothing of the experiment harness or the report.
"""

from __future__ import annotations

from . import theory
from .monitor import RECORD_FIELDS, EquilibriumMonitor, check_record, structural_scale_invariance
from .plot import plot_equilibrium
from .rules import Rule, group_rule
from .summary import equilibrium_ratio, stationary_window, summarize

__all__ = [
    "RECORD_FIELDS",
    "EquilibriumMonitor",
    "Rule",
    "check_record",
    "equilibrium_ratio",
    "group_rule",
    "plot_equilibrium",
    "stationary_window",
    "structural_scale_invariance",
    "summarize",
    "theory",
]

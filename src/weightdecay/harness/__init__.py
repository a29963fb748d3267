"""Experiment harness: run configs, single training runs, sweeps, data sets and models.

Reproduces the experiments of Loshchilov & Hutter, "Decoupled Weight Decay
Regularization" (ICLR 2019). Submodules:

- :mod:`~weightdecay.harness.config`: :class:`RunConfig`, one run as validated plain data
  (time in epochs; converted to updates at the edge of the training loop).
- :mod:`~weightdecay.harness.train`: :func:`run`, one training run -> metrics record,
  with per-epoch history, atomic checkpoint/resume and divergence detection.
- :mod:`~weightdecay.harness.data`, :mod:`~weightdecay.harness.models`: data sets and
  networks; :mod:`~weightdecay.harness.sweep`: sweeps stored in an Optuna study.

This package imports nothing heavy on its own (no optuna, no matplotlib): import the
submodule you need.
"""

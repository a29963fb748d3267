"""Experiment harness: run configs, single training runs, sweeps, data sets and models.

Reproduces the experiments of Loshchilov & Hutter, "Decoupled Weight Decay
Regularization" (ICLR 2019). Submodules:

- :mod:`~weightdecay.harness.config`: :class:`RunConfig`, one run as validated plain data
  (time in epochs; the one place run defaults live).
- :mod:`~weightdecay.harness.build`: what a config builds (data, model, optimizer, the
  schedule in updates: epochs are converted here, by the library's arithmetic).
- :mod:`~weightdecay.harness.train`: :func:`run`, one training run -> metrics record, in
  named stages (set-up/resume, epoch, checkpoint, record);
  :mod:`~weightdecay.harness.checkpoint`: atomic, checked checkpoints.
- :mod:`~weightdecay.harness.data`, :mod:`~weightdecay.harness.models`: data sets and
  networks.
- Sweeps: :mod:`~weightdecay.harness.spec` (spec -> validated, expanded runs, once),
  :mod:`~weightdecay.harness.study` (the Optuna study: exactly-once enqueue, claiming,
  heartbeats), :mod:`~weightdecay.harness.worker` (``weightdecay worker``: claim -> run ->
  store), :mod:`~weightdecay.harness.local` (local worker processes and progress),
  :mod:`~weightdecay.harness.interrupt` (SIGINT / SIGTERM: stop, hand trials back),
  :mod:`~weightdecay.harness.store` (storage URLs, opening, the lock),
  :mod:`~weightdecay.harness.records` (records and export: what the report reads),
  :mod:`~weightdecay.harness.presets` (the ``reproduce`` presets).

This package imports nothing heavy on its own (no optuna, no matplotlib): import the
submodule you need.
"""

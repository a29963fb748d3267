"""The Hugging Face ``Trainer``: an :class:`~weightdecay.diagnostics.EquilibriumMonitor` as a
``TrainerCallback``.

Importing this module imports ``transformers``::

    from weightdecay.diagnostics.huggingface import EquilibriumTrainerCallback

    callback = EquilibriumTrainerCallback(every=10)
    trainer = Trainer(..., callbacks=[callback])
    trainer.train()
    callback.records()

The monitor is attached when training starts (to the Trainer's model and optimizer, unwrapped
from Accelerate's ``AcceleratedOptimizer``) and removed when it ends. Resume: the callback is
an ``ExportableState``, so its state (update count, records, and the scale-invariant names it
found) is saved in each checkpoint's ``trainer_state.json``; with
``TrainingArguments(restore_callback_states_from_checkpoint=True)`` a
``trainer.train(resume_from_checkpoint=...)`` continues the records. Note that the Trainer
then *replaces* the callback with a new instance built from that state: read the records
from :meth:`EquilibriumTrainerCallback.find` (``find(trainer).records()``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from transformers import TrainerCallback  # type: ignore[import-not-found, unused-ignore]
from transformers.trainer_callback import (  # type: ignore[import-not-found, unused-ignore]
    ExportableState,
)

from .monitor import EquilibriumMonitor

__all__ = ["EquilibriumTrainerCallback"]


def _unwrap(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside Accelerate's wrapper (whose own step hooks never run)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


class EquilibriumTrainerCallback(TrainerCallback, ExportableState):
    """Attach an :class:`~weightdecay.diagnostics.EquilibriumMonitor` to ``Trainer.train()``.

    Args:
        every: measure every ``every`` optimizer updates.
        example_input: a batch for the scale-invariance probe, which calls
            ``model(example_input)`` (a tensor such as ``input_ids``, or a tuple of
            positional arguments); moved to the model's device. Without it (or
            ``scale_invariant``), scale invariance comes from module structure.
        scale_invariant: names of the scale-invariant weights, if known (no probe).
        updates_per_epoch: optimizer updates per epoch, for timescales in epochs.
    """

    def __init__(self, every: int = 10, *, example_input: Any = None,
                 scale_invariant: Iterable[str] | None = None,
                 updates_per_epoch: float | None = None) -> None:
        self.every = every
        self.example_input = example_input
        self.scale_invariant = None if scale_invariant is None else list(scale_invariant)
        self.updates_per_epoch = updates_per_epoch
        self.monitor: EquilibriumMonitor | None = None
        self.monitor_state: dict | None = None  # restored by the Trainer (ExportableState)
        self._records: list[dict] = []

    @classmethod
    def find(cls, trainer: Any) -> EquilibriumTrainerCallback:
        """The callback of this class in ``trainer`` (after a resume, the Trainer's new one)."""
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, cls):
                return callback
        raise ValueError(f"no {cls.__name__} among the trainer's callbacks")

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None or optimizer is None:
            raise ValueError("EquilibriumTrainerCallback needs the Trainer's model and "
                             "optimizer at on_train_begin")
        example = self.example_input
        if self.scale_invariant is not None:
            example = None
        elif example is not None:
            device = next(model.parameters()).device
            example = (tuple(x.to(device) for x in example) if isinstance(example, tuple)
                       else example.to(device))
        self.monitor = EquilibriumMonitor(
            model, _unwrap(optimizer), self.every, example_input=example,
            scale_invariant=self.scale_invariant, updates_per_epoch=self.updates_per_epoch)
        self.scale_invariant = list(self.monitor.scale_invariant)  # saved with the state
        if self.monitor_state is not None:
            self.monitor.load_state_dict(self.monitor_state)
            self.monitor_state = None
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close()
            self._records = self.monitor.records()
        return control

    def records(self) -> list[dict]:
        """The monitor's records (also after training ended)."""
        return self.monitor.records() if self.monitor is not None else list(self._records)

    def state(self) -> dict:
        """What the Trainer saves in ``trainer_state.json`` (JSON): the arguments to rebuild
        the callback with (the scale-invariant names found, not the example batch) and the
        monitor's state."""
        monitor_state = (self.monitor.state_dict() if self.monitor is not None
                         else self.monitor_state)
        return {"args": {"every": self.every, "scale_invariant": self.scale_invariant,
                         "updates_per_epoch": self.updates_per_epoch},
                "attributes": {"monitor_state": monitor_state}}


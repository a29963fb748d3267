"""PyTorch Lightning: an :class:`~weightdecay.diagnostics.EquilibriumMonitor` as a callback.

Importing this module imports ``lightning`` (``pip install lightning``)::

    from weightdecay.diagnostics.lightning import EquilibriumCallback

    callback = EquilibriumCallback(every=10, example_input=x[:64])
    trainer = L.Trainer(callbacks=[callback], ...)
    trainer.fit(model, data)
    callback.monitor.records()        # or callback.records(): also after the fit

The monitor is attached when training starts (to the LightningModule and the trainer's first
optimizer, or the one at ``optimizer_index``) and its hooks are removed when training ends.
Its state (update count, records) goes into Lightning's checkpoints through the callback's
``state_dict``, so ``trainer.fit(..., ckpt_path=...)`` continues the records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L  # type: ignore[import-not-found, unused-ignore]

from .monitor import EquilibriumMonitor

__all__ = ["EquilibriumCallback"]


class EquilibriumCallback(L.Callback):
    """Attach an :class:`~weightdecay.diagnostics.EquilibriumMonitor` to a Lightning fit.

    Args:
        every: measure every ``every`` optimizer updates.
        example_input: a batch for the scale-invariance probe (moved to the module's device).
        scale_invariant: names of the scale-invariant weights, if known (no probe).
        categories: as :class:`~weightdecay.diagnostics.EquilibriumMonitor`.
        updates_per_epoch: for timescales in epochs (default: the trainer's
            ``num_training_batches // accumulate_grad_batches`` when it is known).
        optimizer_index: which of ``trainer.optimizers`` to watch.
    """

    def __init__(self, every: int = 10, *, example_input: Any = None,
                 scale_invariant: Iterable[str] | None = None,
                 categories: Mapping[str, str] | None = None,
                 updates_per_epoch: float | None = None, optimizer_index: int = 0) -> None:
        super().__init__()
        self.every = every
        self.example_input = example_input
        self.scale_invariant = None if scale_invariant is None else list(scale_invariant)
        self.categories = categories
        self.updates_per_epoch = updates_per_epoch
        self.optimizer_index = optimizer_index
        self.monitor: EquilibriumMonitor | None = None
        self._pending: dict | None = None
        self._records: list[dict] = []

    def _updates_per_epoch(self, trainer) -> float | None:
        if self.updates_per_epoch is not None:
            return self.updates_per_epoch
        batches = getattr(trainer, "num_training_batches", None)
        accumulate = getattr(trainer, "accumulate_grad_batches", 1) or 1
        if isinstance(batches, int) and batches > 0:
            return max(1, batches // accumulate)
        return None

    def on_train_start(self, trainer, pl_module) -> None:
        example = self.example_input
        if isinstance(example, tuple):
            example = tuple(x.to(pl_module.device) for x in example)
        elif example is not None:
            example = example.to(pl_module.device)
        self.monitor = EquilibriumMonitor(
            pl_module, trainer.optimizers[self.optimizer_index], self.every,
            example_input=example if self.scale_invariant is None else None,
            scale_invariant=self.scale_invariant, categories=self.categories,
            updates_per_epoch=self._updates_per_epoch(trainer))
        if self._pending is not None:
            self.monitor.load_state_dict(self._pending)
            self._pending = None

    def on_train_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.close()
            self._records = self.monitor.records()

    def records(self) -> list[dict]:
        """The monitor's records (also after the fit ended)."""
        return self.monitor.records() if self.monitor is not None else list(self._records)

    def state_dict(self) -> dict[str, Any]:
        if self.monitor is not None:
            return {"monitor": self.monitor.state_dict()}
        return {"monitor": self._pending} if self._pending is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("monitor")
        if state is None:
            return
        if self.monitor is not None:
            self.monitor.load_state_dict(state)
        else:  # Lightning restores callbacks before the optimizers exist
            self._pending = state

"""Adapter from a closed-form schedule to a torch LR scheduler, with exact resume.

Stepped once per optimizer UPDATE (``optimizer.step(); scheduler.step()``), it sets
``group["lr"] = group["initial_lr"] * schedule(t)`` where ``t`` is the number of completed
updates (``t = 0`` at construction). The library's optimizers read the paper's schedule
multiplier as ``eta_t = group["lr"] / group["initial_lr"]`` and multiply the decoupled
weight decay by it (Loshchilov & Hutter, ICLR 2019, Algorithms 1-2), so ``initial_lr`` is
always set here (``setdefault`` on a fresh run, as torch schedulers do).
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ._functions import Schedule, as_schedule

__all__ = ["ScheduleLR", "as_torch_scheduler"]

# Keys of LRScheduler.__dict__ never put in a state dict: the optimizer (torch's rule) and
# the schedule, which may hold unpicklable user callables and is rebuilt from code.
_NOT_STATE = ("optimizer", "schedule")


class ScheduleLR(LRScheduler):
    """``torch.optim.lr_scheduler.LRScheduler`` driven by a :class:`Schedule` of the update count.

    ``lr_t = initial_lr * schedule(t)`` per param group, ``t = last_epoch`` = updates done.

    ``state_dict()`` holds only plain numbers (the step count and the last lrs), never the
    schedule, so it loads with ``torch.load(weights_only=True)``. Resume by building the
    optimizer and a ``ScheduleLR`` with the same schedule, then loading both state dicts
    (in either order): the lr sequence continues exactly. ``last_epoch`` follows torch:
    the index of the last update done; construction steps once, to ``last_epoch + 1``.
    """

    def __init__(self, optimizer: Optimizer, schedule: Any, last_epoch: int = -1) -> None:
        self.schedule: Schedule = as_schedule(schedule)
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, int) or last_epoch < -1:
            raise ValueError(f"last_epoch must be an int >= -1, got {last_epoch!r}")
        super().__init__(optimizer, last_epoch)

    def _lrs_at(self, t: int) -> list[Any]:
        eta = self.schedule(t)
        return [group["initial_lr"] * eta for group in self.optimizer.param_groups]

    def get_lr(self) -> list[Any]:
        """Learning rates for update count ``self.last_epoch`` (closed form)."""
        return self._lrs_at(self.last_epoch)

    def _get_closed_form_lr(self) -> list[Any]:
        return self._lrs_at(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """Scheduler state without the optimizer and the schedule (plain, picklable values)."""
        return {k: v for k, v in self.__dict__.items() if k not in _NOT_STATE}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step count and re-apply ``initial_lr * schedule(t)`` to every group.

        Re-applying makes the result independent of whether the optimizer's state dict is
        loaded before or after this one.
        """
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in _NOT_STATE})
        for group, lr in zip(self.optimizer.param_groups, self._lrs_at(self.last_epoch)):
            if hasattr(group["lr"], "fill_"):
                group["lr"].fill_(float(lr))
            else:
                group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def as_torch_scheduler(optimizer: Optimizer, schedule: Any, last_epoch: int = -1) -> ScheduleLR:
    """Wrap ``schedule`` (a :class:`Schedule`, a number or a callable ``t -> eta``) for torch.

    Example:
        >>> opt = weightdecay.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        >>> sched = as_torch_scheduler(opt, cosine_restarts(T_0=1000, T_mult=2))
        >>> for batch in loader:
        ...     loss(batch).backward(); opt.step(); opt.zero_grad(); sched.step()
    """
    return ScheduleLR(optimizer, schedule, last_epoch=last_epoch)

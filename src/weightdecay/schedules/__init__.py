"""Schedules: closed-form multipliers ``eta_t`` of the update count (paper Sec. 2-3, SGDR).

All time arguments are in UPDATES (optimizer steps). ``eta_t`` scales both the gradient step
and the decoupled weight decay (Loshchilov & Hutter, ICLR 2019, Algorithms 1-2).

Example::

    from weightdecay import schedules as S
    sched = S.cosine_restarts(T_0=S.epochs_to_updates(10, 391), T_mult=2)
    warm_cos = S.linear_warmup(500) * S.cosine(50_000)
    lr_sched = S.as_torch_scheduler(optimizer, sched)   # step once per update
"""

from ._functions import (
    Schedule,
    as_schedule,
    constant,
    cosine,
    epochs_to_updates,
    join,
    linear,
    linear_warmup,
    multiply,
    step_drop,
    updates_per_epoch,
)
from ._restarts import (
    CosineRestarts,
    cosine_restarts,
    period_ends,
    period_length,
    period_start,
    restart_index,
)
from ._torch import ScheduleLR, as_torch_scheduler

__all__ = [
    "CosineRestarts",
    "Schedule",
    "ScheduleLR",
    "as_schedule",
    "as_torch_scheduler",
    "constant",
    "cosine",
    "cosine_restarts",
    "epochs_to_updates",
    "join",
    "linear",
    "linear_warmup",
    "multiply",
    "period_ends",
    "period_length",
    "period_start",
    "restart_index",
    "step_drop",
    "updates_per_epoch",
]

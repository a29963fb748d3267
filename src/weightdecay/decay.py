"""Weight-decay arithmetic: normalized decay (paper App. B.1) and convention conversions.

Conventions (see :mod:`weightdecay.optim._decay`). This library's optimizers follow the
paper (Algorithm 1, line 9; Algorithm 2, line 12): the decay applied per update is
``eta_t * lambda`` (``lambda`` = the paper's weight decay factor, NOT multiplied by the base
learning rate alpha). ``torch.optim.AdamW``, optax and Keras
apply ``lr_t * lambda_torch = alpha * eta_t * lambda_torch``. Hence, at base lr ``alpha``::

    lambda_torch = lambda / alpha            (torch_weight_decay)
    lambda       = lambda_torch * alpha      (paper_weight_decay)

and ``torch.optim.AdamW(lr=alpha * eta_t, weight_decay=lambda / alpha)`` follows
Algorithm 2 exactly.

Timescale view (Wang & Aitchison, arXiv 2405.13698): AdamW is an exponential moving average
of updates with timescale ``tau_iter = 1 / (lr * lambda_torch)`` updates, i.e.
``tau_epoch = tau_iter * b / B`` epochs; :func:`ema_timescale` and
:func:`weight_decay_for_timescale` take any ``decay_convention``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

from . import _validate
from ._validate import non_negative, positive, positive_int
from .optim import DECAY_CONVENTIONS, decay_per_update
from .schedules import Schedule, as_schedule
from .schedules import updates_per_epoch as _updates_per_epoch

__all__ = [
    "NormalizedDecay",
    "Timescale",
    "ema_timescale",
    "normalized_weight_decay",
    "paper_weight_decay",
    "torch_weight_decay",
    "weight_decay_for_timescale",
]


def normalized_weight_decay(
    lambda_norm: float, batch_size: int, dataset_size: int, epochs: float
) -> float:
    """Normalized weight decay, paper App. B.1: ``lambda = lambda_norm * sqrt(b / (B * T))``.

    ``lambda_norm`` is "the decay one would use with a single batch pass"; the paper's best
    values are about 0.025-0.05 for SGDW and AdamW on CIFAR-10. The result is the paper's
    per-update ``lambda`` (multiplied by ``eta_t``, not by the learning rate).

    Args:
        lambda_norm: normalized decay, ``>= 0``.
        batch_size: ``b``, points per update, positive integer.
        dataset_size: ``B``, training points, positive integer.
        epochs: ``T``, epochs in the run or in the current restart period, ``> 0``
            (fractional allowed).

    Example:
        >>> round(normalized_weight_decay(0.025, 128, 50_000, 100), 7)
        0.0001265
    """
    lambda_norm = non_negative("lambda_norm", lambda_norm)
    b = positive_int("batch_size", batch_size)
    B = positive_int("dataset_size", dataset_size)
    T = positive("epochs", epochs)
    return lambda_norm * math.sqrt(b / (B * T))


def torch_weight_decay(lam: float, lr: float) -> float:
    """Paper ``lambda`` -> torch-convention weight decay: ``lam / lr``.

    torch.optim.AdamW multiplies its ``weight_decay`` by the learning rate; the paper does
    not. ``lr`` is the base learning rate alpha (``> 0``), ``lam >= 0``.
    """
    lam = non_negative("lam", lam)
    lr = positive("lr", lr)
    return lam / lr


def paper_weight_decay(torch_wd: float, lr: float) -> float:
    """torch-convention weight decay -> paper ``lambda``: ``torch_wd * lr`` (``lr`` = alpha)."""
    torch_wd = non_negative("torch_wd", torch_wd)
    lr = positive("lr", lr)
    return torch_wd * lr


@dataclass(frozen=True)
class Timescale:
    """EMA timescale of decoupled weight decay (Wang & Aitchison, arXiv 2405.13698).

    Attributes:
        tau_iter: timescale in updates, ``1 / d`` with ``d`` the decay per update
            (``1 / (lr * torch_wd)`` for torch's convention; ``inf`` for no decay).
        tau_epoch: timescale in epochs, ``tau_iter * b / B``; ``None`` when batch and
            dataset sizes were not given.
    """

    tau_iter: float
    tau_epoch: float | None = None


def _decay_factor(lr: float, decay_convention: str, initial_lr: float | None) -> float:
    """What the weight decay is multiplied by per update, at learning rate ``lr``."""
    _validate.one_of("decay_convention", decay_convention, DECAY_CONVENTIONS)
    initial = lr if initial_lr is None else positive("initial_lr", initial_lr)
    group = {"lr": lr, "initial_lr": initial, "weight_decay": 1.0,
             "decay_convention": decay_convention}
    return decay_per_update(group)


def ema_timescale(
    lr: float,
    weight_decay: float,
    batch_size: int | None = None,
    dataset_size: int | None = None,
    *,
    decay_convention: str = "lr",
    initial_lr: float | None = None,
) -> Timescale:
    """Timescale of the exponential moving average that decoupled weight decay computes.

    With a decay ``d`` per update, the weights are an EMA of the updates with timescale
    ``tau_iter = 1 / d`` updates (Wang & Aitchison, arXiv 2405.13698), ``tau_epoch =
    tau_iter * b / B`` epochs. ``d`` follows ``decay_convention``, as in the optimizers:
    ``"lr"`` (default; torch.optim.AdamW's ``weight_decay``): ``lr * weight_decay``;
    ``"schedule"`` (the paper's lambda): ``lr / initial_lr * weight_decay``; ``"constant"``:
    ``weight_decay``; ``"corrected"`` (AdamC): ``lr * lr / initial_lr * weight_decay``.
    ``initial_lr`` (the peak lr, lr_max) defaults to ``lr``: the timescale at the peak.

    Rule of thumb (Wang & Aitchison): the best ``tau_epoch`` stays roughly constant as model
    and dataset size change, so keep ``tau_epoch`` and re-derive the weight decay with
    :func:`weight_decay_for_timescale` when the dataset, batch size or learning rate change.
    Worked example: lr = 1e-3, torch weight_decay = 0.1, b = 128, B = 50,000 gives
    ``tau_iter = 1 / (1e-3 * 0.1) = 10,000`` updates and ``tau_epoch = 10,000 * 128 / 50,000
    = 25.6`` epochs. With 4x the data (B = 200,000) the same 25.6 epochs are 40,000 updates:
    torch weight_decay 0.025 (the paper's lambda, ``decay_convention="schedule"``: 1e-4 ->
    2.5e-5).

    Args:
        lr: learning rate (``> 0``) at which the timescale is taken.
        weight_decay: the weight decay (``>= 0``) in ``decay_convention``.
        batch_size, dataset_size: ``b`` and ``B``; give both to get ``tau_epoch``.
        decay_convention: one of ``weightdecay.DECAY_CONVENTIONS`` (default ``"lr"``).
        initial_lr: the peak learning rate (``"schedule"``, ``"corrected"``); default ``lr``.

    Returns:
        :class:`Timescale` with ``tau_iter`` (updates) and ``tau_epoch`` (epochs or None).

    Example:
        >>> ema_timescale(1e-3, 0.1, 128, 50_000).tau_epoch
        25.6
        >>> ema_timescale(1e-3, 1e-4, 128, 50_000, decay_convention="schedule").tau_epoch
        25.6
    """
    lr = positive("lr", lr)
    weight_decay = non_negative("weight_decay", weight_decay)
    if (batch_size is None) != (dataset_size is None):
        raise ValueError(
            "batch_size and dataset_size must be given together, got "
            f"batch_size={batch_size!r}, dataset_size={dataset_size!r}"
        )
    d = _decay_factor(lr, decay_convention, initial_lr) * weight_decay
    tau_iter = math.inf if d == 0 else 1.0 / d
    if batch_size is None:
        return Timescale(tau_iter)
    b = positive_int("batch_size", batch_size)
    B = positive_int("dataset_size", dataset_size)
    return Timescale(tau_iter, tau_iter * b / B)


def weight_decay_for_timescale(
    tau_epochs: float,
    lr: float,
    batch_size: int,
    dataset_size: int,
    *,
    decay_convention: str = "lr",
    initial_lr: float | None = None,
) -> float:
    """The weight decay (in ``decay_convention``) giving an EMA timescale of ``tau_epochs``.

    Inverse of :func:`ema_timescale`: ``tau_iter = tau_epochs * B / b`` updates and a decay
    per update ``d = 1 / tau_iter``, divided by what the convention multiplies the weight
    decay by (``lr`` for ``"lr"``, the default: torch's ``weight_decay``; ``lr / initial_lr``
    for ``"schedule"``, the paper's lambda; 1 for ``"constant"``; ``lr * lr / initial_lr``
    for ``"corrected"``). See :func:`ema_timescale` for the rule of thumb and an example.

    Example:
        >>> weight_decay_for_timescale(25.6, 1e-3, 128, 200_000)
        0.025
    """
    tau_epochs = positive("tau_epochs", tau_epochs)
    lr = positive("lr", lr)
    b = positive_int("batch_size", batch_size)
    B = positive_int("dataset_size", dataset_size)
    tau_iter = tau_epochs * B / b
    return 1.0 / (tau_iter * _decay_factor(lr, decay_convention, initial_lr))


class NormalizedDecay:
    """Restart-aware normalized weight decay, stepped once per update like an LR scheduler.

    At update count ``t`` it sets, in every decayed param group::

        group["weight_decay"] = lambda_norm * sqrt(b / (B * T_epochs))      (paper App. B.1)
        T_epochs = T_updates / updates_per_epoch

    where ``T_updates`` is ``schedule.period_length(t)`` (the current restart period
    ``T_i``) when the schedule has warm restarts, else ``total_updates``. The decay is
    thus recomputed at each restart and drops by ``sqrt(T_mult)`` (``sqrt(2)`` for the
    paper's ``T_mult = 2``). The library's optimizers multiply ``weight_decay`` by
    ``eta_t``, which reproduces the authors' ``lambda_t = eta_t * lambda_norm /
    sqrt(batches_per_epoch * T_i)``. (With torch.optim.AdamW, which multiplies by the lr,
    the values would also be scaled by alpha: convert with :func:`torch_weight_decay`.)

    Which groups are decayed: a group with its own ``"lambda_norm"`` key uses it (0 marks it
    as no-decay); otherwise a group whose ``weight_decay`` is 0 at construction (biases,
    norms) is a no-decay group and stays 0, and the others use ``lambda_norm``.

    Usage: ``optimizer.step(); lr_scheduler.step(); normalized_decay.step()``. Construction
    applies the value for ``t = 0``.

    Args:
        optimizer: any object with ``param_groups`` (a torch optimizer).
        lambda_norm: normalized decay, ``>= 0``.
        batch_size, dataset_size: ``b`` and ``B`` (positive integers).
        schedule: the lr schedule; its restart periods (if any) define ``T``.
        total_updates: run length in updates, required when the schedule has no restarts.
        updates_per_epoch: updates in one epoch (keyword only); default
            ``ceil(B / b)`` (a DataLoader without ``drop_last``).
    """

    def __init__(
        self,
        optimizer: Any,
        lambda_norm: float,
        batch_size: int,
        dataset_size: int,
        schedule: Schedule | None = None,
        total_updates: int | None = None,
        *,
        updates_per_epoch: int | None = None,
    ) -> None:
        if not hasattr(optimizer, "param_groups"):
            raise ValueError(f"optimizer must have param_groups, got {optimizer!r}")
        self.optimizer = optimizer
        self.lambda_norm = non_negative("lambda_norm", lambda_norm)
        self.batch_size = positive_int("batch_size", batch_size)
        self.dataset_size = positive_int("dataset_size", dataset_size)
        self.schedule = None if schedule is None else as_schedule(schedule)
        restarts = self.schedule is not None and self.schedule.has_restarts
        if not restarts:
            if total_updates is None:
                raise ValueError(
                    "total_updates is required when the schedule has no warm restarts, "
                    f"got total_updates=None with schedule={schedule!r}"
                )
            positive("total_updates", total_updates)
        self.total_updates = total_updates
        if updates_per_epoch is None:
            updates_per_epoch = _updates_per_epoch(self.dataset_size, self.batch_size)
        self.updates_per_epoch = positive_int("updates_per_epoch", updates_per_epoch)

        self.lambda_norms: list[float] = []
        for k, group in enumerate(optimizer.param_groups):
            if "lambda_norm" in group:
                value = non_negative(f"param_groups[{k}]['lambda_norm']", group["lambda_norm"])
            elif group.get("weight_decay", 0) == 0:
                value = 0.0  # no-decay group (biases, norms)
            else:
                value = self.lambda_norm
            self.lambda_norms.append(value)
        if self.lambda_norm > 0 and not any(self.lambda_norms):
            warnings.warn(
                "NormalizedDecay: every param group has weight_decay == 0 (or lambda_norm 0), "
                "so none is decayed; pass a nonzero weight_decay to the optimizer for the "
                "groups to decay",
                UserWarning,
                stacklevel=2,
            )
        self.step_count = 0
        self._apply()

    def period_epochs(self, t: float | None = None) -> float:
        """``T`` in epochs at update count ``t`` (default: the current step count)."""
        t = self.step_count if t is None else t
        schedule = self.schedule
        if schedule is not None and schedule.has_restarts:
            # (has_restarts: the schedule has the period helpers; pure-math scalar path)
            period_updates = float(schedule.period_length(t))  # type: ignore[attr-defined]
        else:
            assert self.total_updates is not None  # required at construction without restarts
            period_updates = float(self.total_updates)
        return period_updates / self.updates_per_epoch

    def weight_decays(self, t: float | None = None) -> list[float]:
        """Per-group paper ``lambda`` at update count ``t`` (default: the current step)."""
        T = self.period_epochs(t)
        b, B = self.batch_size, self.dataset_size
        # normalized_weight_decay's formula, inlined: this runs once per update and every
        # argument was validated already (construction / load_state_dict; T > 0 always).
        return [ln * math.sqrt(b / (B * T)) if ln else 0.0 for ln in self.lambda_norms]

    def _apply(self) -> None:
        self._last_weight_decay = self.weight_decays()
        for group, value in zip(self.optimizer.param_groups, self._last_weight_decay):
            group["weight_decay"] = value

    def step(self) -> None:
        """Advance by one update and set ``weight_decay`` in every group."""
        self.step_count += 1
        self._apply()

    def get_last_weight_decay(self) -> list[float]:
        """The per-group values set by the last :meth:`step` (or construction)."""
        return list(self._last_weight_decay)

    def state_dict(self) -> dict[str, Any]:
        """Plain-number state: step count and per-group ``lambda_norm`` (0 = no decay)."""
        return {"step_count": self.step_count, "lambda_norms": list(self.lambda_norms)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step count and per-group values, then re-apply the decay."""
        norms = [
            non_negative(f"state_dict['lambda_norms'][{k}]", v)
            for k, v in enumerate(state_dict["lambda_norms"])
        ]
        if len(norms) != len(self.optimizer.param_groups):
            raise ValueError(
                f"state_dict['lambda_norms'] has {len(norms)} entries, but the optimizer "
                f"has {len(self.optimizer.param_groups)} param groups"
            )
        step_count = state_dict["step_count"]
        if isinstance(step_count, bool) or not isinstance(step_count, int) or step_count < 0:
            raise ValueError(f"state_dict['step_count'] must be an int >= 0, got {step_count!r}")
        self.step_count = step_count
        self.lambda_norms = norms
        self._apply()

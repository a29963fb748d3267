"""``decoupled_weight_decay(OptimizerClass)``: the decoupled variant of a torch optimizer —
the element-wise ones (RMSprop, Adagrad, Adamax, NAdam, ...), which the paper's Sec. 5
(Conclusion and Future Work) expects to benefit alike, and non-element-wise ones such as
``torch.optim.Muon`` (orthogonalized momentum).

The returned class takes the same arguments plus ``decay_convention``; its ``weight_decay``
is the decoupled factor lambda, applied per update as ``theta -= d_t * theta_{t-1}`` with
``d_t = eta_t * lambda`` (``"schedule"``, default), ``lr_t * lambda`` (``"lr"``),
``lambda`` (``"constant"``) or ``lr_t * eta_t * lambda`` (``"corrected"``), and never
reaches the wrapped optimizer (which would add it to the gradient as L2, or decay by its own
convention). One update is the decay of theta_{t-1}, then the wrapped optimizer's update;
at lambda = 0 the class is the wrapped optimizer, bit for bit.

Supported (tested, ``tests/test_optim_api.py``): every ``torch.optim`` optimizer of torch
2.13 except two: SGD, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad, Adadelta, ASGD,
Rprop, Adafactor and Muon. Refused: ``LBFGS`` (it evaluates the closure many times inside one
``step()``: there is no single update to decay around) and ``SparseAdam`` (its updates touch
only the rows of a sparse gradient; a decay of every row would not be what it promises).
Notes: ``lr_t`` is ``group["lr"]``, before any rescaling the wrapped optimizer applies itself
(Muon's shape adjustment ``adjust_lr_fn``, Adafactor's relative step); and an optimizer
whose update depends on theta itself (Adafactor's RMS(theta) scale) sees the decayed weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import _validate
from . import _checkpoint
from ._decay import DECAY_CONVENTIONS, check_convention, decay_per_update, undefined_eta

_CACHE: dict[type, type] = {}

#: torch optimizers the wrapper refuses, and why
_REFUSED = {
    torch.optim.LBFGS: "it evaluates the closure many times inside one step(), so there is "
                       "no single update to decay around",
    torch.optim.SparseAdam: "its updates touch only the rows of a sparse gradient, and a "
                            "decay of every row would not be what it promises",
}


def _check_group(group: dict, index: int) -> None:
    """The wrapper's keys of one param group: ``weight_decay`` (finite, >= 0),
    ``decay_convention`` and ``initial_lr`` (set to ``lr`` where missing; finite, >= 0, and
    > 0 where eta_t is read while lr > 0)."""
    where = f"param_groups[{index}]"
    group["weight_decay"] = _validate.non_negative(f"{where}['weight_decay']",
                                                   group["weight_decay"])
    _validate.one_of(f"{where}['decay_convention']", group["decay_convention"],
                     DECAY_CONVENTIONS)
    group.setdefault("initial_lr", group["lr"])
    group["initial_lr"] = _validate.non_negative(f"{where}['initial_lr']", group["initial_lr"])
    lr = group["lr"]
    if (group["initial_lr"] == 0 and not isinstance(lr, torch.Tensor) and lr > 0
            and group["decay_convention"] in ("schedule", "corrected")
            and group["weight_decay"] != 0):
        raise ValueError(undefined_eta(group, f"{where}['initial_lr']"))


def _unhooked_step(optimizer_cls: type[torch.optim.Optimizer]) -> Any:
    """The wrapped class's own ``step``, without torch's hook wrapper: this class's step is
    wrapped already (torch patches ``cls.step`` of every optimizer class it instantiates), so
    calling the patched base step would run the step hooks a second time per update."""
    step: Any = optimizer_cls.step
    while getattr(step, "hooked", False) and hasattr(step, "__wrapped__"):
        step = step.__wrapped__
    if getattr(step, "hooked", False):  # ours: runs the hooks itself unless asked not to
        return lambda opt: opt._step()
    return step


def decoupled_weight_decay(optimizer_cls: type[torch.optim.Optimizer]) -> type:
    """Return the decoupled-weight-decay variant of ``optimizer_cls``.

    Example:
        >>> RMSpropW = weightdecay.decoupled_weight_decay(torch.optim.RMSprop)
        >>> opt = RMSpropW(model.parameters(), lr=1e-3, weight_decay=1e-4)  # eta_t*lambda
    """
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
        raise ValueError(
            "decoupled_weight_decay expects a torch.optim.Optimizer subclass, "
            f"got {optimizer_cls!r}"
        )
    for refused, why in _REFUSED.items():
        if issubclass(optimizer_cls, refused):
            raise ValueError(f"decoupled_weight_decay does not support {refused.__name__}: "
                             f"{why}")
    if optimizer_cls in _CACHE:
        return _CACHE[optimizer_cls]

    class Decoupled(optimizer_cls):  # type: ignore[valid-type, misc]
        __doc__ = (
            f"{optimizer_cls.__name__} with decoupled weight decay: lambda is multiplied by "
            "eta_t (decay_convention='schedule'), lr_t ('lr'), 1 ('constant') or lr_t*eta_t "
            "('corrected') and applied "
            "to theta_{t-1} before the wrapped update; the wrapped optimizer sees no L2 term."
        )

        def __init__(self, params, *args, weight_decay=0.0, decay_convention="schedule",
                     **kwargs):
            _validate.non_negative("weight_decay", weight_decay)
            check_convention(decay_convention)
            params = list(params)
            ours = {"weight_decay": weight_decay, "decay_convention": decay_convention}
            self._decoupled_ready = False  # (torch's __init__ calls add_param_group)
            if params and isinstance(params[0], dict):
                params = [{**ours, **group} for group in params]
                super().__init__(params, *args, **kwargs)
            else:
                super().__init__(params, *args, **kwargs)
                for group in self.param_groups:
                    group.update(ours)
            self.defaults.update(ours)  # used by later add_param_group calls
            for index, group in enumerate(self.param_groups):
                _check_group(group, index)
            self._decoupled_ready = True

        def add_param_group(self, param_group):
            """Add a param group, checked as the constructor checks its arguments (one
            ``ValueError`` naming ``param_groups[i]['key']``; the group is not added)."""
            super().add_param_group(param_group)
            if getattr(self, "_decoupled_ready", False):
                try:
                    _check_group(self.param_groups[-1], len(self.param_groups) - 1)
                except Exception:
                    self.param_groups.pop()
                    raise

        def load_state_dict(self, state_dict):
            """Load the wrapper's own state or a plain torch state of the wrapped class,
            keeping ``decay_convention`` (see :mod:`weightdecay.optim._checkpoint`): an L2
            ``weight_decay`` != 0 of the wrapped class is refused (it is not a decoupled
            decay); a torch state without decay keeps this optimizer's lambda."""
            super().load_state_dict(_checkpoint.adapt_wrapped(self, state_dict, optimizer_cls))

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:  # gradients at theta_{t-1}, before the decay moves it
                with torch.enable_grad():
                    loss = closure()
            decays = []
            for index, group in enumerate(self.param_groups):
                try:  # (values changed since the last step: checked before anything moves)
                    decay = decay_per_update(group)
                    if not 0.0 <= decay < math.inf:
                        raise ValueError(f"decay {decay!r}")
                except Exception as exc:
                    _check_group(group, index)  # names the key
                    raise ValueError(f"param_groups[{index}]: no decay per update at lr="
                                     f"{group['lr']!r} ({exc})") from None
                decays.append(decay)
            saved = []
            for group, decay in zip(self.param_groups, decays):
                if decay != 0:
                    params = [p for p in group["params"] if p.grad is not None]
                    if params:
                        torch._foreach_add_(params, params, alpha=-decay)
                saved.append(group["weight_decay"])
                group["weight_decay"] = 0.0  # the wrapped update gets no L2 term
            try:
                _unhooked_step(optimizer_cls)(self)
            finally:
                for group, lam in zip(self.param_groups, saved):
                    group["weight_decay"] = lam
            return loss

    Decoupled.__name__ = Decoupled.__qualname__ = f"{optimizer_cls.__name__}W"
    _CACHE[optimizer_cls] = Decoupled
    return Decoupled

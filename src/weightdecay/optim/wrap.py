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

import torch

from .. import _validate
from ._decay import check_convention, decay_per_update

_CACHE: dict[type, type] = {}

#: torch optimizers the wrapper refuses, and why
_REFUSED = {
    torch.optim.LBFGS: "it evaluates the closure many times inside one step(), so there is "
                       "no single update to decay around",
    torch.optim.SparseAdam: "its updates touch only the rows of a sparse gradient, and a "
                            "decay of every row would not be what it promises",
}


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
            if params and isinstance(params[0], dict):
                params = [{**ours, **group} for group in params]
                super().__init__(params, *args, **kwargs)
            else:
                super().__init__(params, *args, **kwargs)
                for group in self.param_groups:
                    group.update(ours)
            self.defaults.update(ours)  # used by later add_param_group calls
            for group in self.param_groups:
                _validate.non_negative("weight_decay", group["weight_decay"])
                check_convention(group["decay_convention"])
                group.setdefault("initial_lr", group["lr"])

        def add_param_group(self, param_group):
            super().add_param_group(param_group)
            self.param_groups[-1].setdefault("initial_lr", self.param_groups[-1]["lr"])

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:  # gradients at theta_{t-1}, before the decay moves it
                with torch.enable_grad():
                    loss = closure()
            saved = []
            for group in self.param_groups:
                decay = decay_per_update(group)
                if decay != 0:
                    params = [p for p in group["params"] if p.grad is not None]
                    if params:
                        torch._foreach_add_(params, params, alpha=-decay)
                saved.append(group["weight_decay"])
                group["weight_decay"] = 0.0  # the wrapped update gets no L2 term
            try:
                super().step()
            finally:
                for group, lam in zip(self.param_groups, saved):
                    group["weight_decay"] = lam
            return loss

    Decoupled.__name__ = Decoupled.__qualname__ = f"{optimizer_cls.__name__}W"
    _CACHE[optimizer_cls] = Decoupled
    return Decoupled

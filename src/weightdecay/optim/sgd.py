"""SGD with momentum, with L2 regularization (``SGD``) or decoupled weight decay (``SGDW``).

Algorithm 1 of Loshchilov & Hutter (ICLR 2019), in the paper's momentum form::

    g_t     = grad f_t(theta_{t-1})            (+ lambda * theta_{t-1}   SGD with L2 only)
    m_t     = beta1 * m_{t-1} + eta_t * alpha * g_t
    theta_t = theta_{t-1} - m_t                (- eta_t * lambda * theta_{t-1}   SGDW only)

``alpha * eta_t`` is ``group["lr"]``, so an LR scheduler changes both the step and the decay.
torch's momentum (buf = mu*buf + g; theta -= lr_t*buf) equals this only while lr is constant.
By design, since the step size lives in the buffer: when the learning rate reaches 0 (the end
of a cosine period) SGD keeps moving theta by the remaining momentum, beta1^k * m_t after k
more updates, where torch.optim.SGD stops at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .. import _validate
from . import _compiled, _reference
from ._base import DecayOptimizer, Tensors, masked_decay_, soft_threshold_


class SGD(DecayOptimizer):
    r"""SGD with momentum and **L2 regularization**: ``weight_decay`` (lambda) is added to the
    gradient as ``lambda * theta`` and then scaled by the learning rate like the gradient
    (the coupled form; Prop. 1: equivalent to decay lambda*alpha only for plain SGD).

    Args:
        params: parameters or param groups.
        lr: base learning rate alpha (``group["lr"] = alpha * eta_t`` under a scheduler).
        momentum: beta1 of Algorithm 1 (paper: 0.9).
        weight_decay: L2 coefficient lambda' added to the gradient (``SGD``), or the decoupled
            decay factor lambda (``SGDW``, multiplied per ``decay_convention``; Prop. 1: plain
            SGD with L2 lambda' decays by lambda = alpha * lambda'). Default 0, as torch's.
        nesterov: Nesterov momentum (theta -= beta1*m_t + lr_t*g_t).
        decay_convention: what SGDW's lambda is multiplied by: ``"schedule"`` (eta_t, the
            paper's; default), ``"lr"`` (lr_t, torch's), ``"constant"`` (1), ``"corrected"``
            (lr_t * lr_t / lr_max, lr_max = the group's initial lr; AdamC). Ignored by SGD.
        cautious: SGDW only: cautious weight decay (arXiv 2510.12402), decay only where the
            update u_t (the step subtracted, m_t or Nesterov's) and theta_{t-1} have the same
            sign: ``theta_t = theta_{t-1} - u_t - d_t * 1[u_t * theta_{t-1} >= 0] *
            theta_{t-1}``. Any convention; every implementation but fused.
        l1: L1 coefficient lambda_1. ``SGD``: coupled, lambda_1 * sign(theta_{t-1}) is added to
            the gradient (the subgradient of lambda_1 * ||theta||_1). ``SGDW``: decoupled, a
            proximal step after the update, ``theta_t <- sign(theta_t) * max(|theta_t| -
            d1_t, 0)`` with d1_t = lambda_1 times what the convention multiplies lambda by
            (eta_t by default): weights within d1_t of zero become exactly zero.
        impl: ``None`` (automatic: foreach; the compiled kernel for tensors of at least
            ``COMPILE_MIN_NUMEL_TENSOR`` = 2**22 elements, flat buffers of at least
            ``COMPILE_MIN_NUMEL_FLAT``), ``"reference"`` (the pseudocode per tensor),
            ``"foreach"`` (multi-tensor kernels) or ``"compiled"`` (a single-pass
            ``torch.compile`` kernel per tensor; compiles once, best for few large tensors).
        flat: keep the group's parameters, gradients and state in one contiguous buffer each
            and update them with one kernel per step (see :mod:`weightdecay.optim.flat`).

    Example:
        >>> opt = weightdecay.SGD(model.parameters(), lr=0.1, weight_decay=5e-4)

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Alg. 1.
    """

    decoupled = False
    _checks = {"lr": _validate.non_negative, "momentum": _validate.fraction,
               "weight_decay": _validate.non_negative, "l1": _validate.non_negative,
               "nesterov": _validate.boolean}
    _COMPILED = "sgd"

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        decay_convention: str = "schedule",
        cautious: bool = False,
        l1: float = 0.0,
        impl: str | None = None,
        flat: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=nesterov,
            decay_convention=decay_convention,
            cautious=cautious,
            l1=l1,
            impl=impl,
        )
        super().__init__(params, defaults, flat=flat)

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        return ("momentum",)

    def _check_more(self, group: dict, name) -> None:
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError(f"{name('nesterov')}=True needs momentum > 0, got "
                             f"{name('momentum')}=0")

    def _hyper(self, group: dict) -> dict:
        hyper = self._decay_hyper(group)
        momentum, nesterov = group["momentum"], group["nesterov"]
        if not (0.0 <= momentum < 1.0 and nesterov.__class__ is bool
                and (momentum > 0 or not nesterov)):
            raise ValueError("invalid hyperparameter")  # (_step_hyper names it)
        hyper.update(lr=group["lr"], momentum=momentum, nesterov=nesterov)
        return hyper

    def _flags(self, group: dict) -> dict:
        return dict(nesterov=bool(group["nesterov"]), cautious=bool(group["cautious"]),
                    use_l1=group["l1"] != 0)

    @classmethod
    def _fused_refusal(cls) -> str | None:
        return (f"impl='fused' is not available for {cls.__name__}: torch's fused SGD uses "
                "torch-style momentum, not Algorithm 1; use 'compiled', 'foreach' or None")


class SGDW(SGD):
    r"""SGD with momentum and **decoupled weight decay** (SGDW, Algorithm 1).

    Per update: ``theta_t = theta_{t-1} - m_t - d_t * theta_{t-1}`` where the decay
    ``d_t = eta_t * lambda`` by default (``decay_convention="schedule"``, the paper's: lambda
    is **not** multiplied by alpha), ``lr_t * lambda`` with ``"lr"`` (torch's convention),
    ``lambda`` with ``"constant"`` or ``lr_t * (lr_t / lr_max) * lambda`` with ``"corrected"``
    (see :mod:`weightdecay.optim._decay`). See :class:`SGD` for the arguments.

    Example:
        >>> # lambda = 5e-5 = alpha * 5e-4: torch.optim.SGD(lr=0.1, weight_decay=5e-4), no momentum
        >>> opt = weightdecay.SGDW(model.parameters(), lr=0.1, weight_decay=5e-5)
    """

    decoupled = True


# ---------------------------------------------------------------------------- the kernels
# Each takes the tensor lists [params, grads, momentum buffers] (one device and dtype, real),
# ``steps`` (None: SGD counts no updates) and the step's hyperparameters (SGD._hyper).


@torch.no_grad()
def _reference_kernel(tensors: Tensors, steps, hp: dict) -> None:
    lr = hp["lr"]
    decay_t = _reference.decay_factor(hp["convention"], hp["lam"], lr, hp["lr_max"])
    l1_decay_t = _reference.decay_factor(hp["convention"], hp["lam1"], lr, hp["lr_max"])
    for p, g, m in zip(*tensors):
        _reference.sgd_step(p, g, m, lr_t=lr, momentum=hp["momentum"], l2=hp["l2"],
                            decay_t=decay_t, nesterov=hp["nesterov"], cautious=hp["cautious"],
                            l1=hp["l1"], l1_decay_t=l1_decay_t)


_FAST = ("lr", "momentum", "l2", "decay", "nesterov", "cautious", "l1", "l1_decay")


def _foreach_kernel(tensors: Tensors, steps, hp: dict) -> None:
    params, grads, bufs = tensors
    _multi_tensor_sgd(params, grads, bufs, **{k: hp[k] for k in _FAST})


def _compiled_kernel(tensors: Tensors, steps, hp: dict) -> None:
    if torch.compiler.is_compiling():  # traced into the user's compiled step
        return _compiled.traced_sgd(tensors, hp)
    kw = {k: hp[k] for k in _FAST}
    for p, g, m in zip(*tensors):
        _compiled.sgd_update(p, g, m, use_l1=hp["use_l1"], **kw)


@torch.no_grad()
def _multi_tensor_sgd(params, grads, bufs, *, lr, momentum, l2, decay, nesterov,
                      cautious=False, l1=0.0, l1_decay=0.0) -> None:
    """Algorithm 1 with foreach kernels; at most one parameter-sized temporary per tensor."""
    if l1 != 0:  # temporary: g_t + lambda*theta + lambda_1*sign(theta) (coupled L2, L1)
        tmp = torch._foreach_sign(params)
        torch._foreach_mul_(tmp, l1)
        torch._foreach_add_(tmp, grads)
        if l2 != 0:
            torch._foreach_add_(tmp, params, alpha=l2)
        grads, owned = tmp, True
    elif l2 != 0:
        grads = torch._foreach_add(grads, params, alpha=l2)  # temporary: g_t + lambda*theta
        owned = True
    else:
        owned = False
    if momentum != 0:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads, alpha=lr)  # m_t = beta1*m_{t-1} + lr_t*g_t
    else:
        torch._foreach_copy_(bufs, grads)  # m_t = lr_t*g_t
        torch._foreach_mul_(bufs, lr)
    if nesterov:
        if owned:  # reuse the temporary: step = beta1*m_t + lr_t*g_t
            torch._foreach_mul_(grads, lr)
            step = grads
        else:
            step = torch._foreach_mul(grads, lr)
        torch._foreach_add_(step, bufs, alpha=momentum)
    else:
        step = bufs
    if decay != 0 and cautious:  # (decoupled, so grads are g_t: no L2 temporary)
        if nesterov:  # the step is the one temporary: it takes the mask, then is redone
            torch._foreach_mul_(step, params)
            masked_decay_(params, step, decay)
            torch._foreach_copy_(step, grads)
            torch._foreach_mul_(step, lr)
            torch._foreach_add_(step, bufs, alpha=momentum)
        else:
            masked_decay_(params, torch._foreach_mul(step, params), decay)
    elif decay != 0:
        torch._foreach_add_(params, params, alpha=-decay)  # decay theta_{t-1} (step precomputed)
    torch._foreach_sub_(params, step)
    if l1_decay != 0:  # decoupled L1 (the step's temporary, if any, is free again)
        soft_threshold_(params, l1_decay, scratch=step if nesterov else None)


SGD._KERNELS = {"reference": _reference_kernel, "foreach": _foreach_kernel,
                "compiled": _compiled_kernel}

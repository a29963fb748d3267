"""Adam with L2 regularization (``Adam``) or decoupled weight decay (``AdamW``), + AMSGrad.

Algorithm 2 of Loshchilov & Hutter (ICLR 2019), element-wise::

    g_t     = grad f_t(theta_{t-1})              (+ lambda * theta_{t-1}   Adam with L2 only)
    m_t     = beta1 * m_{t-1} + (1 - beta1) * g_t
    v_t     = beta2 * v_{t-1} + (1 - beta2) * g_t^2
    m_hat_t = m_t / (1 - beta1^t),   v_hat_t = v_t / (1 - beta2^t)
    theta_t = theta_{t-1} - eta_t * (alpha * m_hat_t / (sqrt(v_hat_t) + eps)
                                     + lambda * theta_{t-1})          (decay: AdamW only)

The decay is eta_t * lambda (``decay_convention="schedule"``): it is not multiplied by alpha.
Paths: ``"reference"`` (the pseudocode per tensor), ``"foreach"`` (multi-tensor kernels, at
most one parameter-sized temporary) and ``"fused"`` (torch's fused Adam/AdamW kernel, which
computes exactly this update with ``weight_decay = lambda / alpha`` since it multiplies the
decay by lr_t = alpha * eta_t). ``impl=None`` picks fused where it is exact and precise,
else the compiled kernel for large tensors and foreach for the rest (see ``DecayOptimizer._plan``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .. import _validate
from . import _compiled, _reference
from ._base import DecayOptimizer, Tensors, masked_decay_, soft_threshold_
from ._decay import fused_weight_decay


def _check_betas(name: str, betas) -> tuple[float, float]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {betas!r}") from None
    return (_validate.fraction(f"{name}[0]", b1), _validate.fraction(f"{name}[1]", b2))


class Adam(DecayOptimizer):
    r"""Adam with **L2 regularization**: ``weight_decay`` (lambda) is added to the gradient as
    ``lambda * theta`` and so passes through Adam's preconditioner (Prop. 2: weights with
    large gradient history are regularized less). Equals ``torch.optim.Adam(weight_decay=lambda)``.

    Args:
        params: parameters or param groups.
        lr: base learning rate alpha (``group["lr"] = alpha * eta_t`` under a scheduler).
        betas: (beta1, beta2), each in [0, 1).
        eps: epsilon > 0 added to sqrt(v_hat).
        weight_decay: L2 coefficient (``Adam``) or decoupled decay factor lambda (``AdamW``,
            the fraction of each weight removed per update at eta_t = 1 under "schedule":
            small, e.g. 1e-4 = ``torch.optim.AdamW(lr=1e-3, weight_decay=0.1)``). Default 0,
            no decay; ``torch.optim.AdamW`` defaults to 0.01, which is lambda = 0.01 * alpha
            here (``decay_convention="lr"``: 0.01).
        amsgrad: use the running maximum of v_t (AMSGrad, torch's form).
        decay_convention: what AdamW's lambda is multiplied by: ``"schedule"`` (eta_t, the
            paper's; default), ``"lr"`` (lr_t = alpha*eta_t, as torch.optim.AdamW),
            ``"constant"`` (1), ``"corrected"`` (lr_t * lr_t / lr_max, lr_max = the group's
            initial lr: AdamC, arXiv 2506.02285). Ignored by Adam (L2).
        cautious: AdamW only: cautious weight decay (arXiv 2510.12402), decay only where
            the update u_t = lr_t * m_hat_t / (sqrt(v_hat_t) + eps) and theta_{t-1} have the
            same sign: ``theta_t = theta_{t-1} - u_t - d_t * 1[u_t * theta_{t-1} >= 0] *
            theta_{t-1}``. Any convention; not with torch's fused kernel (impl=None then
            takes the compiled kernel for large tensors, foreach for the rest).
        l1: L1 coefficient lambda_1. ``Adam``: coupled, lambda_1 * sign(theta_{t-1}) is
            added to the gradient (and so preconditioned, like L2). ``AdamW``: decoupled, a
            proximal step after the update, ``theta_t <- sign(theta_t) * max(|theta_t| -
            d1_t, 0)`` with d1_t = lambda_1 times what the convention multiplies lambda by
            (eta_t by default): weights within d1_t of zero become exactly zero. Not with
            torch's fused kernel (impl=None plans the others).
        impl: ``None`` (automatic: fused where exact and precise; else the compiled kernel for
            tensors of at least ``COMPILE_MIN_NUMEL_TENSOR`` = 2**22 elements, flat buffers of
            at least ``COMPILE_MIN_NUMEL_FLAT``, and foreach for the rest), ``"reference"``
            (the pseudocode per tensor), ``"foreach"``, ``"fused"`` (torch's fused kernel) or
            ``"compiled"`` (a single-pass ``torch.compile`` kernel per tensor).
        flat: keep the group's parameters, gradients and state in one contiguous buffer each
            and update them with one kernel per step (see :mod:`weightdecay.optim.flat`).

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Alg. 2.
    """

    decoupled = False
    _checks = {"lr": _validate.non_negative, "eps": _validate.positive,
               "weight_decay": _validate.non_negative, "betas": _check_betas,
               "l1": _validate.non_negative, "amsgrad": _validate.boolean}
    _COMPILED = "adam"

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        decay_convention: str = "schedule",
        cautious: bool = False,
        l1: float = 0.0,
        impl: str | None = None,
        flat: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            decay_convention=decay_convention,
            cautious=cautious,
            l1=l1,
            impl=impl,
        )
        super().__init__(params, defaults, flat=flat)

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        keys = ("exp_avg", "exp_avg_sq")
        return keys + ("max_exp_avg_sq",) if group["amsgrad"] else keys

    def _has_step_count(self) -> bool:
        return True

    def _hyper(self, group: dict) -> dict:
        hyper = self._decay_hyper(group)
        beta1, beta2 = hyper["beta1"], hyper["beta2"] = group["betas"]
        eps = hyper["eps"] = group["eps"]
        amsgrad = hyper["amsgrad"] = group["amsgrad"]
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0 and 0.0 < eps < math.inf
                and amsgrad.__class__ is bool):
            raise ValueError("invalid hyperparameter")  # (_step_hyper names it)
        hyper.update(lr=group["lr"], decoupled=self.decoupled,
                     fused_weight_decay=self._fused_weight_decay(group))
        return hyper

    def _flags(self, group: dict) -> dict:
        return dict(amsgrad=bool(group["amsgrad"]), cautious=bool(group["cautious"]),
                    use_l1=group["l1"] != 0)

    def _fused_weight_decay(self, group: dict) -> float | None:
        """torch's weight_decay argument giving exactly this group's update, or None."""
        if group["l1"] != 0:
            return None  # torch's kernel has no L1
        if not self.decoupled:
            return group["weight_decay"]
        if group["cautious"] and group["weight_decay"] != 0:
            return None  # torch's kernel decays every coordinate
        return fused_weight_decay(group)

    def _fused_precise(self, group: dict) -> bool:
        """Whether ``impl=None`` may use the fused kernel for this group. torch's kernel rounds
        the factor (1 - lr_t*wd) to the parameter dtype: with a decay that stays constant for
        many updates ("constant" convention) that rounding is a systematic bias (~3e-8 per
        update in float32), so the other kernels are preferred there."""
        return group["decay_convention"] != "constant" or group["weight_decay"] == 0


class AdamW(Adam):
    r"""Adam with **decoupled weight decay** (AdamW, Algorithm 2).

    Per update: ``theta_t = theta_{t-1} - lr_t * m_hat/(sqrt(v_hat)+eps) - d_t * theta_{t-1}``
    with ``d_t = eta_t * lambda`` by default (``decay_convention="schedule"``, the paper's;
    lambda is **not** multiplied by alpha, so the best lambda does not move with alpha),
    ``lr_t * lambda`` with ``"lr"`` (what ``torch.optim.AdamW(weight_decay=lambda)`` does),
    ``lambda`` with ``"constant"``, or ``lr_t * (lr_t / lr_max) * lambda`` with
    ``"corrected"`` (AdamC, Defazio 2025: lr_max is each group's own initial lr, so a lambda
    tuned for torch's AdamW carries over at the peak, and the decay falls with eta_t**2; see
    :mod:`weightdecay.optim._decay`). See :class:`Adam` for the arguments.

    ``AdamW(lr=a, weight_decay=lam)`` equals ``torch.optim.AdamW(lr=a, weight_decay=lam/a)``
    under any LR schedule; the fused path uses exactly that identity.

    Default ``weight_decay=0`` (no decay), where ``torch.optim.AdamW`` defaults to 0.01.

    Example:
        >>> # lambda = 1e-4 per update: torch.optim.AdamW(lr=1e-3, weight_decay=0.1)
        >>> opt = weightdecay.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    """

    decoupled = True


# ---------------------------------------------------------------------------- the kernels
# Each takes the tensor lists [params, grads, exp_avgs, exp_avg_sqs(, max_exp_avg_sqs)] (one
# device and dtype, real), the update counts ``steps`` (already advanced: t >= 1) and the
# step's hyperparameters (Adam._hyper).


@torch.no_grad()
def _reference_kernel(tensors: Tensors, steps, hp: dict) -> None:
    lr = hp["lr"]
    decay_t = _reference.decay_factor(hp["convention"], hp["lam"], lr, hp["lr_max"])
    l1_decay_t = _reference.decay_factor(hp["convention"], hp["lam1"], lr, hp["lr_max"])
    vmaxes = tensors[4] if hp["amsgrad"] else [None] * len(tensors[0])
    for p, g, m, v, vmax, step in zip(*tensors[:4], vmaxes, steps):
        _reference.adam_step(p, g, m, v, vmax, t=int(step.item()), lr_t=lr,
                             beta1=hp["beta1"], beta2=hp["beta2"], eps=hp["eps"], l2=hp["l2"],
                             decay_t=decay_t, cautious=hp["cautious"], l1=hp["l1"],
                             l1_decay_t=l1_decay_t)


_FAST = ("lr", "beta1", "beta2", "eps", "l2", "decay", "cautious", "l1", "l1_decay")


def _foreach_kernel(tensors: Tensors, steps, hp: dict) -> None:
    params, grads, exp_avgs, exp_avg_sqs = tensors[:4]
    _multi_tensor_adam(params, grads, exp_avgs, exp_avg_sqs,
                       tensors[4] if hp["amsgrad"] else None, [int(s.item()) for s in steps],
                       **{k: hp[k] for k in _FAST})


def _fused_kernel(tensors: Tensors, steps, hp: dict) -> None:
    """torch's fused Adam(W) kernel: with weight_decay = the group's decay / lr_t it computes
    exactly Algorithm 2 (``_plan`` uses it only where that holds)."""
    kernel = torch._fused_adamw_ if hp["decoupled"] else torch._fused_adam_
    amsgrad = hp["amsgrad"]
    kernel(tensors[0], tensors[1], tensors[2], tensors[3], tensors[4] if amsgrad else [], steps,
           amsgrad=amsgrad, lr=hp["lr"], beta1=hp["beta1"], beta2=hp["beta2"],
           weight_decay=hp["fused_weight_decay"], eps=hp["eps"], maximize=False)


def _compiled_kernel(tensors: Tensors, steps, hp: dict) -> None:
    if torch.compiler.is_compiling():  # traced into the user's compiled step
        return _compiled.traced_adam(tensors, steps, hp)
    kw = {k: hp[k] for k in _FAST}
    vmaxes = tensors[4] if hp["amsgrad"] else [None] * len(tensors[0])
    for p, g, m, v, vmax, step in zip(*tensors[:4], vmaxes, steps):
        _compiled.adam_update(p, g, m, v, vmax, step=int(step.item()), use_l1=hp["use_l1"],
                              **kw)


@torch.no_grad()
def _multi_tensor_adam(
    params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
    *, lr, beta1, beta2, eps, l2, decay, cautious=False, l1=0.0, l1_decay=0.0,
) -> None:
    """Algorithm 2 with foreach kernels; at most one parameter-sized temporary per tensor."""
    tmp = None
    if l1 != 0:  # g_t + lambda*theta_{t-1} + lambda_1*sign(theta_{t-1}) (coupled L2, L1)
        tmp = torch._foreach_sign(params)
        torch._foreach_mul_(tmp, l1)
        torch._foreach_add_(tmp, grads)
        if l2 != 0:
            torch._foreach_add_(tmp, params, alpha=l2)
        grads = tmp
    elif l2 != 0:
        grads = tmp = torch._foreach_add(grads, params, alpha=l2)  # g_t + lambda*theta_{t-1}
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m_t
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)  # v_t
    v = exp_avg_sqs
    if max_exp_avg_sqs is not None:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        v = max_exp_avg_sqs
    if decay != 0 and cautious:  # (decoupled, so no L2 temporary exists yet)
        # u_t = lr_t/(1-beta1^t) * m_t / (sqrt(v_hat)+eps) has the sign of lr_t * m_t: the
        # mask needs no denominator, and its temporary then holds the denominator
        tmp = torch._foreach_mul(exp_avgs, params)
        masked_decay_(params, tmp, decay, scale=lr)
        decay = 0.0
    if tmp is None:
        denom = torch._foreach_sqrt(v)
    else:  # reuse the temporary for the denominator
        torch._foreach_copy_(tmp, v)
        torch._foreach_sqrt_(tmp)
        denom = tmp
    bias2_sqrt = [math.sqrt(1 - beta2**t) for t in steps]
    torch._foreach_div_(denom, bias2_sqrt)
    torch._foreach_add_(denom, eps)  # sqrt(v_hat) + eps
    if decay != 0:
        torch._foreach_add_(params, params, alpha=-decay)  # decay theta_{t-1} (step precomputed)
    step_sizes = [-lr / (1 - beta1**t) for t in steps]
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)
    if l1_decay != 0:  # decoupled L1, in the denominator's temporary
        soft_threshold_(params, l1_decay, scratch=denom)


Adam._KERNELS = {"reference": _reference_kernel, "foreach": _foreach_kernel,
                 "fused": _fused_kernel, "compiled": _compiled_kernel}

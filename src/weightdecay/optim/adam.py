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
decay by lr_t = alpha * eta_t). ``impl=None`` picks fused where it is exact, else foreach.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.optim.adam as _torch_adam

from . import _compiled, _reference
from ._base import (
    DecayOptimizer,
    as_real,
    check_nonneg,
    check_positive,
    check_unit,
    foreach_ok,
)
from ._decay import decay_per_update, torch_weight_decay
from .flat import COMPILE_MIN_NUMEL as COMPILE_MIN_NUMEL_FLAT

_FUSED_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _fused_kernel_takes(tensor: torch.Tensor) -> bool:
    """torch's fused Adam(W) kernel runs on this tensor's device and dtype."""
    return tensor.device.type in ("cpu", "cuda") and tensor.dtype in _FUSED_DTYPES


def _fused_is_precise(group: dict) -> bool:
    """Whether ``impl=None`` may use the fused kernel for this group. torch's kernel rounds the
    factor (1 - lr_t*wd) to the parameter dtype: with a decay that stays constant for many
    updates ("constant" convention) that rounding is a systematic bias (~3e-8 per update in
    float32), so foreach (or the compiled kernel) is preferred there."""
    return group["decay_convention"] != "constant" or group["weight_decay"] == 0


def _check_betas(name, betas):
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"Invalid betas: {betas!r}; expected a pair (beta1, beta2)") from None
    return (check_unit("betas[0]", b1), check_unit("betas[1]", b2))


class Adam(DecayOptimizer):
    r"""Adam with **L2 regularization**: ``weight_decay`` (lambda) is added to the gradient as
    ``lambda * theta`` and so passes through Adam's preconditioner (Prop. 2: weights with
    large gradient history are regularized less). Equals ``torch.optim.Adam(weight_decay=lambda)``.

    Args:
        params: parameters or param groups.
        lr: base learning rate alpha (``group["lr"] = alpha * eta_t`` under a scheduler).
        betas: (beta1, beta2), each in [0, 1).
        eps: epsilon > 0 added to sqrt(v_hat).
        weight_decay: L2 coefficient (``Adam``) or decoupled decay factor lambda (``AdamW``).
        amsgrad: use the running maximum of v_t (AMSGrad, torch's form).
        decay_convention: what AdamW's lambda is multiplied by: ``"schedule"`` (eta_t, the
            paper's; default), ``"lr"`` (lr_t = alpha*eta_t, as torch.optim.AdamW),
            ``"constant"`` (1). Ignored by Adam (L2).
        impl: ``None`` (automatic: fused where exact, else foreach), ``"reference"`` (the
            pseudocode per tensor), ``"foreach"``, ``"fused"`` (torch's fused kernel) or
            ``"compiled"`` (a single-pass ``torch.compile`` kernel per tensor).
        flat: keep the group's parameters, gradients and state in one contiguous buffer each
            and update them with one kernel per step (see :mod:`weightdecay.optim.flat`).

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Alg. 2.
    """

    decoupled = False
    _checks = {"lr": check_nonneg, "eps": check_positive, "weight_decay": check_nonneg,
               "betas": _check_betas}

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
            impl=impl,
        )
        super().__init__(params, defaults, flat=flat)

    def _fused_weight_decay(self, group: dict) -> float | None:
        """torch's weight_decay argument giving exactly this group's update, or None."""
        if not self.decoupled:
            return group["weight_decay"]
        return torch_weight_decay(group)

    def _choose_impl(self, group: dict, params: list[torch.Tensor]) -> str:
        impl = group["impl"]
        fused_ok = (
            foreach_ok(params)
            and all(map(_fused_kernel_takes, params))
            and self._fused_weight_decay(group) is not None
        )
        if impl == "fused" and not fused_ok:
            raise ValueError(
                "impl='fused' cannot compute this update exactly here (it needs CPU or CUDA "
                "floating-point tensors on one device, and lr > 0 for decay_convention="
                f"'constant'); got decay_convention={group['decay_convention']!r}, "
                f"lr={group['lr']!r}"
            )
        if impl is None:
            if fused_ok and _fused_is_precise(group):
                return "fused"
            return "foreach" if foreach_ok(params) else "reference"
        return impl

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        keys = ("exp_avg", "exp_avg_sq")
        return keys + ("max_exp_avg_sq",) if group["amsgrad"] else keys

    def _update_group(self, group: dict, params: list[torch.Tensor]) -> None:
        keys = self._state_keys(group)
        lists = {key: [] for key in keys}
        steps = []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                # step lives on the parameter's device, as torch's fused kernels require
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            for key in keys:
                if key not in state:
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                lists[key].append(state[key])
            steps.append(state["step"])
        grads = [p.grad for p in params]
        if any(map(torch.is_complex, params)):
            # as torch: a complex number is two real ones (real and imaginary part), each with
            # its own moments; squaring the complex gradient itself would be wrong
            params, grads = as_real(params), as_real(grads)
            lists = {key: as_real(tensors) for key, tensors in lists.items()}
        self._apply(group, params, grads, lists["exp_avg"],
                    lists["exp_avg_sq"], lists.get("max_exp_avg_sq", []), steps)

    def _has_step_count(self) -> bool:
        return True

    def _update_flat(self, group: dict, fg, runs=None) -> None:
        if runs is None:  # the whole buffer, one count
            fg.steps.add_(1)
            params, grads, steps = fg.param_list, fg.grad_list, fg.step_list
            states = fg.state_lists
            big = fg.compiled
        else:  # the runs of parameters that have a gradient (fg.runs() advanced their counts)
            params, grads = fg.run_views(fg.param, runs), fg.run_views(fg.grad, runs)
            states = {key: fg.run_views(buf, runs) for key, buf in fg.state.items()}
            steps = [fg.steps[a] for a, _, _ in runs]
            big = max(p.numel() for p in params) >= COMPILE_MIN_NUMEL_FLAT
        impl = group["impl"]
        if impl is None or impl == "fused":
            # the common case in few lines: this runs every step, and at ~1e5 parameters the
            # Python around the kernel is a visible part of the step
            wd = self._fused_weight_decay(group)
            if (wd is not None and (impl == "fused" or _fused_is_precise(group))
                    and _fused_kernel_takes(fg.param)):
                beta1, beta2 = group["betas"]
                kernel = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
                kernel(params, grads, states["exp_avg"], states["exp_avg_sq"],
                       states.get("max_exp_avg_sq", []), steps, amsgrad=group["amsgrad"],
                       lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=wd,
                       eps=group["eps"], maximize=False)
                return
            impl = self._choose_impl(group, [fg.param])  # raises for an inexact "fused"
            if impl != "fused":  # one buffer: a single-pass kernel where fused is not exact
                impl = "compiled" if big else "foreach"
        self._apply(group, params, grads, states["exp_avg"], states["exp_avg_sq"],
                    states.get("max_exp_avg_sq", []), steps, impl=impl, counted=True)

    def _apply(self, group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
               impl=None, counted=False):
        """Algorithm 2 on lists of tensors (per-parameter tensors, or flat buffers); with
        ``counted`` the caller has advanced ``steps`` already."""
        impl = impl or self._choose_impl(group, params)
        amsgrad = group["amsgrad"]
        beta1, beta2 = group["betas"]
        if impl == "fused":  # (flat groups call the fused kernel directly: never counted)
            _torch_adam.adam(
                params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
                fused=True, decoupled_weight_decay=self.decoupled, amsgrad=amsgrad,
                beta1=beta1, beta2=beta2, lr=group["lr"],
                weight_decay=self._fused_weight_decay(group), eps=group["eps"], maximize=False,
            )
            return
        if not counted:
            torch._foreach_add_(steps, 1)
        kw = dict(lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                  l2=0.0 if self.decoupled else group["weight_decay"],
                  decay=decay_per_update(group) if self.decoupled else 0.0)
        counts = [int(s.item()) for s in steps]
        if impl == "compiled":
            # see SGD._apply: what the compiled kernel cannot take goes to foreach, once
            vmaxes = max_exp_avg_sqs if amsgrad else [None] * len(params)
            rest = [i for i, args in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs,
                                                    vmaxes, counts))
                    if not _compiled.adam_update(*args[:5], step=args[5], **kw)]
            if not rest:
                return
            params, grads, exp_avgs, exp_avg_sqs, counts = (
                [x[i] for i in rest] for x in (params, grads, exp_avgs, exp_avg_sqs, counts))
            max_exp_avg_sqs = [max_exp_avg_sqs[i] for i in rest] if amsgrad else []
            impl = "foreach"
        if impl == "reference":
            for i, p in enumerate(params):
                _reference.adam_step(
                    p, grads[i], exp_avgs[i], exp_avg_sqs[i],
                    max_exp_avg_sqs[i] if amsgrad else None, t=counts[i], lr_t=kw["lr"],
                    beta1=beta1, beta2=beta2, eps=kw["eps"], l2=kw["l2"], decay_t=kw["decay"],
                )
        else:
            _multi_tensor_adam(params, grads, exp_avgs, exp_avg_sqs,
                               max_exp_avg_sqs if amsgrad else None, counts, **kw)


class AdamW(Adam):
    r"""Adam with **decoupled weight decay** (AdamW, Algorithm 2).

    Per update: ``theta_t = theta_{t-1} - lr_t * m_hat/(sqrt(v_hat)+eps) - d_t * theta_{t-1}``
    with ``d_t = eta_t * lambda`` by default (``decay_convention="schedule"``, the paper's;
    lambda is **not** multiplied by alpha, so the best lambda does not move with alpha),
    ``lr_t * lambda`` with ``"lr"`` (what ``torch.optim.AdamW(weight_decay=lambda)`` does) or
    ``lambda`` with ``"constant"``. See :class:`Adam` for the arguments.

    ``AdamW(lr=a, weight_decay=lam)`` equals ``torch.optim.AdamW(lr=a, weight_decay=lam/a)``
    under any LR schedule; the fused path uses exactly that identity.

    Example:
        >>> opt = weightdecay.AdamW(model.parameters(), lr=1e-3, weight_decay=0.025)
    """

    decoupled = True


@torch.no_grad()
def _multi_tensor_adam(
    params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
    *, lr, beta1, beta2, eps, l2, decay,
) -> None:
    """Algorithm 2 with foreach kernels; at most one parameter-sized temporary per tensor."""
    tmp = None
    if l2 != 0:
        grads = tmp = torch._foreach_add(grads, params, alpha=l2)  # g_t + lambda*theta_{t-1}
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m_t
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)  # v_t
    v = exp_avg_sqs
    if max_exp_avg_sqs is not None:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        v = max_exp_avg_sqs
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

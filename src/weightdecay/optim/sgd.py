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

from . import _compiled, _reference
from ._base import DecayOptimizer, as_real, check_nonneg, check_unit, foreach_ok
from ._decay import decay_per_update
from .flat import COMPILE_MIN_NUMEL as COMPILE_MIN_NUMEL_FLAT

#: tensors with at least this many elements get the compiled single-pass kernel when
#: ``impl=None`` (16 MB in float32: the step saves milliseconds, the compilation is paid once)
COMPILE_MIN_NUMEL = 2**22


class SGD(DecayOptimizer):
    r"""SGD with momentum and **L2 regularization**: ``weight_decay`` (lambda) is added to the
    gradient as ``lambda * theta`` and then scaled by the learning rate like the gradient
    (the coupled form; Prop. 1: equivalent to decay lambda*alpha only for plain SGD).

    Args:
        params: parameters or param groups.
        lr: base learning rate alpha (``group["lr"] = alpha * eta_t`` under a scheduler).
        momentum: beta1 of Algorithm 1 (paper: 0.9).
        weight_decay: L2 coefficient lambda' added to the gradient (``SGD``), or the decoupled
            decay factor lambda (``SGDW``, multiplied per ``decay_convention``).
        nesterov: Nesterov momentum (theta -= beta1*m_t + lr_t*g_t).
        decay_convention: what SGDW's lambda is multiplied by: ``"schedule"`` (eta_t, the
            paper's; default), ``"lr"`` (lr_t, torch's), ``"constant"`` (1). Ignored by SGD.
        impl: ``None`` (automatic: foreach; the compiled kernel for tensors of at least
            ``COMPILE_MIN_NUMEL`` = 2**22 elements), ``"reference"`` (the pseudocode per tensor),
            ``"foreach"`` (multi-tensor kernels) or ``"compiled"`` (a single-pass
            ``torch.compile`` kernel per tensor; compiles once, best for few large tensors).
        flat: keep the group's parameters, gradients and state in one contiguous buffer each
            and update them with one kernel per step (see :mod:`weightdecay.optim.flat`).

    Example:
        >>> opt = weightdecay.SGD(model.parameters(), lr=0.1, weight_decay=5e-4)

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Alg. 1.
    """

    decoupled = False
    _checks = {"lr": check_nonneg, "momentum": check_unit, "weight_decay": check_nonneg}

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        decay_convention: str = "schedule",
        impl: str | None = None,
        flat: bool = False,
    ) -> None:
        if nesterov and check_unit("momentum", momentum) == 0:
            raise ValueError("Invalid nesterov=True with momentum=0; Nesterov needs momentum > 0")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=nesterov,
            decay_convention=decay_convention,
            impl=impl,
        )
        super().__init__(params, defaults, flat=flat)

    #: state tensors shaped like the parameter (flat mode keeps them in one buffer)
    def _state_keys(self, group: dict) -> tuple[str, ...]:
        return ("momentum",)

    def _update_group(self, group: dict, params: list[torch.Tensor]) -> None:
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum" not in state:  # m_0 = 0
                state["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(state["momentum"])
        grads = [p.grad for p in params]
        if any(map(torch.is_complex, params)):  # as torch: real and imaginary parts
            params, grads, bufs = as_real(params), as_real(grads), as_real(bufs)
        self._apply(group, params, grads, bufs)

    def _update_flat(self, group: dict, fg, runs=None) -> None:
        # one buffer: a single-pass compiled kernel (torch has no fused Algorithm 1), or the
        # foreach kernels for a buffer too small for the kernel's dispatch to pay off
        if runs is None:
            impl = group["impl"] or ("compiled" if fg.compiled else "foreach")
            self._apply(group, [fg.param], [fg.grad], [fg.state["momentum"]], impl=impl)
            return
        params = fg.run_views(fg.param, runs)  # the runs of parameters that have a gradient
        numel = max(p.numel() for p in params)
        impl = group["impl"] or ("compiled" if numel >= COMPILE_MIN_NUMEL_FLAT else "foreach")
        self._apply(group, params, fg.run_views(fg.grad, runs),
                    fg.run_views(fg.state["momentum"], runs), impl=impl)

    def _apply(self, group, params, grads, bufs, impl=None) -> None:
        """Algorithm 1 on lists of tensors (per-parameter tensors, or one flat buffer)."""
        impl = impl or group["impl"]
        if impl == "fused":
            raise ValueError(
                f"impl='fused' is not available for {type(self).__name__}: torch's fused SGD "
                "uses torch-style momentum, not Algorithm 1; use 'compiled', 'foreach' or None"
            )
        kw = dict(lr=group["lr"], momentum=group["momentum"],
                  l2=0.0 if self.decoupled else group["weight_decay"],
                  decay=decay_per_update(group) if self.decoupled else 0.0,
                  nesterov=group["nesterov"])
        if impl is None:
            if not foreach_ok(params):
                impl = "reference"
            else:
                # torch has no fused Algorithm 1; foreach needs 4 passes over memory, the
                # compiled kernel 1. For tensors large enough that the one-time compilation
                # (~20 s cold, ~5 s with Inductor's disk cache) pays off, use the kernel.
                big = [i for i, p in enumerate(params) if p.numel() >= COMPILE_MIN_NUMEL]
                if big and _compiled.available():
                    self._apply(group, *([x[i] for i in big] for x in (params, grads, bufs)),
                                impl="compiled")
                    bigset = set(big)
                    small = [i for i in range(len(params)) if i not in bigset]
                    params, grads, bufs = ([x[i] for i in small] for x in (params, grads, bufs))
                    if not params:
                        return
                impl = "foreach"
        if impl == "compiled":
            # tensors the compiled kernel cannot take (compilation unavailable, warned once;
            # non-contiguous) get the foreach kernel, each tensor updated exactly once
            rest = [i for i, (p, g, m) in enumerate(zip(params, grads, bufs))
                    if not _compiled.sgd_update(p, g, m, **kw)]
            if not rest:
                return
            params, grads, bufs = ([x[i] for i in rest] for x in (params, grads, bufs))
            impl = "foreach"
        if impl == "reference":
            for p, g, m in zip(params, grads, bufs):
                _reference.sgd_step(p, g, m, lr_t=kw["lr"], momentum=kw["momentum"],
                                    l2=kw["l2"], decay_t=kw["decay"], nesterov=kw["nesterov"])
        else:
            _multi_tensor_sgd(params, grads, bufs, **kw)


class SGDW(SGD):
    r"""SGD with momentum and **decoupled weight decay** (SGDW, Algorithm 1).

    Per update: ``theta_t = theta_{t-1} - m_t - d_t * theta_{t-1}`` where the decay
    ``d_t = eta_t * lambda`` by default (``decay_convention="schedule"``, the paper's: lambda
    is **not** multiplied by alpha), ``lr_t * lambda`` with ``"lr"`` (torch's convention) or
    ``lambda`` with ``"constant"``. See :class:`SGD` for the arguments.

    Example:
        >>> opt = weightdecay.SGDW(model.parameters(), lr=0.1, weight_decay=1e-4)
    """

    decoupled = True


@torch.no_grad()
def _multi_tensor_sgd(params, grads, bufs, *, lr, momentum, l2, decay, nesterov) -> None:
    """Algorithm 1 with foreach kernels; at most one parameter-sized temporary per tensor."""
    if l2 != 0:
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
    if decay != 0:
        torch._foreach_add_(params, params, alpha=-decay)  # decay theta_{t-1} (step precomputed)
    torch._foreach_sub_(params, step)

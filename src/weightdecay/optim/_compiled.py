"""Single-pass update kernels compiled with ``torch.compile`` (Inductor).

Each kernel reads every state tensor once and writes it once: SGD/SGDW moves 20 bytes per
float32 parameter (read theta, g, m; write theta, m), Adam/AdamW 28 (+8 with AMSGrad).
Hyperparameters are passed as 0-d tensors so that a changing eta_t never recompiles, and
shapes are dynamic so one compiled kernel serves every size. Compilation happens once per
process on first use and is cached on disk by Inductor (warm starts reuse it).

If compilation is unavailable (no C++ compiler, an unsupported device), ``available()`` is
False after the first failure and callers fall back to the foreach kernels.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch

_FAILED: list[BaseException] = []


# Every kernel computes all its outputs first and writes them back (copy_) at the end:
# Inductor then emits one parallel, vectorized loop; a copy_ in the middle of the
# computation was measured to cost a second, serial pass.


def _sgd(p, g, m, lr, momentum, l2, decay, nesterov: bool):
    g = g + l2 * p  # g_t (+ lambda*theta_{t-1} for SGD with L2)
    m_new = momentum * m + lr * g  # m_t = beta1*m_{t-1} + eta_t*alpha*g_t
    step = momentum * m_new + lr * g if nesterov else m_new
    p_new = p - (step + decay * p)  # theta_t = theta_{t-1} - m_t (- eta_t*lambda*theta_{t-1})
    m.copy_(m_new)
    p.copy_(p_new)


def _adam(p, g, m, v, vmax, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, l2,
          decay, bias1, bias2_sqrt, amsgrad: bool):
    g = g + l2 * p
    m_new = beta1 * m + one_minus_beta1 * g  # (1 - beta) computed in float64 by the caller
    v_new = beta2 * v + one_minus_beta2 * g * g
    v_used = torch.maximum(vmax, v_new) if amsgrad else v_new
    denom = v_used.sqrt() / bias2_sqrt + eps  # sqrt(v_hat_t) + eps
    p_new = p - (lr / bias1 * m_new / denom + decay * p)
    m.copy_(m_new)
    v.copy_(v_new)
    if amsgrad:
        vmax.copy_(v_used)
    p.copy_(p_new)


@functools.cache
def _compiled(name: str):
    fn = {"sgd": _sgd, "adam": _adam}[name]
    # cpp.dynamic_threads: with dynamic shapes Inductor decides at compile time whether the
    # loop is parallel, from the size of the first call; a graph first compiled for a small
    # tensor then runs serially on every later size (measured: 1.8x slower at 1e6-1e7 on 2
    # threads). Dynamic threads always emit the parallel loop and let OpenMP size it per call.
    return torch.compile(fn, dynamic=True, fullgraph=True,
                         options={"cpp.dynamic_threads": True})


def available() -> bool:
    return not _FAILED


def _scalars(device, dtype, *values):
    # one small host->device copy per step; 0-d tensors keep the graph free of constants
    t = torch.tensor(values, dtype=torch.float64).to(device=device, dtype=dtype)
    return t.unbind()


def _run(name, *args, **kwargs) -> bool:
    if _FAILED or not all(a.is_contiguous() for a in args if isinstance(a, torch.Tensor)):
        return False
    # one rank for every tensor: dynamic shapes then serve all sizes with one graph
    # (dynamo specializes on rank, and would recompile per parameter shape otherwise)
    # (detached after the view: plain aliases without ``_base`` or requires_grad, on which
    # dynamo would otherwise guard, compiling one graph per base rank and per grad mode)
    args = tuple(a.view(-1).detach() if isinstance(a, torch.Tensor) and a.dim() > 0 else a
                 for a in args)
    try:
        _compiled(name)(*args, **kwargs)
        return True
    except Exception as exc:  # compilation unavailable here: remember, warn once, fall back
        _FAILED.append(exc)
        warnings.warn(f"weightdecay: torch.compile kernel unavailable ({type(exc).__name__}: "
                      f"{exc}); falling back to foreach kernels", RuntimeWarning, stacklevel=3)
        return False


@torch.no_grad()
def sgd_update(p, g, m, *, lr, momentum, l2, decay, nesterov) -> bool:
    """One SGD/SGDW update of one (flat) tensor in place; False if compilation failed."""
    s = _scalars(p.device, torch.float32 if p.dtype != torch.float64 else torch.float64,
                 lr, momentum, l2, decay)
    return _run("sgd", p, g, m, *s, bool(nesterov))


@torch.no_grad()
def adam_update(p, g, m, v, vmax, *, step, lr, beta1, beta2, eps, l2, decay) -> bool:
    """One Adam/AdamW(/AMSGrad when vmax is given) update in place; False on failure."""
    s = _scalars(p.device, torch.float32 if p.dtype != torch.float64 else torch.float64,
                 lr, beta1, 1 - beta1, beta2, 1 - beta2, eps, l2, decay, 1 - beta1**step,
                 math.sqrt(1 - beta2**step))
    amsgrad = vmax is not None
    return _run("adam", p, g, m, v, vmax if amsgrad else v, *s, amsgrad)

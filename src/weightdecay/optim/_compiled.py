"""Single-pass update kernels compiled with ``torch.compile`` (Inductor).

Each kernel reads every state tensor once and writes it once: SGD/SGDW moves 20 bytes per
float32 parameter (read theta, g, m; write theta, m), Adam/AdamW 28 (+8 with AMSGrad).
Hyperparameters are passed as 0-d tensors so that a changing eta_t never recompiles, and
shapes are dynamic so one compiled kernel serves every size. Compilation happens once per
process on first use and is cached on disk by Inductor (warm starts reuse it).

Compilation is tried at first use on scratch tensors (:func:`available`), before any kernel
writes to a parameter: where it fails (no C++ compiler, an unsupported device) the planning
function gives those tensors the foreach kernels, with a warning once per kernel, device and
dtype. An error raised while a compiled kernel runs (out of memory, a bug) propagates: a
kernel that stopped half-way must not have its update applied a second time by a fallback.
"""

from __future__ import annotations

import functools
import math
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

# (kernel, flags, device, dtype) -> True (compiled here) or the exception compilation raised
_STATUS: dict[tuple, object] = {}


# Every kernel computes all its outputs first and writes them back (copy_) at the end:
# Inductor then emits one parallel, vectorized loop; a copy_ in the middle of the
# computation was measured to cost a second, serial pass.


def _sgd(p, g, m, lr, momentum, l2, decay, l1, l1_decay, nesterov: bool, cautious: bool,
         use_l1: bool):
    g = g + l2 * p  # Alg. 1, line 6: g_t (+ lambda*theta_{t-1} for SGD with L2)
    if use_l1:  # coupled L1 (l1 > 0 for SGD, 0 for SGDW)
        g = g + l1 * torch.sign(p)
    m_new = momentum * m + lr * g  # line 8: m_t = beta1*m_{t-1} + eta_t*alpha*g_t
    step = momentum * m_new + lr * g if nesterov else m_new
    # line 9: theta_t = theta_{t-1} - m_t (- eta_t*lambda*theta_{t-1})
    moved = p - step
    if cautious:  # decay only where the step and theta_{t-1} have the same sign
        p_new = torch.where(step * p >= 0, moved - decay * p, moved)
    else:
        p_new = moved - decay * p
    if use_l1:  # decoupled L1 (SGDW): soft-threshold, theta - clamp(theta, -d, d)
        p_new = p_new - torch.clamp(p_new, -l1_decay, l1_decay)
    m.copy_(m_new)
    p.copy_(p_new)


def _adam(p, g, m, v, vmax, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
          l2, decay, inv_bias2_sqrt, l1, l1_decay, amsgrad: bool, cautious: bool,
          use_l1: bool):
    g = g + l2 * p  # Alg. 2, line 6
    if use_l1:  # coupled L1 (l1 > 0 for Adam, 0 for AdamW)
        g = g + l1 * torch.sign(p)
    m_new = beta1 * m + one_minus_beta1 * g  # line 7 ((1 - beta) computed in float64)
    v_new = beta2 * v + one_minus_beta2 * g * g  # line 8
    v_used = torch.maximum(vmax, v_new) if amsgrad else v_new
    # lines 9-10: sqrt(v_hat_t) + eps, with 1/sqrt(1 - beta2^t) computed in float64 by the
    # caller (a multiplication: a division per element was measured to cost ~5% here)
    denom = v_used.sqrt() * inv_bias2_sqrt + eps
    u = step_size * m_new / denom  # step_size = lr_t / (1 - beta1^t), in float64 by the caller
    moved = p - u  # line 12: theta_{t-1} - eta_t*alpha*m_hat/(sqrt(v_hat)+eps) ...
    if cautious:  # ... - d_t*theta_{t-1} only where the update and theta_{t-1} agree in sign
        p_new = torch.where(u * p >= 0, moved - decay * p, moved)
    else:  # ... - d_t*theta_{t-1}
        p_new = moved - decay * p
    if use_l1:  # decoupled L1 (AdamW): soft-threshold, theta - clamp(theta, -d, d)
        p_new = p_new - torch.clamp(p_new, -l1_decay, l1_decay)
    m.copy_(m_new)
    v.copy_(v_new)
    if amsgrad:
        vmax.copy_(v_used)
    p.copy_(p_new)


_KERNELS: dict[str, Callable[..., None]] = {"sgd": _sgd, "adam": _adam}


@functools.cache
def _compiled(name: str, flags: tuple[bool, ...] = ()):
    # One code object per kernel and combination of flags: dynamo keeps the graphs it compiled
    # per code object, at most torch._dynamo.config.recompile_limit (8) of them, and then runs
    # the function uncompiled; the flags x dtypes x devices of one kernel would exceed that
    # (SGD alone has 8 combinations of flags). A process compiles each combination once.
    fn = _KERNELS[name]
    suffix = "".join("1" if flag else "0" for flag in flags)
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{suffix}",
                               co_qualname=f"{fn.__qualname__}_{suffix}")
    fn = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    # cpp.dynamic_threads: with dynamic shapes Inductor decides at compile time whether the
    # loop is parallel, from the size of the first call; a graph first compiled for a small
    # tensor then runs serially on every later size (measured: 1.8x slower at 1e6-1e7 on 2
    # threads). Dynamic threads always emit the parallel loop and let OpenMP size it per call.
    options: dict[str, str | int | bool | Callable[..., Any]] = {"cpp.dynamic_threads": True}
    return torch.compile(fn, dynamic=True, fullgraph=True, options=options)


def _scalars(device, dtype, *values):
    # one small host->device copy per step; 0-d tensors keep the graph free of constants
    t = torch.tensor(values, dtype=torch.float64).to(device=device, dtype=dtype)
    return t.unbind()


def _scalar_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


#: tensors the compiled kernels take: at least this many elements (dynamo specializes sizes 0
#: and 1, so smaller tensors would compile a graph of their own), contiguous
MIN_NUMEL = 2


def takes(*tensors: torch.Tensor) -> bool:
    """The compiled kernels can update these tensors (one parameter and its state)."""
    return tensors[0].numel() >= MIN_NUMEL and all(t.is_contiguous() for t in tensors)


def _flat(args):
    # one rank for every tensor: dynamic shapes then serve all sizes with one graph
    # (dynamo specializes on rank, and would recompile per parameter shape otherwise)
    # (detached after the view: plain aliases without ``_base`` or requires_grad, on which
    # dynamo would otherwise guard, compiling one graph per base rank and per grad mode)
    return tuple(a.view(-1).detach() if isinstance(a, torch.Tensor) and a.dim() > 0 else a
                 for a in args)


def available(name: str, device: torch.device, dtype: torch.dtype, **flags) -> bool:
    """Whether kernel ``name`` (with these flags) runs on ``device``/``dtype``: compiled at the
    first call, on scratch tensors, so that a compilation failure never meets a parameter."""
    key = (name, tuple(sorted(flags.items())), device, dtype)
    status = _STATUS.get(key)
    if status is None:
        scratch = [torch.zeros(16, device=device, dtype=dtype) for _ in range(5)]
        try:
            with torch.no_grad():
                if name == "sgd":
                    switches = (flags["nesterov"], flags["cautious"], flags["use_l1"])
                    _compiled(name, switches)(
                        *_flat(scratch[:3]),
                        *_scalars(device, _scalar_dtype(dtype), 0, 0, 0, 0, 0, 0), *switches)
                else:
                    switches = (flags["amsgrad"], flags["cautious"], flags["use_l1"])
                    _compiled(name, switches)(*_flat(scratch), *_scalars(
                        device, _scalar_dtype(dtype), 0, 0.9, 0.1, 0.9, 0.1, 1, 0, 0, 1, 0, 0),
                        *switches)
            status = True
        except Exception as exc:  # compilation unavailable here: fall back, warn once
            status = exc
            warnings.warn(f"weightdecay: torch.compile kernel {name!r} unavailable on {device} "
                          f"for {dtype} ({type(exc).__name__}: {exc}); those tensors use the "
                          "foreach kernels", RuntimeWarning, stacklevel=4)
        _STATUS[key] = status
    return status is True


@torch.no_grad()
def sgd_update(p, g, m, *, lr, momentum, l2, decay, nesterov, cautious=False, l1=0.0,
               l1_decay=0.0, use_l1=False) -> None:
    """One SGD/SGDW update of one (flat) tensor in place (see :func:`available`; the flags
    nesterov, cautious and use_l1 are the ones planned)."""
    s = _scalars(p.device, _scalar_dtype(p.dtype), lr, momentum, l2, decay, l1, l1_decay)
    switches = (bool(nesterov), bool(cautious), bool(use_l1))
    _compiled("sgd", switches)(*_flat((p, g, m)), *s, *switches)


@torch.no_grad()
def adam_update(p, g, m, v, vmax, *, step, lr, beta1, beta2, eps, l2, decay,
                cautious=False, l1=0.0, l1_decay=0.0, use_l1=False) -> None:
    """One Adam/AdamW(/AMSGrad when vmax is given) update in place; ``step`` = t >= 1."""
    s = _scalars(p.device, _scalar_dtype(p.dtype), lr / (1 - beta1**step), beta1, 1 - beta1,
                 beta2, 1 - beta2, eps, l2, decay, 1 / math.sqrt(1 - beta2**step), l1, l1_decay)
    amsgrad = vmax is not None
    switches = (amsgrad, bool(cautious), bool(use_l1))
    _compiled("adam", switches)(*_flat((p, g, m, v, vmax if amsgrad else v)), *s, *switches)


# -- inside the user's torch.compile -----------------------------------------------------------
# While a training step is being traced (torch.compiler.is_compiling()), the planning function
# gives every tensor the compiled kernel, and the kernels below run the single-pass functions
# as plain Python: the user's compilation traces them into its own graph. The update counts stay
# tensors (no .item(), which would break the graph) and the bias corrections are computed from
# them in float64, as the eager kernels compute them in Python floats.


def traced_sgd(tensors, hp: dict) -> None:
    """SGD/SGDW on each tensor of ``[params, grads, momentum buffers]``, traceable."""
    for p, g, m in zip(*tensors):
        _sgd(p, g, m, hp["lr"], hp["momentum"], hp["l2"], hp["decay"], hp["l1"],
             hp["l1_decay"], bool(hp["nesterov"]), bool(hp["cautious"]), bool(hp["use_l1"]))


def traced_adam(tensors, steps, hp: dict) -> None:
    """Adam/AdamW(/AMSGrad) on each tensor of ``[params, grads, m, v(, vmax)]`` with update
    counts ``steps`` (0-d tensors, already advanced), traceable."""
    amsgrad = bool(hp["amsgrad"])
    beta1, beta2 = hp["beta1"], hp["beta2"]
    vmaxes = tensors[4] if amsgrad else tensors[3]
    for p, g, m, v, vmax, step in zip(*tensors[:4], vmaxes, steps):
        t = step.to(torch.float64)
        step_size = (hp["lr"] / (1 - beta1 ** t)).to(p.dtype)
        inv_bias2_sqrt = (1 - beta2 ** t).rsqrt().to(p.dtype)
        _adam(p, g, m, v, vmax, step_size, beta1, 1 - beta1, beta2, 1 - beta2, hp["eps"],
              hp["l2"], hp["decay"], inv_bias2_sqrt, hp["l1"], hp["l1_decay"], amsgrad,
              bool(hp["cautious"]), bool(hp["use_l1"]))

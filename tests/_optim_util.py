"""Helpers shared by the optimizer tests: the implementation table (derived from the classes,
as torch's OptimizerInfo derives ``supported_impls``), the case table, a restart schedule,
gradient streams, drivers."""

from __future__ import annotations

import math

import pytest
import torch

import weightdecay as wd

#: every optimizer class of the library (the wrapper is tested on its own)
OPTIMIZERS = [wd.SGD, wd.SGDW, wd.Adam, wd.AdamW]


def impls(cls, *, auto: bool = True) -> list[str | None]:
    """The implementations ``cls`` offers: ``None`` (planned per tensor) and the names of its
    kernel table, ``cls._KERNELS`` (a kernel added there is tested everywhere this is used)."""
    return ([None] if auto else []) + list(cls._KERNELS)


#: class -> its implementations, None first
IMPLS = {cls: impls(cls) for cls in OPTIMIZERS}


def marks(impl) -> tuple:
    """pytest marks of a test running ``impl``: the compiled kernel calls torch.compile
    (``@pytest.mark.compile``: left out by ``pytest -m "not compile"``)."""
    return (pytest.mark.compile,) if impl == "compiled" else ()


def impl_param(*values, impl, id: str | None = None):
    """``pytest.param(*values)`` marked for ``impl`` (see :func:`marks`)."""
    return pytest.param(*values, marks=marks(impl), id=id)


SHAPES = [(7, 5), (13,), (3, 4, 2), (1,)]

#: the optimizer configurations every path is tested on: (class, constructor kwargs)
SGD_CASES = [
    (wd.SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    (wd.SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True)),
    (wd.SGD, dict(lr=0.05, momentum=0.0, weight_decay=1e-2)),
    (wd.SGDW, dict(lr=0.05, momentum=0.9, weight_decay=5e-3)),
    (wd.SGDW, dict(lr=0.05, momentum=0.9, weight_decay=5e-3, nesterov=True)),
    (wd.SGDW, dict(lr=0.05, momentum=0.0, weight_decay=5e-3)),
    (wd.SGDW, dict(lr=0.05, weight_decay=5e-2, decay_convention="lr")),
    (wd.SGDW, dict(lr=0.05, weight_decay=5e-2, decay_convention="lr", nesterov=True)),
    (wd.SGDW, dict(lr=0.05, weight_decay=5e-3, decay_convention="constant")),
    (wd.SGDW, dict(lr=0.05, weight_decay=5e-2, decay_convention="corrected", nesterov=True)),
    (wd.SGDW, dict(lr=0.05, weight_decay=5e-2, cautious=True)),
    (wd.SGDW, dict(lr=0.05, weight_decay=5e-2, cautious=True, nesterov=True,
                   decay_convention="lr")),
    (wd.SGDW, dict(lr=0.05, weight_decay=5e-3, cautious=True, decay_convention="constant",
                   momentum=0.0)),
    (wd.SGD, dict(lr=0.05, weight_decay=1e-2, l1=1e-2, nesterov=True)),
    (wd.SGD, dict(lr=0.05, weight_decay=0.0, l1=1e-2, momentum=0.0)),
    (wd.SGDW, dict(lr=0.05, weight_decay=5e-3, l1=5e-3)),
    (wd.SGDW, dict(lr=0.05, weight_decay=5e-3, l1=2e-2, nesterov=True, cautious=True,
                   decay_convention="corrected")),
]
ADAM_CASES = [
    (wd.Adam, dict(lr=1e-2, weight_decay=1e-2)),
    (wd.Adam, dict(lr=1e-2, weight_decay=1e-2, amsgrad=True)),
    (wd.AdamW, dict(lr=1e-2, weight_decay=2.5e-2)),
    (wd.AdamW, dict(lr=1e-2, weight_decay=2.5e-2, amsgrad=True)),
    (wd.AdamW, dict(lr=1e-2, weight_decay=1.0, decay_convention="lr")),
    (wd.AdamW, dict(lr=1e-2, weight_decay=1e-3, decay_convention="constant")),
    (wd.AdamW, dict(lr=1e-2, weight_decay=1.0, decay_convention="corrected")),
    (wd.AdamW, dict(lr=1e-2, weight_decay=1.0, decay_convention="corrected", amsgrad=True)),
    (wd.AdamW, dict(lr=1e-2, weight_decay=5e-2, cautious=True)),
    (wd.AdamW, dict(lr=1e-2, weight_decay=5e-2, cautious=True, amsgrad=True,
                    decay_convention="corrected")),
    (wd.AdamW, dict(lr=1e-2, weight_decay=1e-3, cautious=True, decay_convention="constant")),
    (wd.Adam, dict(lr=1e-2, weight_decay=1e-2, l1=1e-3)),
    (wd.Adam, dict(lr=1e-2, l1=1e-3, amsgrad=True)),
    (wd.AdamW, dict(lr=1e-2, weight_decay=2.5e-2, l1=2e-3)),
    (wd.AdamW, dict(lr=1e-2, weight_decay=1.0, l1=0.5, decay_convention="lr", amsgrad=True,
                    cautious=True)),
    (wd.AdamW, dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-6, weight_decay=1e-2)),
]
CASES = SGD_CASES + ADAM_CASES


def fused_exact(cls, kw) -> bool:
    """torch's fused kernel computes this case (Adam/AdamW without cautious decay or L1)."""
    return "fused" in cls._KERNELS and not kw.get("cautious") and not kw.get("l1")


def supports(cls, kw, impl) -> bool:
    """``cls(**kw, impl=impl)`` runs (fused only where it is exact; else it is refused)."""
    return impl != "fused" or fused_exact(cls, kw)


def case_id(cls, kw) -> str:
    extra = ",".join(f"{k}={v}" for k, v in kw.items() if k != "lr")
    return f"{cls.__name__}({extra})"


def eta_restarts(t: int, T_0: int = 20, T_mult: int = 2) -> float:
    """Cosine annealing with warm restarts (SGDR), written out here independently."""
    T_i, start = T_0, 0
    while t >= start + T_i:
        start += T_i
        T_i *= T_mult
    return 0.5 * (1 + math.cos(math.pi * (t - start) / T_i))


def make_params(dtype=torch.float32, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]


def grad_stream(n_steps, seed=1, shapes=SHAPES):
    """Pre-drawn float32 gradients: both precisions see the very same values."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) for s in shapes] for _ in range(n_steps)]


#: 120 updates, warm restarts at 20 and 60: eta_t changes at every update
N_STEPS = 120


def eta_schedule(n_steps: int = N_STEPS) -> list[float]:
    return [eta_restarts(t) for t in range(n_steps)]


def run(opt_factory, params, grads, etas, groups_split=None):
    """Drive an optimizer through the gradient stream, setting group['lr'] = alpha*eta_t."""
    params = [p.clone().requires_grad_(True) for p in params]
    if groups_split is None:
        opt = opt_factory(params)
    else:
        opt = opt_factory([dict(params=params[:groups_split[0]], **groups_split[1]),
                           dict(params=params[groups_split[0]:], **groups_split[2])])
    for step, gs in enumerate(grads):
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * etas[step]
        if getattr(opt, "flat", False):  # gradients go into the attached buffer, as backward
            opt.zero_grad()
            torch.autograd.backward(params, [g.to(p.dtype) for p, g in zip(params, gs)])
        else:
            for p, g in zip(params, gs):
                p.grad = g.to(p.dtype)
        opt.step()
    return [p.detach() for p in params], opt


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def rel_err_all(xs, ys):
    """Relative error of all parameters taken together: ||x - y|| / ||y||."""
    return rel_err(torch.cat([x.flatten() for x in xs]), torch.cat([y.flatten() for y in ys]))

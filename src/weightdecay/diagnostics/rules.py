"""Which equilibrium an optimizer's param group drives a scale-invariant weight to.

:func:`group_rule` reads an optimizer and one of its param groups (at the current update,
so a scheduler's ``lr`` and a changed ``weight_decay`` count) and returns a :class:`Rule`:
the decay per update ``d`` (the effective one for L2 inside a momentum buffer), the momentum
filter, and what the theory of :mod:`weightdecay.diagnostics.theory` predicts from them —
or why it predicts nothing.

=================================  ==============================  =====================
optimizer                          d (decay per update)            momentum b, filter
=================================  ==============================  =====================
``weightdecay.AdamW``              ``decay_per_update(group)``     beta1, Adam
``weightdecay.SGDW``               ``decay_per_update(group)``     momentum, paper form
``weightdecay.SGD`` (L2)           lr_t*lambda/(1-b)               momentum, paper form
``torch.optim.AdamW``              lr_t*lambda                     beta1, Adam
``torch.optim.Adam`` (decoupled)   lr_t*lambda                     beta1, Adam
``torch.optim.SGD`` (L2)           lr_t*lambda*(1-damp)/(1-b)      momentum, torch form
``decoupled_weight_decay(Base)``   ``decay_per_update(group)``     Base = Adam, AdamW,
                                                                   Adamax (beta1),
                                                                   RMSprop, SGD (momentum)
=================================  ==============================  =====================

No prediction (``Rule.reason`` says why): Adam with L2 (and any preconditioned optimizer
whose ``weight_decay`` is L2: the preconditioner rescales the decay per coordinate, the
paper's Prop. 2), cautious or decoupled L1 decay (they change the decay's form), groups
without decay (no equilibrium: the norm grows without bound), and optimizers not listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..optim._base import DecayOptimizer
from ..optim._decay import decay_per_update
from ..optim.adam import Adam as _OurAdam
from ..optim.sgd import SGD as _OurSGD
from ..optim.wrap import _CACHE as _WRAPPED
from . import theory

__all__ = ["Rule", "group_rule"]

ADAM, SGD = "adam", "sgd"


@dataclass(frozen=True)
class Rule:
    """How one param group moves a scale-invariant weight, as the theory needs it.

    Attributes:
        optimizer: a readable name ("AdamW", "torch.optim.SGD", "RMSpropW", ...).
        lr: lr_t, the group's learning rate now.
        eta: eta_t = lr_t / initial_lr, or None without ``initial_lr``.
        decay: d_t, the decay per update (effective, for L2 inside a momentum buffer);
            0.0 when the group is not decayed.
        momentum: b of the update filter (beta1, or the momentum).
        nesterov: Nesterov's look-ahead filter.
        family: ``"adam"`` (normalized steps: the equilibrium norm is
            :func:`~weightdecay.diagnostics.theory.adam_equilibrium_norm`), ``"sgd"``
            (:func:`~weightdecay.diagnostics.theory.sgd_equilibrium_norm`) or None.
        step_sum: S, the total weight a gradient gets in the updates (lr_t for Adam,
            lr_t/(1-b) for SGD with momentum, ...).
        outer_momentum: heavy-ball momentum outside an Adam-like normalization (RMSprop).
        reason: why there is no angular prediction (None when there is one).
        norm_reason: why there is no norm prediction for this family (None: there is one).
    """

    optimizer: str
    lr: float
    eta: float | None
    decay: float
    momentum: float = 0.0
    nesterov: bool = False
    family: str | None = None
    step_sum: float = 0.0
    outer_momentum: float = 0.0
    reason: str | None = None
    norm_reason: str | None = None

    @property
    def angular_update(self) -> float | None:
        """Predicted equilibrium angular update per step (radians), or None (see reason)."""
        if self.reason is not None:
            return None
        return theory.angular_update(self.decay, self.momentum, self.nesterov)

    @property
    def timescale(self) -> float | None:
        """1/(2d) updates, or None without decay."""
        return None if self.decay <= 0 else theory.equilibrium_timescale(self.decay)

    def equilibrium_norm(self, numel: int, grad_scale: float | None) -> float | None:
        """Predicted equilibrium norm of a scale-invariant tensor of ``numel`` elements;
        ``grad_scale`` = ||g|| * ||theta|| (needed by SGD). None where there is none.
        (:func:`~weightdecay.diagnostics.theory.adam_equilibrium_norm` and
        :func:`~weightdecay.diagnostics.theory.sgd_equilibrium_norm`, inlined: this runs for
        every tensor at every measured update, on values already checked.)"""
        if self.norm_problem(grad_scale) is not None:
            return None
        if self.family == ADAM:  # S * sqrt(C / (2d)), S = lr / (1 - outer momentum)
            return self.step_sum * math.sqrt(numel / (2.0 * self.decay))
        assert grad_scale is not None  # (S^2 G^2 / (2d))^(1/4)
        return math.sqrt(self.step_sum * grad_scale / math.sqrt(2.0 * self.decay))

    def norm_problem(self, grad_scale: float | None) -> str | None:
        """Why :meth:`equilibrium_norm` is None (None when it is a number)."""
        if self.reason is not None:
            return self.reason
        if self.norm_reason is not None:
            return self.norm_reason
        if self.family == SGD and (grad_scale is None or not math.isfinite(grad_scale)):
            return "the SGD equilibrium norm needs the gradient norm, not measured here"
        return None

    @property
    def max_abs_bound(self) -> float | None:
        """Xie & Li's box lr_t/d_t for Adam-like decoupled decay, else None."""
        if self.reason is not None or self.family != ADAM or self.outer_momentum != 0:
            return None
        return self.lr / self.decay  # theory.adamw_max_abs_bound


def _eta(group: dict, lr: float) -> float | None:
    initial = group.get("initial_lr")
    if initial is None:
        return None
    initial = float(initial)
    return lr / initial if initial > 0 else None


def _no_decay(name: str, lr: float, eta: float | None) -> Rule:
    return Rule(name, lr, eta, 0.0, reason="not decayed (weight_decay = 0): a "
                "scale-invariant weight's norm grows without bound, there is no equilibrium")


def _sgd_filter(group: dict, lr: float, torch_form: bool) -> tuple[float, bool, float]:
    """(momentum b, nesterov, S) of SGD with momentum in the paper's or torch's form."""
    b = float(group.get("momentum", 0.0))
    nesterov = bool(group.get("nesterov", False))
    damp = float(group.get("dampening", 0.0)) if torch_form and b > 0 else 0.0
    return b, nesterov, lr * (1.0 - damp) / (1.0 - b)


def group_rule(optimizer: torch.optim.Optimizer, group: dict) -> Rule:
    """The :class:`Rule` of ``group`` (one of ``optimizer.param_groups``) at this update."""
    rule = _rule(optimizer, group)
    if rule.reason is None and not rule.decay > 0:  # decayed, but not at this update (lr_t = 0)
        return Rule(rule.optimizer, rule.lr, rule.eta, 0.0, reason="no decay at this update "
                    "(d_t = 0): there is no equilibrium to predict")
    return rule


def _rule(optimizer: torch.optim.Optimizer, group: dict) -> Rule:
    lr = float(group["lr"])
    eta = _eta(group, lr)
    if isinstance(optimizer, DecayOptimizer):
        return _ours(optimizer, group, lr, eta)
    for cls in type(optimizer).__mro__:
        for base, wrapped in _WRAPPED.items():
            if cls is wrapped:
                return _wrapped(base, group, lr, eta)
    name = f"torch.optim.{type(optimizer).__name__}"
    lam = float(group.get("weight_decay", 0.0))
    if isinstance(optimizer, torch.optim.SGD):
        if lam == 0:
            return _no_decay(name, lr, eta)
        b, nesterov, S = _sgd_filter(group, lr, torch_form=True)
        d = theory.l2_momentum_decay(lr, lam, b, float(group.get("dampening", 0.0))
                                     if b > 0 else 0.0)
        return Rule(name, lr, eta, d, b, nesterov, SGD, S)
    if isinstance(optimizer, torch.optim.Adam):  # torch.optim.AdamW is Adam(decoupled=True)
        if lam == 0:
            return _no_decay(name, lr, eta)
        if not group.get("decoupled_weight_decay", False):
            return Rule(name, lr, eta, 0.0, reason=_L2_ADAM)
        return Rule(name, lr, eta, lr * lam, float(group["betas"][0]), False, ADAM, lr)
    if lam == 0:
        return _no_decay(name, lr, eta)
    return Rule(name, lr, eta, 0.0, reason=f"no closed form here for {name}: the monitor "
                "predicts for the library's optimizers, torch's SGD and AdamW, and "
                "decoupled_weight_decay over Adam, AdamW, Adamax, RMSprop and SGD")


_L2_ADAM = ("Adam with L2: the decay passes through the preconditioner, which rescales it "
            "per coordinate (the paper's Prop. 2), so no closed-form equilibrium exists; use "
            "AdamW")


def _ours(optimizer: DecayOptimizer, group: dict, lr: float, eta: float | None) -> Rule:
    name = type(optimizer).__name__
    lam = float(group["weight_decay"])
    decoupled = type(optimizer).decoupled
    if lam == 0 and float(group.get("l1", 0.0)) == 0:
        return _no_decay(name, lr, eta)
    if float(group.get("l1", 0.0)) != 0:
        return Rule(name, lr, eta, 0.0, reason="L1 decay: the soft-threshold (or sign term) "
                    "is not a multiple of theta, no closed form here")
    if group.get("cautious", False):
        return Rule(name, lr, eta, 0.0, reason="cautious decay: the mask changes the decay "
                    "per coordinate, no closed form here")
    if isinstance(optimizer, _OurAdam):
        if not decoupled:
            return Rule(name, lr, eta, 0.0, reason=_L2_ADAM)
        return Rule(name, lr, eta, decay_per_update(group), float(group["betas"][0]), False,
                    ADAM, lr)
    if isinstance(optimizer, _OurSGD):
        b, nesterov, S = _sgd_filter(group, lr, torch_form=False)
        # L2 in the paper's form: lambda*theta enters m_t scaled by lr_t, the decay is
        # lr_t*lambda/(1-b) per update once the buffer has filled
        d = decay_per_update(group) if decoupled else theory.l2_momentum_decay(lr, lam, b)
        return Rule(name, lr, eta, d, b, nesterov, SGD, S)
    return Rule(name, lr, eta, 0.0, reason=f"no closed form here for {name}")


def _wrapped(base: type, group: dict, lr: float, eta: float | None) -> Rule:
    name = f"{base.__name__}W"
    d = decay_per_update(group)
    if d == 0:
        return _no_decay(name, lr, eta)
    if base in (torch.optim.Adam, torch.optim.AdamW):
        return Rule(name, lr, eta, d, float(group["betas"][0]), False, ADAM, lr)
    if base is torch.optim.Adamax:
        return Rule(name, lr, eta, d, float(group["betas"][0]), False, ADAM, lr,
                    norm_reason="Adamax normalizes by the running maximum of |g|, not by "
                    "sqrt(v): its norm balance has no closed form here")
    if base is torch.optim.RMSprop:
        mu = float(group.get("momentum", 0.0))
        return Rule(name, lr, eta, d, mu, False, ADAM, lr / (1.0 - mu), outer_momentum=mu)
    if base is torch.optim.SGD:
        b, nesterov, S = _sgd_filter(group, lr, torch_form=True)
        return Rule(name, lr, eta, d, b, nesterov, SGD, S)
    return Rule(name, lr, eta, d, reason=f"no closed form here for {name} (the wrapper over "
                f"{base.__name__}): predictions cover Adam, AdamW, Adamax, RMSprop and SGD")

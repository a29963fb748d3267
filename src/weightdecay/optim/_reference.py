"""Algorithms 1 and 2 of Loshchilov & Hutter (ICLR 2019), literally, one tensor at a time.

These functions are the readable reference: every line mirrors a line of the paper's
pseudocode ("Alg. 1, line 8" in the comments: the line numbers of the paper's Algorithms 1
and 2). They are the ``impl="reference"`` path of the
optimizers and, run in float64, the oracle that every fast path is tested against.

Conventions: ``lr_t = alpha * eta_t`` is the scheduled learning rate, ``decay_t`` the factor
multiplying theta_{t-1} in the decoupled decay (eta_t * lambda for the paper's convention,
see ``_decay.py``), ``l2`` the coefficient added to the gradient (SGD/Adam with L2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def decay_factor(convention: str, lam: float, lr_t: float, lr_max: float) -> float:
    """d_t, the factor of the decoupled decay theta_{t-1} <- theta_{t-1} - d_t*theta_{t-1},
    for each ``decay_convention``, written out (eta_t = lr_t / lr_max, lr_max = initial_lr)."""
    if lam == 0:
        return 0.0
    if lr_t == 0:  # eta_t = 0: no step, no decay (see _decay.eta)
        return lam if convention == "constant" else 0.0
    if lr_max == 0 and convention in ("schedule", "corrected"):
        raise ValueError(f"eta_t = lr_t / lr_max is undefined at lr_t = {lr_t!r}, lr_max = 0")
    eta_t = lr_t / lr_max if lr_max != 0 else math.nan
    if convention == "schedule":  # the paper: eta_t * lambda (Alg. 2, line 12)
        return eta_t * lam
    if convention == "lr":  # torch: lr_t * lambda = alpha * eta_t * lambda
        return lr_t * lam
    if convention == "corrected":  # AdamC: lr_t * (lr_t / lr_max) * lambda
        return lr_t * (lr_t / lr_max) * lam
    if convention == "constant":  # lambda, scheduled by the user
        return lam
    raise ValueError(f"unknown decay_convention {convention!r}")


@torch.no_grad()
def sgd_step(
    theta: Tensor,
    grad: Tensor,
    m: Tensor,
    *,
    lr_t: float,
    momentum: float,
    l2: float,
    decay_t: float,
    nesterov: bool,
    cautious: bool = False,
    l1: float = 0.0,
    l1_decay_t: float = 0.0,
) -> None:
    """Algorithm 1 (SGD with momentum; L2 when ``l2 > 0``, SGDW when ``decay_t > 0``).

    ``m`` holds the paper's m_{t-1} (the step size lives inside the buffer) and is updated
    in place to m_t; ``theta`` is updated in place to theta_t. ``cautious``: decay only where
    the update u_t (the step subtracted) and theta_{t-1} have the same sign (arXiv
    2510.12402): theta_t = theta_{t-1} - u_t - d_t * 1[u_t * theta_{t-1} >= 0] * theta_{t-1}.
    L1: ``l1`` adds l1 * sign(theta_{t-1}) to the gradient (coupled, SGD); ``l1_decay_t``
    soft-thresholds theta_t after the update (decoupled, SGDW): see :func:`soft_threshold`.
    """
    g = grad + l2 * theta  # Alg. 1, line 6: g_t = grad f_t(theta_{t-1}) (+ lambda*theta_{t-1})
    g = g + l1 * torch.sign(theta)  # coupled L1: + lambda_1 * sign(theta_{t-1})
    # line 7: eta_t = SetScheduleMultiplier(t), folded into lr_t = eta_t * alpha
    m.mul_(momentum).add_(lr_t * g)  # line 8: m_t = beta1*m_{t-1} + eta_t*alpha*g_t
    step = momentum * m + lr_t * g if nesterov else m  # Nesterov look-ahead (torch's form)
    mask = (step * theta >= 0).to(theta.dtype) if cautious else 1.0  # cautious decay
    # line 9: theta_t = theta_{t-1} - m_t (- eta_t*lambda*theta_{t-1}: SGDW, uses theta_{t-1})
    theta.sub_(step + decay_t * mask * theta)
    soft_threshold(theta, l1_decay_t)  # decoupled L1: a proximal step after the update


@torch.no_grad()
def adam_step(
    theta: Tensor,
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    v_max: Tensor | None,
    *,
    t: int,
    lr_t: float,
    beta1: float,
    beta2: float,
    eps: float,
    l2: float,
    decay_t: float,
    cautious: bool = False,
    l1: float = 0.0,
    l1_decay_t: float = 0.0,
) -> None:
    """Algorithm 2 (Adam; L2 when ``l2 > 0``, AdamW when ``decay_t > 0``), update count t >= 1.

    AMSGrad when ``v_max`` is given: the running maximum of v_t replaces v_t before bias
    correction (the form torch uses, so that the fused kernels agree with it).
    ``cautious``: decay only where u_t = lr_t * m_hat / (sqrt(v_hat) + eps), the step
    subtracted, and theta_{t-1} have the same sign (see :func:`sgd_step`). L1: ``l1`` is
    added to the gradient as l1 * sign(theta_{t-1}) (Adam), ``l1_decay_t`` soft-thresholds
    theta_t after the update (AdamW).
    """
    g = grad + l2 * theta  # Alg. 2, line 6: g_t (+ lambda*theta_{t-1}: Adam with L2)
    g = g + l1 * torch.sign(theta)  # coupled L1: + lambda_1 * sign(theta_{t-1})
    m.mul_(beta1).add_((1 - beta1) * g)  # line 7: m_t = beta1*m_{t-1} + (1-beta1)*g_t
    v.mul_(beta2).add_((1 - beta2) * g * g)  # line 8: v_t = beta2*v_{t-1} + (1-beta2)*g_t^2
    if v_max is not None:
        torch.maximum(v_max, v, out=v_max)  # AMSGrad: v_t <- max(v_max, v_t)
        v_used = v_max
    else:
        v_used = v
    m_hat = m / (1 - beta1**t)  # line 9: m_hat_t = m_t / (1 - beta1^t)
    v_hat = v_used / (1 - beta2**t)  # line 10: v_hat_t = v_t / (1 - beta2^t)
    # line 11: eta_t, folded into lr_t = eta_t*alpha and decay_t = eta_t*lambda
    # line 12: theta_t = theta_{t-1} - eta_t*(alpha*m_hat/(sqrt(v_hat)+eps) + lambda*theta_{t-1})
    u = lr_t * m_hat / (v_hat.sqrt() + eps)
    mask = (u * theta >= 0).to(theta.dtype) if cautious else 1.0  # cautious decay
    theta.sub_(u + decay_t * mask * theta)
    soft_threshold(theta, l1_decay_t)  # decoupled L1: a proximal step after the update


@torch.no_grad()
def soft_threshold(theta: Tensor, d: float) -> None:
    """The proximal step of d * ||theta||_1, in place: theta <- sign(theta) * max(|theta| - d, 0)
    (weights within d of zero become exactly zero)."""
    if d != 0:
        theta.copy_(torch.sign(theta) * torch.clamp(theta.abs() - d, min=0))

"""What weight decay does to a scale-invariant weight: the equilibrium formulas.

A weight is *scale-invariant* when the loss does not change if it is multiplied by c > 0
(a convolution followed by BatchNorm). Its gradient is then orthogonal to it and scales as
1/||theta||, so the gradient steps only rotate it and lengthen it, and the decay only
shortens it. The two balance: the norm settles where the growth from the steps equals the
shrinkage from the decay, and from then on every update turns the weight by a fixed expected
angle. Every formula here holds at that equilibrium, in the random-walk regime its sources
assume (successive gradients uncorrelated, a stationary learning rate and preconditioner),
to first order in the decay per update d.

Notation (all per update): ``d`` the factor of the decay theta <- theta - d*theta (the
*effective* one when the decay passes through a momentum buffer, see below), ``b`` the
momentum of the update filter, ``lr`` the learning rate lr_t = alpha*eta_t.

**The derivation, for any linear momentum filter.** Let the update that the gradients make
be u_t = sum_k h_k s_{t-k}, where s_t is the (preconditioned) gradient of update t and h_k
the weight it gets k updates later (SGD in the paper's form: h_k = lr*b^k; torch's SGD:
h_k = lr*(1-dampening)*b^k; Adam: h_k = lr*(1-beta1)*beta1^k with s_t = g_t/sqrt(v_t)).
Then theta_t = (1-d)*theta_{t-1} - u_t, and with E<s_t, s_u> = 0 for t != u and s_t
orthogonal to theta_{t-1}, the expected squared norm is stationary when::

    2*d*||theta||^2 = E||s||^2 * (sum_k h_k)^2               (norm balance)

(the cross terms <theta_{t-1}, u_t> complete the square of sum_k h_k). The angular update
per step is ||u_t|| / ||theta||, and E||u_t||^2 = E||s||^2 * sum_k h_k^2, hence::

    r^2 = 2*d * sum_k h_k^2 / (sum_k h_k)^2                   (angular update)

For geometric momentum h_k ~ b^k the ratio is (1-b)/(1+b) (:func:`angular_update`); for
Nesterov's look-ahead (h_0 ~ 1+b, h_k ~ b^(k+1)) it is (1-b)*(1+2b-2b^3)/(1+b)
(:func:`filter_ratio`). The angular update does not depend on the learning rate: only the
decay and the momentum set it. Sources: van Laarhoven 2017 (arXiv 1706.05350) for SGD
without momentum; Wan et al. 2021 (arXiv 2006.08419) for SGD with momentum ("spherical
motion dynamics", their angular update sqrt(2*eta*lambda/(1+beta)) for torch-style SGD);
Kosson, Messmer & Jaggi, ICML 2024 (arXiv 2305.17212, Table 1) for AdamW, Lion and SGDM
("rotational equilibrium", AdamW: sqrt(2*eta*lambda*(1-beta1)/(1+beta1))).

**Where the decay enters.** Decoupled decay (SGDW, AdamW, the ``decoupled_weight_decay``
wrapper) multiplies theta by (1 - d_t) with ``d_t = weightdecay.decay_per_update(group)``
(eta_t*lambda in the paper's convention, lr_t*lambda in torch's). L2 inside SGD's momentum
buffer (the library's ``SGD`` in the paper's form, ``torch.optim.SGD``) decays through the
buffer: at a constant learning rate the buffer holds lr*lambda*theta/(1-b) of decay, so the
effective ``d = lr*lambda*(1-dampening)/(1-b)`` (:func:`l2_momentum_decay`) and
r = sqrt(2*lr*lambda/(1+b)) for dampening 0 — Wan et al.'s formula. L2 inside Adam (or any
preconditioned method) is rescaled per coordinate by 1/sqrt(v): no closed form (the paper's
Prop. 2), and the monitor predicts nothing for it.

Consequences (the paper's convention d = eta_t*lambda, torch's d = alpha*eta_t*lambda):
r does not depend on alpha in the paper's convention and grows as sqrt(alpha) in torch's;
AdamW's equilibrium norm lr*sqrt(C/(2d)) is proportional to alpha in the paper's convention
(alpha only rescales these weights) and to sqrt(alpha) in torch's; with L2 inside SGD the
effective decay is alpha*lambda', which is why the best lambda' of SGD moves as 1/alpha.
"""

from __future__ import annotations

import math

from .._validate import fraction, non_negative, positive

__all__ = [
    "adam_equilibrium_norm",
    "adamw_max_abs_bound",
    "angular_update",
    "equilibrium_gradient_scale",
    "equilibrium_timescale",
    "filter_ratio",
    "l2_momentum_decay",
    "sgd_equilibrium_norm",
]


def filter_ratio(momentum: float, nesterov: bool = False) -> float:
    """``sum_k h_k^2 / (sum_k h_k)^2`` of the momentum filter (see the module docstring).

    Heavy-ball momentum b (h_k ~ b^k; Adam's beta1, SGD's momentum in either form):
    ``(1-b)/(1+b)``. Nesterov's look-ahead (step = b*m_t + lr*g_t, as torch's and the
    library's SGD: h_0 ~ 1+b, h_k ~ b^(k+1)): ``(1-b)*(1+2b-2b^3)/(1+b)``, derived here by
    summing the two geometric series (Kosson et al. treat heavy-ball momentum only).
    """
    b = fraction("momentum", momentum)
    ratio = (1.0 - b) / (1.0 + b)
    return ratio * (1.0 + 2.0 * b - 2.0 * b**3) if nesterov else ratio


def angular_update(decay: float, momentum: float = 0.0, nesterov: bool = False) -> float:
    """Expected angular update per step (radians) of a scale-invariant weight at equilibrium::

        r = sqrt(2 * d * (1 - b) / (1 + b))

    ``decay``: d, the decay per update (the factor of theta; the effective one for L2 inside
    a momentum buffer, :func:`l2_momentum_decay`). ``momentum``: b, beta1 for AdamW, the
    momentum of the paper's Algorithm 1 for SGDW (also torch's). ``nesterov``: the
    look-ahead filter, :func:`filter_ratio`. r is the root mean square of the angle between
    theta_t and theta_{t-1}.

    Sources: van Laarhoven 2017 (arXiv 1706.05350, b = 0: sqrt(2d)); Wan et al. 2021 (arXiv
    2006.08419, SGD with momentum); Kosson, Messmer & Jaggi, ICML 2024 (arXiv 2305.17212,
    Table 1: AdamW sqrt(2*eta*lambda*(1-beta1)/(1+beta1))).

    Example:
        >>> round(angular_update(1e-3, 0.9), 6)   # AdamW, d = eta*lambda = 1e-3
        0.01026
    """
    d = non_negative("decay", decay)
    return math.sqrt(2.0 * d * filter_ratio(momentum, nesterov))


def l2_momentum_decay(lr: float, weight_decay: float, momentum: float = 0.0,
                      dampening: float = 0.0) -> float:
    """Effective decay per update of L2 regularization inside SGD's momentum buffer::

        d = lr * lambda * (1 - dampening) / (1 - b)

    The term lambda*theta enters the buffer with the gradient (the library's ``SGD``: scaled
    by lr_t in the paper's form m_t = b*m_{t-1} + lr_t*(g_t + lambda*theta); torch's SGD:
    buf = b*buf + (1-dampening)*(g + lambda*theta), theta -= lr*buf); at a constant learning
    rate and a slowly moving theta the buffer holds the geometric sum of it. Nesterov's
    look-ahead gives the same d. Then r = sqrt(2*lr*lambda/(1+b)) (dampening 0), the
    formula of Wan et al. 2021 (arXiv 2006.08419) and of Kosson et al. 2024 (arXiv
    2305.17212, Table 1, SGDM).
    """
    lr = non_negative("lr", lr)
    lam = non_negative("weight_decay", weight_decay)
    b = fraction("momentum", momentum)
    damp = non_negative("dampening", dampening)
    return lr * lam * (1.0 - damp) / (1.0 - b)


def adam_equilibrium_norm(lr: float, decay: float, numel: int, momentum: float = 0.0) -> float:
    """Equilibrium norm of a scale-invariant weight under an Adam-like decoupled update::

        ||theta|| = S * sqrt(C / (2 * d)),     S = sum_k h_k

    C is the number of elements (each normalized coordinate g_i/sqrt(v_i) has mean square 1
    when epsilon << sqrt(v)), d the decay per update. AdamW: S = lr (Adam's filter
    (1-beta1)*beta1^k sums to 1, so beta1 does not enter): ``lr*sqrt(C/(2d))``, Kosson et
    al.'s sqrt(eta*C/(2*lambda)) with d = eta*lambda (arXiv 2305.17212, Table 1).
    ``momentum`` is the heavy-ball momentum *outside* the normalization (torch's RMSprop:
    buf = mu*buf + g/sqrt(v), S = lr/(1-mu)); 0 for Adam. Paper's convention (d =
    eta*lambda, lr = eta*alpha): proportional to alpha; torch's (d = lr*lambda):
    sqrt(lr*C/(2*lambda)), proportional to sqrt(alpha).
    """
    lr = non_negative("lr", lr)
    d = positive("decay", decay)
    mu = fraction("momentum", momentum)
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 1:
        raise ValueError(f"numel must be a positive integer, got {numel!r}")
    return lr / (1.0 - mu) * math.sqrt(numel / (2.0 * d))


def sgd_equilibrium_norm(step_sum: float, decay: float, grad_scale: float) -> float:
    """Equilibrium norm of a scale-invariant weight under SGD with momentum::

        ||theta||^4 = S^2 * G^2 / (2 * d),     S = sum_k h_k,   G = ||g|| * ||theta||

    G is the scale-free gradient norm (the gradient of a scale-invariant weight scales as
    1/||theta||, so G does not depend on the norm), ``step_sum`` S the total weight of one
    gradient in the updates: lr/(1-b) for SGD with momentum b in either form (torch's:
    lr*(1-dampening)/(1-b)); d the (effective) decay per update. With torch-style SGD and L2
    (d = lr*lambda/(1-b)) it is (lr*G^2/(2*lambda*(1-b)))^(1/4), Kosson et al.'s SGDM
    equilibrium norm (arXiv 2305.17212, Table 1).
    """
    S = non_negative("step_sum", step_sum)
    d = positive("decay", decay)
    G = non_negative("grad_scale", grad_scale)
    return (S * S * G * G / (2.0 * d)) ** 0.25


def equilibrium_timescale(decay: float) -> float:
    """Updates over which the squared norm relaxes to its equilibrium: ``1 / (2 * d)``.

    The norm balance d||theta||^2/dt = -2*d*||theta||^2 + const relaxes with rate 2*d; the
    equilibrium is reached within a few of these timescales (Kosson et al. 2024, arXiv
    2305.17212). It is half the timescale 1/d of the exponential moving average that
    decoupled decay computes (Wang & Aitchison, arXiv 2405.13698;
    :func:`weightdecay.ema_timescale`). ``inf`` without decay.
    """
    d = non_negative("decay", decay)
    return math.inf if d == 0 else 1.0 / (2.0 * d)


def adamw_max_abs_bound(lr: float, decay: float) -> float:
    """The box ``||theta||_inf <= lr / d`` that AdamW's fixed points satisfy.

    Xie & Li, ICML 2024 (arXiv 2404.04454): AdamW with torch's ``weight_decay`` lambda_t
    converges to KKT points of the loss constrained to ||theta||_inf <= 1/lambda_t; per
    update that is lr_t / d_t (Adam's normalized update is at most about lr_t per coordinate,
    the decay d_t*|theta_i| must balance it). In the paper's convention (lr = eta*alpha,
    d = eta*lambda) the bound is alpha/lambda: the best lambda of a weight that is *not*
    scale-invariant should scale with alpha. ``inf`` without decay.
    """
    lr = non_negative("lr", lr)
    d = non_negative("decay", decay)
    return math.inf if d == 0 else lr / d


def equilibrium_gradient_scale(lr: float, decay: float) -> float:
    """``sqrt(2 * d) / lr``: how a scale-invariant weight's gradient norm scales at equilibrium
    under an Adam-like update (||g|| = G*sqrt(2d)/(lr*sqrt(C)) from the norm balance).

    The ratio of this number at two learning rates is the predicted change of the gradient
    norm if the weights follow the equilibrium (quasi-statically). Paper's and torch's
    conventions (d proportional to eta_t): it grows as sqrt(eta_max/eta_t) when a schedule
    anneals; the corrected convention (d = lr_t*eta_t*lambda) keeps it constant — the
    rationale of AdamC (Defazio 2025, arXiv 2506.02285). In practice the norm lags behind
    the equilibrium when eta_t falls faster than 1/(2d).
    """
    lr = positive("lr", lr)
    d = non_negative("decay", decay)
    return math.sqrt(2.0 * d) / lr

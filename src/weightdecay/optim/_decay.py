"""Weight-decay conventions: what the decay factor lambda is multiplied by at update t.

=============  ====================================  ======================================
name           decay d_t applied per update           who uses it
=============  ====================================  ======================================
"schedule"     eta_t * lambda                         the paper (default; Alg. 1 line 9,
                                                      Alg. 2 line 12), the authors' code,
                                                      Composer's DecoupledAdamW
"lr"           lr_t * lambda = alpha*eta_t*lambda     torch.optim.AdamW, optax.adamw, Keras
"constant"     lambda                                 TF-Addons (the user schedules lambda)
"corrected"    lr_t * (lr_t / lr_max) * lambda        AdamC (Defazio 2025, arXiv 2506.02285)
               = alpha * eta_t**2 * lambda
=============  ====================================  ======================================

eta_t is the schedule multiplier, read as ``group["lr"] / group["initial_lr"]`` so that any
torch LR scheduler (or a loop that sets ``group["lr"]``) drives both the step and the decay.
eta_t = 0 whenever lr_t = 0: no step and no decay (also for a group built with lr = 0, whose
``initial_lr`` is then 0). A group with ``initial_lr = 0`` and lr_t > 0 has no eta_t: under
"schedule" and "corrected" its ``step()`` raises a ``ValueError`` (build the optimizer with the
peak lr, or set ``group["initial_lr"]``), where it would otherwise divide by zero.

"corrected": ``lr_max`` is each group's own peak learning rate, its ``initial_lr`` (timm's
``adamc`` takes it from the optimizer's defaults instead, so groups with their own lr are
corrected by the wrong peak). At the peak (eta_t = 1) the decay is ``lr_t * lambda``, torch's,
so a lambda tuned for ``torch.optim.AdamW`` carries over; as the schedule anneals it falls
with eta_t**2 instead of eta_t. Relation to the others: corrected = "lr" * eta_t =
"schedule" * lr_t. Rationale (Defazio 2025): for a weight that a normalization layer makes
scale-invariant, the steady state of update and decay is ``||g_t|| / ||theta_t|| ~
sqrt(2 * d_t / lr_t**2)`` (SGD-like steps); with ``d_t = lr_t * lambda`` this ratio grows as
lr_t falls, which is why gradient norms rise at the end of a schedule, while with the
corrected ``d_t`` it stays at ``sqrt(2 * lambda / lr_max)``.
"""

from __future__ import annotations

from .. import _validate

#: the names ``decay_convention`` takes (the one definition: the harness imports it)
DECAY_CONVENTIONS = ("schedule", "lr", "constant", "corrected")


def check_convention(name: str) -> str:
    return _validate.one_of("decay_convention", name, DECAY_CONVENTIONS)


def eta(group: dict) -> float:
    """Schedule multiplier eta_t = lr_t / initial_lr (1.0 without a scheduler; 0 at lr_t = 0).

    Raises ``ValueError`` for lr_t > 0 with ``initial_lr = 0`` (eta_t undefined)."""
    lr = group["lr"]
    if lr == 0:
        return 0.0
    initial = group["initial_lr"]
    if initial == 0:
        raise ValueError(undefined_eta(group))
    return lr / initial


def undefined_eta(group: dict, name: str = "initial_lr") -> str:
    return (f"{name} is 0 while lr is {group['lr']!r}: eta_t = lr / initial_lr is undefined; "
            "build the optimizer with the peak lr (a scheduler warms up from there) or set "
            "group['initial_lr'] to it")


def convention_factor(group: dict) -> float:
    """What lambda is multiplied by at this update under the group's convention."""
    convention = group["decay_convention"]
    if convention == "schedule":
        return eta(group)
    if convention == "lr":
        return group["lr"]
    if convention == "corrected":
        return group["lr"] * eta(group)
    if convention == "constant":
        return 1.0
    check_convention(convention)  # raises: an unknown name never runs as another convention
    raise AssertionError(convention)


def decay_per_update(group: dict, key: str = "weight_decay") -> float:
    """The factor d_t with theta <- theta - d_t * theta at this update (decoupled decay);
    ``key`` names the coefficient (``"l1"``: the soft-threshold of decoupled L1)."""
    lam = group[key]
    if lam == 0:
        return 0.0
    return convention_factor(group) * lam


def fused_weight_decay(group: dict) -> float | None:
    """The ``weight_decay`` argument of torch's fused Adam/AdamW kernel (which multiplies it by
    lr_t) giving exactly this group's decoupled decay, or None when no finite value exists
    ("constant" at lr_t = 0 with a decay > 0)."""
    lam = group["weight_decay"]
    if lam == 0:
        return 0.0
    convention = group["decay_convention"]
    lr = group["lr"]
    if convention == "constant":
        return lam / lr if lr > 0 else None
    if lr == 0:  # eta_t = 0 and lr_t = 0: no decay, whatever the argument
        return 0.0
    if convention == "schedule":
        # lr_t * (lam / alpha) = eta_t * lam, computed without dividing by lr_t
        initial = group["initial_lr"]
        if initial == 0:
            raise ValueError(undefined_eta(group))
        return lam / initial
    if convention == "lr":
        return lam
    # "corrected": lr_t * (lam * lr_t / lr_max) = lr_t**2 / lr_max * lam
    return lam * eta(group)

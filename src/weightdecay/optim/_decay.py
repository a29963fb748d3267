"""Weight-decay conventions: what the decay factor lambda is multiplied by at update t.

=============  ================================  ==========================================
name           decay applied per update          who uses it
=============  ================================  ==========================================
"schedule"     eta_t * lambda                    the paper (default), the authors' code,
                                                 Composer's DecoupledAdamW
"lr"           lr_t * lambda = alpha*eta_t*lam   torch.optim.AdamW, optax.adamw, Keras
"constant"     lambda                            TF-Addons (the user schedules lambda)
=============  ================================  ==========================================

eta_t is the schedule multiplier, read as ``group["lr"] / group["initial_lr"]`` so that any
torch LR scheduler (or a loop that sets ``group["lr"]``) drives both the step and the decay.
"""

from __future__ import annotations

import math

from .. import _validate

#: the names ``decay_convention`` takes (the one definition: the harness imports it)
DECAY_CONVENTIONS = ("schedule", "lr", "constant")


def check_convention(name: str) -> str:
    return _validate.one_of("decay_convention", name, DECAY_CONVENTIONS)


def eta(group: dict) -> float:
    """Schedule multiplier eta_t = lr_t / initial_lr (1.0 without a scheduler)."""
    initial = group["initial_lr"]
    if initial == 0:
        return 1.0 if group["lr"] == 0 else math.inf
    return group["lr"] / initial


def decay_per_update(group: dict) -> float:
    """The factor d_t with theta <- theta - d_t * theta at this update (decoupled decay)."""
    lam = group["weight_decay"]
    if lam == 0:
        return 0.0
    convention = group["decay_convention"]
    if convention == "schedule":
        return eta(group) * lam
    if convention == "lr":
        return group["lr"] * lam
    return lam  # "constant"


def torch_weight_decay(group: dict) -> float | None:
    """torch.optim.AdamW's ``weight_decay`` (multiplied by lr_t inside torch) giving exactly
    this group's decoupled decay, or None when no finite value exists (lr_t = 0, decay > 0)."""
    lam = group["weight_decay"]
    if lam == 0:
        return 0.0
    convention = group["decay_convention"]
    if convention == "schedule":
        # lr_t * (lam / alpha) = eta_t * lam, computed without dividing by lr_t
        return lam / group["initial_lr"] if group["initial_lr"] > 0 else None
    if convention == "lr":
        return lam
    return lam / group["lr"] if group["lr"] > 0 else None

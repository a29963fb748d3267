"""Optimizers of the paper: SGD/SGDW (Algorithm 1), Adam/AdamW (Algorithm 2), and helpers."""

from ._checkpoint import convert_state_dict, torch_state_dict
from ._decay import DECAY_CONVENTIONS, decay_per_update
from .adam import Adam, AdamW
from .groups import find_scale_invariant_weights, param_groups_weight_decay
from .sgd import SGD, SGDW
from .wrap import decoupled_weight_decay

__all__ = [
    "DECAY_CONVENTIONS",
    "decay_per_update",
    "SGD",
    "SGDW",
    "Adam",
    "AdamW",
    "decoupled_weight_decay",
    "convert_state_dict",
    "torch_state_dict",
    "param_groups_weight_decay",
    "find_scale_invariant_weights",
]

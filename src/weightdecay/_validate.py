"""Argument checks shared by the library (optim, schedules, decay, groups): one message style.

Every check returns the value converted (a Python ``float`` or ``int``) or raises a
``ValueError`` naming the argument and the offending value, in one form::

    lr must be >= 0, got -0.1
    betas[1] must be in [0, 1), got 1.0
    batch_size must be a positive integer, got 12.5

Numbers are Python or numpy reals (not ``bool``) or one-element tensors (torch accepts a
tensor learning rate); NaN and infinities are refused everywhere.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["boolean", "fraction", "non_negative", "one_of", "positive", "positive_int", "real"]


def real(name: str, value: Any) -> float:
    """A finite real number."""
    if hasattr(value, "numel") and hasattr(value, "item"):  # a torch tensor, without torch
        if value.numel() != 1 or value.is_complex():
            raise ValueError(f"{name} must be a real number, got {value!r}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def non_negative(name: str, value: Any) -> float:
    """A finite real number >= 0."""
    value = real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def positive(name: str, value: Any) -> float:
    """A finite real number > 0."""
    value = real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def fraction(name: str, value: Any) -> float:
    """A real number in [0, 1) (momentum, Adam's betas)."""
    value = real(name, value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


def positive_int(name: str, value: Any) -> int:
    """An integer > 0 (``bool`` refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def boolean(name: str, value: Any) -> bool:
    """``True`` or ``False`` (numpy's bool too; numbers refused)."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def one_of(name: str, value: Any, choices: tuple) -> Any:
    """One of ``choices`` (compared with ==)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value

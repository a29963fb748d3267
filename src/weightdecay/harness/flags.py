"""Numbers and names as command-line flags give them: ``2**-10,2**-9``, ``0,1``, ``sgd,adamw``.

What ``weightdecay sweep``'s grid flags and ``weightdecay train``'s number flags are read
with (:data:`weightdecay.harness.spec.GRID_KEYS`); each raises ``ValueError`` naming the
text, which the command line turns into one line. Grids in powers of 2 are how Loshchilov &
Hutter (ICLR 2019, Sec. 4) write them.
"""

from __future__ import annotations

import math

__all__ = ["parse_ints", "parse_names", "parse_number", "parse_numbers"]


def parse_number(text: str) -> float:
    """One finite number as a flag gives it: ``0.001``, ``1e-3`` or ``2**-10``.

    Raises ``ValueError`` naming the text (an overflow, a complex power and NaN included)."""
    part = text.strip()
    try:
        if "**" in part:
            base, exp = part.split("**", 1)
            value = float(base) ** float(exp)
        else:
            value = float(part)
    except (ValueError, OverflowError, ZeroDivisionError):
        raise ValueError(f"not a finite number: {part!r}") from None
    if isinstance(value, complex) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {part!r}")
    return value


def parse_numbers(text: str) -> list[float]:
    """Comma-separated numbers (:func:`parse_number`), e.g. ``2**-10,2**-9``."""
    return [parse_number(part) for part in text.split(",")]


def parse_ints(text: str) -> list[int]:
    """Comma-separated integers, e.g. ``0,1,2``."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"not a comma-separated list of integers: {text!r}") from None


def parse_names(text: str) -> list[str]:
    """Comma-separated names (blanks dropped), e.g. ``sgdw,adamw``."""
    return [part.strip() for part in text.split(",") if part.strip()]

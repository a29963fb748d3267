"""Per-example test outcomes as compact text, so that a stored trial keeps *which* test
examples its final model misclassified, not only how many.

Paired comparisons between settings (all scored on one test sample) and bootstraps over
test examples (``weightdecay.report.resample``) need the vector; one bit per example,
base64 text, fits an Optuna user attribute (10,000 examples: 1,668 characters).
NumPy only: the report decodes these without importing torch.
"""

from __future__ import annotations

import base64

import numpy as np

__all__ = ["pack_wrong", "unpack_wrong"]


def pack_wrong(wrong) -> str:
    """A boolean per-example vector (NumPy array, list, or CPU tensor) as base64 text."""
    bits = np.packbits(np.asarray(wrong, dtype=bool).ravel())
    return base64.b64encode(bits.tobytes()).decode("ascii")


def unpack_wrong(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`pack_wrong` for a vector of ``n`` examples; ``ValueError`` when
    ``text`` is not base64 or does not hold exactly ``ceil(n / 8)`` bytes."""
    if not isinstance(text, str):
        raise ValueError(f"a packed vector must be text, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise ValueError(f"a packed vector is not base64 text ({e})") from None
    if len(raw) != -(-n // 8):
        raise ValueError(f"packed vector holds {len(raw) * 8} bits, expected {n}")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n).astype(bool)

"""Banded grids: the cells of a decay grid around where each learning rate's optimum lies.

A Fig. 2 heat map (Loshchilov & Hutter, ICLR 2019, Sec. 4.1) needs, in each learning-rate
row, the best decay bracketed by cells on both sides; cells far from it only confirm that
they are worse. A band keeps, in every row, the ``cells`` values of the decay grid nearest
(in log) to the line through a reference point with a given slope on log-log axes,

    log λ_c(α) = log λ_ref + slope · (log α − log α_ref),

so the band follows an optimum that moves with α (slope −1 for L2 in SGD by Prop. 1, 0 for a
separable basin, +1 where the decay only rescales the weights) instead of a fixed column.

A line fitted on pilot seeds predicts each row's optimum only up to the seeds' noise: where a
row's best cell turns out to be the band's first or last, the optimum is not bracketed and the
row is lost to the slope. With ``extend = n`` the band brackets it: once every seed of a row
has run, the row's best cell (the mean test error over the seeds) is looked at, and when it is
the band's first (last) cell the next decay value of the grid below (above) is added, for
every seed, up to ``n`` values per row (:func:`bracket_next`). The rule depends only on the
row's own results, so a rerun adds the same cells.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["band_cells", "bracket_next", "check_band"]


def band_cells(decays: Sequence[float], lr: float, lr_ref: float, decay_ref: float,
               slope: float, cells: int) -> list[float]:
    """The ``cells`` values of ``decays`` (all > 0) nearest, in log, to the band's centre at
    ``lr``, in the grid's order; ties go to the smaller decay."""
    centre = math.log(decay_ref) + slope * (math.log(lr) - math.log(lr_ref))
    # distances rounded to 1e-9 so that a centre halfway between two cells of a power-of-2
    # grid is a tie in every floating-point rounding (then the smaller decay is kept)
    order = sorted(range(len(decays)),
                   key=lambda i: (round(abs(math.log(decays[i]) - centre), 9), decays[i]))
    keep = set(order[:cells])
    return [v for i, v in enumerate(decays) if i in keep]


def bracket_next(decays: Sequence[float], cells: Sequence[float],
                 error: Mapping[float, float]) -> float | None:
    """The decay value that brackets a row's optimum, or ``None`` when it is bracketed.

    ``decays``: the grid; ``cells``: the row's cells so far (values of the grid);
    ``error``: each cell's mean test error over the seeds (``inf`` for a diverged one). When
    the best cell (ties: the smaller decay) is the smallest (largest) of ``cells`` and the
    grid goes further, the grid's next value below (above) it; ``None`` otherwise, and when
    every cell diverged (no optimum to bracket)."""
    present = sorted(cells)
    best = min(present, key=lambda v: (error[v], v))
    if not math.isfinite(error[best]):
        return None
    if best == present[0]:
        below = [v for v in decays if v < best]
        return max(below) if below else None
    if best == present[-1]:
        above = [v for v in decays if v > best]
        return min(above) if above else None
    return None


def check_band(band: Any, decay_key: str, decays: Sequence[Any], lrs: Sequence[float]) -> None:
    """A band's keys, types and ranges against its entry's (already checked) grids;
    ``ValueError`` naming the key otherwise. The centre of every lr row must lie within the
    decay grid's range: a band that runs off the grid would silently lose its cells on one
    side, and with them the bracket around the optimum."""
    if not isinstance(band, Mapping):
        raise ValueError(f"must be a table, got {band!r}")
    keys = ("lr", decay_key, "slope", "cells")
    unknown = [k for k in band if k not in (*keys, "extend")]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(keys)}, extend")
    for key in keys:
        if key not in band:
            raise ValueError(f"{key!r} is missing (a band needs {', '.join(keys)})")
    for key in ("lr", decay_key, "slope"):
        v = band[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{key}={v!r} must be a finite number")
        if key != "slope" and v <= 0:
            raise ValueError(f"{key}={v!r} must be > 0 (a band lies on log axes)")
    cells = band["cells"]
    if isinstance(cells, bool) or not isinstance(cells, int) or not 3 <= cells <= len(decays):
        raise ValueError(f"cells={cells!r} must be an integer from 3 (a bracketed optimum "
                         f"needs a cell on each side) to the grid's {len(decays)}")
    extend = band.get("extend", 0)
    if (isinstance(extend, bool) or not isinstance(extend, int)
            or not 0 <= extend <= len(decays) - cells):
        raise ValueError(f"extend={extend!r} must be an integer from 0 to the "
                         f"{len(decays) - cells} values of the grid outside the band's {cells}")
    if any(v <= 0 for v in decays):
        raise ValueError(f"the {decay_key!r} grid must be > 0 for a band (log axes)")
    lo, hi = math.log(min(decays)), math.log(max(decays))
    for lr in lrs:
        centre = math.log(band[decay_key]) + band["slope"] * (math.log(lr) - math.log(band["lr"]))
        if not lo - 1e-9 <= centre <= hi + 1e-9:
            raise ValueError(f"its centre at lr={lr:g} is {decay_key}={math.exp(centre):.3g}, "
                             f"outside the grid [{min(decays):g}, {max(decays):g}]: extend the "
                             "grid or move the band")

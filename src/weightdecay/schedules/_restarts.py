"""Cosine annealing with warm restarts (SGDR / AdamWR / SGDWR) and its period helpers.

Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts" (ICLR 2017),
eq. (5), and "Decoupled Weight Decay Regularization" (ICLR 2019), Sec. 3 and App. B.

Periods, in updates (fractional values allowed):

* period ``i`` (``i = 0, 1, 2, ...``) has length ``T_i = T_0 * T_mult**i``;
* it starts at ``S_i = T_0 + T_0*T_mult + ... + T_0*T_mult**(i-1)``
  ``= T_0 * (T_mult**i - 1) / (T_mult - 1)`` (``= i * T_0`` when ``T_mult == 1``);
* update count ``t`` lies in period ``i`` when ``S_i <= t < S_{i+1}``, with
  ``T_cur = t - S_i``. At ``t = S_{i+1}`` exactly the next period starts (a restart), so
  the multiplier jumps back to its maximum; just before it, it approaches its minimum.

With ``T_mult < 1`` the periods shrink and their total is finite:
``sum_i T_i = T_0 / (1 - T_mult)``; update counts at or past that horizon are rejected.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validate import non_negative, positive
from ._functions import Schedule, _dispatch, _power, _scalar_step

__all__ = [
    "CosineRestarts",
    "cosine_restarts",
    "restart_index",
    "period_length",
    "period_start",
    "period_ends",
]


class _Periods:
    """Geometric restart periods ``T_i = T_0 * T_mult**i`` (all in updates)."""

    def __init__(self, T_0: Any, T_mult: Any) -> None:
        self.T_0 = positive("T_0", T_0)
        self.T_mult = positive("T_mult", T_mult)
        # Total length of all periods: finite only when they shrink.
        self.horizon = self.T_0 / (1.0 - self.T_mult) if self.T_mult < 1 else math.inf

    def start(self, i: np.ndarray) -> np.ndarray:
        """S_i, the update count at which period i starts."""
        if self.T_mult == 1:
            return self.T_0 * i
        # pow of an integral T_mult is exact, so integer boundaries stay exact.
        return self.T_0 * (_power(self.T_mult, i) - 1.0) / (self.T_mult - 1.0)

    def length(self, i: np.ndarray) -> np.ndarray:
        return self.T_0 * _power(self.T_mult, i)

    # Scalar twins of start/length/index: one Python float, plain ``math``, the same
    # floating-point operations in the same order (so the results are bit-identical).

    def start_scalar(self, i: float) -> float:
        T_mult = self.T_mult
        if T_mult == 1:
            return self.T_0 * i
        return self.T_0 * (T_mult**i - 1.0) / (T_mult - 1.0)

    def length_scalar(self, i: float) -> float:
        return self.T_0 * self.T_mult**i

    def index_scalar(self, t: float) -> float:
        """Period containing the checked update count ``t`` (an integral float)."""
        if t >= self.horizon:
            raise ValueError(
                f"t must be < {self.horizon!r} updates (the total length of all periods "
                f"with T_mult={self.T_mult!r} < 1), got {t!r}"
            )
        T_0, T_mult = self.T_0, self.T_mult
        if T_mult == 1:
            i = float(math.floor(t / T_0))
        else:
            i = float(math.floor(math.log1p(t * (T_mult - 1.0) / T_0) / math.log(T_mult)))
        if i < 0.0:
            i = 0.0
        # Same one-ulp correction as index(), in the same order.
        if self.start_scalar(i + 1.0) <= t:
            i += 1.0
        if self.start_scalar(i) > t:
            i -= 1.0
        return i

    def length_at(self, t: float) -> float:
        return self.length_scalar(self.index_scalar(t))

    def start_at(self, t: float) -> float:
        return self.start_scalar(self.index_scalar(t))

    def index(self, t: np.ndarray) -> np.ndarray:
        """Period containing t (float64 array of integral values)."""
        if self.T_mult < 1 and np.any(t >= self.horizon):
            bad = t[t >= self.horizon].flat[0]
            raise ValueError(
                f"t must be < {self.horizon!r} updates (the total length of all periods "
                f"with T_mult={self.T_mult!r} < 1), got {bad!r}"
            )
        if self.T_mult == 1:
            i = np.floor(t / self.T_0)
        else:
            x = np.log1p(t * (self.T_mult - 1.0) / self.T_0) / np.log(self.T_mult)
            i = np.floor(x)
        i = np.maximum(i, 0.0)
        # The logarithm may be off by one ulp at a boundary: fix it against exact starts.
        i = np.where(self.start(i + 1.0) <= t, i + 1.0, i)
        i = np.where(self.start(i) > t, i - 1.0, i)
        return i

    def ends(self, until: Any) -> list[float]:
        until = non_negative("until", until)
        if until >= self.horizon:
            raise ValueError(
                f"until must be < {self.horizon!r} updates (the total length of all periods "
                f"with T_mult={self.T_mult!r} < 1), got {until!r}"
            )
        out: list[float] = []
        i = 1.0
        while (end := self.start_scalar(i)) <= until:
            out.append(end)
            i += 1.0
        return out


class CosineRestarts(Schedule):
    """SGDR cosine annealing with warm restarts; build it with :func:`cosine_restarts`.

    Besides being callable (``eta_t``), it answers period questions, each vectorized like
    the call: :meth:`restart_index`, :meth:`period_length`, :meth:`period_start`,
    :meth:`period_ends`.
    """

    def __init__(
        self,
        periods: _Periods,
        eta_min: float,
        eta_max: float,
        amplitude_decay: float,
        decay_eta_min: bool,
        warmup: float,
        warmup_every_cycle: bool,
    ) -> None:
        self._periods = periods
        self.T_0, self.T_mult = periods.T_0, periods.T_mult
        self.eta_min, self.eta_max = eta_min, eta_max
        self.amplitude_decay = amplitude_decay
        self.decay_eta_min = decay_eta_min
        self.warmup = warmup
        self.warmup_every_cycle = warmup_every_cycle

    @property
    def has_restarts(self) -> bool:
        return True

    def _eval(self, t: np.ndarray) -> np.ndarray:
        p = self._periods
        i = p.index(t)
        period = p.length(i)
        t_cur = t - p.start(i)
        scale = _power(self.amplitude_decay, i)
        lo = self.eta_min * scale if self.decay_eta_min else np.full_like(t, self.eta_min)
        hi = np.maximum(self.eta_max * scale, lo)
        if self.warmup == 0:
            return lo + 0.5 * (hi - lo) * (1.0 + np.cos(np.pi * t_cur / period))
        # Warmup occupies the first `warmup` updates of a period (never more than all of it);
        # the cosine then anneals over the remaining period - warmup updates.
        has_warmup = (i == 0) | self.warmup_every_cycle
        w = np.where(has_warmup, np.minimum(self.warmup, period), 0.0)
        in_warmup = t_cur < w
        ramp = lo + (hi - lo) * t_cur / np.where(in_warmup, w, 1.0)
        rest = np.where(in_warmup, 1.0, period - w)  # > 0 wherever the cosine is used
        cos = lo + 0.5 * (hi - lo) * (1.0 + np.cos(np.pi * (t_cur - w) / rest))
        return np.where(in_warmup, ramp, cos)

    def _scalar(self, t: float) -> float:
        # _eval on one float with math: same operations, same order, bit-identical.
        p = self._periods
        i = p.index_scalar(t)
        period = p.length_scalar(i)
        t_cur = t - p.start_scalar(i)
        scale = self.amplitude_decay**i
        lo = self.eta_min * scale if self.decay_eta_min else self.eta_min
        hi = max(self.eta_max * scale, lo)
        if self.warmup == 0:
            return lo + 0.5 * (hi - lo) * (1.0 + math.cos(math.pi * t_cur / period))
        w = min(self.warmup, period) if (i == 0 or self.warmup_every_cycle) else 0.0
        if t_cur < w:
            return lo + (hi - lo) * t_cur / w
        return lo + 0.5 * (hi - lo) * (1.0 + math.cos(math.pi * (t_cur - w) / (period - w)))

    def restart_index(self, t: Any) -> Any:
        """Index ``i`` of the period containing update count ``t`` (0 for the first)."""
        p = self._periods
        cls = type(t)
        if cls is float or cls is int:
            return int(p.index_scalar(_scalar_step(t)))
        return _dispatch(t, p.index, integer=True, scalar=p.index_scalar)

    def period_length(self, t: Any) -> Any:
        """Length ``T_i`` in updates of the period containing ``t``."""
        p = self._periods
        cls = type(t)
        if cls is float or cls is int:
            return p.length_at(_scalar_step(t))
        return _dispatch(t, lambda s: p.length(p.index(s)), scalar=p.length_at)

    def period_start(self, t: Any) -> Any:
        """Update count ``S_i`` at which the period containing ``t`` started (last restart)."""
        p = self._periods
        cls = type(t)
        if cls is float or cls is int:
            return p.start_at(_scalar_step(t))
        return _dispatch(t, lambda s: p.start(p.index(s)), scalar=p.start_at)

    def period_ends(self, until: float) -> list[float]:
        """Update counts ``S_1, S_2, ... <= until`` at which periods end.

        These are the points where eta has annealed to its minimum, where SGDR/AdamWR
        snapshots and checkpoints belong. Values are exact floats (non-integral when
        ``T_0`` or ``T_mult`` make them so; use ``math.ceil`` for an update index).
        """
        return self._periods.ends(until)

    def __repr__(self) -> str:
        return (
            f"cosine_restarts(T_0={self.T_0!r}, T_mult={self.T_mult!r}, "
            f"eta_min={self.eta_min!r}, eta_max={self.eta_max!r}, "
            f"amplitude_decay={self.amplitude_decay!r}, decay_eta_min={self.decay_eta_min!r}, "
            f"warmup={self.warmup!r}, warmup_every_cycle={self.warmup_every_cycle!r})"
        )


def cosine_restarts(
    T_0: float,
    T_mult: float = 2.0,
    eta_min: float = 0.0,
    eta_max: float = 1.0,
    amplitude_decay: float = 1.0,
    warmup: float = 0,
    warmup_every_cycle: bool = False,
    *,
    decay_eta_min: bool = True,
) -> CosineRestarts:
    """Cosine annealing with warm restarts (SGDR, ICLR 2017, eq. 5; AdamWR/SGDWR, ICLR 2019).

    In period ``i`` (see the module docstring for the exact boundaries), with
    ``T_cur = t - S_i`` updates since the last restart::

        eta_t = lo_i + 1/2 (hi_i - lo_i) (1 + cos(pi * T_cur / T_i))
        hi_i  = max(eta_max * amplitude_decay**i, lo_i)
        lo_i  = eta_min * amplitude_decay**i   (decay_eta_min=True, default)
              = eta_min                        (decay_eta_min=False)

    The paper keeps ``eta_max = 1``, ``eta_min = 0`` for every cycle and names decaying
    them across restarts as future work; ``amplitude_decay`` does that. By default it scales
    the whole cycle (both ends), so that ``eta_min`` stays below ``eta_max`` in every cycle;
    with ``decay_eta_min=False`` ``eta_min`` is a fixed floor and ``hi_i`` never drops below it.

    Warmup (not in the paper): the first ``warmup`` updates of the first period (or of every
    period with ``warmup_every_cycle=True``) ramp linearly from ``lo_i`` to ``hi_i``; the
    cosine then anneals over the remaining ``T_i - warmup`` updates. Period boundaries do not
    move. A period shorter than ``warmup`` (``T_mult < 1``) is all ramp.

    Args:
        T_0: length of the first period in updates, ``> 0`` (may be fractional).
        T_mult: period growth factor, any real ``> 0`` (1: equal periods; 2: the paper's
            choice; ``< 1``: shrinking periods, defined only before their finite total).
        eta_min, eta_max: multipliers, ``0 <= eta_min <= eta_max``.
        amplitude_decay: factor in ``(0, 1]`` applied per restart (1: no decay).
        warmup: warmup length in updates, ``0 <= warmup < T_0``.
        warmup_every_cycle: warm up at the start of every period, not just the first.
        decay_eta_min: whether ``amplitude_decay`` also scales ``eta_min`` (keyword only).

    Example:
        >>> s = cosine_restarts(T_0=10, T_mult=2)
        >>> s(0), s(10), s.period_ends(150)  # doctest: +SKIP
        (1.0, 1.0, [10.0, 30.0, 70.0, 150.0])
    """
    periods = _Periods(T_0, T_mult)
    eta_min = non_negative("eta_min", eta_min)
    eta_max = non_negative("eta_max", eta_max)
    if eta_min > eta_max:
        raise ValueError(f"eta_min must be <= eta_max, got eta_min={eta_min!r} > {eta_max!r}")
    amplitude_decay = positive("amplitude_decay", amplitude_decay)
    if amplitude_decay > 1:
        raise ValueError(f"amplitude_decay must be in (0, 1], got {amplitude_decay!r}")
    warmup = non_negative("warmup", warmup)
    if warmup >= periods.T_0:
        raise ValueError(f"warmup must be < T_0={periods.T_0!r} updates, got {warmup!r}")
    if not isinstance(warmup_every_cycle, bool):
        raise ValueError(f"warmup_every_cycle must be a bool, got {warmup_every_cycle!r}")
    if not isinstance(decay_eta_min, bool):
        raise ValueError(f"decay_eta_min must be a bool, got {decay_eta_min!r}")
    return CosineRestarts(
        periods, eta_min, eta_max, amplitude_decay, decay_eta_min, warmup, warmup_every_cycle
    )


# Module-level helpers: the same period arithmetic without building a schedule.


def restart_index(t: Any, T_0: float, T_mult: float = 2.0) -> Any:
    """Index of the SGDR period containing update count ``t`` (see module docstring)."""
    p = _Periods(T_0, T_mult)
    return _dispatch(t, p.index, integer=True, scalar=p.index_scalar)


def period_length(t: Any, T_0: float, T_mult: float = 2.0) -> Any:
    """Length ``T_i = T_0 * T_mult**i`` in updates of the period containing ``t``."""
    p = _Periods(T_0, T_mult)
    return _dispatch(t, lambda s: p.length(p.index(s)), scalar=p.length_at)


def period_start(t: Any, T_0: float, T_mult: float = 2.0) -> Any:
    """Update count at which the period containing ``t`` started."""
    p = _Periods(T_0, T_mult)
    return _dispatch(t, lambda s: p.start(p.index(s)), scalar=p.start_at)


def period_ends(until: float, T_0: float, T_mult: float = 2.0) -> list[float]:
    """Ends of SGDR periods up to ``until`` (inclusive), in the units of ``T_0``.

    With ``T_0 = 100`` epochs and ``T_mult = 2``: ``[100, 300, 700, 1500]`` up to 1500.
    """
    return _Periods(T_0, T_mult).ends(until)

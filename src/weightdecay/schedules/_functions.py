"""Pure, closed-form schedule multipliers eta_t (paper Sec. 2-3 and App., "schedule multiplier").

A schedule maps the update count ``t`` (number of completed optimizer updates, a
non-negative real; fractional values are allowed) to the multiplier ``eta_t`` that scales
BOTH the gradient step and the decoupled weight decay in Algorithms 1 and 2 of
Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019). The value never
depends on the previous value: each schedule is a closed-form function of ``t``.

Time is counted in UPDATES everywhere in the library; convert epochs at the edge with
:func:`epochs_to_updates` and :func:`updates_per_epoch`.

Every factory checks its arguments at once and raises a ``ValueError`` naming the argument
and the offending value. The returned :class:`Schedule` is callable on

* a Python ``int``/``float`` (or numpy scalar): returns a Python ``float``, computed by a
  pure-``math`` scalar path (no numpy or torch conversion; about a microsecond per call,
  cheap enough to call once per training update);
* a numpy array: returns a ``float64`` numpy array of the same shape;
* a torch tensor: returns a tensor of the same shape and device (same dtype when the input
  is floating point, ``float64`` otherwise).

The scalar path performs the same floating-point operations, in the same order, as the
vectorized path (``math.cos``/``math.pow`` vs numpy's ``cos``/Python ``pow``), so a scalar call
and the matching element of a vectorized call agree bit for bit (the tests check this).

Schedules are plain objects holding their parameters (no closures), so they pickle.
"""

from __future__ import annotations

import math
import numbers
import sys
from bisect import bisect_right
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from .._validate import non_negative, positive, positive_int

__all__ = [
    "Schedule",
    "as_schedule",
    "constant",
    "step_drop",
    "linear",
    "cosine",
    "linear_warmup",
    "join",
    "multiply",
    "epochs_to_updates",
    "updates_per_epoch",
]


# ----------------------------------------------------------------------------- validation


def _eta_range(eta_min: Any, eta_max: Any) -> tuple[float, float]:
    eta_min = non_negative("eta_min", eta_min)
    eta_max = non_negative("eta_max", eta_max)
    if eta_min > eta_max:
        raise ValueError(f"eta_min must be <= eta_max, got eta_min={eta_min!r} > {eta_max!r}")
    return eta_min, eta_max


_INF = math.inf


def _scalar_step(t: Any) -> float:
    """Return the update count ``t`` (an int/float/real scalar) as a checked Python float."""
    try:
        step = float(t)
    except OverflowError:
        raise ValueError(f"t (update count) must be finite and >= 0, got {t!r}") from None
    if not 0.0 <= step < _INF:  # also rejects NaN
        raise ValueError(f"t (update count) must be finite and >= 0, got {t!r}")
    return step


def _check_steps(t: np.ndarray) -> None:
    """Reject NaN, infinite and negative update counts."""
    if t.size and not (np.all(np.isfinite(t)) and np.all(t >= 0)):
        bad = t[~(np.isfinite(t) & (t >= 0))].flat[0]
        raise ValueError(f"t (update count) must be finite and >= 0, got {bad!r}")


# ----------------------------------------------------------------------------- base class


def _power(base: float, i: np.ndarray) -> np.ndarray:
    """``base ** i`` for integral ``i``, computed by scalar ``pow`` so that a vectorized call
    gives bit-identical results to scalar calls (numpy's SIMD power may differ by an ulp)."""
    if i.size == 1:  # the per-update scalar call: skip np.unique
        return np.full(i.shape, base ** float(i.flat[0]))
    unique, inverse = np.unique(i, return_inverse=True)
    values = np.array([base ** float(k) for k in unique], dtype=np.float64)
    return values[inverse].reshape(i.shape)


def _dispatch(
    t: Any,
    fn: Callable[[np.ndarray], np.ndarray],
    integer: bool = False,
    scalar: Callable[[float], float] | None = None,
) -> Any:
    """Evaluate ``fn`` (float64 array -> array) on steps ``t`` given as a number, array or tensor.

    Returns the same kind as ``t``: a Python float (int if ``integer``) for a scalar, a numpy
    array for an array or list, a tensor on ``t``'s device for a tensor. A real scalar
    (Python or numpy number) goes through ``scalar`` (checked float -> float) when given.
    """
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported
    if torch is not None and isinstance(t, torch.Tensor):
        steps = t.detach().to(device="cpu", dtype=torch.float64).numpy()
        out = _checked(fn, steps, integer)
        if integer:
            dtype = torch.int64
        else:
            dtype = t.dtype if t.is_floating_point() else torch.float64
        return torch.as_tensor(out, dtype=dtype, device=t.device)
    if isinstance(t, (bool, np.bool_)):
        raise ValueError(f"t (update count) must be a number, got {t!r}")
    if (isinstance(t, np.ndarray) and t.ndim > 0) or isinstance(t, (list, tuple)):
        return _checked(fn, np.asarray(t, dtype=np.float64), integer)
    if scalar is not None and isinstance(t, numbers.Real):
        value = scalar(_scalar_step(t))
        return int(value) if integer else value
    if isinstance(t, numbers.Real) or isinstance(t, np.ndarray):
        out = _checked(fn, np.asarray(t, dtype=np.float64), integer)
        return int(out) if integer else float(out)
    raise ValueError(f"t (update count) must be a number, array or tensor, got {t!r}")


def _checked(fn: Callable[[np.ndarray], np.ndarray], t: np.ndarray, integer: bool) -> np.ndarray:
    _check_steps(t)
    return np.asarray(fn(t), dtype=np.int64 if integer else np.float64)


class Schedule:
    """A closed-form multiplier ``eta(t)`` of the update count ``t``.

    Subclasses implement :meth:`_eval` on a float64 numpy array of checked steps
    (finite, ``>= 0``) and should implement :meth:`_scalar`, the same computation on one
    checked Python float with ``math`` (the per-update fast path; the default falls back to
    :meth:`_eval`). ``a * b`` multiplies two schedules pointwise (e.g. warmup x cosine);
    ``a * 0.5`` scales a schedule by a constant.
    """

    def _eval(self, t: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _scalar(self, t: float) -> float:
        """eta at one checked update count ``t``; must match :meth:`_eval` bit for bit."""
        return float(self._eval(np.asarray(t, dtype=np.float64)))

    def __call__(self, t: Any) -> Any:
        cls = type(t)
        if cls is float or cls is int:  # the per-update call: pure math, no numpy
            return self._scalar(_scalar_step(t))
        return _dispatch(t, self._eval, scalar=self._scalar)

    def __mul__(self, other: Any) -> Schedule:
        return multiply(self, other)

    def __rmul__(self, other: Any) -> Schedule:
        return multiply(other, self)

    # Restart helpers (overridden by schedules with warm restarts).
    @property
    def has_restarts(self) -> bool:
        """True when :meth:`period_length` is defined (schedules with warm restarts)."""
        return False


class _Constant(Schedule):
    def __init__(self, value: float) -> None:
        self.value = value

    def _eval(self, t: np.ndarray) -> np.ndarray:
        return np.full_like(t, self.value)

    def _scalar(self, t: float) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"constant(value={self.value!r})"


class _StepDrop(Schedule):
    def __init__(self, milestones: np.ndarray, factor: float) -> None:
        self.milestones = milestones
        self.factor = factor

    def _eval(self, t: np.ndarray) -> np.ndarray:
        drops = np.searchsorted(self.milestones, t, side="right")
        return _power(self.factor, drops.astype(np.float64))

    @cached_property
    def _milestone_list(self) -> list[float]:
        return self.milestones.tolist()

    def _scalar(self, t: float) -> float:
        return self.factor ** float(bisect_right(self._milestone_list, t))

    def __repr__(self) -> str:
        return f"step_drop(milestones={self.milestones.tolist()!r}, factor={self.factor!r})"


class _Linear(Schedule):
    def __init__(self, total_steps: float, eta_min: float, eta_max: float) -> None:
        self.total_steps, self.eta_min, self.eta_max = total_steps, eta_min, eta_max

    def _eval(self, t: np.ndarray) -> np.ndarray:
        frac = np.minimum(t / self.total_steps, 1.0)
        return self.eta_max + (self.eta_min - self.eta_max) * frac

    def _scalar(self, t: float) -> float:
        frac = min(t / self.total_steps, 1.0)
        return self.eta_max + (self.eta_min - self.eta_max) * frac

    def __repr__(self) -> str:
        return f"linear({self.total_steps!r}, eta_min={self.eta_min!r}, eta_max={self.eta_max!r})"


def _cosine_value(eta_min: Any, eta_max: Any, t_cur: np.ndarray, period: Any) -> np.ndarray:
    """eta_min + 1/2 (eta_max - eta_min)(1 + cos(pi t_cur / period)) -- SGDR eq. (5)."""
    return eta_min + 0.5 * (eta_max - eta_min) * (1.0 + np.cos(np.pi * t_cur / period))


class _Cosine(Schedule):
    def __init__(self, total_steps: float, eta_min: float, eta_max: float) -> None:
        self.total_steps, self.eta_min, self.eta_max = total_steps, eta_min, eta_max

    def _eval(self, t: np.ndarray) -> np.ndarray:
        t_cur = np.minimum(t, self.total_steps)
        return _cosine_value(self.eta_min, self.eta_max, t_cur, self.total_steps)

    def _scalar(self, t: float) -> float:
        # The same operations, in the same order, as _cosine_value.
        eta_min, period = self.eta_min, self.total_steps
        t_cur = min(t, period)
        return eta_min + 0.5 * (self.eta_max - eta_min) * (1.0 + math.cos(math.pi * t_cur / period))

    def __repr__(self) -> str:
        return f"cosine({self.total_steps!r}, eta_min={self.eta_min!r}, eta_max={self.eta_max!r})"


class _LinearWarmup(Schedule):
    def __init__(self, warmup_steps: float, start: float) -> None:
        self.warmup_steps, self.start = warmup_steps, start

    def _eval(self, t: np.ndarray) -> np.ndarray:
        if self.warmup_steps == 0:
            return np.ones_like(t)
        frac = np.minimum(t / self.warmup_steps, 1.0)
        return self.start + (1.0 - self.start) * frac

    def _scalar(self, t: float) -> float:
        if self.warmup_steps == 0:
            return 1.0
        frac = min(t / self.warmup_steps, 1.0)
        return self.start + (1.0 - self.start) * frac

    def __repr__(self) -> str:
        return f"linear_warmup({self.warmup_steps!r}, start={self.start!r})"


class _Function(Schedule):
    """Wraps a user callable ``float -> float``; evaluated element by element. Every value it
    returns is checked: a multiplier must be a finite real number >= 0 (a ``ValueError``
    names ``t`` and the value, instead of a NaN or negative learning rate and decay)."""

    def __init__(self, fn: Callable[[float], float]) -> None:
        self.fn = fn

    def _eval(self, t: np.ndarray) -> np.ndarray:
        out = np.empty_like(t)
        for index, step in np.ndenumerate(t):
            out[index] = self._scalar(float(step))
        return out

    def _scalar(self, t: float) -> float:
        value = self.fn(t)
        try:
            eta = float(value)
        except (TypeError, ValueError):
            eta = math.nan
        if isinstance(value, (bool, str, bytes)) or not 0.0 <= eta < _INF:
            raise ValueError(f"schedule {self.fn!r} returned {value!r} at t={t!r}; a schedule "
                             "multiplier must be a finite real number >= 0")
        return eta

    def __repr__(self) -> str:
        return f"as_schedule({self.fn!r})"


class _Product(Schedule):
    def __init__(self, factors: tuple[Schedule, ...]) -> None:
        self.factors = factors

    def _eval(self, t: np.ndarray) -> np.ndarray:
        out = np.ones_like(t)
        for factor in self.factors:
            out = out * factor._eval(t)
        return out

    def _scalar(self, t: float) -> float:
        out = 1.0
        for factor in self.factors:
            out = out * factor._scalar(t)
        return out

    @cached_property
    def _restart_factors(self) -> tuple[Schedule, ...]:
        return tuple(f for f in self.factors if f.has_restarts)

    def _restart_factor(self) -> Schedule | None:
        with_restarts = self._restart_factors
        return with_restarts[0] if len(with_restarts) == 1 else None

    @property
    def has_restarts(self) -> bool:
        """True when exactly one factor has warm restarts (its periods are the product's)."""
        return self._restart_factor() is not None

    def __getattr__(self, name: str) -> Any:
        # Delegate the period helpers (restart_index, period_length, period_start,
        # period_ends) to the single factor with restarts, e.g. warmup x cosine_restarts.
        if name in _PERIOD_HELPERS and "factors" in self.__dict__:
            factor = self._restart_factor()
            if factor is not None:
                return getattr(factor, name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __repr__(self) -> str:
        return " * ".join(repr(f) for f in self.factors)


_PERIOD_HELPERS = ("restart_index", "period_length", "period_start", "period_ends")


class _Join(Schedule):
    def __init__(self, schedules: tuple[Schedule, ...], boundaries: np.ndarray) -> None:
        self.schedules, self.boundaries = schedules, boundaries

    def _segment(self, t: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.boundaries, t, side="right")

    def _eval(self, t: np.ndarray) -> np.ndarray:
        segment = self._segment(t)
        starts = np.concatenate([[0.0], self.boundaries])
        out = np.empty_like(t)
        for k, schedule in enumerate(self.schedules):
            mask = segment == k
            if np.any(mask):
                out[mask] = schedule._eval(t[mask] - starts[k])
        return out

    @cached_property
    def _pieces(self) -> tuple[list[float], tuple[float, ...]]:
        """Boundaries as a list (for bisect) and the start of every piece, 0 first."""
        bounds = self.boundaries.tolist()
        return bounds, (0.0, *bounds)

    def _scalar(self, t: float) -> float:
        bounds, starts = self._pieces
        k = bisect_right(bounds, t)
        return self.schedules[k]._scalar(t - starts[k])

    def __repr__(self) -> str:
        return f"join({list(self.schedules)!r}, boundaries={self.boundaries.tolist()!r})"


# ----------------------------------------------------------------------------- factories


def as_schedule(value: Schedule | float | Callable[[float], float]) -> Schedule:
    """Turn a number (constant multiplier), a callable ``t -> eta`` or a Schedule into a Schedule.

    A plain callable is evaluated element by element (slow but general); prefer the
    built-in factories for vectorized evaluation.
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return constant(value)
    if callable(value):
        return _Function(value)
    raise ValueError(f"schedule must be a Schedule, a number or a callable, got {value!r}")


def constant(value: float = 1.0) -> Schedule:
    """The fixed schedule of the paper: ``eta_t = value`` for every update ``t`` (default 1).

    Args:
        value: the multiplier, ``>= 0``.
    """
    return _Constant(non_negative("value", value))


def step_drop(milestones: Sequence[float], factor: float = 0.1) -> Schedule:
    """Step-drop schedule: ``eta_t = factor ** (number of milestones <= t)``.

    The paper's Fig. 1 drops at epochs 30, 60 and 80 of 100; it does not state the factor,
    0.1 is the usual choice and the default here.

    Args:
        milestones: update counts (not epochs) at which eta is multiplied by ``factor``;
            non-negative and strictly increasing. The drop takes effect AT the milestone.
        factor: multiplier applied at each milestone, ``> 0``.

    Example:
        >>> s = step_drop([30, 60, 80], factor=0.1)
        >>> s(29), s(30), s(85)  # doctest: +SKIP
        (1.0, 0.1, 0.001)
    """
    factor = positive("factor", factor)
    try:
        values = [non_negative("milestones", m) for m in milestones]
    except TypeError as err:
        raise ValueError(f"milestones must be a sequence of numbers, got {milestones!r}") from err
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"milestones must be strictly increasing, got {list(milestones)!r}")
    return _StepDrop(np.asarray(values, dtype=np.float64), factor)


def linear(total_steps: float, eta_min: float = 0.0, eta_max: float = 1.0) -> Schedule:
    """Linear decay from ``eta_max`` at ``t = 0`` to ``eta_min`` at ``t = total_steps``, then held.

    Args:
        total_steps: length of the decay in updates, ``> 0``.
        eta_min, eta_max: end and start multipliers, ``0 <= eta_min <= eta_max``.
    """
    total_steps = positive("total_steps", total_steps)
    eta_min, eta_max = _eta_range(eta_min, eta_max)
    return _Linear(total_steps, eta_min, eta_max)


def cosine(total_steps: float, eta_min: float = 0.0, eta_max: float = 1.0) -> Schedule:
    """Cosine annealing (SGDR, Loshchilov & Hutter 2017, eq. 5) without restarts.

    ``eta_t = eta_min + 1/2 (eta_max - eta_min)(1 + cos(pi t / total_steps))`` for
    ``t <= total_steps``, held at ``eta_min`` afterwards.

    Args:
        total_steps: length of the annealing in updates, ``> 0``.
        eta_min, eta_max: multipliers, ``0 <= eta_min <= eta_max``.
    """
    total_steps = positive("total_steps", total_steps)
    eta_min, eta_max = _eta_range(eta_min, eta_max)
    return _Cosine(total_steps, eta_min, eta_max)


def linear_warmup(warmup_steps: float, start: float = 0.0) -> Schedule:
    """Linear warmup: ramps from ``start`` at ``t = 0`` to 1 at ``t = warmup_steps``, then 1.

    Not in the paper; multiply it with another schedule (``linear_warmup(500) * cosine(T)``)
    or :func:`join` it in front of one.

    Args:
        warmup_steps: length of the ramp in updates, ``>= 0`` (0 means no warmup).
        start: multiplier at ``t = 0``, in ``[0, 1]``.
    """
    warmup_steps = non_negative("warmup_steps", warmup_steps)
    start = non_negative("start", start)
    if start > 1:
        raise ValueError(f"start must be in [0, 1], got {start!r}")
    return _LinearWarmup(warmup_steps, start)


def join(schedules: Sequence[Schedule | float], boundaries: Sequence[float]) -> Schedule:
    """Piecewise schedule: ``schedules[k]`` is used for ``t`` in ``[b_{k-1}, b_k)``.

    Each piece sees its own local time ``t - b_{k-1}`` (with ``b_{-1} = 0``), like
    ``optax.join_schedules``. There must be exactly ``len(schedules) - 1`` boundaries,
    positive and strictly increasing, in updates. A join exposes no restart periods
    (``has_restarts`` is False), even if a piece has them: for warmup before SGDR use
    ``cosine_restarts(..., warmup=w)`` or ``linear_warmup(w) * cosine_restarts(...)``.

    Example:
        >>> s = join([linear_warmup(100), cosine(900)], boundaries=[100])  # doctest: +SKIP
    """
    pieces = tuple(as_schedule(s) for s in schedules)
    if not pieces:
        raise ValueError("schedules must not be empty, got []")
    try:
        values = [positive("boundaries", b) for b in boundaries]
    except TypeError as err:
        raise ValueError(f"boundaries must be a sequence of numbers, got {boundaries!r}") from err
    if len(values) != len(pieces) - 1:
        raise ValueError(
            f"boundaries must have len(schedules) - 1 = {len(pieces) - 1} entries, "
            f"got {len(values)}: {list(boundaries)!r}"
        )
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"boundaries must be strictly increasing, got {list(boundaries)!r}")
    return _Join(pieces, np.asarray(values, dtype=np.float64))


def multiply(*schedules: Schedule | float) -> Schedule:
    """Pointwise product of schedules (numbers act as constants), e.g. warmup x cosine.

    If exactly one factor has warm restarts, the product exposes its period helpers
    (``period_length`` etc.), so it can drive :class:`weightdecay.NormalizedDecay`.
    """
    if not schedules:
        raise ValueError("multiply needs at least one schedule, got none")
    factors: list[Schedule] = []
    for s in schedules:
        s = as_schedule(s)
        factors.extend(s.factors if isinstance(s, _Product) else (s,))
    return _Product(tuple(factors))


# ----------------------------------------------------------------------------- epochs


def updates_per_epoch(dataset_size: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of optimizer updates in one pass over ``dataset_size`` points.

    ``ceil(B / b)`` (a last, smaller batch counts as an update), or ``floor(B / b)`` with
    ``drop_last=True`` (as ``torch.utils.data.DataLoader(drop_last=True)``).
    """
    dataset_size = positive_int("dataset_size", dataset_size)
    batch_size = positive_int("batch_size", batch_size)
    if drop_last:
        if batch_size > dataset_size:
            raise ValueError(
                f"batch_size must be <= dataset_size with drop_last=True, got "
                f"batch_size={batch_size} > dataset_size={dataset_size}"
            )
        return dataset_size // batch_size
    return -(-dataset_size // batch_size)


def epochs_to_updates(epochs: float, steps_per_epoch: int) -> int:
    """Convert a (possibly fractional) number of epochs into an update count.

    Returns ``round(epochs * steps_per_epoch)`` with halves rounded up (``floor(x + 0.5)``),
    so e.g. 0.5 epochs of 3 updates gives 2 updates.

    Args:
        epochs: ``>= 0``, finite.
        steps_per_epoch: updates per epoch, a positive integer (see :func:`updates_per_epoch`).
    """
    epochs = non_negative("epochs", epochs)
    steps_per_epoch = positive_int("steps_per_epoch", steps_per_epoch)
    return int(math.floor(epochs * steps_per_epoch + 0.5))

"""Summaries of the monitor's records: per category and update, and over an equilibrium window.

These are pure functions of records (the dicts of
:meth:`weightdecay.diagnostics.EquilibriumMonitor.records`, or the same dicts read back from
a store), so a harness can keep only the compact per-category rows and a report can compute
its statistics from stored records without a monitor.

Angles are pooled as root mean squares: the formulas predict the RMS angle per update, and
the RMS of a category is what one tensor of it would show on average.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["equilibrium_ratio", "stationary_window", "summarize"]


def _rms(values: Sequence[float]) -> float | None:
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else None


def _pooled(values: Sequence[float]) -> float | None:
    """The norm of the tensors put together: sqrt(sum of squares)."""
    return math.sqrt(sum(v * v for v in values)) if values else None


def summarize(records: Iterable[dict]) -> list[dict]:
    """One row per (update, category), in order of update then first appearance.

    Row keys: ``step``, ``category``, ``tensors`` (how many), ``numel``;
    ``angular_update`` (RMS over the tensors), and over the tensors that have a prediction:
    ``predicted_angular_update`` (RMS), ``measured_angular_update`` (RMS of the same
    tensors) and ``angular_ratio`` (measured / predicted); ``norm`` (the norm of the category's
    tensors together, sqrt of the sum of squares), ``predicted_norm`` and ``norm_ratio``
    (only when every tensor has a norm prediction); ``grad_norm`` (together); ``eta`` and
    ``timescales_elapsed`` (the smallest over the tensors: conservative for windows). A value
    that does not exist is None.
    """
    rows: dict[tuple[int, str], list[dict]] = {}
    for r in records:
        rows.setdefault((r["step"], r["category"]), []).append(r)
    out = []
    for (step, category), rs in sorted(rows.items(), key=lambda kv: kv[0][0]):
        angles = [r["angular_update"] for r in rs if r["angular_update"] is not None]
        pairs = [(r["angular_update"], r["predicted_angular_update"]) for r in rs
                 if r["angular_update"] is not None and r["predicted_angular_update"]]
        measured = _rms([m for m, _ in pairs])
        predicted = _rms([p for _, p in pairs])
        norms = [r["norm"] for r in rs if r["norm"] is not None]
        norm_preds = [r["predicted_norm"] for r in rs if r["predicted_norm"] is not None]
        full = len(norm_preds) == len(rs) and len(norms) == len(rs)
        norm, norm_pred = _pooled(norms), _pooled(norm_preds) if full else None
        grads = [r["grad_norm"] for r in rs if r["grad_norm"] is not None]
        etas = [r["eta"] for r in rs if r["eta"] is not None]
        elapsed = [r["timescales_elapsed"] for r in rs if r["timescales_elapsed"] is not None]
        out.append({
            "step": step, "category": category, "tensors": len(rs),
            "numel": sum(r["numel"] for r in rs),
            "angular_update": _rms(angles),
            "measured_angular_update": measured,
            "predicted_angular_update": predicted,
            "angular_ratio": measured / predicted if measured is not None and predicted
            else None,
            "norm": norm, "predicted_norm": norm_pred,
            "norm_ratio": norm / norm_pred if norm is not None and norm_pred else None,
            "grad_norm": _pooled(grads) if len(grads) == len(rs) else None,
            "eta": min(etas) if etas else None,
            "timescales_elapsed": min(elapsed) if elapsed else None,
        })
    return out


def stationary_window(
    records: Iterable[dict],
    *,
    category: str | None = "scale_invariant",
    min_timescales: float = 3.0,
    min_eta_fraction: float = 0.5,
) -> list[dict]:
    """The records (or :func:`summarize` rows) where the equilibrium prediction is stationary
    enough to test.

    Kept: records of ``category`` (None: all) with at least ``min_timescales`` timescales
    1/(2d) elapsed (``timescales_elapsed``, the integral of 2*d_t over the updates) and
    ``eta >= min_eta_fraction * eta_max`` (eta_max over the category's records; records
    without eta pass). At a constant learning rate that is everything after the first
    ``min_timescales`` timescales; under a cosine schedule it drops the end, where eta_t -> 0
    and the weights lag behind the moving prediction.
    """
    rs = [r for r in records if category is None or r["category"] == category]
    etas = [r["eta"] for r in rs if r["eta"] is not None]
    eta_max = max(etas) if etas else None
    return [r for r in rs
            if (r["timescales_elapsed"] or 0.0) >= min_timescales
            and (eta_max is None or r["eta"] is None or r["eta"] >= min_eta_fraction * eta_max)]


def equilibrium_ratio(
    records: Iterable[dict],
    *,
    category: str | None = "scale_invariant",
    min_timescales: float = 3.0,
    min_eta_fraction: float = 0.5,
) -> dict | None:
    """Measured / predicted angular update over the :func:`stationary_window`.

    ``records``: the monitor's records, or the per-category rows of :func:`summarize` (as a
    harness run keeps them: ``weightdecay.harness.monitoring.monitor_rows``); a row counts
    with its ``measured_angular_update``, the RMS over its tensors that have a prediction.

    Returns ``{"ratio", "measured", "predicted", "records", "tensors", "first_step",
    "last_step"}`` (measured and predicted are RMS over every record of the window that has
    a prediction; ratio = measured / predicted), or None when the window holds no record
    with a prediction. 1 at equilibrium; below 1 while the norm is still above its
    equilibrium (it turns more slowly), above 1 while it is below.
    """
    window = [r for r in stationary_window(records, category=category,
                                           min_timescales=min_timescales,
                                           min_eta_fraction=min_eta_fraction)
              if _measured(r) is not None and r["predicted_angular_update"]]
    if not window:
        return None
    measured = _rms([m for r in window if (m := _measured(r)) is not None])
    predicted = _rms([r["predicted_angular_update"] for r in window])
    assert measured is not None and predicted
    tensors = (len({r["name"] for r in window}) if "name" in window[0]
               else max(int(r.get("tensors") or 0) for r in window))
    return {"ratio": measured / predicted, "measured": measured, "predicted": predicted,
            "records": len(window), "tensors": tensors,
            "first_step": min(r["step"] for r in window),
            "last_step": max(r["step"] for r in window)}


def _measured(r: dict) -> float | None:
    """A record's angle, or a summary row's RMS over the tensors that have a prediction."""
    return r["measured_angular_update"] if "measured_angular_update" in r \
        else r["angular_update"]

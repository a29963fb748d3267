"""Measured against predicted over training, per category of tensors (matplotlib, no pyplot)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .summary import summarize

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_equilibrium"]

_TITLES = {"scale_invariant": "scale-invariant weights", "normalization": "normalization "
           "parameters", "other": "other (head, ...)"}


def plot_equilibrium(records: Any, *, categories: Sequence[str] | None = None,
                     title: str | None = None, figsize: tuple[float, float] | None = None
                     ) -> Figure:
    """A figure of the angular update (top row) and the norm (bottom row) against the update
    count, one column per category: measured (solid, RMS over the category's tensors; norm of
    the tensors together) and predicted at equilibrium (dashed), from
    :func:`~weightdecay.diagnostics.summarize`.

    Args:
        records: a monitor (its :meth:`records`) or an iterable of records.
        categories: the columns, in order (default: every category, in order of appearance).
        title: the figure's title.
        figsize: inches (default: 3.6 per column by 5.2).

    Returns:
        a ``matplotlib.figure.Figure`` (save it with ``fig.savefig(path)``).
    """
    from matplotlib.figure import Figure

    if hasattr(records, "records"):
        records = records.records()
    rows = summarize(records if isinstance(records, list) else list(_iter(records)))
    order = list(dict.fromkeys(r["category"] for r in rows))
    cats = list(categories) if categories is not None else order
    unknown = [c for c in cats if c not in order]
    if unknown:
        raise ValueError(f"no records of categories {unknown}; the records have {order}")
    if not cats:
        raise ValueError("no records to plot")
    fig = Figure(figsize=figsize or (3.6 * len(cats), 5.2), layout="constrained")
    axes = fig.subplots(2, len(cats), squeeze=False, sharex=True)
    for j, cat in enumerate(cats):
        rs = [r for r in rows if r["category"] == cat]
        steps = [r["step"] for r in rs]
        top, bottom = axes[0][j], axes[1][j]
        top.plot(steps, _nan(rs, "angular_update"), lw=1.2, label="measured (RMS)")
        if any(r["predicted_angular_update"] for r in rs):
            top.plot(steps, _nan(rs, "predicted_angular_update"), "--", lw=1.4,
                     label="predicted")
        bottom.plot(steps, _nan(rs, "norm"), lw=1.2, label="measured")
        if any(r["predicted_norm"] for r in rs):
            bottom.plot(steps, _nan(rs, "predicted_norm"), "--", lw=1.4, label="predicted")
        top.set_title(f"{_TITLES.get(cat, cat)} ({rs[0]['tensors']} tensors)", fontsize=9)
        top.set_yscale("log")
        bottom.set_yscale("log")
        bottom.set_xlabel("update t")
        if j == 0:
            top.set_ylabel("angular update per step (rad)")
            bottom.set_ylabel("norm ‖θ‖")
        top.legend(fontsize=7)
        bottom.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _iter(records: Iterable[dict]) -> Iterable[dict]:
    yield from records


def _nan(rows: list[dict], key: str) -> list[float]:
    return [float("nan") if r[key] is None else r[key] for r in rows]

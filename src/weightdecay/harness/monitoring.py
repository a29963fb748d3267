"""The equilibrium monitor inside a harness run (``RunConfig.monitor_every``).

A run with ``monitor_every = k`` attaches a :class:`weightdecay.diagnostics.EquilibriumMonitor`
to its optimizer (every k updates, counted from the run's first update, independently of
``eval_every``; scale invariance found once on the first training batch). At the end of every
epoch the monitor's records of that epoch are reduced to per-category rows
(:func:`weightdecay.diagnostics.summarize`: ``"scale_invariant"`` -- the weights a following
normalization makes scale-invariant, the convolutions of ``cnn1d_bn``; ``"normalization"`` --
the normalizations' scales and shifts; ``"other"`` -- the head and everything else) and kept
in the run's history under ``"monitor"``: one block per epoch, so the run's checkpoint carries
them and a resumed run continues them exactly.

A block is compact, columnar data::

    {"categories": {"scale_invariant": {"tensors": 3, "numel": 10400,
                                         "step": [8, 16, ...], "angular_update": [...], ...},
                    "normalization": {...}, "other": {...}},
     "state": {"step": 32, "timescales_elapsed": [...], "last_decay": [...],
               "scale_invariant": [...names...]}}

with the columns :data:`COLUMNS` (floats to 6 significant digits; ``None`` where a value does
not exist, e.g. no prediction for a tensor without decay) and the monitor's state after the
epoch (update count, integrated decay per param group). :func:`monitor_rows` turns a run's
history back into the rows of :func:`~weightdecay.diagnostics.summarize`, which the
diagnostics' window functions (:func:`~weightdecay.diagnostics.equilibrium_ratio`) and the
report read.

The monitor only reads the weights (a copy before a measured update, norms after it): a run
with the monitor trains bit-for-bit like the same run without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the report reads blocks with monitor_rows: importing this loads no torch
    import torch

    from ..diagnostics import EquilibriumMonitor

__all__ = ["COLUMNS", "MONITOR_KEY", "RunMonitor", "monitor_rows", "total_updates"]

#: the history key of the monitor's blocks (one per epoch)
MONITOR_KEY = "monitor"
#: the per-update columns kept for each category (the rows of ``summarize``)
COLUMNS = ("angular_update", "measured_angular_update", "predicted_angular_update", "norm",
           "predicted_norm", "grad_norm", "eta", "timescales_elapsed")
_DIGITS = 6


def _round(x: Any) -> Any:
    """6 significant digits (the rotation is measured to far less); None stays None."""
    if x is None or isinstance(x, bool) or not isinstance(x, float):
        return x
    return float(f"{x:.{_DIGITS}g}") if math.isfinite(x) else None


def _block(rows: Sequence[Mapping[str, Any]], monitor: EquilibriumMonitor) -> dict[str, Any]:
    """One epoch's block: the rows as columns per category, and the monitor's state."""
    cats: dict[str, dict[str, Any]] = {}
    for r in rows:
        c = cats.setdefault(r["category"], {"tensors": r["tensors"], "numel": r["numel"],
                                            "step": [], **{k: [] for k in COLUMNS}})
        c["step"].append(int(r["step"]))
        for k in COLUMNS:
            c[k].append(_round(r[k]))
    state = monitor.state_dict()
    return {"categories": cats,
            "state": {"step": state["step"],
                      "timescales_elapsed": [_exact(x) for x in state["timescales_elapsed"]],
                      "last_decay": [_exact(x) for x in state["last_decay"]],
                      "scale_invariant": list(state["scale_invariant"])}}


def _exact(x: Any) -> Any:
    return None if x is None else float(x)


class RunMonitor:
    """The monitor of one harness run: attach, close an epoch, detach.

    Args:
        model, optimizer: the run's.
        every: ``RunConfig.monitor_every``.
        example_input: a training batch (the scale-invariance probe, once).
        updates_per_epoch: gives the monitor's ``timescale_epochs``.
        history: the run's history; its ``"monitor"`` blocks (a resumed run's) are continued.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, every: int,
                 example_input: torch.Tensor, updates_per_epoch: int,
                 history: dict[str, list]) -> None:
        from ..diagnostics import EquilibriumMonitor

        blocks = history.setdefault(MONITOR_KEY, [])
        state = next((b.get("state") for b in reversed(blocks) if isinstance(b, Mapping)),
                     None)
        if state is not None and not (isinstance(state, Mapping) and isinstance(
                state.get("scale_invariant"), list)):
            raise RuntimeError(f"history['{MONITOR_KEY}'] holds no monitor state the run can "
                               "continue")
        try:
            self.monitor = EquilibriumMonitor(
                model, optimizer, every=every, updates_per_epoch=updates_per_epoch,
                **({"scale_invariant": state["scale_invariant"]} if state is not None
                   else {"example_input": example_input}))
        except ValueError as err:  # names of another model
            raise RuntimeError(f"history['{MONITOR_KEY}']: {err}") from None
        if state is not None:  # resume: the update count and the integrated decay
            try:
                self.monitor.load_state_dict({
                    "format": "weightdecay.EquilibriumMonitor", "version": 1, "every": every,
                    "step": state["step"], "scale_invariant": state["scale_invariant"],
                    "scale_invariance_source": "given",
                    "timescales_elapsed": state["timescales_elapsed"],
                    "last_decay": state["last_decay"], "records": []})
            except (KeyError, TypeError, ValueError) as err:  # a checkpoint of another kind
                raise RuntimeError(f"history['{MONITOR_KEY}'] holds no monitor state the run "
                                   f"can continue ({err})") from None
        self.history = history

    def end_epoch(self) -> None:
        """Append this epoch's block to the history (before the checkpoint is written)."""
        from ..diagnostics import summarize

        self.history[MONITOR_KEY].append(_block(summarize(self.monitor.drain()), self.monitor))

    def close(self) -> None:
        """Remove the monitor's hooks from the optimizer."""
        self.monitor.close()


def monitor_rows(history: Mapping[str, Any] | None, category: str | None = None
                 ) -> list[dict[str, Any]]:
    """The monitor's rows of a run's history (``record["history"]``), in update order: one
    dict per measured update and category with ``step``, ``category``, ``tensors``,
    ``numel`` and :data:`COLUMNS` (the keys of
    :func:`weightdecay.diagnostics.summarize`'s rows that the harness keeps). ``category``:
    only that one. Empty for a run without the monitor. Malformed blocks (a store written
    by someone else) raise ``ValueError`` naming the problem."""
    blocks = (history or {}).get(MONITOR_KEY) or []
    if not isinstance(blocks, list):
        raise ValueError(f"history['{MONITOR_KEY}'] must be a list of blocks, got "
                         f"{type(blocks).__name__}")
    rows: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        if block is None:
            continue
        cats = block.get("categories") if isinstance(block, Mapping) else None
        if not isinstance(cats, Mapping):
            raise ValueError(f"history['{MONITOR_KEY}'][{i}] has no 'categories' table")
        for name, cols in cats.items():
            if category is not None and name != category:
                continue
            steps = cols.get("step") if isinstance(cols, Mapping) else None
            if not isinstance(steps, list) or not all(
                    isinstance(cols.get(k), list) and len(cols[k]) == len(steps)
                    for k in COLUMNS):
                raise ValueError(f"history['{MONITOR_KEY}'][{i}]['{name}'] must hold equal "
                                 f"lists 'step' and {', '.join(COLUMNS)}")
            for j, step in enumerate(steps):
                row = {"step": step, "category": name, "tensors": cols.get("tensors"),
                       "numel": cols.get("numel")}
                for k in COLUMNS:
                    v = cols[k][j]
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                        raise ValueError(f"history['{MONITOR_KEY}'][{i}]['{name}']['{k}'] "
                                         f"holds {v!r}, not a number")
                    row[k] = None if v is None else float(v)
                rows.append(row)
    rows.sort(key=lambda r: r["step"])
    return rows


def total_updates(history: Mapping[str, Any] | None) -> int | None:
    """The monitor's update count at the end of the run (the last block's), or None."""
    blocks = (history or {}).get(MONITOR_KEY) or []
    for block in reversed(blocks if isinstance(blocks, list) else []):
        state = block.get("state") if isinstance(block, Mapping) else None
        if isinstance(state, Mapping) and isinstance(state.get("step"), int):
            return state["step"]
    return None

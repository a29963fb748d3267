"""Checkpoints of one training run: atomic writes, checked reads, RNG states.

A checkpoint is a dict of tensors and plain Python values written with ``torch.save``
through a temporary file and ``os.replace`` (atomic on POSIX; never through a link) and read
back with ``torch.load(weights_only=True)`` (no code runs on load). :func:`load_checkpoint`
checks that what it read is a checkpoint of the same run -- a dict with every key, of the
expected types, for the same config -- and raises :class:`CheckpointError` naming the file
otherwise (truncated, empty, not a dict, a key missing, another run).

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4
(long runs are resumed; a resumed run is bit-identical on CPU).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from weightdecay._io import atomic_open

from .config import RunConfig

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "load_checkpoint", "rng_state",
           "save_atomic", "set_rng_state"]

CHECKPOINT_FORMAT = 1
# key -> the types its value may have (None: any; the training code reads it)
_KEYS: dict[str, tuple[type, ...] | None] = {
    "format": (int,),
    "config": (dict,),
    "epoch": (int,),
    "diverged": (bool,),
    "model": (dict,),
    "optimizer": (dict,),
    "lr_scheduler": (dict,),
    "normalized_decay": (dict, type(None)),
    "rng": (dict,),
    "history": (dict,),
    "wall_seconds": (float, int),
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, is malformed, or belongs to another run."""


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from: torch (CPU, CUDA), its generator, Python, numpy."""
    np_state: tuple = np.random.get_state()  # type: ignore[assignment]  # legacy tuple
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "generator": generator.get_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
    }


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])
    random.setstate(_as_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))


def _as_tuples(obj: Any) -> Any:
    return tuple(_as_tuples(o) for o in obj) if isinstance(obj, (list, tuple)) else obj


def save_atomic(obj: Any, path: str | os.PathLike, *,
                root: str | os.PathLike | None = None) -> None:
    """``torch.save`` to ``path`` atomically (:func:`weightdecay._io.atomic_open`: a
    temporary file of an unpredictable name beside it, then ``os.replace``): a reader sees
    the old checkpoint or the new one, and a link planted at ``path`` is replaced, never
    written through. ``root``: refuse a link that leads out of this folder."""
    with atomic_open(path, "wb", root=root) as fh:
        torch.save(obj, fh)


def _stored_config(stored: Any) -> Any:
    """A checkpoint's config with the fields it predates filled in by their defaults."""
    try:
        return RunConfig.from_dict(stored).to_dict()
    except (ValueError, TypeError):
        return stored


def load_checkpoint(path: str, config: RunConfig, history_keys: Sequence[str]
                    ) -> dict[str, Any] | None:
    """The checkpoint of ``config`` at ``path``; ``None`` when there is no file.

    ``history_keys``: the per-epoch lists its ``history`` must hold, one value per epoch.

    Raises:
        CheckpointError: the file is not a readable checkpoint of this harness (naming the
            reason) or holds a run of another config.
    """
    if not os.path.exists(path):
        return None
    fix = "remove it to start the run afresh"
    try:
        # Everything saved is tensors and plain Python values, so the safe loader suffices.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise CheckpointError(f"checkpoint_path={path!r} cannot be read as a harness "
                              f"checkpoint ({reason}); {fix}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint_path={path!r} holds a {type(checkpoint).__name__}, "
                              f"not a harness checkpoint; {fix}")
    for key, types in _KEYS.items():
        if key not in checkpoint:
            raise CheckpointError(f"checkpoint_path={path!r} lacks {key!r}; {fix}")
        if types is not None and not isinstance(checkpoint[key], types):
            raise CheckpointError(f"checkpoint_path={path!r}: {key!r} is a "
                                  f"{type(checkpoint[key]).__name__}; {fix}")
    if _stored_config(checkpoint["config"]) != config.to_dict():
        raise CheckpointError(
            f"checkpoint_path={path!r} holds a run of a different config "
            f"({checkpoint['config']!r}); remove it or pass another path"
        )
    epoch, history = checkpoint["epoch"], checkpoint["history"]
    if not 0 <= epoch <= config.epochs:
        raise CheckpointError(f"checkpoint_path={path!r}: epoch={epoch!r} is outside "
                              f"0..{config.epochs}; {fix}")
    for key in history_keys:
        values = history.get(key)
        if not isinstance(values, list) or len(values) != epoch:
            raise CheckpointError(f"checkpoint_path={path!r}: history[{key!r}] is not a list "
                                  f"of {epoch} values; {fix}")
    return checkpoint

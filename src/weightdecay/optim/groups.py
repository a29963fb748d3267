"""``param_groups_weight_decay``: decay the weights, not the biases and normalization scales."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def param_groups_weight_decay(
    model: nn.Module,
    weight_decay: float,
    no_decay: Iterable[str] = (),
    *,
    verbose: bool = True,
) -> list[dict]:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed group.

    No decay for tensors with fewer than 2 dimensions (biases, BatchNorm/LayerNorm scales and
    shifts) and for parameters whose name is in ``no_decay`` or ends with ``"." + entry``
    (e.g. ``"pos_embed"``). Returns param groups with ``"param_names"`` (torch >= 2.6 keeps
    them in the optimizer) ready for any optimizer::

        groups = weightdecay.param_groups_weight_decay(model, 0.025)
        opt = weightdecay.AdamW(groups, lr=1e-3)

    With ``verbose`` it prints what went where (counts of tensors and parameters).
    Note that the paper decays every weight; this split is the modern habit (timm, nanoGPT).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"param_groups_weight_decay expects an nn.Module, got {type(model)!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"Invalid weight_decay: {weight_decay!r}; expected a number >= 0")
    names = set(no_decay)
    decay: list[tuple[str, torch.Tensor]] = []
    keep: list[tuple[str, torch.Tensor]] = []
    matched = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        listed = [n for n in names if name == n or name.endswith("." + n)]
        matched.update(listed)
        (keep if p.ndim <= 1 or listed else decay).append((name, p))
    unknown = names - matched
    if unknown:
        raise ValueError(f"no_decay names match no parameter: {sorted(unknown)}")
    groups = [
        {"params": [p for _, p in decay], "param_names": [n for n, _ in decay],
         "weight_decay": float(weight_decay)},
        {"params": [p for _, p in keep], "param_names": [n for n, _ in keep],
         "weight_decay": 0.0},
    ]
    if verbose:
        for label, members in (("decay", decay), ("no decay", keep)):
            count = sum(p.numel() for _, p in members)
            print(f"param_groups_weight_decay: {label}: {len(members)} tensors, "
                  f"{count:,} parameters")
    return [g for g in groups if g["params"]]

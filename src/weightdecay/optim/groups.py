"""``param_groups_weight_decay``: decay the weights, not the biases and normalization scales."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import _validate

logger = logging.getLogger("weightdecay")


@dataclass
class GroupSummary:
    """What :func:`param_groups_weight_decay` put where: per group, its label, weight decay
    and parameter names (``str()`` gives one line per group)."""

    labels: list[str] = field(default_factory=list)
    weight_decays: list[float] = field(default_factory=list)
    names: list[list[str]] = field(default_factory=list)
    numels: list[int] = field(default_factory=list)

    def add(self, label: str, weight_decay: float, members: list[tuple[str, torch.Tensor]]):
        self.labels.append(label)
        self.weight_decays.append(weight_decay)
        self.names.append([n for n, _ in members])
        self.numels.append(sum(p.numel() for _, p in members))

    def __str__(self) -> str:
        return "\n".join(
            f"param_groups_weight_decay: {label}: {len(names)} tensors, {numel:,} parameters, "
            f"weight_decay={wd:g}"
            for label, wd, names, numel in zip(self.labels, self.weight_decays, self.names,
                                               self.numels))


class ParamGroups(list):
    """The param groups (a plain list of dicts, for any optimizer) with a :attr:`summary`."""

    summary: GroupSummary


def param_groups_weight_decay(
    model: nn.Module,
    weight_decay: float,
    no_decay: Iterable[str] = (),
    *,
    verbose: bool = False,
) -> ParamGroups:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed group.

    No decay for tensors with fewer than 2 dimensions (biases, BatchNorm/LayerNorm scales and
    shifts) and for parameters whose name is in ``no_decay`` or ends with ``"." + entry``
    (e.g. ``"pos_embed"``). Returns param groups with ``"param_names"`` (torch >= 2.6 keeps
    them in the optimizer) ready for any optimizer::

        groups = weightdecay.param_groups_weight_decay(model, 0.025)
        opt = weightdecay.AdamW(groups, lr=1e-3)
        print(groups.summary)      # what went where: tensors and parameters per group

    The summary is also logged (logger ``"weightdecay"``): at INFO level with ``verbose``,
    else at DEBUG. Note that the paper decays every weight; this split is the modern habit
    (timm, nanoGPT).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model)!r}")
    weight_decay = _validate.non_negative("weight_decay", weight_decay)
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
    summary = GroupSummary()
    groups = ParamGroups()
    for label, members, lam in (("decay", decay, weight_decay), ("no decay", keep, 0.0)):
        summary.add(label, lam, members)
        if members:
            groups.append({"params": [p for _, p in members],
                           "param_names": [n for n, _ in members], "weight_decay": lam})
    groups.summary = summary
    logger.log(logging.INFO if verbose else logging.DEBUG, "%s", summary)
    return groups

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
    and parameter names (``str()`` gives one line per group), and the scale-invariance probe
    when there was one."""

    labels: list[str] = field(default_factory=list)
    weight_decays: list[float] = field(default_factory=list)
    names: list[list[str]] = field(default_factory=list)
    numels: list[int] = field(default_factory=list)
    scale_invariance: ScaleInvariance | None = None

    def add(self, label: str, weight_decay: float, members: list[tuple[str, torch.Tensor]]):
        self.labels.append(label)
        self.weight_decays.append(weight_decay)
        self.names.append([n for n, _ in members])
        self.numels.append(sum(p.numel() for _, p in members))

    def __str__(self) -> str:
        lines = [
            f"param_groups_weight_decay: {label}: {len(names)} tensors, {numel:,} parameters, "
            f"weight_decay={wd:g}"
            for label, wd, names, numel in zip(self.labels, self.weight_decays, self.names,
                                               self.numels)]
        if self.scale_invariance is not None:
            lines.append(str(self.scale_invariance))
        return "\n".join(lines)


class ParamGroups(list):
    """The param groups (a plain list of dicts, for any optimizer) with a :attr:`summary`."""

    summary: GroupSummary


def param_groups_weight_decay(
    model: nn.Module,
    weight_decay: float,
    no_decay: Iterable[str] = (),
    *,
    verbose: bool = False,
    scale_invariant_only: bool = False,
    example_input=None,
    other_weight_decay: float = 0.0,
) -> ParamGroups:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed group.

    No decay for tensors with fewer than 2 dimensions (biases, BatchNorm/LayerNorm scales and
    shifts) and for parameters whose name is in ``no_decay`` or ends with ``"." + entry``
    (e.g. ``"pos_embed"``). Returns param groups with ``"param_names"`` (torch >= 2.6 keeps
    them in the optimizer) ready for any optimizer::

        groups = weightdecay.param_groups_weight_decay(model, 1e-4)
        opt = weightdecay.AdamW(groups, lr=1e-3)
        print(groups.summary)      # what went where: tensors and parameters per group

    The summary is also logged (logger ``"weightdecay"``): at INFO level with ``verbose``,
    else at DEBUG. Note that the paper decays every weight; this split is the modern habit
    (timm, nanoGPT).

    ``scale_invariant_only=True`` (needs ``example_input``, a batch): ``weight_decay`` goes
    only to the weights that a following normalization makes scale-invariant, found by
    :func:`find_scale_invariant_weights` (module structure, confirmed on the batch); the
    other weights of >= 2 dimensions get ``other_weight_decay`` (default 0), and biases,
    normalization scales and ``no_decay`` names none. For such weights decay does not change
    the function, only the effective step size (lr / ||W||^2); the probe's findings are in
    ``groups.summary.scale_invariance``. Example::

        groups = weightdecay.param_groups_weight_decay(
            model, 0.05, scale_invariant_only=True, example_input=x, other_weight_decay=0.0)
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model)!r}")
    weight_decay = _validate.non_negative("weight_decay", weight_decay)
    other_weight_decay = _validate.non_negative("other_weight_decay", other_weight_decay)
    invariance = None
    if scale_invariant_only:
        if example_input is None:
            raise ValueError("scale_invariant_only=True needs example_input, a batch the "
                             "model takes (the invariance is confirmed on it)")
        invariance = find_scale_invariant_weights(model, example_input)
    elif example_input is not None:
        raise ValueError("example_input is used with scale_invariant_only=True only")
    names = set(no_decay)
    decay: list[tuple[str, torch.Tensor]] = []
    other: list[tuple[str, torch.Tensor]] = []
    keep: list[tuple[str, torch.Tensor]] = []
    matched = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        listed = [n for n in names if name == n or name.endswith("." + n)]
        matched.update(listed)
        if p.ndim <= 1 or listed:
            keep.append((name, p))
        elif invariance is not None and name not in invariance.invariant:
            other.append((name, p))
        else:
            decay.append((name, p))
    unknown = names - matched
    if unknown:
        raise ValueError(f"no_decay names match no parameter: {sorted(unknown)}")
    summary = GroupSummary(scale_invariance=invariance)
    groups = ParamGroups()
    plan = [("decay", decay, weight_decay), ("no decay", keep, 0.0)]
    if invariance is not None:
        plan = [("decay (scale-invariant)", decay, weight_decay),
                ("other weights", other, other_weight_decay), ("no decay", keep, 0.0)]
    for label, members, lam in plan:
        summary.add(label, lam, members)
        if members:
            groups.append({"params": [p for _, p in members],
                           "param_names": [n for n, _ in members], "weight_decay": lam})
    groups.summary = summary
    logger.log(logging.INFO if verbose else logging.DEBUG, "%s", summary)
    return groups


# ------------------------------------------------------------------ scale-invariant weights

#: modules that normalize their input: the weights feeding them can be scale-invariant
NORMALIZATIONS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                  nn.modules.instancenorm._InstanceNorm)


@dataclass
class ScaleInvariance:
    """What :func:`find_scale_invariant_weights` found (``str()``: a readable report).

    Attributes:
        invariant: weights a following normalization makes scale-invariant, found by module
            structure and confirmed on the probe batch.
        rejected: weights followed by a normalization that the probe found not invariant
            (a bias between them, a LayerNorm over other features, ...).
        normalizer: weight -> the normalization module that follows it (the candidates).
        errors: every probed weight (>= 2 dimensions) -> the largest relative change of the
            model's output when the weight is scaled by each of ``scales``.
        rtol: the largest relative change counted as invariant.
    """

    invariant: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    normalizer: dict[str, str] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    rtol: float = 1e-3

    def __str__(self) -> str:
        lines = [f"scale-invariant weights: {len(self.invariant)} of {len(self.errors)} "
                 f"probed (relative output change <= {self.rtol:g})"]
        for name in self.invariant:
            lines.append(f"  {name}: invariant through {self.normalizer[name]} "
                         f"(change {self.errors[name]:.1e})")
        for name in self.rejected:
            lines.append(f"  {name}: followed by {self.normalizer[name]} but not invariant "
                         f"(change {self.errors[name]:.1e})")
        return "\n".join(lines)


def find_scale_invariant_weights(
    model: nn.Module,
    example_input,
    *,
    scales: tuple[float, ...] = (0.5, 2.0),
    rtol: float = 1e-3,
) -> ScaleInvariance:
    """Find the weights W that a following normalization makes scale-invariant:
    ``f(c * W) = f(W)`` for c > 0 (BatchNorm after a convolution without bias, ...).

    1. Structure: one forward pass on ``example_input`` records the order in which leaf
       modules run; the weight (>= 2 dimensions) of the last module with parameters before
       each normalization (BatchNorm, LayerNorm, GroupNorm, InstanceNorm) is a candidate.
    2. Probe: every weight of >= 2 dimensions is scaled by each of ``scales`` and the model's
       output on ``example_input`` compared with the unscaled output; a candidate is
       confirmed when the largest relative change is <= ``rtol`` (the normalization's eps
       keeps it from being exactly 0).

    The probe runs in train mode, the regime where BatchNorm normalizes by the batch's own
    statistics and the invariance holds (in eval mode the running statistics do not scale
    with W); the modules' modes, the buffers (BatchNorm's running statistics) and the random
    state (dropout) are restored afterwards, and the weights are left unchanged. Cost: one
    forward per probed weight and scale. ``example_input``: a batch (tensor, or a tuple of
    positional arguments), of more than one example for BatchNorm.

    What it found is logged (logger ``"weightdecay"``, INFO) and returned.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model)!r}")
    scales = tuple(_validate.positive("scales", c) for c in scales)
    rtol = _validate.positive("rtol", rtol)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    names = {id(m): n for n, m in model.named_modules()}
    params = {id(p): n for n, p in model.named_parameters()}
    modes = {m: m.training for m in model.modules()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: order.append(mod))
             for m in model.modules() if not list(m.children())]
    result = ScaleInvariance(rtol=rtol)
    try:
        model.train()
        cuda = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):

            def output() -> torch.Tensor:
                torch.manual_seed(0)  # the same dropout masks at every probe (and every call)
                out = model(*args)
                leaves = [t for t in torch.utils._pytree.tree_leaves(out)
                          if isinstance(t, torch.Tensor)]
                return torch.cat([t.detach().double().flatten() for t in leaves])

            reference = output()
            for h in hooks:
                h.remove()
            hooks = []
            last = None
            for module in order:  # 1. structure
                if isinstance(module, NORMALIZATIONS):
                    weight = getattr(last, "weight", None)
                    if isinstance(weight, torch.Tensor) and weight.ndim >= 2:
                        result.normalizer.setdefault(params[id(weight)], names[id(module)])
                    last = None
                elif any(True for _ in module.parameters(recurse=False)):
                    last = module
            scale = reference.abs().max().clamp_min(1e-30)
            for name, p in model.named_parameters():  # 2. probe
                if p.ndim < 2:
                    continue
                saved = p.detach().clone()
                change = 0.0
                for c in scales:
                    p.mul_(c)
                    change = max(change, ((output() - reference).abs().max() / scale).item())
                    p.copy_(saved)
                result.errors[name] = change
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
        for m, mode in modes.items():
            m.training = mode
    for name in result.normalizer:
        (result.invariant if result.errors[name] <= rtol else result.rejected).append(name)
    logger.info("%s", result)
    return result

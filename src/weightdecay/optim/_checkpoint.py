"""Checkpoints in both directions, with the meaning of every number kept.

**Where a state dict comes from** is read from the keys of each param group:

- ``torch.optim``: the group carries a key only torch's optimizers write (``foreach``,
  ``maximize``, ``capturable``, ``differentiable``, ``fused``, ``dampening``,
  ``decoupled_weight_decay``) and no ``decay_convention``;
- this library: the group carries ``decay_convention`` and none of torch's keys. This version
  also records ``decoupled`` (whether ``weight_decay`` is a decoupled decay or an L2
  coefficient); a state of an earlier version lacks it, and loads as the class it is loaded
  into. A group with neither kind of key is a state of ours from an earlier version (its
  ``decay_convention`` was "schedule", the old default);
- both kinds of keys: a state of ours that torch loaded and saved again (or a torch state that
  an earlier version of this library loaded and saved). Its ``weight_decay`` is torch's
  coefficient or ours in the recorded convention, which cannot be told apart: it loads where
  the two agree (``decay_convention="lr"``, an L2 coefficient, or 0) and is refused otherwise.

**What each number means.** torch's ``AdamW`` (and ``Adam(decoupled_weight_decay=True)``)
multiplies ``weight_decay`` by lr_t: our ``"lr"`` convention. torch's ``Adam`` and ``SGD`` add
it to the gradient (L2), as our ``Adam`` and ``SGD`` do. torch saved ``Adam``'s and
``AdamW``'s groups alike before torch 2.7 (no ``decoupled_weight_decay``), so such a state
with a decay is refused until its source is named. torch's SGD ``momentum_buffer`` is in other
units than our Algorithm 1 buffer, which carries the step size: m_t = lr_t * buf_t.

**Loading into an optimizer of ours** keeps the options it was built with:
``decay_convention``, ``cautious``, ``l1``, ``impl`` and flat mode. Everything else (lr,
``initial_lr``, betas, eps, momentum, nesterov, amsgrad, weight decay, the state tensors) comes
from the checkpoint, with these rules:

- lambda is converted into the optimizer's convention where one value gives the same decay at
  every update: between "lr" and "schedule", ``lambda_schedule = alpha * lambda_lr`` with
  alpha the group's ``initial_lr`` (torch's LR schedulers store it; a torch state without one
  was run at its ``lr``, which is then alpha). Any other change of convention is refused with
  a ``ValueError`` naming :func:`convert_state_dict`, which converts so that the decay matches
  at the saved update only;
- an L2 coefficient never becomes a decoupled decay, nor the reverse (refused, unless 0);
- torch's SGD ``momentum_buffer`` becomes ``momentum = lr * momentum_buffer``, lr the group's
  saved lr (the next update's). Our SGD then continues exactly as torch's would for as long as
  the lr stays constant — the two algorithms differ when it changes (see :mod:`.sgd`). At a
  saved lr of 0 the buffer cannot be converted: refused. ``dampening`` != 0 is refused;
- what this library does not implement is refused: ``maximize``, ``capturable`` and
  ``differentiable`` set to True. ``foreach`` and ``fused`` are torch's choices of kernel: the
  optimizer's own ``impl`` is kept.

**To torch**: :func:`torch_state_dict` writes what ``torch.optim.SGD``, ``Adam`` and ``AdamW``
read — per group ``lr``, ``initial_lr``, ``weight_decay`` (torch's coefficient), ``betas``,
``eps``, ``amsgrad`` or ``momentum``, ``nesterov``, ``dampening`` = 0 and torch's own flags
(all off), per parameter ``step``, ``exp_avg``, ``exp_avg_sq`` (``max_exp_avg_sq``) or
``momentum_buffer = momentum / lr``. A state of our AdamW with ``decay_convention="lr"``, or
of our Adam, also loads into torch directly; under "schedule" torch would read lambda as its
coefficient, 1/alpha times too strong, and torch's SGD would not find our buffer: convert
those. Refused, as torch has no equivalent: SGDW with a decay (torch's SGD has L2 only), the
"constant" and "corrected" conventions with a decay, cautious decay and L1.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import _validate
from ._decay import DECAY_CONVENTIONS, convention_factor

__all__ = ["convert_state_dict", "torch_state_dict"]

#: keys only torch.optim's optimizers write into a param group
TORCH_KEYS = ("foreach", "maximize", "capturable", "differentiable", "fused", "dampening",
              "decoupled_weight_decay")
#: torch options this library does not implement: a state with one of them set is refused
_REFUSED = {
    "maximize": "maximize=True (gradient ascent)",
    "capturable": "capturable=True (CUDA-graph capture)",
    "differentiable": "differentiable=True (autograd through the step)",
}
#: the ``source=`` names convert_state_dict takes
SOURCES = ("weightdecay", "torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD")
_HELPER = "weightdecay.convert_state_dict"


def family(group: dict) -> str | None:
    """``"adam"`` (Adam/AdamW, torch's or ours), ``"sgd"`` or None (another optimizer)."""
    if "betas" in group and "eps" in group and "amsgrad" in group:
        return "adam"
    if "momentum" in group and "nesterov" in group and "betas" not in group:
        return "sgd"
    return None


def source_of(group: dict) -> str:
    """``"torch"``, ``"weightdecay"`` or ``"mixed"`` (both kinds of keys): see the module."""
    torch_keys = any(key in group for key in TORCH_KEYS)
    ours = "decay_convention" in group
    if torch_keys and ours:
        return "mixed"
    return "torch" if torch_keys else "weightdecay"


def _meaning(group: dict, where: str, source: str | None) -> tuple[str, bool | None, str]:
    """What a saved group's ``weight_decay`` is: (source, decoupled, convention). ``source``
    is "torch" or "weightdecay"; ``decoupled`` is None where the state does not say;
    convention is the decoupled lambda's ("lr" for torch's), "" for an L2 coefficient."""
    if source is None:
        kind = source_of(group)
        if kind == "mixed":
            if (group.get("decay_convention") != "lr" and group.get("decoupled", True)
                    and group.get("weight_decay", 0) != 0):
                raise ValueError(
                    f"{where} has keys of torch.optim and of weightdecay (a state one of them "
                    "loaded from the other and saved again): its weight_decay may be torch's "
                    f"coefficient or lambda in decay_convention="
                    f"{group.get('decay_convention')!r}; say which: {_HELPER}(state_dict, "
                    "decay_convention, source='torch.optim.AdamW' or 'weightdecay')")
            kind = "weightdecay"  # (torch's meaning and the state's own label agree)
    else:
        kind = "weightdecay" if source == "weightdecay" else "torch"
    if kind == "weightdecay":
        decoupled = group.get("decoupled")
        convention = group.get("decay_convention", "schedule")
        _validate.one_of(f"{where}['decay_convention']", convention, DECAY_CONVENTIONS)
        return kind, decoupled, convention if decoupled is not False else ""
    if family(group) == "sgd" or source in ("torch.optim.SGD", "torch.optim.Adam"):
        return kind, False, ""
    decoupled = True if source == "torch.optim.AdamW" else group.get("decoupled_weight_decay")
    return kind, decoupled, "lr" if decoupled is not False else ""


def _exact(lam: float, src: str, dst: str, alpha: float) -> float | None:
    """lambda in ``dst`` giving the decay of lambda in ``src`` at every update, or None."""
    if src == dst:
        return lam
    if {src, dst} == {"schedule", "lr"} and alpha > 0:
        return lam * alpha if src == "lr" else lam / alpha
    return None


def _at_saved_update(lam: float, src: str, dst: str, group: dict, where: str) -> float:
    """lambda in ``dst`` giving the decay of lambda in ``src`` at the saved lr."""
    exact = _exact(lam, src, dst, group["initial_lr"])
    if exact is not None:
        return exact
    d_src = lam * convention_factor({**group, "decay_convention": src})
    f_dst = convention_factor({**group, "decay_convention": dst})
    if f_dst == 0 or d_src == 0:
        raise ValueError(f"{where}: at the saved lr {group['lr']!r} the decay is 0 in one of "
                         f"{src!r} and {dst!r}: no lambda matches it")
    return d_src / f_dst


def _group(saved: Any, index: int, target_family: str | None, decoupled: bool | None,
           source: str | None) -> tuple[dict, bool | None, str, str]:
    """A saved group checked and stripped of torch's keys: (group, decoupled, convention,
    where); ``decoupled`` is the target's (None: take the state's)."""
    where = f"param_groups[{index}]"
    if not isinstance(saved, dict) or "params" not in saved or "lr" not in saved:
        raise ValueError(f"{where} of the state dict is not a param group: {saved!r:.80}")
    fam = family(saved)
    if fam is None or (target_family is not None and fam != target_family):
        raise ValueError(f"{where} of the state dict is not of an optimizer of the "
                         f"{(target_family or 'SGD or Adam').upper()} family (keys "
                         f"{sorted(saved)}); a state loads into the optimizer it was saved by")
    for key, what in _REFUSED.items():
        if saved.get(key):
            raise ValueError(f"{where} of the state dict has {what}, which weightdecay does "
                             "not implement")
    if saved.get("dampening", 0):
        raise ValueError(f"{where} of the state dict has dampening={saved['dampening']!r}; "
                         "Algorithm 1 (and weightdecay.SGD) has no dampening")
    lam = _validate.non_negative(f"{where}['weight_decay']", saved.get("weight_decay", 0.0))
    kind, state_decoupled, convention = _meaning(saved, where, source)
    if state_decoupled is None:  # the state does not say whether lambda is decoupled
        if lam == 0:
            state_decoupled = bool(decoupled)  # (no decay: nothing to mean)
        elif kind == "weightdecay" and decoupled is not None:
            state_decoupled = decoupled  # a state of ours of an earlier version: its class
        elif kind == "torch":
            raise ValueError(
                f"{where} was saved by torch < 2.7, whose Adam and AdamW states look alike: "
                f"its weight_decay {lam!r} may be an L2 coefficient or AdamW's decay; say "
                f"which: {_HELPER}(state_dict, decay_convention, "
                "source='torch.optim.AdamW' or 'torch.optim.Adam')")
        else:
            raise ValueError(f"{where} is a state of an earlier version of weightdecay, which "
                             "does not say whether its weight_decay is decoupled: load it into "
                             "the optimizer that saved it")
    group = {k: v for k, v in saved.items() if k not in TORCH_KEYS}
    group["weight_decay"] = lam
    group["initial_lr"] = saved.get("initial_lr", saved["lr"])
    _validate.non_negative(f"{where}['lr']", group["lr"])
    _validate.non_negative(f"{where}['initial_lr']", group["initial_lr"])
    group["decoupled"] = state_decoupled
    return group, state_decoupled, convention, where


def _sgd_buffers(state: dict, groups: list, where_of: dict) -> dict:
    """torch's ``momentum_buffer`` -> our ``momentum`` = lr * buffer (a new dict of state)."""
    out = dict(state)
    lr_of = {pid: g["lr"] for g in groups for pid in g["params"]}
    for pid, entry in state.items():
        if not isinstance(entry, dict) or "momentum_buffer" not in entry:
            continue
        where = where_of.get(pid, f"state[{pid!r}]")
        if "momentum" in entry:
            raise ValueError(f"{where} has both torch's momentum_buffer and weightdecay's "
                             "momentum: which one is current cannot be told; drop the other")
        entry = dict(entry)
        buf = entry.pop("momentum_buffer")
        if buf is not None:
            lr = lr_of.get(pid, 0.0)
            if lr == 0 and bool(torch.as_tensor(buf).ne(0).any()):
                raise ValueError(f"{where}: torch's momentum_buffer is converted to Algorithm "
                                 "1's buffer as lr * momentum_buffer, and the saved lr is 0")
            entry["momentum"] = buf * lr
        out[pid] = entry
    return out


def _where_of(groups: list) -> dict:
    return {pid: f"param_groups[{g}]['params'][{i}]" for g, group in enumerate(groups)
            for i, pid in enumerate(group.get("params", ()))}


def _saved_groups(optimizer: Any, state_dict: Any) -> list:
    """The param groups of ``state_dict``, one per group of ``optimizer`` (else a one-line
    ``ValueError``)."""
    if not isinstance(state_dict, dict) or not isinstance(state_dict.get("param_groups"), list):
        raise ValueError("a state dict has 'state' and a list of 'param_groups', got "
                         f"{type(state_dict).__name__}")
    saved_groups = state_dict["param_groups"]
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(f"the state dict has {len(saved_groups)} param groups, the optimizer "
                         f"{len(optimizer.param_groups)}")
    return saved_groups


def adapt(optimizer: Any, state_dict: dict) -> dict:
    """``state_dict`` (torch's or ours, any version) as a state of ``optimizer``'s class and
    options (see the module): a new dict; refuses with one-line ``ValueError``s."""
    saved_groups = _saved_groups(optimizer, state_dict)
    target = "adam" if "betas" in optimizer.defaults else "sgd"
    groups = []
    for index, (saved, current) in enumerate(zip(saved_groups, optimizer.param_groups)):
        group, decoupled, convention, where = _group(saved, index, target,
                                                     optimizer.decoupled, None)
        lam = group["weight_decay"]
        if decoupled != optimizer.decoupled and lam != 0:
            kinds = {True: "a decoupled decay", False: "an L2 coefficient"}
            raise ValueError(f"{where}: the state's weight_decay {lam!r} is "
                             f"{kinds[bool(decoupled)]}, {type(optimizer).__name__}'s is "
                             f"{kinds[optimizer.decoupled]}: load the state into the optimizer "
                             "that saved it (or its torch.optim counterpart's into ours)")
        if optimizer.decoupled and lam != 0:
            wanted = current["decay_convention"]
            converted = _exact(lam, convention, wanted, group["initial_lr"])
            if converted is None:
                raise ValueError(
                    f"{where}: the state's weight_decay {lam!r} is lambda in "
                    f"decay_convention={convention!r}, this optimizer's is {wanted!r}, and no "
                    "lambda gives the same decay at every update; convert explicitly (the "
                    f"decay then matches at the saved update): {_HELPER}(state_dict, "
                    f"decay_convention={wanted!r})")
            group["weight_decay"] = converted
        for key in ("decay_convention", "cautious", "l1", "impl"):
            group[key] = current[key]  # the options the optimizer was built with
        group["decoupled"] = optimizer.decoupled
        groups.append(group)
    state = state_dict.get("state", {})
    if target == "sgd":
        state = _sgd_buffers(state, saved_groups, _where_of(saved_groups))
    return {**state_dict, "state": state, "param_groups": groups}


def convert_state_dict(state_dict: dict, decay_convention: str, *,
                       source: str | None = None) -> dict:
    """A state dict (torch.optim's SGD/Adam/AdamW, or this library's of any version) as a
    state of this library with every decoupled lambda in ``decay_convention``.

    Between "lr" (torch's) and "schedule" the conversion is exact at every update
    (``lambda_schedule = alpha * lambda_lr``, alpha the group's ``initial_lr``); into or out
    of "constant" and "corrected" no lambda is, and the one returned gives the saved update's
    decay, d_t = lambda * (what the convention multiplies it by at the saved lr): later
    updates follow the new convention. L2 coefficients stay as they are. torch's SGD
    ``momentum_buffer`` becomes ``momentum = lr * momentum_buffer``.

    ``source`` names where the state comes from when its keys cannot tell (see
    :mod:`weightdecay.optim._checkpoint`): ``"weightdecay"``, ``"torch.optim.AdamW"``,
    ``"torch.optim.Adam"`` or ``"torch.optim.SGD"``. The result loads into an optimizer of
    ours built with ``decay_convention``; the input is not modified (tensors are shared
    except the converted momentum buffers).

    Example:
        >>> sd = convert_state_dict(torch_adamw.state_dict(), "corrected")
        >>> weightdecay.AdamW(params, decay_convention="corrected").load_state_dict(sd)
    """
    _validate.one_of("decay_convention", decay_convention, DECAY_CONVENTIONS)
    if source is not None:
        _validate.one_of("source", source, SOURCES)
    if not isinstance(state_dict, dict) or not isinstance(state_dict.get("param_groups"), list):
        raise ValueError("a state dict has 'state' and a list of 'param_groups'")
    groups = []
    for index, saved in enumerate(state_dict["param_groups"]):
        group, decoupled, convention, where = _group(saved, index, None, None, source)
        if decoupled and group["weight_decay"] != 0 and convention != decay_convention:
            group["weight_decay"] = _at_saved_update(group["weight_decay"], convention,
                                                     decay_convention, group, where)
        group["decay_convention"] = decay_convention
        groups.append(group)
    state = _sgd_buffers(state_dict.get("state", {}), state_dict["param_groups"],
                         _where_of(state_dict["param_groups"]))
    return {**state_dict, "state": state, "param_groups": groups}


def torch_state_dict(optimizer_or_state: Any) -> dict:
    """The state of an optimizer of ours (or its ``state_dict()``) as ``torch.optim.SGD``,
    ``Adam`` or ``AdamW`` save theirs: load it into the torch optimizer of the same family
    (``AdamW`` for a decoupled decay; see the module for what torch reads and what is
    refused). lambda becomes torch's coefficient: unchanged under "lr", lambda / alpha under
    "schedule" (alpha the group's ``initial_lr``); our SGD buffer becomes
    ``momentum_buffer = momentum / lr``.

    Example:
        >>> theirs = torch.optim.AdamW(model.parameters())
        >>> theirs.load_state_dict(weightdecay.torch_state_dict(ours))
    """
    state_dict = (optimizer_or_state.state_dict() if hasattr(optimizer_or_state, "state_dict")
                  else optimizer_or_state)
    if not isinstance(state_dict, dict) or not isinstance(state_dict.get("param_groups"), list):
        raise ValueError("torch_state_dict takes an optimizer of weightdecay or its state dict")
    decoupled_default = getattr(optimizer_or_state, "decoupled", None)
    groups: list[dict] = []
    lr_of: dict[Any, tuple] = {}
    for index, saved in enumerate(state_dict["param_groups"]):
        where = f"param_groups[{index}]"
        if source_of(saved) != "weightdecay" or "decay_convention" not in saved:
            raise ValueError(f"{where} is not a state of weightdecay's optimizers")
        fam = family(saved)
        lam = _validate.non_negative(f"{where}['weight_decay']", saved["weight_decay"])
        decoupled = saved.get("decoupled", decoupled_default)
        if decoupled is None and lam != 0:
            raise ValueError(f"{where} does not say whether its weight_decay is decoupled (a "
                             "state of an earlier version): pass the optimizer instead")
        convention = saved["decay_convention"]
        alpha = saved.get("initial_lr", saved["lr"])
        if lam != 0 and decoupled:
            if fam == "sgd":
                raise ValueError(f"{where}: torch.optim.SGD has no decoupled weight decay "
                                 "(SGDW): its weight_decay is an L2 coefficient")
            wd_torch = _exact(lam, convention, "lr", alpha)
            if wd_torch is None:
                raise ValueError(f"{where}: torch.optim.AdamW decays by lr_t * weight_decay, "
                                 f"which no value makes decay_convention={convention!r}")
            lam = wd_torch
        if saved.get("cautious") and lam != 0:
            raise ValueError(f"{where}: torch.optim has no cautious weight decay")
        if saved.get("l1", 0) != 0:
            raise ValueError(f"{where}: torch.optim has no L1 term (l1={saved['l1']!r})")
        group = {k: v for k, v in saved.items()
                 if k not in ("decay_convention", "cautious", "l1", "impl", "decoupled")}
        group.update(weight_decay=lam, initial_lr=alpha, maximize=False, foreach=None,
                     differentiable=False, fused=None)
        if fam == "adam":
            group.update(capturable=False, decoupled_weight_decay=bool(decoupled))
        else:
            group.update(dampening=0.0)
        for pid in saved["params"]:
            lr_of[pid] = (fam, saved["lr"], saved.get("momentum", 0), index)
        groups.append(group)
    state: dict[Any, Any] = {}
    for pid, entry in state_dict.get("state", {}).items():
        fam, lr, momentum, index = lr_of.get(pid, (None, 0.0, 0, -1))
        if fam == "sgd" and isinstance(entry, dict) and "momentum" in entry:
            entry = dict(entry)
            buf = entry.pop("momentum")
            if momentum == 0:  # torch keeps no buffer without momentum
                entry["momentum_buffer"] = None
            elif lr == 0 and bool(buf.ne(0).any()):
                raise ValueError(f"param_groups[{index}]: the lr is 0, so the momentum buffer "
                                 "cannot be written in torch's units (momentum / lr)")
            else:
                entry["momentum_buffer"] = buf / lr if lr != 0 else buf.clone()
        state[pid] = entry
    return {**state_dict, "state": state, "param_groups": groups}


def adapt_wrapped(optimizer: Any, state_dict: dict, base: type) -> dict:
    """``state_dict`` as a state of ``decoupled_weight_decay(base)`` built as ``optimizer``:
    its own state (with ``decay_convention``) or a plain torch state of ``base``."""
    saved_groups = _saved_groups(optimizer, state_dict)
    muon = getattr(torch.optim, "Muon", None)
    base_decoupled = issubclass(base, torch.optim.AdamW) or (
        muon is not None and issubclass(base, muon))
    groups = []
    for index, (saved, current) in enumerate(zip(saved_groups, optimizer.param_groups)):
        where = f"param_groups[{index}]"
        if not isinstance(saved, dict) or "params" not in saved or "lr" not in saved:
            raise ValueError(f"{where} of the state dict is not a param group: {saved!r:.80}")
        lam = _validate.non_negative(f"{where}['weight_decay']", saved.get("weight_decay", 0.0))
        if "decay_convention" in saved:  # the wrapper's own state
            convention = _validate.one_of(f"{where}['decay_convention']",
                                          saved["decay_convention"], DECAY_CONVENTIONS)
        elif lam == 0:  # a plain state of the base class without decay: the optimizer's own
            lam, convention = current["weight_decay"], current["decay_convention"]
        elif base_decoupled or saved.get("decoupled_weight_decay"):
            convention = "lr"  # torch's decoupled decay multiplies lambda by lr_t
        else:
            raise ValueError(
                f"{where}: the state's weight_decay {lam!r} is {base.__name__}'s L2 "
                f"coefficient, and {type(optimizer).__name__} decays decoupled and never adds "
                "it to the gradient; load the state into torch's optimizer")
        group = dict(saved)
        group["initial_lr"] = _validate.non_negative(f"{where}['initial_lr']",
                                                     saved.get("initial_lr", saved["lr"]))
        wanted = current["decay_convention"]
        converted = 0.0 if lam == 0 else _exact(lam, convention, wanted, group["initial_lr"])
        if converted is None:
            raise ValueError(
                f"{where}: the state's weight_decay {lam!r} is lambda in decay_convention="
                f"{convention!r}, this optimizer's is {wanted!r}, and no lambda gives the same "
                "decay at every update; build the optimizer with decay_convention="
                f"{convention!r}")
        group.update(weight_decay=converted, decay_convention=wanted)
        groups.append(group)
    return {**state_dict, "param_groups": groups}

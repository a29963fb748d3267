"""``EquilibriumMonitor``: what weight decay does to each tensor while a model trains.

Every ``every`` updates it measures, for each tensor the optimizer updates, the norm, the
angle between theta_t and theta_{t-1}, the relative update and the gradient norm, and puts
beside them what :mod:`weightdecay.diagnostics.theory` predicts at equilibrium for the
tensor's optimizer, decay convention and hyperparameters at the current eta_t (or why it
predicts nothing). It hooks itself on ``optimizer.step()`` (torch's step pre- and post-hooks),
so a training loop needs no change::

    monitor = EquilibriumMonitor(model, optimizer, every=10, example_input=x[:64])
    ...                                   # train as usual
    monitor.records()                     # one dict per tensor per measured update
    monitor.close()                       # removes its hooks (or use it as a context manager)

Cost: between measured updates the hooks count the update and return. Before a measured
update (and only then) the tensors are copied; after it a few multi-tensor norms are taken
and the copy is dropped. The angle comes from norms alone (no inner product in low
precision): with a = theta_{t-1}, b = theta_t, delta = ||a - b||::

    ||a/|a| - b/|b|||^2 = (delta^2 - (|a| - |b|)^2) / (|a| |b|),   angle = 2 asin(chord / 2)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .._validate import positive, positive_int
from ..optim.groups import NORMALIZATIONS, find_scale_invariant_weights
from .rules import Rule, group_rule

__all__ = ["RECORD_FIELDS", "EquilibriumMonitor", "structural_scale_invariance"]

_STR, _INT, _NUM, _BOOL = (str,), (int,), (int, float), (bool,)
_OPT = (type(None),)

#: every key of a record, with the types its value may have (``None``: not available; the
#: ``why_*`` fields then say why). Floats are finite: an infinite timescale is None.
RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "name": _STR,                       # parameter name in the model
    "step": _INT,                       # update count t after this update (1 = the first)
    "group": _INT,                      # index of the optimizer's param group
    "category": _STR,                   # "scale_invariant", "normalization", "other", or yours
    "scale_invariant": _BOOL,           # found (or given) scale-invariant
    "numel": _INT,
    "optimizer": _STR,                  # the update rule the prediction is for
    "lr": _NUM + _OPT,                  # lr_t
    "eta": _NUM + _OPT,                 # eta_t = lr_t / initial_lr
    "decay_per_update": _NUM + _OPT,    # d_t (effective for L2 in a momentum buffer; 0: none)
    "momentum": _NUM + _OPT,            # b of the update filter
    "norm": _NUM + _OPT,                # ||theta_t||
    "grad_norm": _NUM + _OPT,           # ||g_t||, the gradient of this update
    "max_abs": _NUM + _OPT,             # ||theta_t||_inf
    "relative_update": _NUM + _OPT,     # ||theta_t - theta_{t-1}|| / ||theta_{t-1}||
    "angular_update": _NUM + _OPT,      # angle(theta_t, theta_{t-1}), radians
    "predicted_angular_update": _NUM + _OPT,
    "angular_ratio": _NUM + _OPT,       # measured / predicted
    "predicted_norm": _NUM + _OPT,
    "norm_ratio": _NUM + _OPT,          # measured / predicted
    "max_abs_bound": _NUM + _OPT,       # Xie & Li's lr_t/d_t for Adam-like decoupled decay
    "timescale_updates": _NUM + _OPT,   # 1/(2 d_t)
    "timescale_epochs": _NUM + _OPT,    # the same in epochs (updates_per_epoch given)
    "timescales_elapsed": _NUM + _OPT,  # sum over updates of 2 d_s (trapezoid over measured)
    "why_no_prediction": _STR + _OPT,
    "why_no_norm_prediction": _STR + _OPT,
}
_FORMAT = "weightdecay.EquilibriumMonitor"


def structural_scale_invariance(model: nn.Module) -> list[str]:
    """Weights that a following normalization *probably* makes scale-invariant, from module
    structure alone: the weight (>= 2 dimensions) of the last module with parameters before
    each normalization, in the order the modules were registered (step 1 of
    :func:`weightdecay.find_scale_invariant_weights`, which confirms it on a batch and uses the
    order modules run in; pass ``example_input`` to the monitor for that)."""
    names = {id(p): n for n, p in model.named_parameters()}
    found: list[str] = []
    last = None
    for module in model.modules():
        if any(True for _ in module.children()):
            continue
        if isinstance(module, NORMALIZATIONS):
            weight = getattr(last, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.ndim >= 2 and id(weight) in names:
                found.append(names[id(weight)])
            last = None
        elif any(True for _ in module.parameters(recurse=False)):
            last = module
    return found


def _on_stack(frame: Any, current: Any) -> bool:
    """Whether ``frame`` is ``current`` or one of its callers."""
    while current is not None:
        if current is frame:
            return True
        current = current.f_back
    return False


def _finite(x: float | None) -> float | None:
    """x, or None where it is not a finite number (records stay JSON-able: a diverged run)."""
    return x if x is not None and math.isfinite(x) else None


def _ratio(measured: float | None, predicted: float | None) -> float | None:
    if measured is None or predicted is None or predicted <= 0:
        return None
    return _finite(measured / predicted)


def _floats(tensors: list[torch.Tensor]) -> list[float]:
    """0-d tensors -> floats, with one synchronization where they share a device."""
    if not tensors:
        return []
    try:
        return torch.stack(tensors).double().tolist()
    except RuntimeError:  # several devices
        return [float(t) for t in tensors]


class EquilibriumMonitor:
    """Measure each tensor's norm and angular update every ``every`` updates, beside the
    equilibrium that weight decay drives a scale-invariant weight to (see
    :mod:`weightdecay.diagnostics.theory` for the formulas and their sources).

    Args:
        model: the model (parameter names and, for the scale-invariance probe, structure).
        optimizer: any ``torch.optim.Optimizer`` over the model's parameters (the library's,
            torch's, the ``decoupled_weight_decay`` wrapper). Predictions: see
            :mod:`weightdecay.diagnostics.rules`; for the others ``predicted_angular_update``
            is None and ``why_no_prediction`` says why.
        every: measure at updates every, 2*every, ... (counted by the monitor from 1).
        example_input: a batch the model takes: scale invariance is found by
            :func:`weightdecay.find_scale_invariant_weights` (structure, confirmed on the
            batch), once, here. Without it, from structure alone
            (:func:`structural_scale_invariance`).
        scale_invariant: the names of the scale-invariant weights, if you know them (no probe).
        categories: how tensors are grouped in summaries: a mapping name -> label, or a
            function name -> label (None: the default). Default: ``"scale_invariant"``,
            ``"normalization"`` (parameters of normalization modules: BatchNorm's affine
            scale and shift) and ``"other"`` (the rest: the head, layers without a
            normalization after them).
        updates_per_epoch: gives ``timescale_epochs``.

    Records (:meth:`records`): one dict per tensor per measured update, keys and types in
    :data:`RECORD_FIELDS`, JSON-able (floats are finite; None where a value does not exist).
    ``step`` is the update count t after the update. Predictions assume the tensor is
    scale-invariant (``scale_invariant`` says whether it is); they are made for every decayed
    tensor, from the param group's hyperparameters at that update.

    Resume: :meth:`state_dict` holds the update count, the records not yet :meth:`drain`\\ ed
    and the integrated decay; a new monitor given it with :meth:`load_state_dict` continues
    where the old one stopped.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        every: int = 10,
        *,
        example_input: Any = None,
        scale_invariant: Iterable[str] | None = None,
        categories: Mapping[str, str] | Callable[[str], str | None] | None = None,
        updates_per_epoch: float | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model)!r}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer, got "
                             f"{type(optimizer)!r}")
        self.model = model
        self.optimizer = optimizer
        self.every = positive_int("every", every)
        self.updates_per_epoch = (None if updates_per_epoch is None
                                  else positive("updates_per_epoch", updates_per_epoch))
        names = dict(model.named_parameters())
        if scale_invariant is not None:
            invariant = list(scale_invariant)
            unknown = sorted(set(invariant) - set(names))
            if unknown:
                raise ValueError(f"scale_invariant names match no parameter: {unknown}")
            self.scale_invariance_source = "given"
        elif example_input is not None:
            invariant = find_scale_invariant_weights(model, example_input).invariant
            self.scale_invariance_source = "probe"
        else:
            invariant = structural_scale_invariance(model)
            self.scale_invariance_source = "structure"
        self._names = {id(p): n for n, p in names.items()}
        self._categories = categories
        self._norm_params = {id(p) for m in model.modules() if isinstance(m, NORMALIZATIONS)
                             for p in m.parameters(recurse=False)}
        self._set_invariant(invariant)
        self.step = 0
        self._records: list[dict] = []
        self._tracked: list[tuple[int, torch.Tensor, str, str]] = []
        self._elapsed: list[float] = []
        self._last_decay: list[float | None] = []
        self._track()
        self._prev: list[torch.Tensor] | None = None
        self._active: Any = None  # the frame of the step() wrapper running this update
        self._handles = [optimizer.register_step_pre_hook(self._pre_step),
                         optimizer.register_step_post_hook(self._post_step)]

    # -- what is tracked --------------------------------------------------------------------
    def _set_invariant(self, invariant: list[str]) -> None:
        #: the names of the tensors counted as scale-invariant
        self.scale_invariant: list[str] = list(invariant)
        self._invariant_set = set(invariant)
        self._default_category = {
            n: ("scale_invariant" if n in self._invariant_set else
                "normalization" if id(p) in self._norm_params else "other")
            for n, p in self.model.named_parameters()}

    def _category(self, name: str) -> str:
        cats = self._categories
        if isinstance(cats, Mapping) and name in cats:
            return str(cats[name])
        if callable(cats):
            label = cats(name)
            if label is not None:
                return str(label)
        return self._default_category.get(name, "other")

    def _track(self) -> None:
        """(group index, parameter, name, category) of every tensor the optimizer updates."""
        tracked = []
        for gi, group in enumerate(self.optimizer.param_groups):
            for j, p in enumerate(group["params"]):
                if p.requires_grad:
                    name = self._names.get(id(p), f"param_groups[{gi}][{j}]")
                    tracked.append((gi, p, name, self._category(name)))
        self._tracked = tracked
        n = len(self.optimizer.param_groups)
        self._elapsed += [0.0] * (n - len(self._elapsed))
        self._last_decay += [None] * (n - len(self._last_decay))

    # -- the hooks --------------------------------------------------------------------------
    # torch runs the step hooks from a wrapper around step(); a subclass whose step() calls
    # super().step() can run them twice per update (the wrapper of each class: torch's own
    # behaviour, and the decoupled_weight_decay wrapper's once its base class has been
    # instantiated). Only the outermost call counts: the pre-hook keeps the frame of the
    # wrapper that called it, and a pre-hook run while that frame is still on the stack is a
    # nested one. (A step that raised after the pre-hook leaves a frame that is no longer on
    # the stack: the next update starts afresh.)
    def _pre_step(self, optimizer, args, kwargs) -> None:
        caller = sys._getframe(1)
        if self._active is not None and _on_stack(self._active, caller):
            return  # nested: the same update
        self._active = caller
        if (self.step + 1) % self.every:
            self._prev = None
            return
        if len(self.optimizer.param_groups) != len(self._elapsed):
            self._track()  # add_param_group since the last measurement
        with torch.no_grad():  # theta_{t-1}, kept only through this update
            self._prev = [p.detach().clone() for _, p, _, _ in self._tracked]

    def _post_step(self, optimizer, args, kwargs) -> None:
        if sys._getframe(1) is not self._active:
            return  # the nested call's post-hook
        self._active = None
        self.step += 1
        prev, self._prev = self._prev, None
        if prev is not None:
            self._measure(prev)

    @torch.no_grad()
    def _measure(self, prev: list[torch.Tensor]) -> None:
        groups = self.optimizer.param_groups
        rules = [group_rule(self.optimizer, g) for g in groups]
        for i, rule in enumerate(rules):  # sum of 2*d_s over the updates (trapezoid rule)
            last = self._last_decay[i]
            self._elapsed[i] += self.every * (rule.decay + (rule.decay if last is None else last))
            self._last_decay[i] = rule.decay
        idx = [k for k, (_, p, _, _) in enumerate(self._tracked) if p.grad is not None]
        if not idx:
            return
        before = [prev[k] for k in idx]
        now = [self._tracked[k][1].detach() for k in idx]
        grads = [self._tracked[k][1].grad for k in idx]
        dense = [k for k, g in enumerate(grads) if g is not None and not g.is_sparse]
        dense_grads = [g for g in grads if g is not None and not g.is_sparse]
        # three multi-tensor calls: ||theta_{t-1}||, ||theta_t||, ||g_t||; then the difference
        # (in the copy) and the largest |theta_t|
        norms = list(torch._foreach_norm([*before, *now, *dense_grads]))
        torch._foreach_sub_(before, now)  # theta_{t-1} - theta_t, in the copy
        norms += torch._foreach_norm(before)
        norms += torch._foreach_norm(now, ord=math.inf)
        values = _floats(norms)
        n, m = len(idx), len(dense)
        a_s, b_s = values[:n], values[n:2 * n]
        g_s: list[float | None] = [None] * n
        for pos, k in enumerate(dense):
            g_s[k] = values[2 * n + pos]
        delta_s, inf_s = values[2 * n + m:3 * n + m], values[3 * n + m:]
        shared = [self._shared(gi, rule) for gi, rule in enumerate(rules)]
        for pos, k in enumerate(idx):
            gi, p, name, category = self._tracked[k]
            self._records.append(self._record(
                name, category, gi, p.numel(), rules[gi], shared[gi], a_s[pos], b_s[pos],
                inf_s[pos], g_s[pos], delta_s[pos]))

    def _shared(self, gi: int, rule: Rule) -> dict:
        """The fields a param group's tensors share at this update."""
        timescale = rule.timescale
        shared = {
            "optimizer": rule.optimizer, "lr": rule.lr, "eta": rule.eta,
            "decay_per_update": rule.decay, "momentum": rule.momentum,
            "predicted_angular_update": rule.angular_update,
            "max_abs_bound": rule.max_abs_bound, "timescale_updates": timescale,
            "timescale_epochs": (None if timescale is None or self.updates_per_epoch is None
                                 else timescale / self.updates_per_epoch),
            "timescales_elapsed": self._elapsed[gi], "why_no_prediction": rule.reason,
        }
        return {k: _finite(v) if isinstance(v, float) else v for k, v in shared.items()}

    def _record(self, name: str, category: str, gi: int, numel: int, rule: Rule, shared: dict,
                a: float, b: float, max_abs: float, g: float | None, delta: float) -> dict:
        """One record: a = ||theta_{t-1}||, b = ||theta_t||, delta = ||theta_t - theta_{t-1}||
        (a diverged tensor's NaN or infinite values become None)."""
        angle = relative = grad_scale = None
        if 0 < a * b < math.inf and math.isfinite(delta):
            chord2 = max(0.0, (delta * delta - (a - b) ** 2) / (a * b))
            angle = 2.0 * math.asin(min(1.0, math.sqrt(chord2) / 2.0))
            relative = delta / a
        if g is not None and math.isfinite(g) and math.isfinite(a):
            grad_scale = g * a
        norm_pred = rule.equilibrium_norm(numel, grad_scale)
        norm = _finite(b)
        return {
            "name": name, "step": self.step, "group": gi, "category": category,
            "scale_invariant": name in self._invariant_set, "numel": numel, **shared,
            "norm": norm, "grad_norm": _finite(g), "max_abs": _finite(max_abs),
            "relative_update": _finite(relative), "angular_update": angle,
            "angular_ratio": _ratio(angle, shared["predicted_angular_update"]),
            "predicted_norm": _finite(norm_pred), "norm_ratio": _ratio(norm, norm_pred),
            "why_no_norm_prediction": rule.norm_problem(grad_scale),
        }

    # -- results ----------------------------------------------------------------------------
    def records(self, since: int | None = None) -> list[dict]:
        """The records held (copies), in order; ``since``: only those of updates after it."""
        return [dict(r) for r in self._records if since is None or r["step"] > since]

    def drain(self) -> list[dict]:
        """The records held, which the monitor then forgets (store them yourself: a long run
        keeps memory flat; :meth:`state_dict` holds only what was not drained)."""
        out, self._records = self._records, []
        return out

    def summary(self, last: bool = True) -> list[dict]:
        """Per category (and update), see :func:`weightdecay.diagnostics.summarize`;
        ``last``: only the latest measured update."""
        from .summary import summarize

        if not last:
            return summarize(self._records)
        latest = self._records[-1]["step"] if self._records else None
        return summarize([r for r in self._records if r["step"] == latest])

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain data (JSON-able): the update count, the records held, the integrated decay."""
        return {"format": _FORMAT, "version": 1, "every": self.every, "step": self.step,
                "scale_invariant": list(self.scale_invariant),
                "scale_invariance_source": self.scale_invariance_source,
                "timescales_elapsed": list(self._elapsed),
                "last_decay": list(self._last_decay),
                "records": [dict(r) for r in self._records]}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from :meth:`state_dict`: the update count, the records, the integrated
        decay and the scale-invariant names the run started with (a probe on the trained
        model could find others: the records keep one meaning). Everything is checked before
        anything is changed (a ValueError names what is wrong); ``every`` stays this
        monitor's own."""
        if not isinstance(state, Mapping) or state.get("format") != _FORMAT:
            raise ValueError("not an EquilibriumMonitor state_dict (format "
                             f"{state.get('format') if isinstance(state, Mapping) else state!r})")
        if state.get("version") != 1:
            raise ValueError(f"EquilibriumMonitor state_dict version {state.get('version')!r} "
                             "is not supported (expected 1)")
        step = state.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"state_dict['step'] must be an int >= 0, got {step!r}")
        n = len(self.optimizer.param_groups)
        elapsed = _number_list(state.get("timescales_elapsed"), "timescales_elapsed", n)
        last = _number_list(state.get("last_decay"), "last_decay", n, allow_none=True)
        invariant = state.get("scale_invariant")
        names = set(self._default_category)
        if not isinstance(invariant, list) or not all(isinstance(n, str) and n in names
                                                      for n in invariant):
            raise ValueError("state_dict['scale_invariant'] must be a list of the model's "
                             f"parameter names, got {invariant!r}")
        source = state.get("scale_invariance_source")
        if source not in ("given", "probe", "structure"):
            raise ValueError(f"state_dict['scale_invariance_source'] is {source!r}")
        records = state.get("records")
        if not isinstance(records, list):
            raise ValueError(f"state_dict['records'] must be a list, got {type(records)!r}")
        checked = [check_record(r, f"state_dict['records'][{i}]", max_step=step)
                   for i, r in enumerate(records)]
        self.step = step
        self._set_invariant(invariant)
        self.scale_invariance_source = source
        self._track()
        self._elapsed = [float(x) for x in elapsed]
        self._last_decay = [None if x is None else float(x) for x in last]
        self._records = checked

    # -- hooks' lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        """Remove the hooks (the records stay readable)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._prev = self._active = None

    def __enter__(self) -> EquilibriumMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _number_list(value: Any, key: str, n: int, allow_none: bool = False) -> list:
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(f"state_dict['{key}'] must be a list of {n} numbers (one per param "
                         f"group of the optimizer), got {value!r}")
    for x in value:
        if x is None and allow_none:
            continue
        if (isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)
                or x < 0):
            raise ValueError(f"state_dict['{key}'] has {x!r}; expected finite numbers >= 0")
    return value


def check_record(record: Any, where: str = "record", max_step: int | None = None) -> dict:
    """A copy of ``record`` if it has exactly the keys of :data:`RECORD_FIELDS`, each of an
    allowed type (numbers finite), else a ValueError naming the first problem."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} must be a dict, got {type(record)!r}")
    keys = set(record)
    if keys != set(RECORD_FIELDS):
        missing, extra = sorted(set(RECORD_FIELDS) - keys), sorted(keys - set(RECORD_FIELDS))
        raise ValueError(f"{where} has missing keys {missing} and unknown keys {extra}")
    for key, types in RECORD_FIELDS.items():
        value = record[key]
        if isinstance(value, bool) and bool not in types:
            raise ValueError(f"{where}['{key}'] is {value!r}, not of {types}")
        if not isinstance(value, types):
            raise ValueError(f"{where}['{key}'] is {value!r}, not of {types}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}['{key}'] is {value!r}; numbers must be finite")
    if record["step"] < 1 or (max_step is not None and record["step"] > max_step):
        raise ValueError(f"{where}['step'] is {record['step']!r}, outside 1..{max_step}")
    return dict(record)

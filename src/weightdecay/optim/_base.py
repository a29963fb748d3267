"""Shared machinery of the library's optimizers: validation, eta_t, implementation choice."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import optimizer as _torch_optimizer

from ._decay import check_convention

IMPLS = ("reference", "foreach", "fused", "compiled")


def check_nonneg(name: str, value: Any) -> float:
    """A finite real number >= 0, else ValueError naming the argument and the value."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Invalid {name}: {value!r}; expected a number")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid {name}: {value!r}; expected a real number")
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError(f"Invalid {name}: {value!r}; expected a finite value >= 0")
    return float(value)


def check_unit(name: str, value: Any) -> float:
    """A number in [0, 1) (momentum, betas)."""
    value = check_nonneg(name, value)
    if not value < 1.0:
        raise ValueError(f"Invalid {name}: {value!r}; expected a value in [0, 1)")
    return value


def check_positive(name: str, value: Any) -> float:
    value = check_nonneg(name, value)
    if value <= 0:
        raise ValueError(f"Invalid {name}: {value!r}; expected a value > 0")
    return value


def check_impl(impl: str | None) -> str | None:
    if impl is not None and impl not in IMPLS:
        raise ValueError(f"Invalid impl: {impl!r}; expected None (automatic) or one of {IMPLS}")
    return impl


class DecayOptimizer(torch.optim.Optimizer):
    """Base class: param groups carry ``lr``, ``initial_lr``, ``weight_decay``,
    ``decay_convention`` and ``impl``; subclasses implement ``_update_group``.

    eta_t = ``group["lr"] / group["initial_lr"]``; ``initial_lr`` is set at construction
    (torch LR schedulers then keep it, as they ``setdefault`` it).
    """

    #: keys validated for every group: name -> checker
    _checks: dict = {}

    def __init__(self, params: Iterable, defaults: dict, flat: bool = False) -> None:
        check_convention(defaults["decay_convention"])
        check_impl(defaults["impl"])
        for key, checker in self._checks.items():
            defaults[key] = checker(key, defaults[key])
        self._flat = None
        super().__init__(params, defaults)
        if flat:
            from .flat import FlatParams

            self._flat = FlatParams(self)

    @property
    def flat(self) -> bool:
        """True when the parameters live in contiguous buffers (``flat=True``)."""
        return self._flat is not None

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for key, checker in self._checks.items():
            group[key] = checker(key, group[key])
        check_convention(group["decay_convention"])
        check_impl(group["impl"])
        group.setdefault("initial_lr", group["lr"])
        for p in group["params"]:
            if p.is_sparse:
                raise ValueError(f"{type(self).__name__} does not support sparse parameters")
        if getattr(self, "_flat", None) is not None:
            self._flat.add(group)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        # torch pickles only defaults, state and param_groups: an unpickled (or deep-copied)
        # optimizer is in the regular mode, its state a copy of the buffers' values
        self.__dict__.setdefault("_flat", None)
        for group in self.param_groups:  # old checkpoints keep loading
            group.setdefault("decay_convention", "schedule")
            group.setdefault("impl", None)
            group.setdefault("initial_lr", group["lr"])

    @staticmethod
    def _params_with_grad(group: dict, name: str) -> list[torch.Tensor]:
        params = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise ValueError(f"{name} does not support sparse gradients")
            params.append(p)
        return params

    def step(self, closure=None):
        """Perform one update. ``closure`` re-evaluates the model and returns the loss.

        torch wraps ``Optimizer.step`` in a profiler range and a loop over step hooks, which
        costs tens of microseconds per call; this step takes that path only when a hook is
        registered or the profiler runs (so both behave exactly as with torch's optimizers)
        and otherwise updates directly."""
        if _hooks_or_profiler(self) and type(self).step is DecayOptimizer.step:
            return _hooked_step(self, closure)
        return self._step(closure)

    def _step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            if self._flat is not None:
                for group, fg in zip(self.param_groups, self._flat.groups):
                    fg.check()
                    if not fg.all_marked():
                        fg.mark_written()
                    if fg.all_marked():  # the common case: one kernel over the buffer
                        self._update_flat(group, fg)
                        continue
                    runs = fg.runs()  # parameters without a gradient are skipped
                    if runs:
                        self._update_flat(group, fg, runs)
                return loss
            for group in self.param_groups:
                params = self._params_with_grad(group, type(self).__name__)
                if params:
                    self._update_group(group, params)
            return loss
        finally:
            torch._C._set_grad_enabled(grad_enabled)

    def _update_group(self, group: dict, params: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _update_flat(self, group: dict, fg, runs=None) -> None:
        """Update a flat group: the whole buffer, or the ``runs`` of ``fg.runs()``."""
        raise NotImplementedError

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        raise NotImplementedError

    def _has_step_count(self) -> bool:
        return False

    # -- flat mode: buffers stay attached across zero_grad / load_state_dict -----------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._flat is None:
            return super().zero_grad(set_to_none)
        self._flat.zero_grad(set_to_none)  # one pass over each gradient buffer; views stay
        return None

    def state_dict(self) -> dict:
        sd = super().state_dict()
        if self._flat is not None and self._has_step_count():
            # the group shares one step counter: give each entry its own tensor, so that a
            # regular-mode optimizer loading this dict does not count one step many times
            # (entries that are not dicts can come from torch's state-dict pre-hooks: kept)
            sd["state"] = {k: {**v, "step": v["step"].clone()}
                           if isinstance(v, dict) and isinstance(v.get("step"), torch.Tensor)
                           else v for k, v in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict (torch's format), then check it against the parameters.

        Every state tensor must have its parameter's shape (torch casts dtype and device as it
        loads), ``step`` must be one finite count >= 0 (a Python number, as older torch
        checkpoints store it, becomes a float32 tensor on the parameter's device), and the
        loaded hyperparameters must be valid. Otherwise a ``ValueError`` names the parameter
        (``param_groups[g]['params'][i]``) and the optimizer keeps its previous state: a
        wrongly sized buffer would make the fused kernels write past its end."""
        previous = {"state": self.state, "param_groups": self.param_groups}
        super().load_state_dict(state_dict)
        try:
            for index, group in enumerate(self.param_groups):
                self._check_group(group, index)
            self._check_state()
        except (ValueError, TypeError):
            torch.optim.Optimizer.__setstate__(self, previous)
            raise
        if self._flat is not None:
            self._flat.reattach()

    def _check_group(self, group: dict, index: int) -> None:
        for key, checker in self._checks.items():
            group[key] = checker(f"param_groups[{index}]['{key}']", group[key])
        check_convention(group["decay_convention"])
        check_impl(group["impl"])
        group.setdefault("initial_lr", group["lr"])

    def _check_state(self) -> None:
        """Every state entry of every parameter matches the parameter (see load_state_dict)."""
        for g, group in enumerate(self.param_groups):
            keys = self._state_keys(group)
            for i, p in enumerate(group["params"]):
                if p not in self.state:
                    continue
                where = f"param_groups[{g}]['params'][{i}] (shape {tuple(p.shape)}, {p.dtype})"
                state = self.state[p]
                if not isinstance(state, dict):
                    raise ValueError(f"state of {where} is a {type(state).__name__}, "
                                     "expected a dict")
                for key in keys:
                    if key not in state:
                        continue
                    value = state[key]
                    if not isinstance(value, torch.Tensor):
                        raise ValueError(f"state[{key!r}] of {where} is a "
                                         f"{type(value).__name__}, expected a tensor")
                    if (value.shape != p.shape or value.dtype != p.dtype
                            or value.device != p.device or value.is_sparse):
                        raise ValueError(
                            f"state[{key!r}] of {where} is a {tuple(value.shape)} "
                            f"{value.dtype} tensor on {value.device}; expected the "
                            f"parameter's shape, dtype and device ({p.device})")
                if self._has_step_count() and "step" in state:
                    state["step"] = _check_step(state["step"], where, p.device)

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Clip the gradients of all groups to a total ``norm_type`` norm of ``max_norm``
        (over the flat buffers in flat mode); returns the norm before clipping."""
        if self._flat is not None:
            return self._flat.clip_grad_norm_(max_norm, norm_type)
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)


_GLOBAL_PRE_HOOKS = getattr(_torch_optimizer, "_global_optimizer_pre_hooks", None)
_GLOBAL_POST_HOOKS = getattr(_torch_optimizer, "_global_optimizer_post_hooks", None)
_profiler_enabled = getattr(torch._C._autograd, "_profiler_enabled", None)


def _hooks_or_profiler(opt: DecayOptimizer) -> bool:
    """True when torch's step wrapper has work to do: step hooks or an active profiler
    (always, should a torch version not expose where it keeps its global hooks)."""
    if _GLOBAL_PRE_HOOKS is None or _GLOBAL_POST_HOOKS is None or _profiler_enabled is None:
        return True
    return bool(opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                or _GLOBAL_PRE_HOOKS or _GLOBAL_POST_HOOKS or _profiler_enabled())


# torch's wrapper (profiler range, step hooks) around the plain step, used when needed; marking
# DecayOptimizer.step as hooked stops torch from wrapping it unconditionally. A subclass that
# overrides step() is wrapped by torch as usual, and then this step never runs the hooks twice.
_hooked_step = torch.optim.Optimizer.profile_hook_step(DecayOptimizer._step)
DecayOptimizer.step.hooked = True


def _check_step(value: Any, where: str, device: torch.device) -> torch.Tensor:
    """A loaded ``step``: one finite count >= 0 (a tensor or, from older torch checkpoints, a
    Python number) as a float32 0-d tensor on the parameter's device (torch's fused kernels
    take it there)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise ValueError(f"state['step'] of {where} has shape {tuple(value.shape)}; "
                             "expected a single update count")
        number = value.item()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    else:
        raise ValueError(f"state['step'] of {where} is {value!r}; expected an update count")
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"state['step'] of {where} is {number!r}; expected a finite count >= 0")
    return torch.tensor(float(number), dtype=torch.float32, device=device)


def as_real(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Complex tensors as real views with a trailing dimension of 2 (torch.view_as_real): the
    optimizers treat the real and imaginary parts as two real parameters, as torch's do."""
    return [torch.view_as_real(t) if torch.is_complex(t) else t for t in tensors]


def foreach_ok(params: list[torch.Tensor]) -> bool:
    """The multi-tensor path needs one device and no complex tensors (grouped per dtype)."""
    if not params:
        return False
    device = params[0].device
    return all(p.device == device and not torch.is_complex(p) for p in params)

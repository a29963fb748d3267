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
                    self._update_flat(group, fg)
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

    def _update_flat(self, group: dict, fg) -> None:
        raise NotImplementedError

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        raise NotImplementedError

    def _has_step_count(self) -> bool:
        return False

    # -- flat mode: buffers stay attached across zero_grad / load_state_dict -----------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._flat is None:
            return super().zero_grad(set_to_none)
        self._flat.zero_grad()  # one pass over each gradient buffer; the views stay
        return None

    def state_dict(self) -> dict:
        sd = super().state_dict()
        if self._flat is not None and self._has_step_count():
            # the group shares one step counter: give each entry its own tensor, so that a
            # regular-mode optimizer loading this dict does not count one step many times
            sd["state"] = {k: {**v, "step": v["step"].clone()} if "step" in v else v
                           for k, v in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if self._flat is not None:
            self._flat.reattach()

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


def foreach_ok(params: list[torch.Tensor]) -> bool:
    """The multi-tensor path needs one device and no complex tensors (grouped per dtype)."""
    if not params:
        return False
    device = params[0].device
    return all(p.device == device and not torch.is_complex(p) for p in params)

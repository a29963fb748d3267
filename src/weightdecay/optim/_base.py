"""What the library's optimizers share: checks, state, and how a step runs its kernels.

A step, for each param group:

1. gathers the tensors to update — the parameters that have a gradient with their state
   (regular mode), or the group's flat buffers (``flat=True``; see :mod:`.flat`);
2. :meth:`DecayOptimizer._plan` — the one planning function — assigns each tensor an
   implementation, as torch's ``adamw()`` does: ``"fused"`` where torch's fused kernel
   computes exactly this update, ``"compiled"`` for tensors large enough for the
   single-pass ``torch.compile`` kernel to pay off (or when asked for), ``"foreach"`` for the
   rest, ``"reference"`` when asked for;
3. calls the optimizer's table of kernels (``_KERNELS``: implementation -> function) on each
   planned subset. Every kernel takes the same arguments: the tensor lists
   ``[params, grads, *state]``, the update counts (Adam) and the step's hyperparameters.

A fallback happens only in planning: where the compiled kernel cannot be compiled (tried
once on scratch tensors), those tensors are planned for foreach. Nothing falls back after a
kernel has started writing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import optimizer as _torch_optimizer

from .. import _validate
from . import _checkpoint, _compiled
from ._decay import DECAY_CONVENTIONS, decay_per_update, undefined_eta

IMPLS = ("reference", "foreach", "fused", "compiled")
_INF = math.inf

#: ``impl=None`` gives a regular (per-parameter) tensor the compiled single-pass kernel from
#: this size: 2**22 elements (16 MB in float32). The kernel is compiled once per process
#: (~20 s cold, ~5 s with Inductor's disk cache) and then saves milliseconds per step on
#: such a tensor; below this size the foreach kernels' extra passes cost less than waiting
#: for the compilation over a typical run, and the kernel's ~0.1 ms dispatch per tensor
#: would eat the gain on models of many small tensors.
COMPILE_MIN_NUMEL_TENSOR = 2**22

#: ``impl=None`` gives a flat buffer the compiled kernel from this size where no fused kernel
#: is exact: below it the foreach kernels (4-5 passes over one buffer) are faster than the
#: compiled kernel's ~0.1-0.2 ms of dispatch. Measured for flat SGDW on 200 tensors, back to
#: back on a 2-core CPU, foreach vs compiled: 1e5 0.11-0.16 vs 0.17-0.26 ms, 5e5 0.32-0.51 vs
#: 0.63-0.65 ms, 1e6 0.84-0.98 vs 0.72-0.81 ms, 3e6 2.4-2.6 vs 1.5-2.0 ms (two runs); the
#: crossover lies between 5e5 and 1e6 elements: 3 * 2**18 = 786,432.
COMPILE_MIN_NUMEL_FLAT = 3 * 2**18

#: dtypes torch's fused Adam/AdamW kernels take (on CPU and CUDA)
FUSED_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)

Tensors = list[list[torch.Tensor]]
#: a list of tensors, or the tuple a foreach op returns
TensorSeq = list[torch.Tensor] | tuple[torch.Tensor, ...]
#: a kernel: (tensor lists [params, grads, *state], update counts or None, hyperparameters)
Kernel = Callable[[Tensors, "list[torch.Tensor] | None", dict], None]
#: a plan: (implementation, indices into the tensor lists or None for all of them, whether
#: those tensors are complex)
Plan = list[tuple[str, "list[int] | None", bool]]


class DecayOptimizer(torch.optim.Optimizer):
    """Base class: param groups carry ``lr``, ``initial_lr``, ``weight_decay``,
    ``decay_convention`` and ``impl``; a subclass provides its state keys, its per-step
    hyperparameters (``_hyper``) and its table of kernels (``_KERNELS``).

    eta_t = ``group["lr"] / group["initial_lr"]``; ``initial_lr`` is set at construction
    (torch LR schedulers then keep it, as they ``setdefault`` it).
    """

    #: keys validated for every group: name -> checker(name, value)
    _checks: dict[str, Callable[[str, Any], Any]] = {}
    #: implementation -> kernel
    _KERNELS: dict[str, Kernel] = {}
    #: name of the compiled kernel in :mod:`._compiled`
    _COMPILED: str = ""
    decoupled = False

    def __init__(self, params: Iterable, defaults: dict, flat: bool = False) -> None:
        self._flat = None
        self._check_group(defaults, None)
        super().__init__(params, defaults)
        if flat:
            from .flat import FlatParams

            self._flat = FlatParams(self)

    @property
    def flat(self) -> bool:
        """True when the parameters live in contiguous buffers (``flat=True``)."""
        return self._flat is not None

    def add_param_group(self, param_group: dict) -> None:
        """Add a param group, checked as the constructor checks its arguments: an invalid
        value raises a ``ValueError`` naming ``param_groups[i]['key']`` and the group is not
        added."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._check_group(group, len(self.param_groups) - 1)
            for p in group["params"]:
                if p.is_sparse:
                    raise ValueError(f"{type(self).__name__} does not support sparse parameters")
            flat = getattr(self, "_flat", None)  # (None while torch's __init__ adds the groups)
            if flat is not None:
                flat.add(group)
        except Exception:
            self.param_groups.pop()
            raise

    def _check_group(self, group: dict, index: int | None) -> None:
        """Check (and convert) a group's hyperparameters, naming ``param_groups[i]['key']``
        (the constructor's arguments when ``index`` is None)."""

        def name(key: str) -> str:
            return key if index is None else f"param_groups[{index}]['{key}']"

        for key, checker in self._checks.items():
            group[key] = checker(name(key), group[key])
        _validate.one_of(name("decay_convention"), group["decay_convention"], DECAY_CONVENTIONS)
        if group["impl"] == "fused" and self._fused_refusal() is not None:
            raise ValueError(self._fused_refusal())
        _validate.one_of(name("impl"), group["impl"], (None, *self._KERNELS))
        group["cautious"] = _validate.boolean(name("cautious"), group.setdefault("cautious", False))
        if group["cautious"] and not self.decoupled:
            raise ValueError(f"cautious=True masks decoupled weight decay; {type(self).__name__}"
                             f" adds weight_decay to the gradient (L2): use "
                             f"{type(self).__name__}W")
        self._check_more(group, name)
        group["decoupled"] = self.decoupled  # what weight_decay means, said by checkpoints
        if "params" in group:
            group.setdefault("initial_lr", group["lr"])
            group["initial_lr"] = _validate.non_negative(name("initial_lr"), group["initial_lr"])
            if (self.decoupled and group["initial_lr"] == 0 and group["lr"] > 0
                    and group["decay_convention"] in ("schedule", "corrected")
                    and (group["weight_decay"] != 0 or group["l1"] != 0)):
                raise ValueError(undefined_eta(group, name("initial_lr")))

    def _check_more(self, group: dict, name: Callable[[str], str]) -> None:
        """A subclass's checks of several keys together (``name`` gives a key's full name)."""

    def _step_hyper(self, group: dict) -> dict:
        """The step's hyperparameters of ``group`` (``_hyper``), whose cheap checks run at
        every step; where one fails — a value changed in ``param_groups`` since the last step
        (NaN, < 0, an unknown name) — the full check raises one ``ValueError`` naming the key,
        before anything is updated."""
        try:
            return self._hyper(group)
        except Exception:
            index = next(i for i, g in enumerate(self.param_groups) if g is group)
            self._check_group(group, index)  # raises, naming param_groups[i]['key']
            return self._hyper(group)  # (values it converted, e.g. numpy numbers, now pass)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # an unpickled optimizer of an earlier version
            group.setdefault("decay_convention", "schedule")
            group.setdefault("impl", None)
            group.setdefault("cautious", False)
            group.setdefault("l1", 0.0)
            group.setdefault("initial_lr", group["lr"])
            group.setdefault("decoupled", self.decoupled)
        # torch pickles only defaults, state and param_groups: an unpickled (or deep-copied)
        # optimizer is in the regular mode, its state a copy of the buffers' values
        self.__dict__.setdefault("_flat", None)

    # -- the step ---------------------------------------------------------------------------

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
            groups = self.param_groups
            hypers: list[dict] = []  # (a loop: no comprehension frame, at every step)
            try:  # every group is checked before any is updated
                for group in groups:
                    hypers.append(self._hyper(group))
            except Exception:  # a value changed since the last step: name it (_step_hyper)
                hypers = [self._step_hyper(group) for group in groups]
            if self._flat is not None:
                for group, hyper, fg in zip(groups, hypers, self._flat.groups):
                    batch = fg.batch()  # advances the update counts of what it returns
                    if batch is not None:
                        self._run(group, hyper, *batch, flat=True, counted=True, kind=fg.kind)
            else:
                for group, hyper in zip(groups, hypers):
                    tensors, steps = self._gather(group)
                    if tensors[0]:
                        self._run(group, hyper, tensors, steps, flat=False, counted=False)
            return loss
        finally:
            torch._C._set_grad_enabled(grad_enabled)

    def _gather(self, group: dict) -> tuple[Tensors, list[torch.Tensor] | None]:
        """The parameters that have a gradient (as torch, the others are skipped), their
        gradients and state (created as zeros at first use) and update counts."""
        params, grads = [], []
        for p in group["params"]:
            g = p.grad
            if g is not None:
                if g.is_sparse:
                    raise ValueError(f"{type(self).__name__} does not support sparse gradients")
                params.append(p)
                grads.append(g)
        keys = self._state_keys(group)
        states: list[list[torch.Tensor]] = [[] for _ in keys]
        steps: list[torch.Tensor] | None = [] if self._has_step_count() else None
        state = self.state
        for p in params:
            st = state[p]
            for lst, key in zip(states, keys):
                if key not in st:  # first use: m_0 = 0 (and v_0 = 0)
                    st[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                lst.append(st[key])
            if steps is not None:
                if "step" not in st:  # on the parameter's device, where fused kernels take it
                    st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                steps.append(st["step"])
        return [params, grads, *states], steps

    def _run(self, group: dict, hyper: dict, tensors: Tensors,
             steps: list[torch.Tensor] | None, *, flat: bool, counted: bool,
             kind: tuple | None = None) -> None:
        """Plan, then call the kernels with the step's hyperparameters ``hyper``. ``counted``:
        the update counts were advanced already; ``kind``: the (device, dtype) of all the
        tensors, when known."""
        kernels = self._KERNELS
        for impl, index, complex_ in self._plan(group, tensors, flat, hyper, kind):
            sub, sub_steps = tensors, steps
            if index is not None:
                sub = [[lst[i] for i in index] for lst in tensors]
                sub_steps = None if steps is None else [steps[i] for i in index]
            if sub_steps is not None and not counted:
                torch._foreach_add_(sub_steps, 1)
            if complex_:  # as torch: a complex number is two real ones, each with its state
                sub = [[torch.view_as_real(t) for t in lst] for lst in sub]
            kernels[impl](sub, sub_steps, hyper)

    def _plan(self, group: dict, tensors: Tensors, flat: bool, hyper: dict,
              kind: tuple | None = None) -> Plan:
        """The planning function: the implementation of each tensor (or flat buffer).

        ``"reference"`` and ``"foreach"`` when asked for; ``"fused"`` when asked for (a
        ``ValueError`` says why where torch's fused kernel cannot compute this update
        exactly) and, with ``impl=None``, wherever it is exact and precise; ``"compiled"``
        when asked for and, with ``impl=None``, for tensors of at least
        ``COMPILE_MIN_NUMEL_TENSOR`` elements (flat buffers: ``COMPILE_MIN_NUMEL_FLAT``),
        where the kernel compiles and takes the tensor (contiguous, >= 2 elements); the
        foreach kernels for the rest. Tensors of different devices or dtypes are planned
        apart, so that every planned subset has one device and one dtype. ``hyper``: the
        step's hyperparameters (``_hyper``); ``kind``: (device, dtype) when all tensors share
        it (flat buffers)."""
        if kind is not None:
            device, dtype = kind
            return self._plan_kind(group, tensors, None, device, dtype, flat, hyper)
        params = tensors[0]
        kinds = {(p.device, p.dtype) for p in params}
        if len(kinds) == 1:
            device, dtype = kinds.pop()
            return self._plan_kind(group, tensors, None, device, dtype, flat, hyper)
        plan: Plan = []
        lists: list[list[torch.Tensor | None]] = [list(params)]
        grouped = torch._C._group_tensors_by_device_and_dtype(lists, True)
        for (device, dtype), (_, index) in grouped.items():
            plan += self._plan_kind(group, tensors, list(index), device, dtype, flat, hyper)
        return plan

    def _plan_kind(self, group: dict, tensors: Tensors, index: list[int] | None,
                   device: torch.device, dtype: torch.dtype, flat: bool, hyper: dict) -> Plan:
        """``_plan`` for the tensors ``index`` (None: all), of one device and dtype."""
        impl = group["impl"]
        complex_ = dtype.is_complex
        if impl == "reference":
            return [(impl, index, complex_)]
        if _is_compiling():  # (asked here, in the frame dynamo traces: never passed in)
            # inside the user's torch.compile: torch's fused kernels cannot be traced (an
            # internal assert on _fused_adamw_), a torch.compile'd kernel would compile inside
            # the trace, and the foreach Adam kernel reads the update counts with .item(). The
            # compiled kernel then runs its plain single-pass function, which the user's
            # compilation traces and fuses (see _compiled.traced_sgd / traced_adam).
            return [("compiled", index, complex_)]
        if impl == "foreach":
            return [(impl, index, complex_)]
        real = dtype.to_real() if complex_ else dtype
        exact = hyper.get("fused_weight_decay") is not None
        fused = exact and device.type in ("cpu", "cuda") and real in FUSED_DTYPES
        if impl == "fused":
            if not fused:
                raise ValueError(
                    "impl='fused' cannot compute this update exactly here (it needs CPU or "
                    "CUDA floating-point tensors, and lr > 0 for decay_convention='constant'); "
                    f"got {dtype} on {device}, decay_convention={group['decay_convention']!r}, "
                    f"lr={group['lr']!r}")
            return [("fused", index, complex_)]
        if impl is None and fused and self._fused_precise(group):
            return [("fused", index, complex_)]
        if impl is None:
            threshold = COMPILE_MIN_NUMEL_FLAT if flat else COMPILE_MIN_NUMEL_TENSOR
        else:  # "compiled"
            threshold = _compiled.MIN_NUMEL
        members = range(len(tensors[0])) if index is None else index
        big = [i for i in members if tensors[0][i].numel() >= threshold
               and _compiled.takes(*(lst[i] for lst in tensors))]
        if big and _compiled.available(self._COMPILED, device, real, **self._flags(group)):
            if len(big) == len(members):
                return [("compiled", index, complex_)]
            chosen = set(big)
            return [("compiled", big, complex_),
                    ("foreach", [i for i in members if i not in chosen], complex_)]
        return [("foreach", index, complex_)]

    def kernel_plan(self) -> list[dict[str, int]]:
        """The implementation each tensor would get at the next step: per param group, a dict
        implementation -> number of tensors (flat mode: buffers, or runs of parameters that
        have a gradient). Compiles the ``torch.compile`` kernel if the plan uses it (its
        first use); otherwise changes nothing."""
        out = []
        for i, group in enumerate(self.param_groups):
            tensors: Tensors | None
            if self._flat is not None:
                batch = self._flat.groups[i].batch(advance=False)
                tensors = batch[0] if batch is not None else None
            else:
                params = [p for p in group["params"] if p.grad is not None]
                keys = self._state_keys(group)
                tensors = [params, [p.grad for p in params]]
                tensors += [[self.state.get(p, {}).get(key, p) for p in params] for key in keys]
            counts: dict[str, int] = {}
            if tensors is not None and tensors[0]:
                plan = self._plan(group, tensors, self._flat is not None,
                                  self._step_hyper(group))
                for impl, index, _ in plan:
                    n = len(tensors[0]) if index is None else len(index)
                    counts[impl] = counts.get(impl, 0) + n
            out.append(counts)
        return out

    # -- what a subclass provides -----------------------------------------------------------

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        """Names of the state tensors shaped like the parameter (flat mode: one buffer each)."""
        raise NotImplementedError

    def _has_step_count(self) -> bool:
        return False

    def _hyper(self, group: dict) -> dict:
        """The step's scalars for the kernels (``_decay_hyper`` and the optimizer's own)."""
        raise NotImplementedError

    def _decay_hyper(self, group: dict) -> dict:
        """The regularization scalars every kernel takes: coupled (``l2``, ``l1``: added to
        the gradient) or decoupled (``decay``: d_t, ``l1_decay``: the soft-threshold).

        Raises (any exception: :meth:`_step_hyper` then names the key) where a value shared by
        every optimizer is invalid; each subclass's ``_hyper`` checks its own the same way:
        comparisons on values read anyway, a fraction of a microsecond per group."""
        lr, lam, lam1, cautious = group["lr"], group["weight_decay"], group["l1"], group["cautious"]
        initial, impl = group["initial_lr"], group["impl"]
        # each >= 0, and their sum finite: none is NaN or infinite
        if not (0.0 <= lr and 0.0 <= lam and 0.0 <= lam1 and 0.0 <= initial
                and lr + lam + lam1 + initial < _INF and cautious.__class__ is bool
                and group["decay_convention"] in DECAY_CONVENTIONS
                and (impl is None or impl in self._KERNELS)):
            raise ValueError("invalid hyperparameter")
        if self.decoupled:
            return {"l2": 0.0, "decay": decay_per_update(group), "l1": 0.0,
                    "l1_decay": decay_per_update(group, "l1") if lam1 else 0.0,
                    "use_l1": lam1 != 0, "cautious": group["cautious"],
                    # for the reference kernels, which compute d_t themselves by the
                    # formulas of _reference.decay_factor
                    "convention": group["decay_convention"], "lam": lam, "lam1": lam1,
                    "lr_max": initial}
        if cautious:
            raise ValueError("cautious decay with L2")
        return {"l2": lam, "decay": 0.0, "l1": lam1, "l1_decay": 0.0, "use_l1": lam1 != 0,
                "cautious": group["cautious"], "convention": group["decay_convention"],
                "lam": 0.0, "lam1": 0.0, "lr_max": initial}

    def _flags(self, group: dict) -> dict:
        """Python-level switches of the compiled kernel (each combination compiles once)."""
        raise NotImplementedError

    def _fused_precise(self, group: dict) -> bool:
        return True

    @classmethod
    def _fused_refusal(cls) -> str | None:
        """Why ``impl="fused"`` can never be used by this class (None: it can, where exact)."""
        return None

    # -- flat mode: buffers stay attached across zero_grad / load_state_dict ----------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._flat is None:
            return super().zero_grad(set_to_none)
        self._flat.zero_grad(set_to_none)  # one pass over each gradient buffer; views stay
        return None

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Clip the gradients of all groups to a total ``norm_type`` norm of ``max_norm``
        (over the flat buffers in flat mode); returns the norm before clipping."""
        if self._flat is not None:
            return self._flat.clip_grad_norm_(max_norm, norm_type)
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict:
        sd = super().state_dict()
        if self._flat is not None and self._has_step_count():
            # the counts are views into one tensor per group: give each entry its own, so that
            # the dict does not change with later steps' counts
            # (entries that are not dicts can come from torch's state-dict pre-hooks: kept)
            sd["state"] = {k: {**v, "step": v["step"].clone()}
                           if isinstance(v, dict) and isinstance(v.get("step"), torch.Tensor)
                           else v for k, v in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict — this library's of any version, or torch.optim's SGD, Adam or
        AdamW — keeping what every number means, then check it against the parameters.

        The options this optimizer was built with stay: ``decay_convention``, ``cautious``,
        ``l1``, ``impl`` and flat mode; lambda is converted into the optimizer's convention
        where that is exact, and torch's SGD momentum buffer into Algorithm 1's; what cannot
        be converted exactly is refused with one line (the rules:
        :mod:`weightdecay.optim._checkpoint`).

        Every state tensor must have its parameter's shape (torch casts dtype and device as it
        loads), ``step`` must be one finite count >= 0 (a Python number, as older torch
        checkpoints store it, becomes a float32 tensor on the parameter's device), and the
        loaded hyperparameters must be valid. Otherwise a ``ValueError`` names the parameter
        (``param_groups[g]['params'][i]``) and the optimizer keeps its previous state: a
        wrongly sized buffer would make the fused kernels write past its end."""
        previous = {"state": self.state, "param_groups": self.param_groups}
        state_dict = _checkpoint.adapt(self, state_dict)  # (refusals leave all as it was)
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


_GLOBAL_PRE_HOOKS = getattr(_torch_optimizer, "_global_optimizer_pre_hooks", None)
_GLOBAL_POST_HOOKS = getattr(_torch_optimizer, "_global_optimizer_post_hooks", None)
_profiler_enabled = getattr(torch._C._autograd, "_profiler_enabled", None)
_is_compiling = torch.compiler.is_compiling


def _hooks_or_profiler(opt: DecayOptimizer) -> bool:
    """True when torch's step wrapper has work to do: step hooks or an active profiler
    (always, should a torch version not expose where it keeps its global hooks)."""
    if _GLOBAL_PRE_HOOKS is None or _GLOBAL_POST_HOOKS is None or _profiler_enabled is None:
        return True
    if (opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks or _GLOBAL_PRE_HOOKS
            or _GLOBAL_POST_HOOKS):
        return True
    # (inside torch.compile the profiler records the compiled graph; asking would break it)
    return not _is_compiling() and _profiler_enabled()


# torch's wrapper (profiler range, step hooks) around the plain step, used when needed; marking
# DecayOptimizer.step as hooked stops torch from wrapping it unconditionally. A subclass that
# overrides step() is wrapped by torch as usual, and then this step never runs the hooks twice.
_hooked_step = torch.optim.Optimizer.profile_hook_step(DecayOptimizer._step)
DecayOptimizer.step.hooked = True  # type: ignore[attr-defined]


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


def masked_decay_(params: TensorSeq, products: TensorSeq, decay: float,
                  scale: float = 1.0) -> None:
    """Cautious decay with foreach kernels: theta <- theta - decay * 1[u * theta >= 0] * theta,
    given ``products`` = direction * theta (a temporary, overwritten with the mask) and
    u = scale * direction, ``scale`` >= 0 (only the sign of u matters)."""
    if scale != 1.0:
        torch._foreach_mul_(products, scale)
    torch._foreach_sign_(products)  # -1, 0, 1 ...
    torch._foreach_add_(products, 1.0)
    torch._foreach_clamp_max_(products, 1.0)  # ... 0, 1, 1: 1[u * theta >= 0]
    torch._foreach_addcmul_(params, params, products, value=-decay)


def soft_threshold_(params: TensorSeq, d: float, scratch: TensorSeq | None = None) -> None:
    """theta <- sign(theta) * max(|theta| - d, 0), computed as theta - clamp(theta, -d, d)
    (the same floats: weights within d of zero become exactly 0), with one temporary list
    (``scratch``, overwritten, if given)."""
    clamped: TensorSeq
    if scratch is None:
        clamped = torch._foreach_clamp_min(params, -d)
    else:
        clamped = scratch
        torch._foreach_copy_(clamped, params)
        torch._foreach_clamp_min_(clamped, -d)
    torch._foreach_clamp_max_(clamped, d)
    torch._foreach_sub_(params, clamped)

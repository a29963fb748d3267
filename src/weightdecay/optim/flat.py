"""The contiguous-buffer mode (``flat=True``): one buffer per param group, one kernel a step.

A model has hundreds of parameter tensors, and every eager optimizer — torch's fused ones
included — pays a per-tensor cost at each step. With ``flat=True`` the parameters of a group
are re-homed as views into one contiguous buffer, their gradients are views into a matching
buffer (set as ``.grad`` before the first backward, so autograd accumulates into it), and the
optimizer state (momentum, Adam moments) lives in contiguous buffers too. One update is then a
single fused pass over each buffer: torch's fused Adam/AdamW kernel where it computes exactly
the paper's update, otherwise — for buffers of at least ``COMPILE_MIN_NUMEL_FLAT`` elements — a
``torch.compile``d single-pass kernel (the foreach kernels where compilation is unavailable).
Smaller buffers get the foreach kernels: a few passes over one small buffer cost less than the
compiled kernel's dispatch, and need no compilation. (The choice is the optimizer's planning
function, ``DecayOptimizer._plan``, as for regular tensors.)

It stays a drop-in ``torch.optim.Optimizer``:

- ``state_dict()`` holds per-parameter state exactly as the regular mode does (views into the
  buffers), so checkpoints load into and from the regular mode and into torch.optim.AdamW.
- ``zero_grad()`` zeroes the gradient buffer in one pass; the gradient views stay attached
  (``set_to_none`` cannot drop them without breaking the buffer). Gradients replaced by other
  code (``model.zero_grad(set_to_none=True)`` then backward) are copied back into the buffer
  at the next step, with a one-time warning since that costs a copy.
- Gradient clipping: ``torch.nn.utils.clip_grad_norm_`` works on the views, and
  ``optimizer.clip_grad_norm_(max_norm)`` does it over the buffers in a few kernels.
- Parameters without a gradient are skipped, as torch's optimizers (and the regular mode) skip
  parameters whose ``.grad`` is None: no decay, no moment update, no step count. The gradient
  views stay attached, so "has a gradient" is tracked instead: a parameter has one when
  backward accumulated into it (a post-accumulate-grad hook marks it), when its ``.grad`` was
  assigned, or when its gradient view is nonzero (written in place), since the last
  ``zero_grad()``; ``zero_grad(set_to_none=False)`` keeps the marks, as torch keeps zeroed
  gradients. When every parameter of a group has a gradient (the common case) the step is one
  kernel over the whole buffer; otherwise one kernel call covers the contiguous runs of
  parameters that have one (and the same step count).

Refused with a clear error: sparse parameters, parameters of different dtypes or devices in one
group, parameters that do not require grad, a parameter listed twice, and a parameter whose
storage was replaced after construction (``model.to(...)``, ``p.data = ...``).
"""

from __future__ import annotations

import operator
import warnings
import weakref

import torch

_DATA_PTR = torch.Tensor.data_ptr  # C-level map() over these keeps the per-step check cheap
_GRAD = operator.attrgetter("grad")


class FlatGroup:
    """The buffers of one param group: parameters, gradients and named state."""

    def __init__(self, params: list[torch.Tensor], state_keys: tuple[str, ...], index: int):
        if not params:
            raise ValueError(f"flat=True: param group {index} has no parameters")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"flat=True: a parameter appears twice in param group {index}")
        first = params[0]
        for i, p in enumerate(params):
            where = f"parameter {i} of param group {index} (shape {tuple(p.shape)})"
            if p.is_sparse:
                raise ValueError(f"flat=True does not support sparse tensors: {where}")
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(
                    f"flat=True needs one dtype and device per param group: {where} is "
                    f"{p.dtype} on {p.device}, parameter 0 is {first.dtype} on {first.device}; "
                    "put them in separate param groups"
                )
            if not p.requires_grad:
                raise ValueError(f"flat=True: {where} does not require grad; pass only "
                                 "trainable parameters")
            if torch.is_complex(p):
                raise ValueError(f"flat=True does not support complex parameters: {where}; "
                                 "use flat=False (complex parameters are updated as torch "
                                 "does, as pairs of real numbers)")
        self.index = index
        self.params = params
        self.numels = [p.numel() for p in params]
        total = sum(self.numels)
        dtype, device = first.dtype, first.device
        self.kind = (device, dtype)
        self.param = torch.empty(total, dtype=dtype, device=device)
        self.grad = torch.zeros(total, dtype=dtype, device=device)
        self.state = {key: torch.zeros(total, dtype=dtype, device=device) for key in state_keys}
        # [param, grad, *state] buffers, and the kernels' tensor lists over them (one-element
        # lists, as the kernels take them; built once, not every step)
        self.buffers = [self.param, self.grad, *self.state.values()]
        self.lists = [[buf] for buf in self.buffers]
        # update counts, one per parameter (torch counts per parameter, and a parameter without
        # a gradient does not count); state["step"] of each parameter is a 0-d view into this
        self.steps: torch.Tensor | None = None
        self.step_views: list[torch.Tensor] = []  # 0-d views, one per parameter
        self.step_list: list[torch.Tensor] = []  # [steps[0]]: the count of a uniform group
        self.uniform = True  # all counts equal: one kernel call with one count
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        # marks[i] = 1: parameter i has a gradient since the last zero_grad()
        self.marks = bytearray(len(params))
        with torch.no_grad():
            for p, view in zip(params, self.views(self.param)):
                view.copy_(p)
                p.data = view
        self.grad_views = self.views(self.grad)
        for i, (p, g) in enumerate(zip(params, self.grad_views)):
            if p.grad is not None:
                g.copy_(p.grad)
                self.marks[i] = 1
            p.grad = g
        handles = [p.register_post_accumulate_grad_hook(_Mark(self.marks, i))
                   for i, p in enumerate(params)]
        # the hooks hold only the marks: they go when this group goes
        weakref.finalize(self, _remove_hooks, handles)
        self.data_ptrs = [p.data_ptr() for p in params]
        self.warned = False

    def set_state_keys(self, state_keys: tuple[str, ...]) -> None:
        """Keep one buffer per state key (a loaded state may switch AMSGrad on or off)."""
        if tuple(self.state) == tuple(state_keys):
            return
        self.state = {key: self.state[key] if key in self.state
                      else torch.zeros_like(self.param) for key in state_keys}
        self.buffers = [self.param, self.grad, *self.state.values()]
        self.lists = [[buf] for buf in self.buffers]

    def views(self, buffer: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views into a flat buffer, shaped like the parameters."""
        return [chunk.view_as(p) for chunk, p in zip(buffer.split(self.numels), self.params)]

    def state_views(self) -> dict[str, list[torch.Tensor]]:
        return {key: self.views(buf) for key, buf in self.state.items()}

    def check(self) -> None:
        """Refuse replaced parameters; bring gradients that left the buffer back into it.

        Runs every step, so the common case (nothing changed) is two list comparisons."""
        if list(map(_DATA_PTR, self.params)) != self.data_ptrs:
            self._refuse_replaced()
        if any(map(operator.is_not, map(_GRAD, self.params), self.grad_views)):
            self._repair_grads()

    def _refuse_replaced(self) -> None:
        for i, (p, ptr) in enumerate(zip(self.params, self.data_ptrs)):
            if p.data_ptr() != ptr:
                raise RuntimeError(
                    f"flat=True: parameter {i} of param group {self.index} (shape "
                    f"{tuple(p.shape)}) was replaced after the optimizer was built (its "
                    "storage moved, e.g. by model.to(), .data assignment or a new tensor); "
                    "build the optimizer again after moving the model"
                )

    def _repair_grads(self) -> None:
        if not self.warned:
            warnings.warn(
                "flat=True: gradients were replaced outside the gradient buffer (e.g. by "
                "model.zero_grad(set_to_none=True)); copying them back costs a pass per step: "
                "call optimizer.zero_grad() instead", RuntimeWarning, stacklevel=5)
            self.warned = True
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(self.params, self.grad_views)):
                if p.grad is g:
                    continue
                if p.grad is None:  # no gradient: skipped at this step, as torch skips it
                    g.zero_()
                    self.marks[i] = 0
                else:
                    if p.grad.is_sparse:
                        raise ValueError("flat=True does not support sparse gradients")
                    if p.grad.shape != p.shape:
                        raise ValueError(
                            f"flat=True: the gradient of parameter {i} of param group "
                            f"{self.index} has shape {tuple(p.grad.shape)}, expected "
                            f"{tuple(p.shape)}")
                    g.copy_(p.grad)
                    self.marks[i] = 1
                p.grad = g

    def all_marked(self) -> bool:
        """Every parameter has a gradient and all counts are equal: one whole-buffer kernel."""
        return self.uniform and 0 not in self.marks

    def mark_written(self) -> None:
        """A parameter not marked by a hook or an assignment has a gradient when its gradient
        view is nonzero (written in place, e.g. ``p.grad.copy_(g)``)."""
        marks = self.marks
        with torch.no_grad():
            for i, g in enumerate(self.grad_views):
                if not marks[i] and bool(g.any()):
                    marks[i] = 1

    def batch(self, advance: bool = True):
        """What this step updates: ``(tensor lists [params, grads, *state], update counts)``
        over the whole buffers when every parameter has a gradient (the common case), else
        over the contiguous runs of parameters that have one and share an update count;
        None when no parameter has a gradient. ``advance``: check the parameters and count
        this update (the kernels receive the advanced counts)."""
        if advance:
            self.check()
        if not (self.uniform and 0 not in self.marks):  # (all_marked(), inlined: every step)
            self.mark_written()
        if self.all_marked():
            counts = self.steps
            if counts is None:
                return self.lists, None
            if advance:
                counts.add_(1)
            return self.lists, self.step_list
        runs = self.runs(advance)
        if not runs:
            return None
        off = self.offsets
        tensors = [[buf[off[a]:off[b]] for a, b in runs] for buf in self.buffers]
        steps = [self.step_views[a] for a, _ in runs] if self.steps is not None else None
        return tensors, steps

    def runs(self, advance: bool = True) -> list[tuple[int, int]]:
        """Contiguous runs ``(first, stop)`` of the parameters that have a gradient and the
        same update count; ``advance`` adds one to those counts."""
        marks = self.marks
        counts = self.steps.tolist() if self.steps is not None else [0.0] * len(marks)
        runs: list[tuple[int, int]] = []
        i, n = 0, len(marks)
        while i < n:
            if not marks[i]:
                i += 1
                continue
            j = i + 1
            while j < n and marks[j] and counts[j] == counts[i]:
                j += 1
            runs.append((i, j))
            i = j
        if advance and self.steps is not None and runs:
            new = [c + 1 if m else c for c, m in zip(counts, marks)]
            self.steps.copy_(torch.tensor(new, dtype=torch.float32))
            self.uniform = len(set(new)) == 1
        return runs


class FlatParams:
    """All flat groups of one optimizer, aligned with ``optimizer.param_groups``."""

    def __init__(self, optimizer) -> None:
        self.optimizer = optimizer
        self.groups: list[FlatGroup] = []
        for group in optimizer.param_groups:
            self.add(group)

    def add(self, group: dict) -> None:
        fg = FlatGroup(group["params"], self.optimizer._state_keys(group), len(self.groups))
        self.groups.append(fg)
        self.attach_state(fg)

    def attach_state(self, fg: FlatGroup) -> None:
        """Point the per-parameter state at views of the buffers (copying any loaded values)."""
        state = self.optimizer.state
        with torch.no_grad():
            for key, views in fg.state_views().items():
                for p, view in zip(fg.params, views):
                    if key in state[p] and state[p][key] is not view:
                        view.copy_(state[p][key])
                    state[p][key] = view
            if self.optimizer._has_step_count():
                counts = [float(state[p]["step"]) if "step" in state[p] else 0.0
                          for p in fg.params]
                fg.steps = torch.tensor(counts, dtype=torch.float32, device=fg.param.device)
                fg.step_views = list(fg.steps.unbind())
                for p, step in zip(fg.params, fg.step_views):
                    state[p]["step"] = step  # a 0-d view into the group's counts
                fg.step_list = [fg.step_views[0]]
                fg.uniform = len(set(counts)) == 1

    def reattach(self) -> None:
        """After ``load_state_dict``: copy the loaded state into the buffers."""
        for group, fg in zip(self.optimizer.param_groups, self.groups):
            fg.set_state_keys(self.optimizer._state_keys(group))
            self.attach_state(fg)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradient buffers. The views stay attached; with ``set_to_none`` (the
        default) the parameters count as having no gradient until backward reaches them, as
        with torch's ``zero_grad``; without it they keep their marks (torch keeps zeroed
        gradients, and updates those parameters)."""
        for fg in self.groups:
            fg.grad.zero_()
            for p, g in zip(fg.params, fg.grad_views):
                p.grad = g
            if set_to_none:
                fg.marks[:] = bytes(len(fg.marks))

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        norms = [torch.linalg.vector_norm(fg.grad, norm_type) for fg in self.groups]
        total = torch.linalg.vector_norm(torch.stack(norms), norm_type)
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for fg in self.groups:
            fg.grad.mul_(coef)
        return total


class _Mark:
    """Post-accumulate-grad hook: marks parameter ``index`` as having a gradient."""

    __slots__ = ("marks", "index")

    def __init__(self, marks: bytearray, index: int) -> None:
        self.marks, self.index = marks, index

    def __call__(self, param: torch.Tensor) -> None:
        self.marks[self.index] = 1


def _remove_hooks(handles) -> None:
    for handle in handles:
        handle.remove()

"""optimizer.step() skips torch's hook/profiler wrapper only when it has nothing to do: step
hooks (per optimizer and global), the profiler's range, subclasses and grad mode behave as with
torch's own optimizers."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

import weightdecay as wd


def _wrapped(base):
    """decoupled_weight_decay(base), with base instantiated first (torch then patches
    base.step too: the wrapper must not run the hooks a second time through it)."""
    base([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    return lambda ps: wd.decoupled_weight_decay(base)(ps, lr=1e-2, weight_decay=1e-2)


FACTORIES = [
    lambda ps: wd.SGDW(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
    lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=1e-2),
    lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=1e-2, flat=True),
    _wrapped(torch.optim.RMSprop),
    _wrapped(wd.Adam),
]
IDS = ["SGDW", "AdamW", "AdamW-flat", "RMSpropW", "wrapped-wd.Adam"]


def params():
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(5, 3, generator=gen)),
          torch.nn.Parameter(torch.randn(3, generator=gen))]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen)
    return ps


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_step_hooks_run_once_in_order(factory):
    opt = factory(params())
    calls = []
    h1 = opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o is opt)))
    h2 = opt.register_step_post_hook(lambda o, a, k: calls.append(("post", o is opt)))
    h3 = register_optimizer_step_pre_hook(lambda o, a, k: calls.append(("global pre", True)))
    h4 = register_optimizer_step_post_hook(lambda o, a, k: calls.append(("global post", True)))
    try:
        opt.step()
    finally:
        for h in (h1, h2, h3, h4):
            h.remove()
    assert calls == [("global pre", True), ("pre", True), ("post", True), ("global post", True)]
    calls.clear()
    opt.step()  # hooks removed: the direct path
    assert calls == []


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_pre_hook_can_replace_the_arguments(factory):
    opt = factory(params())
    seen = []

    def closure():
        seen.append(torch.is_grad_enabled())
        return torch.tensor(3.0)

    opt.register_step_pre_hook(lambda o, a, k: ((o,), {"closure": closure}))
    assert opt.step().item() == 3.0
    assert seen == [True]  # the closure runs with grad enabled, as in torch


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_profiler_sees_the_step_range(factory):
    opt = factory(params())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    names = {e.name for e in prof.events()}
    assert f"Optimizer.step#{type(opt).__name__}.step" in names


def test_direct_and_hooked_paths_give_the_same_update():
    a, b = params(), params()
    opt_a = wd.AdamW(a, lr=1e-2, weight_decay=0.1)
    opt_b = wd.AdamW(b, lr=1e-2, weight_decay=0.1)
    opt_b.register_step_pre_hook(lambda o, args, kwargs: None)  # forces torch's wrapper
    for _ in range(3):
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)


def test_subclass_overriding_step_runs_hooks_once():
    class Counting(wd.SGDW):
        def step(self, closure=None):
            self.count = getattr(self, "count", 0) + 1
            return super().step(closure)

    opt = Counting(params(), lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    opt.step()
    assert calls == ["pre", "post"] and opt.count == 1


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_grad_mode_is_restored(factory):
    opt = factory(params())
    opt.step()
    assert torch.is_grad_enabled()
    with torch.no_grad():
        opt.step()
        assert not torch.is_grad_enabled()

    def failing():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(failing)
    assert torch.is_grad_enabled()


def test_update_does_not_record_autograd_history():
    ps = params()
    opt = wd.SGDW(ps, lr=0.1, momentum=0.9, weight_decay=1e-2)
    opt.step()
    assert all(p.grad_fn is None and p.is_leaf for p in ps)

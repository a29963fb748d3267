"""torch.compile of a training step that calls ``opt.step()``: every optimizer, default impl.

The compiled step matches the eager one (<= 1e-5 relative over 10 float32 updates, then 10
more under a ``LambdaLR`` of the library's schedules stepped at every update) and compiles
once: no recompilation per update as lr_t changes. Inside the compilation the planning
function gives every tensor the traceable single-pass kernel, where torch's fused kernel (the
default for Adam/AdamW on CPU and CUDA) cannot be traced.
"""

from __future__ import annotations

import types

import pytest
import torch
from torch._dynamo.utils import counters

import weightdecay as wd
from _optim_util import OPTIMIZERS, rel_err_all

pytestmark = pytest.mark.compile
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
STEPS = 10

CASES = [pytest.param(cls, {}, device, marks=marks, id=f"{cls.__name__}-{device}")
         for device, marks in (("cpu", ()), ("cuda", (needs_cuda,))) for cls in OPTIMIZERS]
CASES += [pytest.param(wd.AdamW, dict(impl="fused"), "cpu", id="AdamW-impl=fused-cpu")]


def _fresh(fn):
    """``fn`` with a code object of its own: dynamo keeps compiled graphs per code object, so
    each run compiles its own (and never meets dynamo's limit of 8 across tests)."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{id(fn)}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__,
                              fn.__closure__)


def _train(cls, kw, device, compiled):
    """One eager update (the state exists before tracing), STEPS - 1 more, then STEPS under a
    per-update LambdaLR. Returns the parameters after each phase and the number of frames
    dynamo compiled after each update of the second phase."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3).to(device)
    hyper = dict(lr=0.05, weight_decay=1e-3) if issubclass(cls, wd.SGD) else dict(
        weight_decay=1e-3)
    opt = cls(model.parameters(), **hyper, **kw)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 6, generator=gen).to(device), torch.randn(8, 3, generator=gen)
             .to(device)) for _ in range(2 * STEPS)]

    def step(x, y):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.detach()

    run = torch.compile(_fresh(step)) if compiled else step
    step(*data[0])
    for x, y in data[1:STEPS]:
        run(x, y)
    first = [p.detach().clone() for p in model.parameters()]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, wd.schedules.cosine_restarts(T_0=4, T_mult=2))
    frames = []
    for x, y in data[STEPS:]:
        run(x, y)
        sched.step()
        frames.append(counters["frames"]["ok"])
    return first, [p.detach() for p in model.parameters()], frames, opt


@pytest.mark.parametrize("cls,kw,device", CASES)
def test_compiled_training_step_matches_eager_and_compiles_once(cls, kw, device):
    eager_first, eager_last, _, eager_opt = _train(cls, kw, device, compiled=False)
    graphs = counters["stats"]["unique_graphs"]
    first, last, frames, opt = _train(cls, kw, device, compiled=True)
    assert counters["stats"]["unique_graphs"] >= graphs + 2  # the forward and the update
    assert rel_err_all(first, eager_first) <= 1e-5
    assert rel_err_all(last, eager_last) <= 1e-5
    # lr_t changed at every update of the second phase: after the recompilation the new
    # scheduler's wrapper of opt.step causes, nothing is compiled again
    assert frames[2] == frames[-1], frames
    assert all(torch.isfinite(p).all() for p in last)
    assert opt.kernel_plan() == eager_opt.kernel_plan()  # eager plans are unchanged

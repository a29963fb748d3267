"""flat=True: contiguous buffers, one kernel per step — numerics and drop-in behaviour."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import weightdecay as wd
from _optim_util import (
    CASES,
    N_STEPS,
    case_id,
    eta_restarts,
    eta_schedule,
    fused_exact,
    grad_stream,
    make_params,
    marks,
    rel_err_all,
    run,
)
from weightdecay.optim import _compiled

ETAS = eta_schedule(N_STEPS)
GRADS = grad_stream(N_STEPS)


def run_flat(factory, params, grads=GRADS, etas=ETAS):
    """Drive a flat optimizer: gradients are written into the attached .grad views."""
    params = [p.clone().requires_grad_(True) for p in params]
    opt = factory(params)
    for step, gs in enumerate(grads):
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * etas[step]
        opt.zero_grad()
        for p, g in zip(params, gs):
            p.grad.add_(g.to(p.dtype))
        opt.step()
    return [p.detach().clone() for p in params], opt


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _storages(tensors):
    return {t.untyped_storage().data_ptr() for t in tensors}


def _kernel(cls, kw) -> tuple:
    """The compiled kernel a case runs: its name and flags (each compiles once a process)."""
    opt = cls([torch.nn.Parameter(torch.zeros(2))], **kw)
    return cls._COMPILED, tuple(sorted(opt._flags(opt.param_groups[0]).items()))


def _flat_cases():
    """Every case with impl=None; with impl="compiled" the first case of each compiled kernel
    (a fast subset: the other cases of a kernel run its very graph, and the regular mode tests
    every case with it, tests/test_optim_numerics.py)."""
    cases, seen = [], set()
    for cls, kw in CASES:
        for device, dmarks in (("cpu", ()), ("cuda", (needs_cuda,))):
            cases.append(pytest.param(cls, kw, None, device, marks=dmarks,
                                      id=f"{case_id(cls, kw)}-None-{device}"))
        if _kernel(cls, kw) in seen:
            continue
        seen.add(_kernel(cls, kw))
        for device, dmarks in (("cpu", ()), ("cuda", (needs_cuda,))):
            cases.append(pytest.param(cls, kw, "compiled", device,
                                      marks=(*dmarks, *marks("compiled")),
                                      id=f"{case_id(cls, kw)}-compiled-{device}"))
    return cases


@pytest.mark.parametrize("cls,kw,impl,device", _flat_cases())
def test_flat_matches_float64_reference(cls, kw, impl, device):
    # these buffers are small, so impl=None takes the foreach kernels wherever no fused kernel
    # is exact; impl="compiled" runs the compiled kernel on the buffer (on CUDA: torch's fused
    # CUDA kernels, and Triton kernels from the compiled path)
    grads = [[g.to(device) for g in gs] for gs in GRADS]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        flat, opt = run_flat(lambda ps: cls(ps, flat=True, impl=impl, **kw),
                             [p.to(device) for p in make_params(torch.float32)], grads)
    ours = [str(w.message) for w in seen if "weightdecay" in str(w.message)
            or "flat=True" in str(w.message)]
    assert ours == []  # no fallback, no gradient copies in this loop
    assert opt.flat and all(p.device.type == device for p in flat)
    fused = fused_exact(cls, kw) and kw.get("decay_convention") != "constant"
    expected = "compiled" if impl == "compiled" else "fused" if fused else "foreach"
    assert opt.kernel_plan() == [{expected: 1}]
    ref, _ = run(lambda ps: cls(ps, impl="reference", **kw), make_params(torch.float64), GRADS,
                 ETAS)
    assert rel_err_all([p.cpu() for p in flat], ref) <= 1e-6


def test_flat_param_groups_with_different_hyperparameters():
    def groups(ps):
        return [dict(params=ps[:2], lr=3e-3, weight_decay=0.1),
                dict(params=ps[2:], lr=2e-2, weight_decay=1e-3, amsgrad=True)]

    flat, opt = run_flat(lambda ps: wd.AdamW(groups(ps), flat=True), make_params())
    assert opt.kernel_plan() == [{"fused": 1}, {"fused": 1}]  # one buffer per group
    first, second = (g["params"] for g in opt.param_groups)
    assert len(_storages(first)) == 1 and len(_storages(second)) == 1
    assert _storages(first) != _storages(second)
    ref, _ = run(lambda ps: wd.AdamW(groups(ps), impl="reference"),
                 make_params(torch.float64), GRADS, ETAS)
    assert rel_err_all(flat, ref) <= 1e-6


def test_parameters_are_views_into_one_buffer():
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Linear(5, 2))
    before = [p.detach().clone() for p in model.parameters()]
    wd.SGDW(model.parameters(), lr=0.1, flat=True)
    params = list(model.parameters())
    assert len(_storages(params)) == 1  # one parameter buffer ...
    grad_storages = _storages([p.grad for p in params])
    assert len(grad_storages) == 1 and grad_storages != _storages(params)  # ... one for grads
    for p, b in zip(params, before):
        assert torch.equal(p, b)  # values preserved by re-homing
        assert not p.grad.any()
    model(torch.randn(3, 4)).sum().backward()  # autograd accumulates into the buffer
    assert all(p.grad.any() for p in params)
    assert _storages([p.grad for p in params]) == grad_storages


# ------------------------------------------------------------------ models, drop-in use


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Linear(6, 6, bias=False)
        self.mid = torch.nn.Linear(6, 6)
        self.out = torch.nn.Linear(6, 6, bias=False)
        self.out.weight = self.emb.weight  # tied weights: one parameter, used twice

    def forward(self, x):
        return self.out(torch.tanh(self.mid(self.emb(x))))


def _train(model, opt, steps=12, clip=None, zero=lambda opt, model: opt.zero_grad()):
    for i in range(steps):
        g = torch.Generator().manual_seed(i)
        x, y = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
        zero(opt, model)
        torch.nn.functional.mse_loss(model(x), y).backward()
        if clip is not None:
            clip(opt, model)
        opt.step()


@pytest.mark.parametrize("cls", [wd.SGDW, wd.AdamW])
def test_tied_weights_and_clipping_match_regular_mode(cls):
    torch.manual_seed(0)
    a = Tied()
    b = copy.deepcopy(a)
    oa = cls(a.parameters(), lr=1e-2, weight_decay=1e-2, flat=True)
    ob = cls(b.parameters(), lr=1e-2, weight_decay=1e-2, impl="reference")
    assert len(oa.param_groups[0]["params"]) == 3  # emb=out (tied, homed once), mid.{weight,bias}
    _train(a, oa, clip=lambda o, m: o.clip_grad_norm_(0.05))
    _train(b, ob, clip=lambda o, m: torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05))
    assert a.out.weight is a.emb.weight
    assert rel_err_all(list(a.parameters()), list(b.parameters())) <= 1e-6


def test_zero_grad_keeps_views_and_model_zero_grad_is_repaired():
    torch.manual_seed(0)
    a = Tied()
    b = copy.deepcopy(a)
    oa = wd.AdamW(a.parameters(), lr=1e-2, weight_decay=1e-2, flat=True)
    ob = wd.AdamW(b.parameters(), lr=1e-2, weight_decay=1e-2)
    oa.zero_grad(set_to_none=True)
    assert all(p.grad is not None and not p.grad.any() for p in a.parameters())
    with pytest.warns(RuntimeWarning, match="copying them back"):
        _train(a, oa, zero=lambda o, m: m.zero_grad(set_to_none=True))
    _train(b, ob)
    assert rel_err_all(list(a.parameters()), list(b.parameters())) <= 1e-6


def test_grad_scaler_with_flat_mode():
    torch.manual_seed(0)
    model = Tied()
    opt = wd.AdamW(model.parameters(), lr=1e-2, flat=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    x = torch.randn(4, 6)
    before = [p.detach().clone() for p in model.parameters()]
    scaler.scale(model(x).pow(2).mean() * float("inf")).backward()
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    opt.zero_grad()
    scaler.scale(model(x).pow(2).mean()).backward()
    scaler.step(opt)
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


# ------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("cls,kw", [(wd.SGDW, dict(lr=0.1, weight_decay=1e-3)),
                                    (wd.AdamW, dict(lr=1e-2, weight_decay=0.05)),
                                    (wd.Adam, dict(lr=1e-2, weight_decay=1e-3, amsgrad=True))])
@pytest.mark.parametrize("direction", ["flat->regular", "regular->flat"])
def test_checkpoints_interchange_with_regular_mode(cls, kw, direction):
    src_flat = direction.startswith("flat")
    torch.manual_seed(0)
    model = Tied()
    opt = cls(model.parameters(), flat=src_flat, **kw)
    _train(model, opt, steps=7)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    _train(model, opt, steps=9)  # the uninterrupted run

    other = Tied()
    other.load_state_dict(saved[0])
    opt2 = cls(other.parameters(), flat=not src_flat, **kw)
    opt2.load_state_dict(saved[1])
    _train(other, opt2, steps=9)
    assert rel_err_all(list(other.parameters()), list(model.parameters())) <= 1e-6
    if cls is not wd.SGDW:
        steps = {float(s["step"]) for s in opt2.state_dict()["state"].values()}
        assert steps == {16.0}


def test_flat_state_dict_loads_into_torch_adamw():
    model = Tied()
    opt = wd.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05, flat=True)
    _train(model, opt, steps=3)
    theirs = torch.optim.AdamW(Tied().parameters(), lr=1e-2)
    theirs.load_state_dict(opt.state_dict())
    assert {float(s["step"]) for s in theirs.state.values()} == {3.0}


# ------------------------------------------------------------------ refusals


def test_flat_refuses_what_it_cannot_support():
    a = torch.nn.Parameter(torch.randn(3))
    b = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="one dtype and device"):
        wd.AdamW([a, b], flat=True)
    frozen = torch.nn.Parameter(torch.randn(3), requires_grad=False)
    with pytest.raises(ValueError, match="does not require grad"):
        wd.SGDW([a, frozen], lr=0.1, flat=True)
    p = torch.nn.Parameter(torch.randn(5, 2))
    opt = wd.AdamW([p], flat=True)
    p.grad = torch.eye(5, 2).to_sparse()  # a sparse gradient put in place of the view
    with pytest.raises(ValueError, match="sparse"):
        opt.step()


def test_sparse_embedding_gradients_accumulate_densely_into_the_buffer():
    """With the dense gradient view attached, autograd adds a sparse embedding gradient into
    it: the update equals the dense embedding's."""
    torch.manual_seed(0)
    sparse = torch.nn.Embedding(5, 2, sparse=True)
    dense = torch.nn.Embedding(5, 2)
    dense.load_state_dict(sparse.state_dict())
    o1 = wd.AdamW(sparse.parameters(), lr=0.1, weight_decay=0.1, flat=True)
    o2 = wd.AdamW(dense.parameters(), lr=0.1, weight_decay=0.1)
    for m, o in ((sparse, o1), (dense, o2)):
        o.zero_grad()
        m(torch.tensor([1, 3, 3])).pow(2).sum().backward()
        o.step()
    assert not sparse.weight.grad.is_sparse
    torch.testing.assert_close(sparse.weight, dense.weight)


def test_flat_refuses_a_parameter_replaced_after_construction():
    model = Tied()
    opt = wd.SGDW(model.parameters(), lr=0.1, flat=True)
    model.double()  # new storage for every parameter
    model(torch.randn(2, 6, dtype=torch.float64)).sum().backward()
    with pytest.raises(RuntimeError, match="replaced after the optimizer was built"):
        opt.step()


# The next two tests are about a private mechanism: how a torch.compile failure is told from
# an error of a running kernel (the compiled-kernel cache of _compiled is replaced).


def test_falls_back_to_foreach_when_compilation_is_unavailable(monkeypatch):
    def broken(name, flags=()):
        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(_compiled, "_STATUS", {})
    monkeypatch.setattr(_compiled, "_compiled", broken)
    with pytest.warns(RuntimeWarning, match="use the foreach kernels"):
        flat, opt = run_flat(lambda ps: wd.SGDW(ps, lr=0.05, weight_decay=5e-3, flat=True,
                                                impl="compiled"), make_params())
    assert opt.kernel_plan() == [{"foreach": 1}]  # planned so from the first step on
    ref, _ = run(lambda ps: wd.SGDW(ps, lr=0.05, weight_decay=5e-3, impl="reference"),
                 make_params(torch.float64), GRADS, ETAS)
    assert rel_err_all(flat, ref) <= 1e-6


@pytest.mark.compile
@pytest.mark.parametrize("flat", [False, True])
def test_an_error_of_a_running_kernel_propagates_and_is_not_retried(monkeypatch, flat):
    """A compiled kernel that fails after it started writing (out of memory, say) raises; it
    is not replaced by foreach (which would apply the update a second time), and other
    optimizers keep their compiled kernels."""
    real = _compiled._compiled

    def half_way(name, flags=()):
        compiled = real(name, flags)

        def kernel(p, *args):
            if p.numel() > 16:  # not the scratch tensors of the first use
                p.sub_(1.0)  # wrote part of the update ...
                raise RuntimeError("out of memory")  # ... then failed
            return compiled(p, *args)
        return kernel

    monkeypatch.setattr(_compiled, "_STATUS", {})
    monkeypatch.setattr(_compiled, "_compiled", half_way)
    p = torch.nn.Parameter(torch.zeros(40))
    opt = wd.SGDW([p], lr=0.1, weight_decay=0.0, impl="compiled", flat=flat)
    torch.autograd.backward([p], [torch.ones(40)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning either
        with pytest.raises(RuntimeError, match="out of memory"):
            opt.step()
    assert torch.equal(p.detach(), torch.full((40,), -1.0))  # the partial write, once
    assert opt.kernel_plan() == [{"compiled": 1}]
    other = wd.AdamW([torch.nn.Parameter(torch.zeros(3))], impl="compiled")
    other.param_groups[0]["params"][0].grad = torch.ones(3)
    assert other.kernel_plan() == [{"compiled": 1}]


@pytest.mark.compile
def test_compiled_kernel_is_one_graph_for_every_shape_and_grad_mode():
    # dynamo guards on rank, view bases and requires_grad; the kernel receives plain rank-1
    # aliases, so tensors of any shape, flat or not, reuse one graph (a recompile per variant
    # would also regenerate the loop from that call's size hint)
    from torch._dynamo.utils import counters

    def step(shapes, **kw):
        params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape)
        wd.SGDW(params, lr=0.1, weight_decay=1e-2, impl="compiled", **kw).step()

    step([(7,)])  # the graph exists from here on
    before = counters["stats"]["unique_graphs"]
    step([(3, 4), (2, 3, 4, 5), (11,)])
    with torch.no_grad():
        step([(6, 5)])
    step([(4, 4), (9,)], flat=True)
    # runs of a flat buffer (views at an offset), when one parameter has no gradient
    params = [torch.nn.Parameter(torch.randn(s)) for s in [(5,), (3, 3), (7,), (6,)]]
    opt = wd.SGDW(params, lr=0.1, weight_decay=1e-2, impl="compiled", flat=True)
    torch.autograd.backward([params[0], params[2], params[3]],
                            [torch.ones(5), torch.ones(7), torch.ones(6)])
    assert opt.kernel_plan() == [{"compiled": 2}]
    opt.step()
    assert counters["stats"]["unique_graphs"] == before


@needs_cuda
def test_flat_checkpoint_moves_between_cuda_and_cpu():
    params = [p.cuda().requires_grad_() for p in make_params()]
    opt = wd.AdamW(params, lr=1e-2, weight_decay=0.1, flat=True)
    for gs in GRADS[:5]:
        opt.zero_grad()
        for p, g in zip(params, gs):
            p.grad.add_(g.cuda())
        opt.step()
    cpu = [p.detach().cpu().requires_grad_() for p in params]
    regular = wd.AdamW(cpu, lr=1e-2, weight_decay=0.1)
    regular.load_state_dict(opt.state_dict())
    for key in ("exp_avg", "exp_avg_sq"):
        for p, q in zip(params, cpu):
            torch.testing.assert_close(opt.state[p][key].cpu(), regular.state[q][key])


# ------------------------------------------------------------------ parameters without a gradient


class TwoHeads(torch.nn.Module):
    """A trunk and two heads; head ``b`` (registered between trunk and ``a``, so that its
    parameters lie in the middle of the flat buffer) gets a gradient only at some steps."""

    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Linear(6, 6)
        self.b = torch.nn.Linear(6, 2)
        self.a = torch.nn.Linear(6, 2)

    def forward(self, x, use_b):
        h = torch.tanh(self.trunk(x))
        return self.a(h) + self.b(h) if use_b else self.a(h)


USES_B = [False, False, True, False, True, True, False, False, False, True] * 3


def _train_two_heads(model, opt, zero=lambda o: o.zero_grad(), etas=None):
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda t: eta_restarts(t, T_0=8))
             if etas else None)
    for i, use_b in enumerate(USES_B):
        g = torch.Generator().manual_seed(i)
        x, y = torch.randn(8, 6, generator=g), torch.randn(8, 2, generator=g)
        zero(opt)
        torch.nn.functional.mse_loss(model(x, use_b), y).backward()
        opt.step()
        if sched:
            sched.step()


NO_GRAD_CASES = [
    # id, flat optimizer, what it must equal (torch's where it exists), under any lr schedule
    ("AdamW-vs-torch", lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=0.05, flat=True),
     lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=5.0), True),
    ("AdamW-amsgrad-constant",
     lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=0.05, amsgrad=True, flat=True,
                         decay_convention="constant"),
     lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=0.05, amsgrad=True, impl="reference",
                         decay_convention="constant"), True),
    ("Adam-vs-torch", lambda ps: wd.Adam(ps, lr=1e-2, weight_decay=1e-2, flat=True),
     lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2), True),
    # the paper's SGD momentum equals torch's only at a constant lr
    ("SGD-vs-torch", lambda ps: wd.SGD(ps, lr=0.05, weight_decay=1e-2, flat=True),
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2), False),
    ("SGDW", lambda ps: wd.SGDW(ps, lr=0.05, weight_decay=1e-2, nesterov=True, flat=True),
     lambda ps: wd.SGDW(ps, lr=0.05, weight_decay=1e-2, nesterov=True, impl="reference"), True),
]


@pytest.mark.parametrize("schedule", [False, True])
@pytest.mark.parametrize("name,ours,theirs,any_schedule", NO_GRAD_CASES,
                         ids=[c[0] for c in NO_GRAD_CASES])
def test_parameters_without_a_gradient_are_skipped_as_torch_does(name, ours, theirs,
                                                                 any_schedule, schedule):
    """Head b gets no gradient at most steps: torch (and the regular mode) skip it — no decay,
    no moment update, no step count — and so must flat mode, whose gradient views stay
    attached (its counts then differ from the trunk's, so the buffer splits into runs)."""
    if schedule and not any_schedule:
        pytest.skip("equal at a constant learning rate only")
    torch.manual_seed(0)
    a = TwoHeads()
    b = copy.deepcopy(a)
    oa, ob = ours(a.parameters()), theirs(b.parameters())
    _train_two_heads(a, oa, etas=schedule)
    _train_two_heads(b, ob, etas=schedule)
    assert rel_err_all(list(a.parameters()), list(b.parameters())) <= 1e-6
    torch.manual_seed(0)
    moved = (a.b.weight - TwoHeads().b.weight).abs().max()  # (b's weights did move at all)
    assert moved > 0
    if "step" in ob.state[b.b.weight]:
        steps_a = [float(oa.state[p]["step"]) for p in a.parameters()]
        steps_b = [float(ob.state[p]["step"]) for p in b.parameters()]
        assert steps_a == steps_b and steps_a[2] < steps_a[0]  # b counted only its own steps


@pytest.mark.parametrize("cls", [wd.SGDW, wd.AdamW])
def test_a_step_before_any_backward_changes_nothing(cls):
    torch.manual_seed(0)
    model = TwoHeads()
    before = [p.detach().clone() for p in model.parameters()]
    opt = cls(model.parameters(), lr=0.1, weight_decay=0.1, flat=True)
    opt.step()
    opt.zero_grad()
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    if cls is wd.AdamW:
        assert {float(s["step"]) for s in opt.state_dict()["state"].values()} == {0.0}


def test_zero_grad_keeping_zeros_updates_as_torch_does():
    """zero_grad(set_to_none=False): torch keeps the zeroed gradients and updates (decays)
    those parameters; a parameter that never had a gradient stays skipped."""
    torch.manual_seed(0)
    a = TwoHeads()
    b = copy.deepcopy(a)
    oa = wd.AdamW(a.parameters(), lr=1e-2, weight_decay=0.05, flat=True)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=5.0)
    _train_two_heads(a, oa, zero=lambda o: o.zero_grad(set_to_none=False))
    _train_two_heads(b, ob, zero=lambda o: o.zero_grad(set_to_none=False))
    assert rel_err_all(list(a.parameters()), list(b.parameters())) <= 1e-6


@pytest.mark.parametrize("direction", ["flat->regular", "regular->flat"])
def test_checkpoints_keep_per_parameter_step_counts(direction):
    src_flat = direction.startswith("flat")
    torch.manual_seed(0)
    model = TwoHeads()
    opt = wd.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05, flat=src_flat)
    _train_two_heads(model, opt)
    sd = copy.deepcopy(opt.state_dict())  # (flat state is views into the buffers)
    other = copy.deepcopy(model)
    opt2 = wd.AdamW(other.parameters(), lr=1e-2, weight_decay=0.05, flat=not src_flat)
    opt2.load_state_dict(sd)
    counts = [float(opt2.state[p]["step"]) for p in other.parameters()]
    assert counts == [float(opt.state[p]["step"]) for p in model.parameters()]
    assert len(set(counts)) == 2
    _train_two_heads(model, opt)
    _train_two_heads(other, opt2)
    assert rel_err_all(list(other.parameters()), list(model.parameters())) <= 1e-6


@pytest.mark.compile
@pytest.mark.parametrize("cls,kw", [(wd.SGDW, dict(lr=0.1, weight_decay=1e-2)),
                                    (wd.AdamW, dict(weight_decay=1e-2,
                                                    decay_convention="constant"))])
def test_auto_uses_the_compiled_kernel_for_large_tensors(cls, kw):
    """impl=None: the single-pass compiled kernel for a tensor of 2**22 elements (where no
    fused kernel is exact), foreach for a small one; both match the float64 reference."""
    shapes = [(2**11, 2**11), (7,)]
    grads = grad_stream(3, shapes=shapes)
    params = make_params(torch.float64, shapes=shapes)
    ours, opt = run(lambda ps: cls(ps, **kw), [p.float() for p in params], grads, ETAS[:3])
    assert opt.kernel_plan() == [{"compiled": 1, "foreach": 1}]
    ref, _ = run(lambda ps: cls(ps, impl="reference", **kw), params, grads, ETAS[:3])
    assert rel_err_all(ours, ref) <= 1e-6

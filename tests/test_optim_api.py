"""Optimizer API: validation, state_dict resume, closures, GradScaler, wrapper, groups, memory."""

from __future__ import annotations

import copy
import math
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import weightdecay as wd
from _optim_util import eta_restarts, impls

ALL = [wd.SGD, wd.SGDW, wd.Adam, wd.AdamW]


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def _batch(i):
    g = torch.Generator().manual_seed(1000 + i)
    return torch.randn(16, 6, generator=g), torch.randn(16, 2, generator=g)


# ------------------------------------------------------------------ bad input


BAD = [
    (dict(lr=-0.1), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(lr=float("inf")), "lr"),
    (dict(lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (dict(lr=0.1, weight_decay=float("nan")), "weight_decay"),
    (dict(lr=0.1, decay_convention="torch"), "decay_convention"),
    (dict(lr=0.1, impl="cuda-graph"), "impl"),
]
BAD_SGD = [(dict(lr=0.1, momentum=1.0), "momentum"), (dict(lr=0.1, momentum=-0.5), "momentum"),
           (dict(lr=0.1, momentum=0.0, nesterov=True), "nesterov")]
BAD_ADAM = [(dict(betas=(0.9, 1.0)), r"betas\[1\]"), (dict(betas=(-0.1, 0.9)), r"betas\[0\]"),
            (dict(betas=0.9), "betas"), (dict(eps=0.0), "eps"), (dict(eps=-1e-8), "eps")]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("kwargs,name", BAD)
def test_bad_hyperparameters_name_the_argument(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(_model().parameters(), **kwargs)


@pytest.mark.parametrize("cls", [wd.SGD, wd.SGDW])
@pytest.mark.parametrize("kwargs,name", BAD_SGD)
def test_bad_sgd_hyperparameters(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(_model().parameters(), **kwargs)


@pytest.mark.parametrize("cls", [wd.Adam, wd.AdamW])
@pytest.mark.parametrize("kwargs,name", BAD_ADAM)
def test_bad_adam_hyperparameters(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(_model().parameters(), **kwargs)


def test_bad_value_in_a_param_group_is_named():
    m = _model()
    with pytest.raises(ValueError, match="weight_decay.*-1"):
        wd.AdamW([{"params": m[0].parameters(), "weight_decay": -1.0},
                  {"params": m[2].parameters()}])


@pytest.mark.parametrize("cls", ALL)
def test_sparse_gradients_are_rejected(cls):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = cls(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()


@pytest.mark.parametrize("cls", [wd.SGD, wd.SGDW])
def test_fused_sgd_is_refused_with_reason(cls):
    with pytest.raises(ValueError, match="fused.*not Algorithm 1"):
        cls(_model().parameters(), lr=0.1, impl="fused")
    opt = cls(_model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="fused"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "impl": "fused"})


def test_inexact_fused_adamw_is_refused_at_step():
    """decay_convention='constant' at lr = 0: no finite torch weight_decay gives lambda."""
    model = _model()
    opt = wd.AdamW(model.parameters(), lr=0.0, weight_decay=0.1, impl="fused",
                   decay_convention="constant")
    model(torch.randn(2, 6)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="impl='fused' cannot compute this update exactly"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ------------------------------------------------------------------ resume


@pytest.mark.parametrize("cls,kw", [(wd.SGDW, dict(lr=0.1, weight_decay=1e-3)),
                                    (wd.SGD, dict(lr=0.1, weight_decay=1e-3, nesterov=True)),
                                    (wd.AdamW, dict(lr=1e-2, weight_decay=0.05)),
                                    (wd.Adam, dict(lr=1e-2, weight_decay=1e-3, amsgrad=True))])
def test_state_dict_round_trip_mid_restart_cycle_is_bit_identical(cls, kw):
    def make(seed=0):
        model = _model(seed)
        opt = cls(model.parameters(), **kw)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: eta_restarts(t, T_0=10))
        return model, opt, sched

    def train(model, opt, sched, steps):
        for i in steps:
            x, y = _batch(i)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()

    model, opt, sched = make()
    train(model, opt, sched, range(15))  # step 15: inside the second cycle (10..30)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), sched.state_dict()))
    train(model, opt, sched, range(15, 40))

    model2, opt2, sched2 = make(seed=123)  # different init: everything must come from the save
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved[2])
    train(model2, opt2, sched2, range(15, 40))
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_state_dict_loads_into_torch_adamw_and_back():
    """State names follow torch's (step, exp_avg, exp_avg_sq): checkpoints interchange."""
    model = _model()
    opt = wd.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    for i in range(3):
        x, y = _batch(i)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    theirs = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=5.0)
    theirs.load_state_dict(opt.state_dict())
    assert set(theirs.state[model[0].weight]) >= {"step", "exp_avg", "exp_avg_sq"}


# ------------------------------------------------------------------ closures, AMP


@pytest.mark.parametrize("cls", ALL)
def test_closure_is_evaluated_and_loss_returned(cls):
    model = _model()
    opt = cls(model.parameters(), lr=0.01, weight_decay=1e-3)
    x, y = _batch(0)
    calls = []

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        calls.append(1)
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    loss = opt.step(closure)
    assert calls == [1] and torch.is_tensor(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("cls", ALL)
def test_grad_scaler_skips_inf_and_matches_unscaled(cls):
    def fresh():
        model = _model()
        return model, cls(model.parameters(), lr=0.01, weight_decay=1e-3)

    x, y = _batch(0)
    model_a, opt_a = fresh()
    torch.nn.functional.mse_loss(model_a(x), y).backward()
    opt_a.step()

    model_b, opt_b = fresh()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.nn.functional.mse_loss(model_b(x), y)).backward()
    scaler.step(opt_b)
    scaler.update()
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)

    before = [p.detach().clone() for p in model_b.parameters()]
    opt_b.zero_grad()
    scaler.scale(torch.nn.functional.mse_loss(model_b(x), y) * float("inf")).backward()
    scaler.step(opt_b)  # inf gradients: the step is skipped, the scale shrinks
    scaler.update()
    assert scaler.get_scale() < 1024.0
    for a, b in zip(before, model_b.parameters()):
        assert torch.equal(a, b)


def test_auto_impl_picks_fused_adamw_and_foreach_sgd():
    model = _model()
    model(torch.randn(2, 6)).sum().backward()
    opt = wd.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    assert opt.kernel_plan() == [{"fused": 4}]
    opt = wd.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, decay_convention="constant")
    assert opt.kernel_plan() == [{"foreach": 4}]  # constant decay: the precise foreach path
    opt = wd.SGDW(model.parameters(), lr=1e-3, weight_decay=0.1)
    assert opt.kernel_plan() == [{"foreach": 4}]
    model[0].weight.grad = None  # parameters without a gradient are not planned
    assert opt.kernel_plan() == [{"foreach": 3}]
    assert opt.state == {}  # planning changed nothing


def test_parameters_of_several_dtypes_are_planned_apart():
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    c = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
    for p in (a, b, c):
        p.grad = torch.ones_like(p)
    refs = [q.detach().clone().requires_grad_() for q in (a, b, c)]
    for q in refs:
        q.grad = torch.ones_like(q)
    opt = wd.AdamW([a, b, c], lr=1e-2, weight_decay=0.1)
    assert opt.kernel_plan() == [{"fused": 3}]  # three subsets, each of one dtype
    ref = wd.AdamW(refs, lr=1e-2, weight_decay=0.1, impl="reference")
    for _ in range(3):
        opt.step()
        ref.step()
    for p, q in zip((a, b, c), refs):
        torch.testing.assert_close(p, q)
    assert all(s["step"].item() == 3 for s in opt.state.values())


# ------------------------------------------------------------------ wrapper


# every torch.optim optimizer of torch 2.13 but LBFGS and SparseAdam (refused, see below)
WRAPPED = [
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    (torch.optim.Adam, dict(lr=1e-2)),
    (torch.optim.AdamW, dict(lr=1e-2)),
    (torch.optim.Adamax, dict(lr=1e-2)),
    (torch.optim.NAdam, dict(lr=1e-2)),
    (torch.optim.RAdam, dict(lr=1e-2)),
    (torch.optim.RMSprop, dict(lr=1e-2, momentum=0.5)),
    (torch.optim.Adagrad, dict(lr=1e-1)),
    (torch.optim.Adadelta, dict(lr=1.0)),
    (torch.optim.ASGD, dict(lr=1e-2)),
    (torch.optim.Rprop, dict(lr=1e-2)),
    (torch.optim.Adafactor, dict(lr=1e-2)),
    (torch.optim.Muon, dict(lr=1e-2)),
]


def _wrapped_model(base, seed=0):
    torch.manual_seed(seed)
    bias = base is not torch.optim.Muon  # Muon takes 2-D parameters only
    return torch.nn.Sequential(torch.nn.Linear(6, 8, bias=bias), torch.nn.Tanh(),
                               torch.nn.Linear(8, 2, bias=bias))


def _base_kwargs(base, kw):
    """The base optimizer with its own weight decay off (AdamW, Muon, ... default to > 0)."""
    import inspect

    takes_wd = "weight_decay" in inspect.signature(base).parameters
    return {**kw, "weight_decay": 0.0} if takes_wd else kw


@pytest.mark.parametrize("base,kw", WRAPPED, ids=[b.__name__ for b, _ in WRAPPED])
def test_decoupled_wrapper_equals_base_at_zero_and_decays_otherwise(base, kw):
    Wrapped = wd.decoupled_weight_decay(base)
    assert Wrapped.__name__ == base.__name__ + "W"

    def train(factory, steps=25):
        model = _wrapped_model(base)
        opt = factory(model.parameters())
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: eta_restarts(t, T_0=10))
        for i in range(steps):
            x, y = _batch(i)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()
        return [p.detach() for p in model.parameters()]

    plain = train(lambda ps: base(ps, **_base_kwargs(base, kw)))
    zero = train(lambda ps: Wrapped(ps, weight_decay=0.0, **kw))
    for a, b in zip(plain, zero):
        assert torch.equal(a, b)

    # lambda > 0: one update = decay of theta_{t-1} by eta_t*lambda, then the base update
    lam = 0.1
    model = _wrapped_model(base)
    ref = copy.deepcopy(model)
    opt = Wrapped(model.parameters(), weight_decay=lam, **kw)
    ref_opt = base(ref.parameters(), **_base_kwargs(base, kw))
    for group in opt.param_groups + ref_opt.param_groups:
        group["lr"] = group["lr"] * 0.5  # eta_t = 0.5
    x, y = _batch(0)
    for m in (model, ref):
        torch.nn.functional.mse_loss(m(x), y).backward()
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(1 - 0.5 * lam)
    opt.step()
    ref_opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert opt.param_groups[0]["weight_decay"] == lam  # restored after the step


def _newton_schulz(g, steps=5, eps=1e-7):
    """Muon's orthogonalization, written out: X <- a X + (b A + c A^2) X with A = X X^T,
    a quintic Newton-Schulz iteration (Jordan et al.'s coefficients) from X = G / ||G||_F,
    on the wide orientation of the matrix, in bfloat16 with each line one fused
    multiply-add (torch.addmm), as Muon defines its rounding."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    tall = g.shape[0] > g.shape[1]
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.addmm(x, poly, x, beta=a)  # a X + (b A + c A^2) X
    return x.T if tall else x


@pytest.mark.parametrize("convention", ["schedule", "lr", "corrected"])
def test_decoupled_muon_against_a_hand_written_step(convention):
    """MuonW: theta_t = (1 - d_t) theta_{t-1} - lr_t * sqrt(max(1, rows/cols)) * NS(u_t),
    u_t = Nesterov momentum (torch's Muon defaults: momentum 0.95, nesterov)."""
    MuonW = wd.decoupled_weight_decay(torch.optim.Muon)
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 6), (3, 8)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    theta = [p.detach().clone() for p in params]
    bufs = [torch.zeros(s) for s in shapes]
    alpha, lam, mu = 0.02, 0.5, 0.95
    opt = MuonW(params, lr=alpha, weight_decay=lam, decay_convention=convention)
    for t in range(4):
        eta = (1.0, 0.5, 0.25, 0.1)[t]
        lr_t = alpha * eta
        opt.param_groups[0]["lr"] = lr_t
        d = {"schedule": eta * lam, "lr": lr_t * lam, "corrected": lr_t * eta * lam}[convention]
        grads = [torch.randn(s, generator=gen) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for i, (g, s) in enumerate(zip(grads, shapes)):
            bufs[i] = torch.lerp(bufs[i], g, 1 - mu)  # buf = mu*buf + (1-mu)*g
            u = torch.lerp(g, bufs[i], mu)  # Nesterov: (1-mu)*g + mu*buf
            ortho = _newton_schulz(u).float()
            theta[i] = (1 - d) * theta[i] - lr_t * max(1.0, s[0] / s[1]) ** 0.5 * ortho
    for p, expected in zip(params, theta):
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
    assert opt.param_groups[0]["weight_decay"] == lam


def test_wrapper_refuses_lbfgs_and_sparse_adam():
    for cls in (torch.optim.LBFGS, torch.optim.SparseAdam):
        with pytest.raises(ValueError, match=f"does not support {cls.__name__}"):
            wd.decoupled_weight_decay(cls)


def test_wrapper_rejects_non_optimizers_and_bad_decay():
    with pytest.raises(ValueError, match="Optimizer subclass"):
        wd.decoupled_weight_decay(torch.nn.Linear)
    with pytest.raises(ValueError, match="weight_decay"):
        wd.decoupled_weight_decay(torch.optim.RMSprop)(_model().parameters(), weight_decay=-1)
    with pytest.raises(ValueError, match="decay_convention"):
        wd.decoupled_weight_decay(torch.optim.RMSprop)(_model().parameters(),
                                                       decay_convention="x")


# ------------------------------------------------------------------ param groups


def test_param_groups_weight_decay_split(caplog):
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.BatchNorm1d(4),
                                torch.nn.Flatten(), torch.nn.Linear(8, 2))
    with caplog.at_level("INFO", logger="weightdecay"):
        groups = wd.param_groups_weight_decay(model, 0.05, no_decay=["3.weight"], verbose=True)
    assert groups[0]["param_names"] == ["0.weight"]
    assert groups[0]["weight_decay"] == 0.05
    assert sorted(groups[1]["param_names"]) == sorted(
        ["0.bias", "1.weight", "1.bias", "3.weight", "3.bias"])
    assert groups[1]["weight_decay"] == 0.0
    summary = str(groups.summary)
    assert "decay: 1 tensors, 12 parameters" in summary and "no decay: 5 tensors" in summary
    assert summary in caplog.text  # logged, never printed
    opt = wd.AdamW(groups, lr=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    with pytest.raises(ValueError, match="match no parameter"):
        wd.param_groups_weight_decay(model, 0.05, no_decay=["nope"])
    with pytest.raises(ValueError, match="weight_decay"):
        wd.param_groups_weight_decay(model, -1.0)


def test_param_groups_weight_decay_prints_nothing(capsys):
    wd.param_groups_weight_decay(_model(), 0.05)
    assert capsys.readouterr() == ("", "")


# ------------------------------------------------------------------ memory


class _AllocTracker(TorchDispatchMode):
    """Peak bytes of tensors created by ops (not in-place results) that are alive at once."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0

    def _release(self, nbytes):
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr()
                  for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                nbytes = t.untyped_storage().nbytes()
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._release, nbytes)
        return out


def _fast(cls):
    """The fast eager kernels: the reference path is the literal pseudocode and allocates
    freely."""
    return [impl for impl in impls(cls, auto=False) if impl not in ("reference", "compiled")]


# (the eager kernels of each class's table; the compiled kernel's buffers belong to Inductor)
MEM_CASES = [(cls, impl, kw) for cls in (wd.SGD, wd.SGDW) for impl in _fast(cls)
             for kw in (dict(lr=0.1, weight_decay=1e-3), dict(lr=0.1, weight_decay=1e-3,
                                                               nesterov=True))] + [
    (cls, impl, kw) for cls in (wd.Adam, wd.AdamW) for impl in _fast(cls)
    for kw in (dict(weight_decay=1e-3), dict(weight_decay=1e-3, amsgrad=True))] + [
    (wd.SGDW, "foreach", dict(lr=0.1, weight_decay=1e-3, cautious=True)),
    (wd.SGDW, "foreach", dict(lr=0.1, weight_decay=1e-3, cautious=True, nesterov=True)),
    (wd.AdamW, "foreach", dict(weight_decay=1e-3, cautious=True)),
    (wd.AdamW, "foreach", dict(weight_decay=1e-3, cautious=True, amsgrad=True))]


@pytest.mark.parametrize("cls,impl,kw", MEM_CASES,
                         ids=[f"{c.__name__}-{i}-{sorted(k)}" for c, i, k in MEM_CASES])
def test_at_most_one_parameter_sized_temporary(cls, impl, kw):
    params = [torch.nn.Parameter(torch.randn(256, 64)), torch.nn.Parameter(torch.randn(4096))]
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    opt = cls(params, impl=impl, **kw)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # state allocation happens here, not counted
    tracker = _AllocTracker()
    with tracker:
        opt.step()
    assert tracker.peak <= param_bytes + 1024, (tracker.peak, param_bytes)
    assert not math.isnan(params[0].sum().item())


def test_alloc_tracker_sees_allocations():
    """The memory test above must be able to fail: the tracker counts a fresh tensor."""
    tracker = _AllocTracker()
    with tracker:
        x = torch.ones(1000) * 2
    assert tracker.peak >= 4000
    del x

"""Every optimizer path against the literal float64 pseudocode, and against torch.optim."""

from __future__ import annotations

import math

import pytest
import torch

import weightdecay as wd
from _optim_util import (
    ADAM_CASES,
    IMPLS,
    N_STEPS,
    SGD_CASES,
    case_id,
    eta_schedule,
    grad_stream,
    impl_param,
    impls,
    make_params,
    rel_err,
    rel_err_all,
    run,
    supports,
)
from weightdecay.optim import _reference  # the subject of the by-hand tests below

ETAS = eta_schedule(N_STEPS)  # restarts at 20, 60: eta_t changes every step
GRADS = grad_stream(N_STEPS)

# every case with every implementation its class offers (fused where exact: else refused, see
# the tests below)
IMPL_CASES = [impl_param((c, k, impl), impl=impl, id=f"{case_id(c, k)}[{impl}]")
              for c, k in SGD_CASES + ADAM_CASES for impl in IMPLS[c] if supports(c, k, impl)]


def _each_kernel(classes, kw=None, auto=False):
    """(class, implementation) for every kernel of each class that computes ``kw`` exactly
    (``auto``: and impl=None), marked ``compile`` where it compiles."""
    return [impl_param(cls, impl, impl=impl, id=f"{cls.__name__}-{impl}") for cls in classes
            for impl in impls(cls, auto=auto) if supports(cls, kw or {}, impl)]


@pytest.mark.parametrize("case", IMPL_CASES)
def test_float32_paths_match_float64_pseudocode(case):
    cls, kw, impl = case
    p32, _ = run(lambda ps: cls(ps, impl=impl, **kw), make_params(torch.float32), GRADS, ETAS)
    p64, _ = run(lambda ps: cls(ps, impl="reference", **kw), make_params(torch.float64),
                 GRADS, ETAS)
    moved = max(rel_err(a, b) for a, b in zip(make_params(torch.float64), p64))
    assert moved > 1e-2, "the parameters must actually move for the comparison to mean much"
    # torch's fused kernel rounds (1 - lr_t*wd) to float32; with a decay that is constant over
    # all updates ("constant" convention) that is a systematic ~3e-8 per update, which is why
    # impl=None never picks fused for that convention. Everything else: 1e-6.
    fused_constant = impl == "fused" and kw.get("decay_convention") == "constant"
    assert rel_err_all(p32, p64) <= (1e-5 if fused_constant else 1e-6)


@pytest.mark.parametrize("cls,impl", _each_kernel([wd.Adam, wd.AdamW]))
def test_multiple_param_groups(cls, impl):
    split = (2, dict(lr=3e-3, weight_decay=1e-1), dict(lr=2e-2, weight_decay=1e-3,
                                                      amsgrad=True))
    p32, _ = run(lambda g: cls(g, impl=impl), make_params(torch.float32), GRADS, ETAS, split)
    p64, _ = run(lambda g: cls(g, impl="reference"), make_params(torch.float64), GRADS, ETAS,
                 split)
    assert rel_err_all(p32, p64) <= 1e-6


@pytest.mark.parametrize("cls,impl", _each_kernel([wd.SGD, wd.SGDW]))
def test_sgd_multiple_param_groups(cls, impl):
    split = (1, dict(lr=0.1, weight_decay=1e-2, nesterov=True), dict(lr=0.01, momentum=0.5))
    p32, _ = run(lambda g: cls(g, lr=0.5, impl=impl), make_params(torch.float32), GRADS, ETAS,
                 split)
    p64, _ = run(lambda g: cls(g, lr=0.5, impl="reference"), make_params(torch.float64), GRADS,
                 ETAS, split)
    assert rel_err_all(p32, p64) <= 1e-6


def test_reference_by_hand_sgdw_two_steps():
    """Algorithm 1 computed with plain floats: alpha=0.1, beta1=0.9, lambda=0.01."""
    theta, m = 2.0, 0.0
    alpha, beta1, lam = 0.1, 0.9, 0.01
    t = torch.tensor([2.0], dtype=torch.float64)
    buf = torch.zeros_like(t)
    for g, eta in ((0.5, 1.0), (-1.0, 0.5)):
        m = beta1 * m + eta * alpha * g
        theta = theta - m - eta * lam * theta
        _reference.sgd_step(t, torch.tensor([g], dtype=torch.float64), buf, lr_t=eta * alpha,
                            momentum=beta1, l2=0.0, decay_t=eta * lam, nesterov=False)
    assert t.item() == pytest.approx(theta, rel=1e-15)
    assert buf.item() == pytest.approx(m, rel=1e-15)


def test_reference_by_hand_adamw_two_steps():
    """Algorithm 2 computed with plain floats."""
    theta, m, v = 1.5, 0.0, 0.0
    alpha, b1, b2, eps, lam = 1e-2, 0.9, 0.999, 1e-8, 0.1
    t = torch.tensor([1.5], dtype=torch.float64)
    mt, vt = torch.zeros_like(t), torch.zeros_like(t)
    for step, (g, eta) in enumerate(((0.3, 1.0), (-2.0, 0.25)), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = m / (1 - b1**step), v / (1 - b2**step)
        theta = theta - eta * (alpha * mh / (math.sqrt(vh) + eps) + lam * theta)
        _reference.adam_step(t, torch.tensor([g], dtype=torch.float64), mt, vt, None, t=step,
                             lr_t=eta * alpha, beta1=b1, beta2=b2, eps=eps, l2=0.0,
                             decay_t=eta * lam)
    assert t.item() == pytest.approx(theta, rel=1e-14)


# ---------------------------------------------------------------- parity with torch.optim


def _torch_run(opt_factory, lam_fn, steps=N_STEPS, dtype=torch.float32):
    params = [p.clone().requires_grad_(True) for p in make_params(dtype)]
    opt = opt_factory(params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam_fn)
    for gs in GRADS[:steps]:
        for p, g in zip(params, gs):
            p.grad = g.to(dtype)
        opt.step()
        sched.step()
    return [p.detach() for p in params]


def _eta(t):
    return ETAS[t] if t < N_STEPS else ETAS[-1]


PARITY = [
    # ours, torch's -- under the same LambdaLR with restarts
    ("AdamW(schedule) == torch AdamW(wd=lam/alpha)",
     lambda ps, i: wd.AdamW(ps, lr=1e-2, weight_decay=0.05, impl=i),
     lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.05 / 1e-2, foreach=False),
     _eta),
    ("AdamW(schedule, amsgrad) == torch AdamW(amsgrad)",
     lambda ps, i: wd.AdamW(ps, lr=1e-2, weight_decay=0.05, amsgrad=True, impl=i),
     lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=5.0, amsgrad=True, foreach=False),
     _eta),
    ("Adam(L2) == torch Adam(weight_decay)",
     lambda ps, i: wd.Adam(ps, lr=1e-2, weight_decay=0.05, impl=i),
     lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.05, foreach=False),
     _eta),
    ("AdamW(lr convention) == torch AdamW(weight_decay=lam)",
     lambda ps, i: wd.AdamW(ps, lr=1e-2, weight_decay=0.05, decay_convention="lr", impl=i),
     lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.05, foreach=False),
     _eta),
    ("SGD(L2) == torch SGD(momentum, weight_decay) at constant lr",
     lambda ps, i: wd.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01, impl=i),
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01, foreach=False),
     lambda t: 1.0),
    ("SGD(L2, nesterov) == torch SGD(nesterov) at constant lr",
     lambda ps, i: wd.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True, impl=i),
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True,
                                foreach=False),
     lambda t: 1.0),
]


PARITY_IMPLS = [impl_param(*case, cls, impl, impl=impl, id=f"{case[0]}-{impl}")
                for case in PARITY for cls in [getattr(wd, case[0].split("(")[0])]
                for impl in impls(cls, auto=False)]


@pytest.mark.parametrize("name,ours,theirs,lam_fn,cls,impl", PARITY_IMPLS)
def test_parity_with_torch(name, ours, theirs, lam_fn, cls, impl):
    a = _torch_run(lambda ps: ours(ps, impl), lam_fn)
    b = _torch_run(theirs, lam_fn)
    assert rel_err_all(a, b) <= 2e-6


def test_sgd_differs_from_torch_when_lr_changes():
    """The paper's momentum keeps the step size inside the buffer: under a changing lr it is
    *not* torch's form. (Guards against silently implementing torch's momentum.)"""
    a = _torch_run(lambda ps: wd.SGD(ps, lr=0.05, momentum=0.9), _eta)
    b = _torch_run(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), _eta)
    assert max(rel_err(x, y) for x, y in zip(a, b)) > 1e-4


def test_decay_is_not_multiplied_by_alpha():
    """Under the paper's convention the decay of a zero-gradient weight is eta_t*lambda,
    whatever alpha is; under 'lr' it is lr_t*lambda."""
    for alpha in (1e-4, 1e-2, 1.0):
        p = torch.nn.Parameter(torch.ones(3))
        opt = wd.AdamW([p], lr=alpha, weight_decay=0.1)
        p.grad = torch.zeros(3)
        opt.step()
        assert p.detach().tolist() == pytest.approx([0.9] * 3, rel=1e-6)
        q = torch.nn.Parameter(torch.ones(3))
        opt = wd.SGDW([q], lr=alpha, weight_decay=0.1, decay_convention="lr")
        q.grad = torch.zeros(3)
        opt.step()
        assert q.detach().tolist() == pytest.approx([1 - alpha * 0.1] * 3, rel=1e-6)


# ---------------------------------------------------------------- corrected decay (AdamC)


@pytest.mark.parametrize("cls", [wd.SGDW, wd.AdamW])
def test_corrected_decay_uses_each_groups_own_peak_lr(cls):
    """decay_convention="corrected": d_t = lr_t * (lr_t / lr_max) * lambda with lr_max the
    group's own initial lr (timm's adamc takes the defaults' lr for every group)."""
    lam, eta = 0.2, 0.5
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = cls([dict(params=[a], lr=0.1), dict(params=[b], lr=0.01)], lr=1.0,
              weight_decay=lam, decay_convention="corrected")
    for group in opt.param_groups:
        group["lr"] = group["initial_lr"] * eta
    a.grad, b.grad = torch.zeros(3), torch.zeros(3)
    opt.step()
    for p, lr_max in ((a, 0.1), (b, 0.01)):
        lr_t = lr_max * eta
        expected = 1 - lr_t * (lr_t / lr_max) * lam
        assert p.detach().tolist() == pytest.approx([expected] * 3, rel=1e-6)
    # the defaults' lr (1.0) as the peak would have given a different decay
    assert a.detach()[0].item() != pytest.approx(1 - 0.05 * (0.05 / 1.0) * lam, rel=1e-6)


@pytest.mark.parametrize("cls,impl", _each_kernel([wd.SGDW, wd.AdamW]))
def test_corrected_decay_with_two_groups_matches_reference(cls, impl):
    split = (2, dict(lr=3e-2, weight_decay=0.5), dict(lr=3e-3, weight_decay=2.0))
    kw = dict(lr=0.5, decay_convention="corrected")
    p32, _ = run(lambda g: cls(g, impl=impl, **kw), make_params(torch.float32), GRADS, ETAS,
                 split)
    p64, _ = run(lambda g: cls(g, impl="reference", **kw), make_params(torch.float64), GRADS,
                 ETAS, split)
    assert rel_err_all(p32, p64) <= 1e-6


@pytest.mark.parametrize("cls,impl", _each_kernel([wd.AdamW]))
def test_corrected_adamw_equals_torch_adamw_with_decay_scaled_by_eta(cls, impl):
    """AdamC as torch.optim.AdamW whose weight_decay is lambda * lr_t / lr_max each update."""
    lam, alpha = 0.5, 1e-2
    ours = [p.clone().requires_grad_(True) for p in make_params(torch.float32)]
    theirs = [p.clone().requires_grad_(True) for p in make_params(torch.float32)]
    a = wd.AdamW(ours, lr=alpha, weight_decay=lam, decay_convention="corrected", impl=impl)
    b = torch.optim.AdamW(theirs, lr=alpha, weight_decay=lam, foreach=False)
    for step, gs in enumerate(GRADS):
        a.param_groups[0]["lr"] = b.param_groups[0]["lr"] = alpha * ETAS[step]
        b.param_groups[0]["weight_decay"] = lam * ETAS[step]
        for p, q, g in zip(ours, theirs, gs):
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    assert rel_err_all([p.detach() for p in ours], [q.detach() for q in theirs]) <= 2e-6


# ---------------------------------------------------------------- cautious weight decay


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("cls,impl", _each_kernel([wd.SGDW], dict(cautious=True)))
def test_cautious_sgdw_decays_only_where_update_and_weight_agree(cls, impl, nesterov):
    """One update by hand: m_1 = lr*g (m_0 = 0), u = m_1 (+ Nesterov: beta1*m_1 + lr*g),
    theta_1 = theta_0 - u - d * 1[u * theta_0 >= 0] * theta_0."""
    theta0 = torch.tensor([1.0, 1.0, -2.0, -2.0, 0.5, 3.0])
    grad = torch.tensor([0.5, -0.5, -1.0, 1.0, 0.0, 2.0])
    lr, lam, beta1 = 0.1, 0.2, 0.9
    p = torch.nn.Parameter(theta0.clone())
    opt = wd.SGDW([p], lr=lr, momentum=beta1, weight_decay=lam, cautious=True,
                  nesterov=nesterov, impl=impl)
    p.grad = grad.clone()
    opt.step()
    u = lr * grad * (1 + beta1 if nesterov else 1)
    mask = (u * theta0 >= 0).float()
    assert mask.tolist() == [1, 0, 1, 0, 1, 1]  # (u = 0 counts as agreeing)
    torch.testing.assert_close(p.detach(), theta0 - u - lam * mask * theta0)


@pytest.mark.parametrize("cls,impl", _each_kernel([wd.AdamW], dict(cautious=True)))
def test_cautious_adamw_decays_only_where_update_and_weight_agree(cls, impl):
    """First AdamW update: m_hat = g, v_hat = g^2, u = lr * g / (|g| + eps)."""
    theta0 = torch.tensor([1.0, 1.0, -2.0, -2.0, 0.5])
    grad = torch.tensor([0.5, -0.5, -1.0, 1.0, 0.0])
    lr, lam = 0.1, 0.2
    p = torch.nn.Parameter(theta0.clone())
    opt = wd.AdamW([p], lr=lr, weight_decay=lam, cautious=True, impl=impl)
    p.grad = grad.clone()
    opt.step()
    u = lr * grad / (grad.abs() + 1e-8)
    mask = (u * theta0 >= 0).float()
    assert mask.tolist() == [1, 0, 1, 0, 1]
    torch.testing.assert_close(p.detach(), theta0 - u - lam * mask * theta0)


def test_cautious_is_refused_where_it_cannot_apply():
    params = [torch.nn.Parameter(torch.ones(3))]
    for cls in (wd.SGD, wd.Adam):  # L2: no decoupled decay to mask
        with pytest.raises(ValueError, match="cautious"):
            cls(params, lr=0.1, weight_decay=0.1, cautious=True)
    with pytest.raises(ValueError, match="cautious must be True or False"):
        wd.AdamW(params, cautious="yes")
    opt = wd.AdamW(params, weight_decay=0.1, cautious=True, impl="fused")
    params[0].grad = torch.ones(3)
    with pytest.raises(ValueError, match="impl='fused' cannot compute this update exactly"):
        opt.step()
    assert wd.AdamW(params, weight_decay=0.1, cautious=True).kernel_plan() == [{"foreach": 1}]
    assert wd.AdamW(params, weight_decay=0.0, cautious=True).kernel_plan() == [{"fused": 1}]


def test_cautious_changes_the_update():
    """The cautious cases of the table are not the plain update in disguise."""
    cls, kw = wd.AdamW, dict(lr=1e-2, weight_decay=5e-2)
    plain, _ = run(lambda ps: cls(ps, **kw), make_params(torch.float32), GRADS, ETAS)
    cautious, _ = run(lambda ps: cls(ps, cautious=True, **kw), make_params(torch.float32),
                      GRADS, ETAS)
    assert rel_err_all(cautious, plain) > 1e-3


# ---------------------------------------------------------------- L1


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("cls,impl", _each_kernel([wd.SGDW, wd.AdamW], dict(l1=1.0), auto=True))
def test_decoupled_l1_produces_exact_zeros(cls, impl, flat):
    """The proximal step sets weights within d1_t of zero to exactly 0 (a subgradient step,
    as the coupled form takes, leaves them oscillating around 0)."""
    if flat and impl == "reference":
        pytest.skip("flat buffers use the fast kernels")
    params = [p * 0.2 for p in make_params(torch.float32)]
    kw = dict(lr=1e-2, weight_decay=1e-2, l1=2e-2 if cls is wd.SGDW else 5e-3)
    ours, opt = run(lambda ps: cls(ps, impl=impl, flat=flat, **kw), params, GRADS[:40],
                    ETAS[:40])
    zeros = sum(int((p == 0).sum()) for p in ours)
    assert zeros >= 10
    ref, _ = run(lambda ps: cls(ps, impl="reference", **kw), [p.double() for p in params],
                 GRADS[:40], ETAS[:40])
    assert sum(int((p == 0).sum()) for p in ref) == zeros
    assert rel_err_all(ours, ref) <= 1e-6
    coupled, _ = run(lambda ps: {wd.SGDW: wd.SGD, wd.AdamW: wd.Adam}[cls](ps, impl=impl,
                                                                         **kw),
                     params, GRADS[:40], ETAS[:40])
    assert sum(int((p == 0).sum()) for p in coupled) == 0


def test_l1_soft_threshold_by_hand():
    """SGDW, one update with g = 0 and momentum 0: theta_1 = soft(theta_0 - d*theta_0, d1)."""
    theta0 = torch.tensor([1.0, -1.0, 0.004, -0.004, 0.02])
    p = torch.nn.Parameter(theta0.clone())
    opt = wd.SGDW([p], lr=0.1, momentum=0.0, weight_decay=0.1, l1=0.05)
    for group in opt.param_groups:
        group["lr"] = 0.05  # eta_t = 0.5: d = 0.05, d1 = 0.025
    p.grad = torch.zeros(5)
    opt.step()
    after = theta0 * (1 - 0.05)
    expected = torch.sign(after) * torch.clamp(after.abs() - 0.025, min=0)
    torch.testing.assert_close(p.detach(), expected)
    assert p.detach()[2:4].tolist() == [0.0, 0.0]


def test_l1_is_refused_by_the_fused_kernel_and_checked():
    params = [torch.nn.Parameter(torch.ones(3))]
    params[0].grad = torch.ones(3)
    for cls in (wd.Adam, wd.AdamW):
        opt = cls(params, l1=1e-3, impl="fused")
        with pytest.raises(ValueError, match="impl='fused' cannot compute"):
            opt.step()
        assert cls(params, l1=1e-3).kernel_plan() == [{"foreach": 1}]
    with pytest.raises(ValueError, match="l1 must be >= 0"):
        wd.SGDW(params, lr=0.1, l1=-1.0)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['l1'\]"):
        wd.AdamW([{"params": params}, {"params": [torch.nn.Parameter(torch.ones(2))],
                                       "l1": float("nan")}])

"""Loading optimizer state: every state tensor is checked against its parameter, old-style
``step`` numbers load, state-dict hooks may keep other values, and complex parameters."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

import weightdecay as wd
from _optim_util import IMPLS, impl_param, rel_err_all

# (class, constructor kwargs): every implementation of every class, regular and flat
CONFIGS = [impl_param(cls, dict(impl=impl, flat=flat), impl=impl,
                      id=f"{cls.__name__}-{impl}-{'flat' if flat else 'regular'}")
           for cls, impls in IMPLS.items() for impl in impls for flat in (False, True)]
STATE_KEY = {wd.SGD: "momentum", wd.SGDW: "momentum", wd.Adam: "exp_avg", wd.AdamW: "exp_avg"}


def _trained(cls, steps=2, **kw):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    opt = cls(params, lr=1e-2, weight_decay=1e-2, **kw)
    for _ in range(steps):
        opt.zero_grad()
        torch.autograd.backward(params, [torch.randn(4, 3), torch.randn(5)])
        opt.step()
    return params, opt


BAD_STATE = [
    ("wrong size", lambda p: torch.zeros(7), "shape"),
    ("same size, other shape", lambda p: torch.zeros(3, 4), "shape"),
    ("not a tensor", lambda p: [0.0] * 12, "expected a tensor"),
    ("integer dtype", lambda p: torch.zeros(4, 3, dtype=torch.int64), None),
]


@pytest.mark.parametrize("case,make,match", BAD_STATE, ids=[b[0] for b in BAD_STATE])
@pytest.mark.parametrize("cls,kw", CONFIGS)
def test_mismatched_state_is_refused_naming_the_parameter(cls, kw, case, make, match):
    params, opt = _trained(cls, **kw)
    sd = copy.deepcopy(opt.state_dict())
    key = STATE_KEY[cls]
    sd["state"][0][key] = make(params[0])
    before = {k: v.clone() for k, v in opt.state[params[0]].items()}
    if case == "integer dtype":  # torch casts floating-point state to the parameter's dtype
        opt.load_state_dict(sd)
        assert opt.state[params[0]][key].dtype == torch.float32
        opt.step()
        return
    with pytest.raises(ValueError, match=match) as info:
        opt.load_state_dict(sd)
    assert r"param_groups[0]['params'][0]" in str(info.value) and key in str(info.value)
    # the optimizer kept its state, and steps on
    for k, v in opt.state[params[0]].items():
        assert torch.equal(v, before[k])
    opt.step()


@pytest.mark.parametrize("cls,kw", CONFIGS)
def test_loaded_state_of_another_dtype_is_cast_and_checked(cls, kw):
    params, opt = _trained(cls, **kw)
    sd = copy.deepcopy(opt.state_dict())
    key = STATE_KEY[cls]
    sd["state"][1][key] = sd["state"][1][key].double()
    opt.load_state_dict(sd)
    assert opt.state[params[1]][key].dtype == torch.float32
    opt.step()


@pytest.mark.parametrize("bad", [torch.zeros(2), float("nan"), -1, "3", torch.tensor([1.0, 2.0])])
@pytest.mark.parametrize("flat", [False, True])
def test_bad_step_values_are_refused(bad, flat):
    params, opt = _trained(wd.AdamW, flat=flat)
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][1]["step"] = bad
    with pytest.raises(ValueError, match=r"step.*param_groups\[0\]\['params'\]\[1\]"):
        opt.load_state_dict(sd)
    opt.step()


def test_bad_hyperparameters_in_a_loaded_state_dict_are_refused():
    params, opt = _trained(wd.AdamW)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["weight_decay"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['weight_decay'\]"):
        opt.load_state_dict(sd)
    assert opt.param_groups[0]["weight_decay"] == 1e-2


def test_wrongly_sized_state_never_reaches_the_fused_kernel():
    """The reported crash (``free(): invalid next size``, or a segfault, or a silent run):
    in a subprocess, so that a regression cannot take the test session down."""
    script = textwrap.dedent("""
        import torch, weightdecay as wd
        p = torch.nn.Parameter(torch.randn(4, 3))
        opt = wd.AdamW([p], lr=1e-3, weight_decay=0.1)
        p.grad = torch.randn(4, 3)
        opt.step()
        sd = opt.state_dict()
        sd["state"][0]["exp_avg"] = torch.zeros(7)
        fresh = wd.AdamW([p], lr=1e-3, weight_decay=0.1)
        try:
            fresh.load_state_dict(sd)
        except ValueError as exc:
            print("refused:", exc)
        fresh.step()
        print("stepped", tuple(fresh.state[p]["exp_avg"].shape))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused:" in out.stdout and "stepped (4, 3)" in out.stdout


# ------------------------------------------------------------------ older checkpoints


ADAM_CONFIGS = [c for c in CONFIGS if issubclass(c.values[0], wd.Adam)]


@pytest.mark.parametrize("number", [3, 3.0])
@pytest.mark.parametrize("cls,kw", ADAM_CONFIGS)
def test_step_stored_as_a_python_number_loads(cls, kw, number):
    """Older torch checkpoints store ``step`` as a number; it is converted as torch does."""
    params, opt = _trained(cls, steps=3, **kw)
    ref_params, ref = _trained(cls, steps=3, **kw)  # the same run, its steps kept as tensors
    sd = copy.deepcopy(opt.state_dict())
    for entry in sd["state"].values():
        entry["step"] = number
    opt.load_state_dict(sd)
    grads = [torch.ones(4, 3), torch.ones(5)]
    for o, ps in ((opt, params), (ref, ref_params)):
        o.zero_grad()
        torch.autograd.backward(ps, grads)
        o.step()
    assert rel_err_all(params, ref_params) == 0.0
    assert {float(s["step"]) for s in opt.state_dict()["state"].values()} == {4.0}


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("cls", [wd.SGDW, wd.AdamW])
def test_state_dict_pre_hooks_may_store_other_values(cls, flat):
    """torch's state-dict pre-hooks may keep non-dict values in ``optimizer.state``."""
    params, opt = _trained(cls, flat=flat)
    opt.register_state_dict_pre_hook(lambda o: o.state.__setitem__("epoch", 3))
    sd = opt.state_dict()
    assert sd["state"]["epoch"] == 3
    opt.load_state_dict(sd)
    assert opt.state["epoch"] == 3
    opt.step()


# ------------------------------------------------------------------ complex parameters


def _complex_run(factory, steps=30, dtype=torch.complex64):
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6, 2, dtype=dtype, generator=gen))
    q = torch.nn.Parameter(torch.randn(4, dtype=torch.float32 if dtype == torch.complex64
                                       else torch.float64, generator=gen))
    opt = factory([p, q])
    for _ in range(steps):
        p.grad = torch.randn(6, 2, dtype=dtype, generator=gen)
        q.grad = torch.randn(4, dtype=q.dtype, generator=gen)
        opt.step()
    return [p.detach(), q.detach()]


COMPLEX = [
    ("AdamW", lambda ps, i: wd.AdamW(ps, lr=1e-2, weight_decay=0.05, impl=i),
     lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=5.0, foreach=False)),
    ("AdamW amsgrad", lambda ps, i: wd.AdamW(ps, lr=1e-2, weight_decay=0.05, amsgrad=True,
                                             impl=i),
     lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=5.0, amsgrad=True, foreach=False)),
    ("Adam", lambda ps, i: wd.Adam(ps, lr=1e-2, weight_decay=0.05, impl=i),
     lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.05, foreach=False)),
    ("SGD", lambda ps, i: wd.SGD(ps, lr=0.05, weight_decay=0.01, impl=i),
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01, foreach=False)),
]


COMPLEX_IMPLS = [impl_param(*case, impl, impl=impl, id=f"{case[0]}-{impl}") for case in COMPLEX
                 for impl in IMPLS[getattr(wd, case[0].split()[0])]]


@pytest.mark.parametrize("name,ours,theirs,impl", COMPLEX_IMPLS)
def test_complex_parameters_are_updated_as_torch_does(name, ours, theirs, impl):
    """A complex parameter is a pair of real ones (torch.view_as_real): each part has its own
    second moment. Squaring the complex gradient (g*g instead of |g|^2 per part) was wrong."""
    a = _complex_run(lambda ps: ours(ps, impl))
    b = _complex_run(theirs)
    assert rel_err_all([torch.view_as_real(a[0]), a[1]],
                       [torch.view_as_real(b[0]), b[1]]) <= 2e-6


def test_complex_parameters_are_refused_in_flat_mode():
    p = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="complex"):
        wd.AdamW([p], flat=True)


def test_sgd_momentum_keeps_moving_after_lr_reaches_zero():
    """By design (Algorithm 1: m_t = beta1*m_{t-1} + eta_t*alpha*g_t, theta -= m_t): the step
    size lives in the buffer, so at lr = 0 the buffer still moves theta, decaying by beta1 per
    update; torch.optim.SGD (theta -= lr_t*buf) stops at once."""
    ours = torch.nn.Parameter(torch.ones(3))
    theirs = torch.nn.Parameter(torch.ones(3))
    a = wd.SGD([ours], lr=0.1, momentum=0.9)
    b = torch.optim.SGD([theirs], lr=0.1, momentum=0.9)
    for o, p in ((a, ours), (b, theirs)):
        p.grad = torch.ones(3)
        o.step()
        o.param_groups[0]["lr"] = 0.0
        before = p.detach().clone()
        o.step()
        moved = (p.detach() - before).abs().max().item()
        if o is a:
            assert moved == pytest.approx(0.9 * 0.1, rel=1e-6)
        else:
            assert moved == 0.0

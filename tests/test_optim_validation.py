"""One level of validation at every entry point: the constructor, ``add_param_group`` (ours
and the wrapper's), values changed in ``param_groups`` between steps (checked at ``step()``,
before anything moves), ``initial_lr = 0``, and the outputs of custom schedules. No NaN or
infinity reaches a weight."""

from __future__ import annotations

import math

import pytest
import torch

import weightdecay as wd
from _optim_util import IMPLS, OPTIMIZERS, impl_param

KW = {wd.SGD: dict(lr=0.1), wd.SGDW: dict(lr=0.1, weight_decay=1e-3),
      wd.Adam: dict(lr=1e-2), wd.AdamW: dict(lr=1e-2, weight_decay=1e-3)}
SHARED = [("lr", float("nan")), ("lr", -0.1), ("lr", "0.1"), ("weight_decay", float("nan")),
          ("weight_decay", -1.0), ("l1", float("inf")), ("decay_convention", "torch"),
          ("impl", "cuda-graph"), ("cautious", "yes"), ("initial_lr", float("nan")),
          ("initial_lr", -1.0)]
OWN = {wd.SGD: [("momentum", 1.0), ("momentum", float("nan")), ("nesterov", "no")],
       wd.Adam: [("betas", (0.9, 1.0)), ("betas", (float("nan"), 0.9)), ("betas", 0.9),
                 ("eps", 0.0), ("amsgrad", None)]}
CHANGED = [(cls, key, value) for cls in OPTIMIZERS
           for key, value in SHARED + OWN[wd.SGD if issubclass(cls, wd.SGD) else wd.Adam]]


def _ids(cases):
    return [f"{c.__name__}-{k}={v!r}" for c, k, v in cases]


def _params(n=2):
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3, 2, generator=g)) for _ in range(n)]


def _step(opt, params):
    if opt.flat:
        opt.zero_grad()
        torch.autograd.backward(params, [torch.ones_like(p) for p in params])
    else:
        for p in params:
            p.grad = torch.ones_like(p)
    opt.step()


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("cls,key,value", CHANGED, ids=_ids(CHANGED))
def test_a_value_changed_between_steps_is_refused_at_step(cls, key, value, flat):
    params = _params(3)
    opt = cls([{"params": params[:2]}, {"params": params[2:]}], flat=flat, **KW[cls])
    _step(opt, params)
    opt.param_groups[1][key] = value
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match=rf"param_groups\[1\]\['{key}'\]") as info:
        _step(opt, params)
    assert "\n" not in str(info.value)
    # nothing moved, not even the first group (every group is checked before any update)
    assert all(torch.equal(a, b) for a, b in zip(params, before))


@pytest.mark.parametrize("cls,key,value", CHANGED, ids=_ids(CHANGED))
def test_add_param_group_is_checked_like_the_constructor(cls, key, value):
    opt = cls(_params(1), **KW[cls])
    if key == "cautious" and not opt.decoupled:
        value = True  # (refused for L2 optimizers too)
    with pytest.raises(ValueError, match=key):
        opt.add_param_group({"params": _params(1), key: value})
    assert len(opt.param_groups) == 1  # the group was not added
    with pytest.raises(ValueError, match=key):
        cls([{"params": _params(1), key: value}], **KW[cls])


def test_a_numpy_value_set_between_steps_is_taken():
    np = pytest.importorskip("numpy")
    params = _params(1)
    opt = wd.AdamW(params, lr=1e-2, weight_decay=1e-3)
    opt.param_groups[0]["lr"] = np.float32(5e-3)
    _step(opt, params)
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("cls", [wd.SGDW, wd.AdamW])
def test_lr_zero_at_construction_then_warmed_up_by_hand(cls, flat):
    """initial_lr = 0 (built with lr=0) and lr_t > 0 set later: eta_t = lr_t / 0 is undefined.
    It used to make the weights -inf; now step() refuses it, naming initial_lr, where eta_t is
    read, and steps normally where it is not."""
    params = _params(1)
    opt = cls(params, lr=0.0, weight_decay=1e-3, flat=flat)
    _step(opt, params)  # lr 0: eta_t = 0, no step and no decay
    assert opt.param_groups[0]["initial_lr"] == 0.0
    opt.param_groups[0]["lr"] = 1e-2
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['initial_lr'\] is 0 while lr"):
        _step(opt, params)
    assert all(torch.isfinite(p).all() for p in params)
    opt.param_groups[0]["initial_lr"] = 1e-2  # the remedy the message names
    _step(opt, params)
    for convention in ("lr", "constant"):  # conventions that do not read eta_t
        params = _params(1)
        other = cls(params, lr=0.0, weight_decay=1e-3, decay_convention=convention, flat=flat)
        other.param_groups[0]["lr"] = 1e-2
        _step(other, params)
        assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("impl", [impl_param(impl, impl=impl) for impl in IMPLS[wd.AdamW]])
def test_lr_zero_means_no_step_and_no_decay(impl):
    params = _params(1)
    before = params[0].detach().clone()
    opt = wd.AdamW(params, lr=0.0, weight_decay=0.1, impl=impl)
    _step(opt, params)
    assert torch.equal(params[0], before)
    assert wd.decay_per_update(opt.param_groups[0]) == 0.0


def test_wrapper_add_param_group_and_step_are_checked():
    RMSpropW = wd.decoupled_weight_decay(torch.optim.RMSprop)
    opt = RMSpropW(_params(1), lr=1e-2, weight_decay=1e-3)
    for key, value in [("weight_decay", float("nan")), ("weight_decay", -1.0),
                       ("decay_convention", "torch"), ("initial_lr", float("nan"))]:
        with pytest.raises(ValueError, match=rf"param_groups\[1\]\['{key}'\]"):
            opt.add_param_group({"params": _params(1), key: value})
        assert len(opt.param_groups) == 1
    params = opt.param_groups[0]["params"]
    for key, value in [("weight_decay", float("nan")), ("decay_convention", "torch"),
                       ("weight_decay", -1.0)]:
        opt.param_groups[0][key] = value
        with pytest.raises(ValueError, match=rf"param_groups\[0\]\['{key}'\]"):
            _step_wrapped(opt, params)
        opt.param_groups[0].update(weight_decay=1e-3, decay_convention="schedule")
    zero = RMSpropW(_params(1), lr=0.0, weight_decay=1e-3)  # warmed up by hand
    zero.param_groups[0]["lr"] = 1e-2
    with pytest.raises(ValueError, match="initial_lr"):
        _step_wrapped(zero, zero.param_groups[0]["params"])


def _step_wrapped(opt, params):
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()


@pytest.mark.parametrize("bad", [float("nan"), -0.5, float("inf"), "1", None])
def test_custom_schedule_outputs_must_be_finite_and_non_negative(bad):
    sched = wd.schedules.as_schedule(lambda t: 1.0 if t < 2 else bad)
    assert sched(1) == 1.0
    with pytest.raises(ValueError, match=r"returned .* at t=3.*finite real number >= 0"):
        sched(3)
    with pytest.raises(ValueError, match="finite real number >= 0"):
        sched([0, 1, 2])
    params = _params(1)
    opt = wd.SGDW(params, lr=0.1, weight_decay=1e-3)
    lr_sched = wd.schedules.as_torch_scheduler(opt, sched)
    with pytest.raises(ValueError, match="finite real number >= 0"):
        for _ in range(4):
            _step(opt, params)
            lr_sched.step()
    assert all(torch.isfinite(p).all() for p in params)
    assert math.isfinite(opt.param_groups[0]["lr"])

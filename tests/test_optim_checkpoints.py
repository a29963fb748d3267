"""Checkpoints in both directions keep what every number means (weightdecay.optim._checkpoint).

torch -> ours: a torch AdamW, AdamW(amsgrad), Adam or SGD state loaded into ours continues as
torch continues (<= 1e-9 relative in float64 over 30 updates; AdamW and Adam under an LR
schedule that changes at every update, SGD at a constant lr, where Algorithm 1 and torch's
SGD agree) with the options the optimizer was built with; ours -> torch likewise; round trips
in both directions continue 50 updates as the uninterrupted run; every state that cannot be
converted exactly is refused in one line.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import weightdecay as wd
from _optim_util import rel_err_all

SHAPES = [(4, 3), (5,)]
BEFORE, AFTER, ROUND_TRIP = 20, 30, 50


def _eta(t: int) -> float:
    """An LR schedule that changes at every update (cosine, restarts every 8 updates)."""
    return 0.55 + 0.45 * math.cos(math.pi * (t % 8) / 8)


def _params():
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64))
            for s in SHAPES]


def _grads(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]
            for _ in range(n)]


GRADS = _grads(BEFORE + ROUND_TRIP)


def _drive(opt, params, grads, sched=None):
    for gs in grads:
        if getattr(opt, "flat", False):
            opt.zero_grad()
            torch.autograd.backward(params, gs)
        else:
            for p, g in zip(params, gs):
                p.grad = g.clone()
        opt.step()
        if sched is not None:
            sched.step()


def _copy(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def _saved(make, scheduled, before=BEFORE, after=AFTER):
    """Run ``make(params)`` for ``before`` updates and save; continue ``after`` updates.
    Returns (state dict, scheduler state or None, params at the save, params at the end)."""
    params = _params()
    opt = make(params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _eta) if scheduled else None
    _drive(opt, params, GRADS[:before], sched)
    saved = copy.deepcopy(opt.state_dict()), sched and copy.deepcopy(sched.state_dict())
    at_save = _copy(params)
    _drive(opt, params, GRADS[before:before + after], sched)
    return (*saved, at_save, [p.detach() for p in params])


def _resume(make, params, state_dict, sched_state, after=AFTER):
    """A fresh optimizer from ``make`` on ``params``, loaded, driven ``after`` updates."""
    opt = make(params)
    sched = None
    if sched_state is not None:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _eta)
        sched.load_state_dict(sched_state)
    opt.load_state_dict(state_dict)
    if sched is not None:  # the lr of the next update, as the saved scheduler left it
        sched.load_state_dict(sched_state)
        for group, lr in zip(opt.param_groups, sched.get_last_lr()):
            group["lr"] = lr
    _drive(opt, params, GRADS[BEFORE:BEFORE + after], sched)
    return opt, [p.detach() for p in params]


# ------------------------------------------------------------------ torch -> ours

# name, torch optimizer, our class, its constructor kwargs (lambda there is overwritten by the
# checkpoint's), conventions to build ours with, LR schedule
TORCH_CASES = [
    ("AdamW", lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1), wd.AdamW,
     dict(lr=1.0, weight_decay=0.5), ("lr", "schedule"), True),
    ("AdamW amsgrad", lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1,
                                                   amsgrad=True),
     wd.AdamW, dict(lr=1.0, amsgrad=False), ("lr", "schedule"), True),
    ("Adam", lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2), wd.Adam,
     dict(lr=1.0), ("schedule",), True),
    ("SGD", lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
     wd.SGD, dict(lr=1.0), ("schedule",), False),
    ("SGD nesterov", lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                                weight_decay=1e-3),
     wd.SGD, dict(lr=1.0, nesterov=True), ("schedule",), False),
    ("SGD no momentum", lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.0), wd.SGDW,
     dict(lr=1.0, weight_decay=1e-3, momentum=0.5), ("lr",), False),
]
LOADS = [(case, convention, impl, flat) for case in TORCH_CASES for convention in case[4]
         for impl, flat in ((None, False), ("foreach", False), ("reference", False),
                            (None, True))]


@pytest.mark.parametrize("case,convention,impl,flat", LOADS, ids=[
    f"{c[0]}-{conv}-{impl}-{'flat' if flat else 'regular'}" for c, conv, impl, flat in LOADS])
def test_torch_checkpoint_continues_in_ours_with_its_options(case, convention, impl, flat):
    name, make_torch, cls, kw, _, scheduled = case
    sd, sched_sd, at_save, want = _saved(make_torch, scheduled)
    opt, got = _resume(lambda ps: cls(ps, decay_convention=convention, impl=impl, flat=flat,
                                      **kw), _copy(at_save), sd, sched_sd)
    assert rel_err_all(got, want) <= 1e-9, name
    group = opt.param_groups[0]  # the options it was built with survive
    assert (group["decay_convention"], group["impl"], opt.flat) == (convention, impl, flat)
    assert not any(key in group for key in ("foreach", "fused", "maximize", "capturable"))


def test_torch_weight_decay_is_converted_into_the_paper_convention():
    """torch's lambda_t at lr alpha is the paper's lambda = alpha * lambda_t (not kept as it
    is, which made the decay 1/alpha times too strong: 100x here)."""
    sd, _, at_save, _ = _saved(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
                               False, after=0)
    opt = wd.AdamW(_copy(at_save), lr=1e-3, weight_decay=0.0, cautious=True, l1=1e-5,
                   impl="foreach", flat=True)
    opt.load_state_dict(sd)
    group = opt.param_groups[0]
    assert group["weight_decay"] == pytest.approx(1e-3, rel=1e-12)  # 1e-2 * 0.1
    assert (group["lr"], group["initial_lr"]) == (1e-2, 1e-2)  # the checkpoint's
    assert (group["decay_convention"], group["cautious"], group["l1"], group["impl"],
            opt.flat) == ("schedule", True, 1e-5, "foreach", True)
    assert wd.decay_per_update(group) == pytest.approx(1e-2 * 0.1)  # torch's lr_t * lambda_t


def test_sgd_momentum_buffer_is_converted_to_algorithm_1_units():
    sd, _, at_save, _ = _saved(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), False,
                               after=0)
    opt = wd.SGD(_copy(at_save), lr=0.05)
    opt.load_state_dict(sd)
    for i, p in enumerate(opt.param_groups[0]["params"]):
        assert torch.equal(opt.state[p]["momentum"], 0.05 * sd["state"][i]["momentum_buffer"])
        assert "momentum_buffer" not in opt.state[p]


# ------------------------------------------------------------------ ours -> torch

OURS_CASES = [
    ("AdamW lr, direct", lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=0.1,
                                             decay_convention="lr"),
     lambda ps: torch.optim.AdamW(ps, foreach=False), False, True),
    ("AdamW lr", lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=0.1, decay_convention="lr"),
     lambda ps: torch.optim.AdamW(ps), True, True),
    ("AdamW schedule", lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=1e-3),
     lambda ps: torch.optim.AdamW(ps), True, True),
    ("AdamW schedule amsgrad, flat", lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=1e-3,
                                                         amsgrad=True, flat=True),
     lambda ps: torch.optim.AdamW(ps, amsgrad=True), True, True),
    ("Adam, direct", lambda ps: wd.Adam(ps, lr=1e-2, weight_decay=1e-2),
     lambda ps: torch.optim.Adam(ps), False, True),
    ("SGD nesterov", lambda ps: wd.SGD(ps, lr=0.05, weight_decay=1e-3, nesterov=True),
     lambda ps: torch.optim.SGD(ps, lr=1.0, momentum=0.9), True, False),
    ("SGDW without decay", lambda ps: wd.SGDW(ps, lr=0.05, momentum=0.5),
     lambda ps: torch.optim.SGD(ps, lr=1.0), True, False),
]


@pytest.mark.parametrize("case", OURS_CASES, ids=[c[0] for c in OURS_CASES])
def test_our_checkpoint_continues_in_torch(case):
    _, make_ours, make_torch, helper, scheduled = case
    sd, sched_sd, at_save, want = _saved(make_ours, scheduled)
    if helper:
        sd = wd.torch_state_dict(sd)
    _, got = _resume(make_torch, _copy(at_save), sd, sched_sd)
    assert rel_err_all(got, want) <= 1e-9


def test_torch_state_dict_takes_the_optimizer_and_writes_torchs_keys_only():
    params = _params()
    opt = wd.AdamW(params, lr=1e-2, weight_decay=1e-3)
    _drive(opt, params, GRADS[:2])
    sd = wd.torch_state_dict(opt)
    group = sd["param_groups"][0]
    assert group["weight_decay"] == pytest.approx(0.1)  # lambda / alpha
    assert group["decoupled_weight_decay"] is True
    assert not {"decay_convention", "cautious", "l1", "impl", "decoupled"} & set(group)


# ------------------------------------------------------------------ round trips

ROUND_TRIPS = [
    ("AdamW schedule", lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=1e-3),
     lambda ps: torch.optim.AdamW(ps, lr=1.0), True),
    ("AdamW lr amsgrad", lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=0.1, amsgrad=True,
                                             decay_convention="lr"),
     lambda ps: torch.optim.AdamW(ps, lr=1.0, amsgrad=True), True),
    ("Adam", lambda ps: wd.Adam(ps, lr=1e-2, weight_decay=1e-2),
     lambda ps: torch.optim.Adam(ps, lr=1.0), True),
    ("SGD", lambda ps: wd.SGD(ps, lr=0.05, weight_decay=1e-3),
     lambda ps: torch.optim.SGD(ps, lr=1.0, momentum=0.9), False),
]


@pytest.mark.parametrize("case", ROUND_TRIPS, ids=[c[0] for c in ROUND_TRIPS])
def test_ours_to_torch_to_ours_continues_as_the_uninterrupted_run(case):
    _, make_ours, make_torch, scheduled = case
    sd, sched_sd, at_save, want = _saved(make_ours, scheduled, after=ROUND_TRIP)
    theirs = make_torch(_copy(at_save))
    theirs.load_state_dict(wd.torch_state_dict(sd))
    _, got = _resume(make_ours, _copy(at_save), theirs.state_dict(), sched_sd,
                     after=ROUND_TRIP)
    assert rel_err_all(got, want) <= 1e-9


@pytest.mark.parametrize("case", ROUND_TRIPS, ids=[c[0] for c in ROUND_TRIPS])
def test_torch_to_ours_to_torch_continues_as_the_uninterrupted_run(case):
    _, make_ours, make_torch, scheduled = case
    sd, sched_sd, at_save, want = _saved(
        lambda ps: _reference_torch(make_torch, make_ours, ps), scheduled, after=ROUND_TRIP)
    ours = make_ours(_copy(at_save))
    ours.load_state_dict(sd)
    _, got = _resume(make_torch, _copy(at_save), wd.torch_state_dict(ours), sched_sd,
                     after=ROUND_TRIP)
    assert rel_err_all(got, want) <= 1e-9


def _reference_torch(make_torch, make_ours, params):
    """torch's optimizer with the hyperparameters of ours (as torch_state_dict writes them)."""
    opt = make_torch(params)
    opt.load_state_dict(wd.torch_state_dict(make_ours(_copy(params))))
    return opt


# ------------------------------------------------------------------ refused, in one line


def _refused(load, match):
    with pytest.raises(ValueError, match=match) as info:
        load()
    assert "\n" not in str(info.value)
    return str(info.value)


def _torch_adamw_state(**kw):
    return _saved(lambda ps: torch.optim.AdamW(ps, lr=1e-2, **kw), True, before=3,
                  after=0)


@pytest.mark.parametrize("convention", ["constant", "corrected"])
def test_torch_lambda_into_an_inexact_convention_names_the_helper(convention):
    sd, sched_sd, at_save, _ = _torch_adamw_state(weight_decay=0.1)
    opt = wd.AdamW(_copy(at_save), decay_convention=convention)
    before = copy.deepcopy(opt.param_groups[0]["weight_decay"])
    message = _refused(lambda: opt.load_state_dict(sd), "convert_state_dict")
    assert f"decay_convention={convention!r}" in message
    assert opt.param_groups[0]["weight_decay"] == before
    # the helper converts so that the decay matches at the saved update
    converted = wd.convert_state_dict(sd, convention)
    opt.load_state_dict(converted)
    group, saved = opt.param_groups[0], sd["param_groups"][0]
    assert wd.decay_per_update(group) == pytest.approx(saved["lr"] * 0.1, rel=1e-12)
    assert sd["param_groups"][0]["weight_decay"] == 0.1  # (the input is not modified)


REFUSALS = [
    ("torch Adam (L2) into AdamW", lambda ps: torch.optim.Adam(ps, weight_decay=0.1),
     lambda ps: wd.AdamW(ps), "L2 coefficient"),
    ("torch AdamW into Adam (L2)", lambda ps: torch.optim.AdamW(ps, weight_decay=0.1),
     lambda ps: wd.Adam(ps), "decoupled decay"),
    ("torch SGD (L2) into SGDW", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9,
                                                            weight_decay=1e-3),
     lambda ps: wd.SGDW(ps, lr=0.1), "L2 coefficient"),
    ("torch SGD dampening", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9,
                                                       dampening=0.1),
     lambda ps: wd.SGD(ps, lr=0.1), "dampening"),
    ("torch SGD into AdamW", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
     lambda ps: wd.AdamW(ps), "ADAM family"),
    ("torch SGD at lr 0", lambda ps: _lr_zero(torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
     lambda ps: wd.SGD(ps, lr=0.1), "saved lr is 0"),
    ("torch AdamW maximize", lambda ps: torch.optim.AdamW(ps, maximize=True),
     lambda ps: wd.AdamW(ps), "maximize=True"),
    ("torch Adam capturable", lambda ps: _flag(torch.optim.Adam(ps), "capturable"),
     lambda ps: wd.Adam(ps), "capturable=True"),
    ("torch AdamW differentiable", lambda ps: torch.optim.AdamW(ps, differentiable=True),
     lambda ps: wd.AdamW(ps), "differentiable=True"),
    ("torch SGD maximize", lambda ps: torch.optim.SGD(ps, lr=0.1, maximize=True),
     lambda ps: wd.SGD(ps, lr=0.1), "maximize=True"),
    ("torch RMSprop into AdamW", lambda ps: torch.optim.RMSprop(ps),
     lambda ps: wd.AdamW(ps), "ADAM family"),
]


def _lr_zero(opt):
    opt.param_groups[0]["lr"] = 0.0
    return opt


def _flag(opt, key):
    """``opt``, whose state dicts say ``key=True`` (capturable needs CUDA to step)."""

    def hook(optimizer, state_dict):
        for group in state_dict["param_groups"]:
            group[key] = True
        return state_dict

    opt.register_state_dict_post_hook(hook)
    return opt


@pytest.mark.parametrize("name,make_torch,make_ours,match", REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_states_that_cannot_be_converted_exactly_are_refused(name, make_torch, make_ours,
                                                             match):
    params = _params()
    theirs = make_torch(params)
    if not any(g.get("capturable") or g.get("differentiable") for g in theirs.param_groups):
        _drive(theirs, params, GRADS[:3])
    ours = make_ours(_copy(params))
    before = copy.deepcopy(ours.state_dict())
    _refused(lambda: ours.load_state_dict(theirs.state_dict()), match)
    assert ours.param_groups[0]["lr"] == before["param_groups"][0]["lr"]
    assert not ours.state  # the optimizer kept its (empty) state


def test_zero_weight_decay_loads_across_l2_and_decoupled():
    sd, _, at_save, _ = _saved(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), False,
                               after=0)
    opt = wd.SGDW(_copy(at_save), lr=0.1, weight_decay=1e-3)
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["weight_decay"] == 0.0  # the checkpoint's lambda


def test_torch_adam_state_before_torch_2_7_needs_its_source_named():
    """torch < 2.7 saved Adam's and AdamW's groups alike (no decoupled_weight_decay)."""
    sd, _, at_save, _ = _torch_adamw_state(weight_decay=0.1)
    for group in sd["param_groups"]:
        del group["decoupled_weight_decay"]
    opt = wd.AdamW(_copy(at_save))
    _refused(lambda: opt.load_state_dict(sd), "torch < 2.7.*source=")
    opt.load_state_dict(wd.convert_state_dict(sd, "schedule", source="torch.optim.AdamW"))
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="L2 coefficient"):
        wd.AdamW(_copy(at_save)).load_state_dict(
            wd.convert_state_dict(sd, "schedule", source="torch.optim.Adam"))


@pytest.mark.parametrize("convention,loads", [("lr", True), ("schedule", False)])
def test_a_state_torch_loaded_from_ours_and_saved_again(convention, loads):
    """A state with keys of both: its lambda is torch's coefficient or ours in the recorded
    convention; they agree under "lr" only."""
    sd, _, at_save, _ = _saved(lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=1e-3,
                                                   decay_convention=convention), False, after=0)
    theirs = torch.optim.AdamW(_copy(at_save))
    theirs.load_state_dict(sd)
    mixed = theirs.state_dict()
    opt = wd.AdamW(_copy(at_save), decay_convention=convention)
    if loads:
        opt.load_state_dict(mixed)
        assert opt.param_groups[0]["weight_decay"] == 1e-3
    else:
        _refused(lambda: opt.load_state_dict(mixed), "source=")
        opt.load_state_dict(wd.convert_state_dict(mixed, "schedule", source="weightdecay"))
        assert opt.param_groups[0]["weight_decay"] == 1e-3


def test_a_state_of_ours_without_decay_convention_means_schedule():
    sd, _, at_save, _ = _saved(lambda ps: wd.AdamW(ps, lr=1e-2, weight_decay=1e-3), False,
                               after=0)
    for group in sd["param_groups"]:  # as an earlier version saved it
        for key in ("decay_convention", "decoupled", "cautious", "l1"):
            del group[key]
    opt = wd.AdamW(_copy(at_save), decay_convention="lr")
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(1e-3 / 1e-2)


REFUSED_IN_TORCH = [
    ("SGDW", lambda ps: wd.SGDW(ps, lr=0.1, weight_decay=1e-3), "no decoupled weight decay"),
    ("constant", lambda ps: wd.AdamW(ps, weight_decay=1e-3, decay_convention="constant"),
     "'constant'"),
    ("corrected", lambda ps: wd.AdamW(ps, weight_decay=1e-3, decay_convention="corrected"),
     "'corrected'"),
    ("cautious", lambda ps: wd.AdamW(ps, weight_decay=1e-3, cautious=True), "cautious"),
    ("l1", lambda ps: wd.AdamW(ps, weight_decay=1e-3, l1=1e-4), "L1"),
    ("SGD at lr 0", lambda ps: _lr_zero(wd.SGD(ps, lr=0.1)), "lr is 0"),
]


@pytest.mark.parametrize("name,make,match", REFUSED_IN_TORCH, ids=[r[0] for r in REFUSED_IN_TORCH])
def test_what_torch_cannot_represent_is_refused(name, make, match):
    params = _params()
    opt = make(params)
    if name == "SGD at lr 0":
        opt.param_groups[0]["lr"] = 0.1
        _drive(opt, params, GRADS[:2])
        opt.param_groups[0]["lr"] = 0.0
    _refused(lambda: wd.torch_state_dict(opt), match)


# ------------------------------------------------------------------ the wrapper


def test_wrapper_loads_a_plain_torch_state_of_its_base_class():
    params = _params()
    theirs = torch.optim.RMSprop(params, lr=1e-2)
    _drive(theirs, params, GRADS[:5])
    at_save, sd = _copy(params), copy.deepcopy(theirs.state_dict())
    _drive(theirs, params, GRADS[5:15])
    RMSpropW = wd.decoupled_weight_decay(torch.optim.RMSprop)
    same = RMSpropW(_copy(at_save), lr=1.0)  # lambda = 0: torch's RMSprop, bit for bit
    same.load_state_dict(sd)
    ps = same.param_groups[0]["params"]
    _drive(same, ps, GRADS[5:15])
    assert rel_err_all(ps, [p.detach() for p in params]) == 0.0
    decayed = RMSpropW(_copy(at_save), lr=1.0, weight_decay=1e-3, decay_convention="lr")
    decayed.load_state_dict(sd)  # no decay in the state: the optimizer's own lambda stays
    group = decayed.param_groups[0]
    assert (group["weight_decay"], group["decay_convention"], group["initial_lr"]) == (
        1e-3, "lr", 1e-2)
    _drive(decayed, group["params"], GRADS[5:7])
    l2 = torch.optim.RMSprop(_copy(at_save), lr=1e-2, weight_decay=0.1)
    _drive(l2, l2.param_groups[0]["params"], GRADS[:1])
    _refused(lambda: RMSpropW(_copy(at_save)).load_state_dict(l2.state_dict()),
             "L2 coefficient")


def test_wrapped_adamw_converts_torchs_decay():
    params = _params()
    theirs = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    _drive(theirs, params, GRADS[:3])
    AdamWW = wd.decoupled_weight_decay(torch.optim.AdamW)
    ours = AdamWW(_copy(params), lr=1.0, weight_decay=0.5)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["weight_decay"] == pytest.approx(1e-3)
    _refused(lambda: AdamWW(_copy(params), decay_convention="constant").load_state_dict(
        theirs.state_dict()), "decay_convention='lr'")

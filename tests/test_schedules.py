"""Tests for weightdecay.schedules: tables of known values, parity with torch, resume."""

from __future__ import annotations

import io
import math
import pickle
import re

import numpy as np
import pytest
import torch

from weightdecay import schedules as S

torch.set_num_threads(1)

# ----------------------------------------------------------------------------- helpers


def sgdr_reference(t: float, T_0: float, T_mult: float, eta_min=0.0, eta_max=1.0) -> float:
    """SGDR as the authors' training loop computes it: subtract periods one at a time."""
    t_cur, T_i = float(t), float(T_0)
    while t_cur >= T_i:
        t_cur -= T_i
        T_i *= T_mult
    return eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * t_cur / T_i))


def _optimizer(lrs=(0.1,)):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in lrs]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]
    return torch.optim.SGD(groups, lr=lrs[0])


def _run(optimizer, scheduler, n):
    lrs = []
    for _ in range(n):
        optimizer.step()
        scheduler.step()
        lrs.append([g["lr"] for g in optimizer.param_groups])
    return lrs


# ----------------------------------------------------------------------------- known values

SGDR_10_2 = S.cosine_restarts(T_0=10, T_mult=2)

KNOWN_VALUES = [
    # (schedule, t, expected)
    (SGDR_10_2, 0, 1.0),
    (SGDR_10_2, 5, 0.5),
    (SGDR_10_2, 10, 1.0),  # restart
    (SGDR_10_2, 20, 0.5),  # middle of the 20-update period
    (SGDR_10_2, 30, 1.0),  # restart
    (SGDR_10_2, 70, 1.0),  # restart
    (SGDR_10_2, 150, 1.0),  # restart
    (S.cosine_restarts(10, 1.0), 25, 0.5),
    (S.cosine_restarts(10, 1.0, eta_min=0.2), 15, 0.6),
    (S.cosine_restarts(10, 2, amplitude_decay=0.5), 10, 0.5),
    (S.cosine_restarts(10, 2, amplitude_decay=0.5), 30, 0.25),
    (S.cosine_restarts(10, 2, amplitude_decay=0.5), 70, 0.125),
    # decay_eta_min=True scales both ends: cycle 1 runs 0.5 -> 0.05, midpoint 0.275
    (S.cosine_restarts(10, 2, eta_min=0.1, amplitude_decay=0.5), 20, 0.275),
    # decay_eta_min=False: floor stays 0.1, midpoint (0.5 + 0.1) / 2
    (S.cosine_restarts(10, 2, eta_min=0.1, amplitude_decay=0.5, decay_eta_min=False), 20, 0.3),
    # eta_max * 0.01 < eta_min: the cycle is flat at the floor
    (S.cosine_restarts(10, 2, eta_min=0.1, amplitude_decay=0.01, decay_eta_min=False), 12, 0.1),
    # fractional periods: T_0 = 2.5, T_mult = 1.5 -> restarts at 2.5, 6.25, 11.875
    (S.cosine_restarts(2.5, 1.5), 2.5, 1.0),
    (S.cosine_restarts(2.5, 1.5), 6.25, 1.0),
    (S.cosine_restarts(2.5, 1.5), 2.5 + 3.75 / 2, 0.5),
    (S.constant(), 123, 1.0),
    (S.constant(0.3), 0, 0.3),
    (S.step_drop([30, 60, 80]), 29.99, 1.0),
    (S.step_drop([30, 60, 80]), 30, 0.1),
    (S.step_drop([30, 60, 80]), 79, 0.01),
    (S.step_drop([30, 60, 80], factor=0.5), 1000, 0.125),
    (S.linear(100), 0, 1.0),
    (S.linear(100), 25, 0.75),
    (S.linear(100, eta_min=0.2), 100, 0.2),
    (S.linear(100, eta_min=0.2), 1e6, 0.2),
    (S.cosine(100), 0, 1.0),
    (S.cosine(100), 50, 0.5),
    (S.cosine(100, eta_min=0.1, eta_max=0.9), 100, 0.1),
    (S.cosine(100, eta_min=0.1), 500, 0.1),
    (S.linear_warmup(10), 0, 0.0),
    (S.linear_warmup(10), 5, 0.5),
    (S.linear_warmup(10, start=0.2), 5, 0.6),
    (S.linear_warmup(10), 30, 1.0),
    (S.linear_warmup(0), 0, 1.0),
]


@pytest.mark.parametrize("schedule,t,expected", KNOWN_VALUES)
def test_known_values(schedule, t, expected):
    assert schedule(t) == pytest.approx(expected, abs=1e-12)


def test_sgdr_near_period_ends_approaches_min():
    for end in (10, 30, 70, 150):
        assert SGDR_10_2(end - 1e-9) < 1e-12
        assert SGDR_10_2(end) == 1.0


def test_sgdr_period_helpers_table():
    t = np.array([0, 9.999, 10, 29.5, 30, 69, 70, 149.9, 150])
    np.testing.assert_array_equal(SGDR_10_2.restart_index(t), [0, 0, 1, 1, 2, 2, 3, 3, 4])
    np.testing.assert_array_equal(SGDR_10_2.period_length(t), [10, 10, 20, 20, 40, 40, 80, 80, 160])
    np.testing.assert_array_equal(SGDR_10_2.period_start(t), [0, 0, 10, 10, 30, 30, 70, 70, 150])
    assert SGDR_10_2.period_ends(150) == [10, 30, 70, 150]
    assert SGDR_10_2.period_ends(149.9) == [10, 30, 70]
    assert SGDR_10_2.period_ends(5) == []
    # The paper's checkpoints: T_0 = 100 epochs, T_mult = 2.
    assert S.period_ends(1500, T_0=100, T_mult=2) == [100, 300, 700, 1500]
    assert S.period_ends(35, T_0=10, T_mult=1) == [10, 20, 30]
    assert S.restart_index(70, T_0=10, T_mult=2) == 3
    assert isinstance(S.restart_index(70, 10, 2), int)
    assert S.period_length(75.5, 10, 2) == 80.0
    assert S.period_start(75.5, 10, 2) == 70.0


def test_period_boundaries_exact_for_large_counts():
    # The logarithm is corrected against exact starts: every boundary lands in its period.
    for T_mult in (2, 3, 1.5):
        ends = S.period_ends(1e7, T_0=7, T_mult=T_mult)
        starts = np.array([0.0, *ends])
        idx = S.restart_index(starts, 7, T_mult)
        np.testing.assert_array_equal(idx, np.arange(len(starts)))
        np.testing.assert_array_equal(S.restart_index(starts[1:] - 1e-6, 7, T_mult), idx[:-1])


def test_shrinking_periods_have_a_horizon():
    s = S.cosine_restarts(T_0=8, T_mult=0.5)  # periods 8, 4, 2, ... total 16
    assert s.period_ends(15.4) == [8, 12, 14, 15]
    assert s.period_ends(15.5) == [8, 12, 14, 15, 15.5]
    assert s(12) == 1.0
    with pytest.raises(ValueError, match="t must be < 16"):
        s(16)
    with pytest.raises(ValueError, match="until"):
        s.period_ends(16)


@pytest.mark.parametrize("T_0,T_mult", [(2.5, 1.5), (3.75, 1.0), (5.0, 2.5), (8, 0.7)])
def test_sgdr_matches_incremental_reference(T_0, T_mult):
    s = S.cosine_restarts(T_0, T_mult, eta_min=0.05)
    horizon = T_0 / (1 - T_mult) if T_mult < 1 else 300
    t = np.arange(0, min(300, math.floor(horizon - 1)), 1.0)
    expected = [sgdr_reference(x, T_0, T_mult, eta_min=0.05) for x in t]
    np.testing.assert_allclose(s(t), expected, rtol=0, atol=1e-9)


def test_amplitude_decay_cycle_peaks():
    s = S.cosine_restarts(10, 2, eta_max=0.8, amplitude_decay=0.7)
    peaks = s(np.array(SGDR_10_2.period_ends(150)))
    np.testing.assert_allclose(peaks, 0.8 * 0.7 ** np.arange(1, 5), rtol=1e-14)


def test_warmup_first_cycle_only():
    s = S.cosine_restarts(10, 2, warmup=4)
    np.testing.assert_allclose(s(np.array([0, 1, 2, 4])), [0, 0.25, 0.5, 1.0])
    # cosine over the remaining 6 updates of the first period
    assert s(7) == pytest.approx(0.5, abs=1e-12)
    assert s(10) == 1.0  # no warmup in later cycles
    assert s(20) == pytest.approx(0.5, abs=1e-12)
    assert s.period_ends(30) == [10, 30]  # warmup never moves the boundaries


def test_warmup_every_cycle_and_eta_min():
    s = S.cosine_restarts(10, 2, eta_min=0.1, warmup=2, warmup_every_cycle=True)
    assert s(0) == pytest.approx(0.1)
    assert s(1) == pytest.approx(0.55)
    assert s(2) == pytest.approx(1.0)
    assert s(10) == pytest.approx(0.1)  # restart: ramp again from eta_min
    assert s(11) == pytest.approx(0.55)
    assert s(12) == pytest.approx(1.0)
    assert s(21) == pytest.approx(0.55)  # middle of cosine over 18 updates: 12 + 9


def test_warmup_longer_than_shrunk_period_is_all_ramp():
    s = S.cosine_restarts(8, 0.5, warmup=5, warmup_every_cycle=True)  # period 1 has 4 updates
    np.testing.assert_allclose(s(np.array([8, 9, 10, 11])), [0, 0.25, 0.5, 0.75])
    assert np.all(np.isfinite(s(np.linspace(0, 15.9, 200))))


# ----------------------------------------------------------------------------- torch parity


@pytest.mark.parametrize("T_mult", [1, 2, 3])
@pytest.mark.parametrize("T_0,eta_min", [(10, 0.0), (7, 0.002)])
def test_parity_with_torch_cosine_annealing_warm_restarts(T_0, T_mult, eta_min):
    base_lr, n = 0.1, 400
    opt_torch = _optimizer((base_lr,))
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt_torch, T_0=T_0, T_mult=T_mult, eta_min=eta_min
    )
    opt_ours = _optimizer((base_lr,))
    ours = S.as_torch_scheduler(opt_ours, S.cosine_restarts(T_0, T_mult, eta_min=eta_min / base_lr))
    assert opt_ours.param_groups[0]["lr"] == pytest.approx(ref.get_last_lr()[0], abs=1e-12)
    expected = np.array(_run(opt_torch, ref, n))
    got = np.array(_run(opt_ours, ours, n))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # And directly: schedule(t) * base_lr for t = 1..n.
    s = S.cosine_restarts(T_0, T_mult, eta_min=eta_min / base_lr)
    np.testing.assert_allclose(base_lr * s(np.arange(1, n + 1)), expected[:, 0], atol=1e-12)


# ----------------------------------------------------------------------------- vectorization

ALL_SCHEDULES = [
    S.constant(0.5),
    S.step_drop([3, 17.5, 40], factor=0.3),
    S.linear(33, eta_min=0.1),
    S.cosine(33, eta_min=0.1, eta_max=0.9),
    S.cosine_restarts(6, 2, eta_min=0.01, amplitude_decay=0.8, warmup=2, warmup_every_cycle=True),
    S.cosine_restarts(4.5, 1.3),
    S.linear_warmup(7, start=0.1),
    S.join([S.linear_warmup(5), S.cosine(20), 0.01], boundaries=[5, 25]),
    S.linear_warmup(5) * S.cosine_restarts(10, 2),
    0.5 * S.cosine(20),
    S.as_schedule(lambda t: 1.0 / (1.0 + t)),
]


def _stable_id(schedule) -> str:
    """The schedule's repr without memory addresses: the same test ids in every process (the
    workers of pytest-xdist collect separately)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(schedule))


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=_stable_id)
def test_vectorized_equals_scalar(schedule):
    t = np.concatenate([np.arange(0, 60), np.linspace(0, 59, 38)])
    scalar = np.array([schedule(float(x)) for x in t])
    assert all(isinstance(schedule(float(x)), float) for x in t[:3])
    assert isinstance(schedule(3), float)
    np.testing.assert_array_equal(schedule(t), scalar)
    np.testing.assert_array_equal(schedule(t.reshape(2, -1)), scalar.reshape(2, -1))
    np.testing.assert_array_equal(schedule(list(t)), scalar)

    as_t64 = schedule(torch.tensor(t, dtype=torch.float64))
    assert isinstance(as_t64, torch.Tensor) and as_t64.dtype == torch.float64
    np.testing.assert_array_equal(as_t64.numpy(), scalar)

    as_t32 = schedule(torch.tensor(t, dtype=torch.float32))
    assert as_t32.dtype == torch.float32
    ints = torch.arange(60)
    as_int = schedule(ints)
    assert as_int.dtype == torch.float64
    np.testing.assert_array_equal(as_int.numpy(), scalar[:60])
    assert schedule(np.int64(4)) == schedule(4.0)


RESTART_VARIANTS = [
    S.cosine_restarts(T_0=100, T_mult=2),
    S.cosine_restarts(7, 3),
    S.cosine_restarts(2.5, 1.5, eta_min=0.05),
    S.cosine_restarts(3.75, 1.0),
    S.cosine_restarts(
        100, 2, eta_min=0.01, amplitude_decay=0.8, warmup=20, warmup_every_cycle=True
    ),
    S.cosine_restarts(10, 2, eta_min=0.1, amplitude_decay=0.01, decay_eta_min=False, warmup=3),
    S.linear_warmup(50) * S.cosine_restarts(100, 2) * 0.3,
]


@pytest.mark.parametrize("schedule", RESTART_VARIANTS, ids=_stable_id)
def test_scalar_fast_path_is_bit_identical_at_boundaries_and_large_counts(schedule):
    # The scalar path uses math (log1p, pow, cos) where the vectorized path uses numpy: the
    # period index, the restart points (and the floats just either side of them) and huge
    # update counts must still give exactly the same values.
    rng = np.random.default_rng(0)
    equal_periods = schedule.period_length(0) == schedule.period_length(1e3)
    ends = np.array(schedule.period_ends(1e4 if equal_periods else 1e9))  # a short list
    t = np.concatenate(
        [
            np.arange(0.0, 400.0),
            rng.uniform(0, 1e5, 300),
            np.exp(rng.uniform(0, 40, 200)),  # up to ~2e17 updates
            ends,
            np.nextafter(ends, 0),
            np.nextafter(ends, np.inf),
        ]
    )
    np.testing.assert_array_equal(schedule(t), [schedule(x) for x in t.tolist()])
    for helper in ("restart_index", "period_length", "period_start"):
        method = getattr(schedule, helper)
        np.testing.assert_array_equal(method(t), [method(x) for x in t.tolist()])
    assert isinstance(schedule.restart_index(12.5), int)
    assert isinstance(schedule.period_length(12), float)


def test_scalar_calls_bypass_numpy_dispatch(monkeypatch):
    # A Python int/float (what ScheduleLR and NormalizedDecay pass every update) must take
    # the pure-math path: the numpy/torch dispatcher is never entered. (This test's subject is
    # that private mechanism, hence the private modules.)
    from weightdecay.schedules import _functions, _restarts

    def fail(*args, **kwargs):
        raise AssertionError("scalar call went through _dispatch")

    monkeypatch.setattr(_functions, "_dispatch", fail)
    monkeypatch.setattr(_restarts, "_dispatch", fail)
    for schedule in ALL_SCHEDULES:
        assert isinstance(schedule(7), float) and isinstance(schedule(7.5), float)
    assert isinstance(SGDR_10_2.restart_index(75), int)
    assert SGDR_10_2.period_length(75.0) == 80.0
    assert SGDR_10_2.period_start(75) == 70.0


def test_numpy_scalars_match_python_scalars():
    s = ALL_SCHEDULES[4]
    for x in (0, 3, 17.25, 59):
        expected = s(x)
        values = [np.float64(x), np.float32(x), np.array(float(x))]
        for value in values + ([np.int64(x)] if isinstance(x, int) else []):
            got = s(value)
            assert isinstance(got, float) and got == expected
    assert S.restart_index(np.int64(70), 10, 2) == 3
    assert isinstance(SGDR_10_2.restart_index(np.float64(70.0)), int)


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), 10**400, np.float64(-1)])
def test_bad_scalar_steps_raise_value_error(bad):
    for schedule in ALL_SCHEDULES[:-1]:
        with pytest.raises(ValueError, match="t"):
            schedule(bad)
    for helper in (SGDR_10_2.restart_index, SGDR_10_2.period_length, SGDR_10_2.period_start):
        with pytest.raises(ValueError, match="t"):
            helper(bad)


def test_subclass_with_only_eval_still_works_for_scalars():
    class Halving(S.Schedule):
        def _eval(self, t):
            return 0.5 ** np.floor(t / 10)

    h = Halving()
    assert h(25) == 0.25 and isinstance(h(25), float)
    np.testing.assert_array_equal(
        (h * S.cosine(100))(np.arange(50.0)), [(h * S.cosine(100))(float(x)) for x in range(50)]
    )


def test_schedules_pickle():
    for schedule in ALL_SCHEDULES[:-1]:  # the lambda-backed one is not picklable
        clone = pickle.loads(pickle.dumps(schedule))
        t = np.linspace(0, 50, 11)
        np.testing.assert_array_equal(clone(t), schedule(t))


def test_join_uses_local_time():
    s = S.join([S.linear_warmup(10), S.cosine(100)], boundaries=[10])
    assert s(5) == pytest.approx(0.5)
    assert s(10) == 1.0  # cosine at its local t = 0
    assert s(60) == pytest.approx(0.5)
    assert s(110) == pytest.approx(0.0, abs=1e-12)


def test_multiply_and_restart_delegation():
    s = S.multiply(S.linear_warmup(4), S.cosine_restarts(10, 2))
    assert s(2) == pytest.approx(0.5 * SGDR_10_2(2))
    assert s.has_restarts
    assert s.period_length(12) == 20.0
    assert s.period_ends(30) == [10, 30]
    assert not (S.linear_warmup(4) * S.cosine(10)).has_restarts
    with pytest.raises(AttributeError):
        (S.linear_warmup(4) * S.cosine(10)).period_length(3)
    assert (S.cosine(10) * 2.0)(0) == 2.0


# ----------------------------------------------------------------------------- validation

BAD_ARGUMENTS = [
    (S.cosine_restarts, dict(T_0=0), "T_0"),
    (S.cosine_restarts, dict(T_0=-5), "T_0"),
    (S.cosine_restarts, dict(T_0=float("nan")), "T_0"),
    (S.cosine_restarts, dict(T_0=10, T_mult=0), "T_mult"),
    (S.cosine_restarts, dict(T_0=10, T_mult=-2), "T_mult"),
    (S.cosine_restarts, dict(T_0=10, T_mult=float("inf")), "T_mult"),
    (S.cosine_restarts, dict(T_0=10, eta_min=-0.1), "eta_min"),
    (S.cosine_restarts, dict(T_0=10, eta_min=0.5, eta_max=0.2), "eta_min"),
    (S.cosine_restarts, dict(T_0=10, amplitude_decay=0), "amplitude_decay"),
    (S.cosine_restarts, dict(T_0=10, amplitude_decay=1.5), "amplitude_decay"),
    (S.cosine_restarts, dict(T_0=10, warmup=-1), "warmup"),
    (S.cosine_restarts, dict(T_0=10, warmup=10), "warmup"),
    (S.cosine_restarts, dict(T_0=10, warmup_every_cycle="yes"), "warmup_every_cycle"),
    (S.cosine_restarts, dict(T_0="10"), "T_0"),
    (S.constant, dict(value=-1), "value"),
    (S.constant, dict(value=float("nan")), "value"),
    (S.step_drop, dict(milestones=[30, 30]), "milestones"),
    (S.step_drop, dict(milestones=[60, 30]), "milestones"),
    (S.step_drop, dict(milestones=[-1, 30]), "milestones"),
    (S.step_drop, dict(milestones=5), "milestones"),
    (S.step_drop, dict(milestones=[30], factor=0), "factor"),
    (S.step_drop, dict(milestones=[30], factor=-0.1), "factor"),
    (S.linear, dict(total_steps=0), "total_steps"),
    (S.linear, dict(total_steps=10, eta_min=-1), "eta_min"),
    (S.linear, dict(total_steps=10, eta_min=2), "eta_min"),
    (S.cosine, dict(total_steps=-3), "total_steps"),
    (S.cosine, dict(total_steps=10, eta_max=float("nan")), "eta_max"),
    (S.linear_warmup, dict(warmup_steps=-1), "warmup_steps"),
    (S.linear_warmup, dict(warmup_steps=5, start=1.5), "start"),
    (S.join, dict(schedules=[S.constant()], boundaries=[5]), "boundaries"),
    (S.join, dict(schedules=[1.0, 0.5, 0.1], boundaries=[20, 10]), "boundaries"),
    (S.join, dict(schedules=[1.0, 0.5], boundaries=[0]), "boundaries"),
    (S.join, dict(schedules=[], boundaries=[]), "schedules"),
    (S.epochs_to_updates, dict(epochs=-1, steps_per_epoch=10), "epochs"),
    (S.epochs_to_updates, dict(epochs=1, steps_per_epoch=0), "steps_per_epoch"),
    (S.epochs_to_updates, dict(epochs=1, steps_per_epoch=2.5), "steps_per_epoch"),
    (S.updates_per_epoch, dict(dataset_size=0, batch_size=1), "dataset_size"),
    (S.updates_per_epoch, dict(dataset_size=10, batch_size=20, drop_last=True), "batch_size"),
    (S.period_ends, dict(until=-1, T_0=10), "until"),
    (S.restart_index, dict(t=5, T_0=10, T_mult=0), "T_mult"),
]


@pytest.mark.parametrize("factory,kwargs,name", BAD_ARGUMENTS)
def test_bad_arguments_raise_naming_the_argument(factory, kwargs, name):
    with pytest.raises(ValueError, match=name):
        factory(**kwargs)


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), np.array([1.0, -2.0]), True])
def test_bad_steps_raise(bad):
    with pytest.raises(ValueError, match="t"):
        SGDR_10_2(bad)
    with pytest.raises(ValueError, match="t"):
        S.cosine(10)(bad)


# ----------------------------------------------------------------------------- epochs


def test_epochs_to_updates_and_updates_per_epoch():
    assert S.updates_per_epoch(50_000, 128) == 391
    assert S.updates_per_epoch(50_000, 128, drop_last=True) == 390
    assert S.epochs_to_updates(100, 391) == 39_100
    assert S.epochs_to_updates(0.5, 3) == 2  # 1.5 rounds half up
    assert S.epochs_to_updates(0.25, 3) == 1  # 0.75
    assert S.epochs_to_updates(0, 3) == 0
    assert isinstance(S.epochs_to_updates(2.0, 5), int)


# ----------------------------------------------------------------------------- torch adapter


def test_adapter_sets_initial_lr_times_schedule_per_group():
    opt = _optimizer((0.1, 0.02))
    sched = S.as_torch_scheduler(opt, S.cosine_restarts(5, 2))
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.02]
    lrs = _run(opt, sched, 20)
    s = S.cosine_restarts(5, 2)
    for t, (a, b) in enumerate(lrs, start=1):
        assert a == 0.1 * s(t) and b == 0.02 * s(t)
    assert sched.last_epoch == 20
    assert sched.get_last_lr() == lrs[-1]


def _state_roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("optimizer_first", [True, False])
def test_adapter_exact_resume_mid_cycle(optimizer_first):
    schedule = S.linear_warmup(3) * S.cosine_restarts(10, 2, amplitude_decay=0.9)
    opt = _optimizer((0.1, 0.05))
    sched = S.as_torch_scheduler(opt, schedule)
    straight = _run(opt, sched, 60)

    opt = _optimizer((0.1, 0.05))
    sched = S.as_torch_scheduler(opt, schedule)
    first = _run(opt, sched, 23)  # mid second cycle (10..30)
    opt_state = _state_roundtrip(opt.state_dict())
    sched_state = _state_roundtrip(sched.state_dict())

    opt2 = _optimizer((0.1, 0.05))
    if optimizer_first:
        opt2.load_state_dict(opt_state)
        sched2 = S.as_torch_scheduler(opt2, schedule)
        sched2.load_state_dict(sched_state)
    else:
        sched2 = S.as_torch_scheduler(opt2, schedule)
        sched2.load_state_dict(sched_state)
        opt2.load_state_dict(opt_state)
    assert [g["lr"] for g in opt2.param_groups] == first[-1]
    rest = _run(opt2, sched2, 37)
    assert first + rest == straight  # exact, not approximate


def test_adapter_state_dict_has_no_schedule_and_pickles_with_closures():
    opt = _optimizer()
    sched = S.as_torch_scheduler(opt, lambda t: 0.5**t)  # unpicklable closure
    _run(opt, sched, 3)
    state = sched.state_dict()
    assert "schedule" not in state and "optimizer" not in state
    state = _state_roundtrip(state)
    opt2 = _optimizer()
    sched2 = S.as_torch_scheduler(opt2, lambda t: 0.5**t)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 3
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_adapter_validation():
    with pytest.raises(ValueError, match="last_epoch"):
        S.as_torch_scheduler(_optimizer(), S.constant(), last_epoch=-2)
    with pytest.raises(ValueError, match="schedule"):
        S.as_torch_scheduler(_optimizer(), "cosine")

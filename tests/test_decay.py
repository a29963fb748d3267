"""Tests for weightdecay.decay: normalized decay (App. B.1), conversions, NormalizedDecay."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from weightdecay import decay as D
from weightdecay import schedules as S

torch.set_num_threads(1)


def _sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits - 1}e}")


# ----------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("epochs,expected", [(100, 1.26e-4), (1800, 2.98e-5)])
def test_normalized_weight_decay_paper_example(epochs, expected):
    # paper App. B.1 (lambda = lambda_norm * sqrt(b / (B*T))): b = 128, B = 50,000,
    # lambda_norm = 0.025.
    lam = D.normalized_weight_decay(0.025, batch_size=128, dataset_size=50_000, epochs=epochs)
    assert _sig(lam) == expected


def test_normalized_weight_decay_scaling():
    base = D.normalized_weight_decay(0.05, 128, 50_000, 100)
    assert D.normalized_weight_decay(0.05, 128, 50_000, 400) == pytest.approx(base / 2)
    assert D.normalized_weight_decay(0.05, 512, 50_000, 100) == pytest.approx(base * 2)
    assert D.normalized_weight_decay(0.0, 128, 50_000, 100) == 0.0
    assert D.normalized_weight_decay(1.0, 1, 1, 1) == 1.0  # single batch pass


def test_conversions_round_trip():
    assert D.torch_weight_decay(0.025 * 1e-3, lr=1e-3) == pytest.approx(0.025)
    assert D.paper_weight_decay(0.01, lr=1e-3) == pytest.approx(1e-5)
    for lam, lr in [(1e-4, 1e-3), (0.05, 0.1), (0.0, 3.0)]:
        assert D.paper_weight_decay(D.torch_weight_decay(lam, lr), lr) == pytest.approx(lam)


def test_ema_timescale_and_inverse():
    tau = D.ema_timescale(lr=1e-3, weight_decay=0.1)
    assert tau.tau_iter == pytest.approx(10_000)
    assert tau.tau_epoch is None
    tau = D.ema_timescale(1e-3, 0.1, batch_size=100, dataset_size=50_000)
    assert tau.tau_epoch == pytest.approx(20.0)  # 10,000 updates of 100 points = 20 epochs
    assert D.ema_timescale(1e-3, 0.0).tau_iter == math.inf
    wd = D.weight_decay_for_timescale(20.0, lr=1e-3, batch_size=100, dataset_size=50_000)
    assert wd == pytest.approx(0.1)
    for tau_epochs in (0.5, 7.0, 300.0):
        wd = D.weight_decay_for_timescale(tau_epochs, 3e-4, 128, 50_000)
        assert D.ema_timescale(3e-4, wd, 128, 50_000).tau_epoch == pytest.approx(tau_epochs)


BAD = [
    (D.normalized_weight_decay, (-0.1, 128, 50_000, 100), "lambda_norm"),
    (D.normalized_weight_decay, (0.1, 0, 50_000, 100), "batch_size"),
    (D.normalized_weight_decay, (0.1, 12.5, 50_000, 100), "batch_size"),
    (D.normalized_weight_decay, (0.1, 128, -5, 100), "dataset_size"),
    (D.normalized_weight_decay, (0.1, 128, 50_000, 0), "epochs"),
    (D.normalized_weight_decay, (float("nan"), 128, 50_000, 10), "lambda_norm"),
    (D.torch_weight_decay, (0.1, 0.0), "lr"),
    (D.torch_weight_decay, (-0.1, 1.0), "lam"),
    (D.paper_weight_decay, (0.1, -1.0), "lr"),
    (D.paper_weight_decay, (float("inf"), 1.0), "torch_wd"),
    (D.ema_timescale, (0.0, 0.1), "lr"),
    (D.ema_timescale, (1e-3, -0.1), "weight_decay"),
    (D.ema_timescale, (1e-3, 0.1, 128), "dataset_size"),
    (D.ema_timescale, (1e-3, 0.1, 0, 100), "batch_size"),
    (D.weight_decay_for_timescale, (0.0, 1e-3, 128, 50_000), "tau_epochs"),
    (D.weight_decay_for_timescale, (5.0, 0.0, 128, 50_000), "lr"),
    (D.weight_decay_for_timescale, (5.0, 1e-3, 128, 0), "dataset_size"),
    (lambda *a: D.ema_timescale(*a, decay_convention="torch"), (1e-3, 0.1), "decay_convention"),
    (lambda *a: D.weight_decay_for_timescale(*a, decay_convention="schedule", initial_lr=0.0),
     (5.0, 1e-3, 128, 100), "initial_lr"),
]


@pytest.mark.parametrize("fn,args,name", BAD)
def test_bad_arguments_raise_naming_the_argument(fn, args, name):
    with pytest.raises(ValueError, match=name):
        fn(*args)


CONVENTION_CASES = [  # convention, lr, initial_lr, weight decay, expected decay per update
    ("lr", 1e-3, None, 0.1, 1e-4),
    ("schedule", 1e-3, None, 1e-4, 1e-4),
    ("schedule", 5e-4, 1e-3, 1e-4, 5e-5),
    ("constant", 3e-4, None, 1e-4, 1e-4),
    ("corrected", 5e-4, 1e-3, 0.1, 5e-4 * 0.5 * 0.1),
]


@pytest.mark.parametrize("convention,lr,initial_lr,lam,d", CONVENTION_CASES)
def test_timescale_helpers_cover_every_convention(convention, lr, initial_lr, lam, d):
    kw = dict(decay_convention=convention, initial_lr=initial_lr)
    tau = D.ema_timescale(lr, lam, 128, 50_000, **kw)
    assert tau.tau_iter == pytest.approx(1 / d)
    assert tau.tau_epoch == pytest.approx(128 / (50_000 * d))
    assert D.weight_decay_for_timescale(tau.tau_epoch, lr, 128, 50_000, **kw) == pytest.approx(
        lam)
    # the timescale is the one the optimizer applies: one update with no gradient at lr
    p = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    import weightdecay as wd

    opt = wd.AdamW([p], lr=initial_lr or lr, weight_decay=lam, decay_convention=convention)
    opt.param_groups[0]["lr"] = lr
    p.grad = torch.zeros(2, dtype=torch.float64)
    opt.step()
    assert 1 - p[0].item() == pytest.approx(1 / tau.tau_iter, rel=1e-9)


def test_timescale_worked_example_of_the_docstring():
    """Same tau_epoch, 4x the data: a quarter of the weight decay, in every convention."""
    tau = D.ema_timescale(1e-3, 0.1, 128, 50_000)
    assert (tau.tau_iter, tau.tau_epoch) == (pytest.approx(10_000), pytest.approx(25.6))
    assert D.weight_decay_for_timescale(25.6, 1e-3, 128, 200_000) == pytest.approx(0.025)
    assert D.weight_decay_for_timescale(25.6, 1e-3, 128, 200_000,
                                        decay_convention="schedule") == pytest.approx(2.5e-5)


# ----------------------------------------------------------------------------- NormalizedDecay


def _sgd(decays=(1.0, 0.0), extra=None):
    """Plain torch SGD: only the group dicts matter to NormalizedDecay."""
    groups = []
    for k, wd in enumerate(decays):
        group = {"params": [torch.nn.Parameter(torch.zeros(1))], "weight_decay": wd}
        group.update((extra or {}).get(k, {}))
        groups.append(group)
    return torch.optim.SGD(groups, lr=0.1)


def _steps(opt, nd, n):
    out = []
    for _ in range(n):  # (opt.step() would come first in training; it does not matter here)
        nd.step()
        out.append([g["weight_decay"] for g in opt.param_groups])
    return out


def test_normalized_decay_drops_by_sqrt2_at_each_restart():
    b, B = 10, 1000  # 100 updates per epoch exactly
    upe = S.updates_per_epoch(B, b)
    schedule = S.cosine_restarts(T_0=S.epochs_to_updates(2, upe), T_mult=2)  # 200 updates
    opt = _sgd()
    nd = D.NormalizedDecay(opt, 0.05, batch_size=b, dataset_size=B, schedule=schedule)
    first = D.normalized_weight_decay(0.05, b, B, 2)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(first, rel=1e-15)
    values = [row[0] for row in _steps(opt, nd, 200 + 400 + 800 + 10)]
    # steps are 1-based here: values[t - 1] is the decay at update count t
    ends = schedule.period_ends(1400)
    assert ends == [200, 600, 1400]
    for i, end in enumerate(ends):
        before, after = values[int(end) - 2], values[int(end) - 1]
        assert before == pytest.approx(first / math.sqrt(2) ** i, rel=1e-12)
        assert after == pytest.approx(before / math.sqrt(2), rel=1e-12)
    assert len(set(values[: 200 - 1])) == 1  # constant within a period
    # The authors' code: lambda_norm / sqrt(batches_per_epoch * T_i) (in updates: 1 / sqrt(T_i)).
    assert values[1000] == pytest.approx(0.05 / math.sqrt(upe * 8), rel=1e-12)
    # No-decay group stays at zero all along.
    assert all(g == 0.0 for g in (row[1] for row in _steps(opt, nd, 5)))
    assert nd.period_epochs() == pytest.approx(16.0)


def test_normalized_decay_without_restarts_uses_total_updates():
    opt = _sgd((0.3,))
    nd = D.NormalizedDecay(opt, 0.025, 128, 50_000, schedule=S.cosine(39_100), total_updates=39_100)
    assert nd.period_epochs() == pytest.approx(100.0)  # 39,100 / ceil(50,000 / 128)
    assert _sig(opt.param_groups[0]["weight_decay"]) == 1.26e-4
    values = _steps(opt, nd, 50)
    assert {row[0] for row in values} == {opt.param_groups[0]["weight_decay"]}
    # No schedule at all works too.
    nd2 = D.NormalizedDecay(_sgd((0.3,)), 0.025, 128, 50_000, total_updates=391 * 1800)
    assert _sig(nd2.get_last_weight_decay()[0]) == 2.98e-5


def test_normalized_decay_group_overrides_and_warmup_product():
    opt = _sgd((1.0, 0.0, 0.0, 1.0), extra={2: {"lambda_norm": 0.1}, 3: {"lambda_norm": 0.0}})
    schedule = S.linear_warmup(50) * S.cosine_restarts(T_0=100, T_mult=2)
    nd = D.NormalizedDecay(opt, 0.05, 100, 10_000, schedule=schedule)  # 100 updates/epoch
    expected = [0.05 * math.sqrt(100 / 10_000), 0.0, 0.1 * math.sqrt(100 / 10_000), 0.0]
    assert nd.get_last_weight_decay() == pytest.approx(expected, rel=1e-15)
    _steps(opt, nd, 100)  # update count 100: the second period (200 updates = 2 epochs)
    assert nd.period_epochs() == 2.0
    assert nd.get_last_weight_decay() == pytest.approx([v / math.sqrt(2) for v in expected])


def test_normalized_decay_updates_per_epoch_override():
    nd = D.NormalizedDecay(
        _sgd((1.0,)), 0.05, 128, 50_000, total_updates=3900, updates_per_epoch=390
    )
    assert nd.period_epochs() == 10.0


def test_normalized_decay_resume_is_exact():
    schedule = S.cosine_restarts(T_0=30, T_mult=2)
    opt = _sgd((1.0, 0.0), extra={0: {"lambda_norm": 0.07}})
    nd = D.NormalizedDecay(opt, 0.05, 10, 1000, schedule=schedule)
    straight = _steps(opt, nd, 100)

    opt = _sgd((1.0, 0.0), extra={0: {"lambda_norm": 0.07}})
    nd = D.NormalizedDecay(opt, 0.05, 10, 1000, schedule=schedule)
    first = _steps(opt, nd, 45)
    state = nd.state_dict()
    assert state == {"step_count": 45, "lambda_norms": [0.07, 0.0]}
    # A fresh optimizer whose groups now all carry nonzero weight_decay: the state decides.
    opt2 = _sgd((1.0, 1.0))
    nd2 = D.NormalizedDecay(opt2, 0.05, 10, 1000, schedule=schedule)
    nd2.load_state_dict(state)
    assert [g["weight_decay"] for g in opt2.param_groups] == first[-1]
    assert first + _steps(opt2, nd2, 55) == straight


def test_normalized_decay_validation_and_warning():
    opt = _sgd()
    with pytest.raises(ValueError, match="total_updates"):
        D.NormalizedDecay(opt, 0.05, 128, 50_000, schedule=S.cosine(1000))
    with pytest.raises(ValueError, match="total_updates"):
        D.NormalizedDecay(opt, 0.05, 128, 50_000, total_updates=0)
    with pytest.raises(ValueError, match="lambda_norm"):
        D.NormalizedDecay(opt, -1.0, 128, 50_000, total_updates=10)
    with pytest.raises(ValueError, match="batch_size"):
        D.NormalizedDecay(opt, 0.05, 0, 50_000, total_updates=10)
    with pytest.raises(ValueError, match="updates_per_epoch"):
        D.NormalizedDecay(opt, 0.05, 128, 50_000, total_updates=10, updates_per_epoch=0)
    with pytest.raises(ValueError, match="lambda_norm"):
        D.NormalizedDecay(
            _sgd((1.0,), extra={0: {"lambda_norm": -2}}), 0.05, 128, 50_000, total_updates=10
        )
    with pytest.raises(ValueError, match="optimizer"):
        D.NormalizedDecay(object(), 0.05, 128, 50_000, total_updates=10)
    nd = D.NormalizedDecay(_sgd(), 0.05, 128, 50_000, total_updates=10)
    with pytest.raises(ValueError, match="lambda_norms"):
        nd.load_state_dict({"step_count": 3, "lambda_norms": [0.1]})
    with pytest.raises(ValueError, match="step_count"):
        nd.load_state_dict({"step_count": -3, "lambda_norms": [0.1, 0.0]})
    # torch.optim.SGD defaults to weight_decay=0: nothing would be decayed -> warn.
    plain = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.warns(UserWarning, match="weight_decay == 0"):
        D.NormalizedDecay(plain, 0.05, 128, 50_000, total_updates=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D.NormalizedDecay(plain, 0.0, 128, 50_000, total_updates=10)  # nothing asked: no warning

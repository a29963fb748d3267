"""train.run: record contract, determinism, resume bit-identity, divergence, optimizers,
schedules in updates, normalized decay per restart."""

from __future__ import annotations

import math
import os

import pytest
import torch

from weightdecay.harness import train
from weightdecay.harness.config import OPTIMIZERS, RunConfig
from weightdecay.harness.data import Dataset
from weightdecay.harness.train import HISTORY_KEYS, RECORD_KEYS, run
from weightdecay.harness.vectors import unpack_wrong

torch.set_num_threads(1)

N_TRAIN, N_TEST, BATCH = 192, 96, 32  # 6 updates per epoch


def _noise_augment(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # draws from the run's generator, so resume must restore its state exactly
    return x + 0.05 * torch.randn(x.shape, generator=generator)


def _toy(augment=True) -> Dataset:
    """A learnable 10-class problem shaped like MNIST-1D: (N, 1, 40)."""
    g = torch.Generator().manual_seed(1234)
    proto = torch.randn(10, 1, 40, generator=g)
    y = torch.randint(0, 10, (N_TRAIN + N_TEST,), generator=g)
    x = proto[y] + 0.5 * torch.randn(len(y), 1, 40, generator=g)
    return Dataset("mnist1d", x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:],
                   num_classes=10, input_shape=(1, 40),
                   augment=_noise_augment if augment else None)


TOY = _toy()


def _cfg(**kw) -> RunConfig:
    base = dict(model="mlp", optimizer="adamw", lr=3e-3, weight_decay=0.01, epochs=2,
                batch_size=BATCH, seed=0, schedule="cosine")
    base.update(kw)
    return RunConfig(**base)


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "wall_seconds"}


def _same(a: dict, b: dict) -> bool:
    """Records equal field by field, NaN == NaN (bit-identical floats otherwise)."""
    def eq(x, y):
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            return True
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x)
        if isinstance(x, list):
            return len(x) == len(y) and all(eq(u, v) for u, v in zip(x, y))
        return x == y
    return eq(_strip(a), _strip(b))


def _model_state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- contract


def test_record_has_all_contract_keys():
    rec = run(_cfg(epochs=3), data=TOY)
    assert set(rec) == set(RECORD_KEYS)
    assert set(rec["history"]) == set(HISTORY_KEYS)
    assert rec["history"]["epoch"] == [1, 2, 3]
    assert all(len(v) == 3 for v in rec["history"].values())
    assert rec["diverged"] is False
    assert 0.0 <= rec["final_test_error"] <= 1.0
    assert rec["final_test_error"] == rec["history"]["test_error"][-1]
    assert rec["best_test_error"] == min(rec["history"]["test_error"])
    assert rec["final_train_loss"] == rec["history"]["train_loss"][-1]
    assert rec["wall_seconds"] > 0
    for key in HISTORY_KEYS:
        if key == "test_wrong":  # packed per-example vectors, one per evaluated epoch
            errs = [unpack_wrong(v, N_TEST).mean() for v in rec["history"][key]]
            assert errs == rec["history"]["test_error"]
            continue
        assert all(isinstance(v, (int, float)) and math.isfinite(v)
                   for v in rec["history"][key]), key
    # it learns: the toy problem is easy, chance is 0.9
    assert rec["final_test_error"] < 0.5
    assert rec["history"]["train_loss"][-1] < rec["history"]["train_loss"][0]


def test_final_wrong_vector_eval_every_and_width():
    rec = run(_cfg(epochs=5, eval_every=2, width=16), data=TOY)
    errs = rec["history"]["test_error"]
    assert [math.isnan(e) for e in errs] == [True, False, True, False, False]  # 2, 4, last
    assert [v is None for v in rec["history"]["test_wrong"]] == [True, False, True, False, False]
    wrong = unpack_wrong(rec["final_test_wrong"], N_TEST)
    assert wrong.dtype == bool and wrong.shape == (N_TEST,)
    assert wrong.sum() / N_TEST == rec["final_test_error"]
    assert rec["best_test_error"] == min(e for e in errs if not math.isnan(e))
    with pytest.raises(ValueError, match="bits"):
        unpack_wrong(rec["final_test_wrong"], N_TEST + 9)
    # width reaches the model: the mlp's hidden layers shrink
    from weightdecay.harness.models import build_model, count_parameters

    small = count_parameters(build_model("mlp", TOY, hidden=16))
    assert small < count_parameters(build_model("mlp", TOY))
    assert rec["final_test_wrong"] != run(_cfg(epochs=5), data=TOY)["final_test_wrong"]


def test_test_size_must_match_passed_data():
    with pytest.raises(ValueError, match="test_size"):
        run(_cfg(epochs=1, test_size=500), data=TOY)


def test_accepts_config_dict():
    cfg = _cfg(epochs=1)
    assert _same(run(cfg.to_dict(), data=TOY), run(cfg, data=TOY))


def test_invalid_config_raises_before_training():
    with pytest.raises(ValueError, match="lr"):
        run({"lr": -1.0}, data=TOY)


def test_data_of_another_dataset_is_refused():
    with pytest.raises(ValueError, match="digits"):
        run(_cfg(dataset="digits", epochs=1), data=TOY)


# ----------------------------------------------------------------------------- determinism


def test_two_runs_with_one_seed_are_equal_and_seeds_differ():
    cfg = _cfg(optimizer="sgdw", lr=0.05, weight_decay=1e-3)
    a, b = run(cfg, data=TOY), run(cfg, data=TOY)
    assert _same(a, b)
    c = run(cfg.replace(seed=1), data=TOY)
    assert c["history"]["train_loss"] != a["history"]["train_loss"]


def test_global_rng_use_between_runs_does_not_matter():
    cfg = _cfg(epochs=1)
    a = run(cfg, data=TOY)
    torch.rand(1000)
    assert _same(a, run(cfg, data=TOY))


# ----------------------------------------------------------------------------- resume


class _Stop(Exception):
    pass


def _stop_at(epoch_to_stop):
    def on_epoch(epoch, metrics):
        assert set(HISTORY_KEYS) <= set(metrics) and "diverged" in metrics
        if epoch == epoch_to_stop:
            raise _Stop
    return on_epoch


RESUME_CASES = [
    _cfg(epochs=4),
    _cfg(optimizer="sgdw", lr=0.05, schedule="restarts", T_0=1, T_mult=2,
         weight_decay_norm=0.05, epochs=4, decay_all=False),
    _cfg(optimizer="adam", model="cnn1d_bn", schedule="step", milestones=(2, 3), epochs=3),
    # the compiled training step (weightdecay.harness.step; the shape test_step.py compiles)
    pytest.param(_cfg(model="cnn1d_bn", width=8, schedule="step", milestones=(2, 3), epochs=3),
                 marks=pytest.mark.compile),
]


@pytest.mark.parametrize("cfg", RESUME_CASES,
                         ids=lambda c: f"{c.optimizer}-{c.schedule}-{c.model}-{c.width}")
def test_resume_is_bit_identical(tmp_path, cfg):
    full_path = tmp_path / "full.pt"
    full = run(cfg, checkpoint_path=full_path, data=TOY)

    path = tmp_path / "resumed.pt"
    with pytest.raises(_Stop):
        run(cfg, checkpoint_path=path, on_epoch=_stop_at(2), data=TOY)
    assert _model_state(path)["epoch"] == 2
    torch.manual_seed(999)  # disturb the global RNG: resume must restore it
    seen = []
    resumed = run(cfg, checkpoint_path=path, data=TOY,
                  on_epoch=lambda e, m: seen.append(e))
    assert seen == list(range(3, cfg.epochs + 1))  # continued, not restarted
    assert _same(full, resumed)

    a, b = _model_state(full_path), _model_state(path)
    assert a["epoch"] == b["epoch"] == cfg.epochs
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]  # atomic writes cleaned up


def test_finished_checkpoint_returns_its_record_without_training(tmp_path):
    cfg = _cfg(epochs=2)
    path = tmp_path / "ck.pt"
    first = run(cfg, checkpoint_path=path, data=TOY)
    calls = []
    again = run(cfg, checkpoint_path=path, data=TOY, on_epoch=lambda e, m: calls.append(e))
    assert calls == []
    assert _same(first, again)


def test_unreadable_checkpoint_is_refused(tmp_path):
    path = tmp_path / "ck.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint_path"):
        run(_cfg(epochs=1), checkpoint_path=path, data=TOY)


def test_checkpoint_of_other_config_is_refused(tmp_path):
    path = tmp_path / "ck.pt"
    run(_cfg(epochs=1), checkpoint_path=path, data=TOY)
    with pytest.raises(ValueError, match="checkpoint_path"):
        run(_cfg(epochs=1, lr=0.1), checkpoint_path=path, data=TOY)


# ----------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("optimizer", ["sgd", "sgdw"])
def test_huge_lr_diverges_as_a_result(tmp_path, optimizer):
    cfg = _cfg(optimizer=optimizer, lr=1e12, schedule="fixed", epochs=5, momentum=0.9)
    rec = run(cfg, checkpoint_path=tmp_path / "ck.pt", data=TOY)
    assert rec["diverged"] is True
    assert math.isnan(rec["final_test_error"]) and math.isnan(rec["best_test_error"])
    assert math.isnan(rec["final_train_loss"])
    n = len(rec["history"]["epoch"])
    assert 1 <= n < cfg.epochs  # stopped early
    assert all(len(v) == n for v in rec["history"].values())
    last = rec["history"]["train_loss"][-1], rec["history"]["weight_norm"][-1]
    assert not all(math.isfinite(v) for v in last)
    # a diverged checkpoint is final: rerunning returns the same result
    assert _same(rec, run(cfg, checkpoint_path=tmp_path / "ck.pt", data=TOY))


# ----------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_builds_and_trains_one_epoch(name):
    import weightdecay

    cfg = _cfg(optimizer=name, lr=0.05 if name.startswith("sgd") else 3e-3, epochs=1)
    model = torch.nn.Linear(3, 2)
    opt = train.build_optimizer(cfg, model)
    expected = {"sgd": weightdecay.SGD, "sgdw": weightdecay.SGDW,
                "adam": weightdecay.Adam, "adamw": weightdecay.AdamW}[name]
    assert type(opt) is expected
    assert opt.param_groups[0]["weight_decay"] == cfg.weight_decay
    assert opt.param_groups[0]["decay_convention"] == "schedule"
    rec = run(cfg, data=TOY)
    assert rec["history"]["epoch"] == [1] and not rec["diverged"]
    assert rec["final_test_error"] < 0.9


def test_decay_all_false_spares_biases():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    groups = train.build_optimizer(_cfg(decay_all=False), model).param_groups
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    assert len(decayed) == 1 and decayed[0].ndim == 2
    all_groups = train.build_optimizer(_cfg(decay_all=True), model).param_groups
    assert all(g["weight_decay"] == 0.01 for g in all_groups)


@pytest.mark.parametrize("optimizer", ["sgdw", "adamw"])
def test_decoupled_decay_shrinks_weights(optimizer):
    lr = 0.05 if optimizer == "sgdw" else 3e-3
    cfg = _cfg(optimizer=optimizer, lr=lr, weight_decay=0.0, epochs=1, schedule="fixed")
    plain = run(cfg, data=TOY)
    decayed = run(cfg.replace(weight_decay=0.05), data=TOY)
    assert decayed["history"]["weight_norm"][-1] < plain["history"]["weight_norm"][-1]
    assert plain["history"]["effective_decay"] == [0.0]
    assert decayed["history"]["effective_decay"] == [0.05]  # eta = 1, d = eta * lambda


@pytest.mark.parametrize(
    ("optimizer", "convention", "expected"),
    [("adamw", "schedule", lambda lr, eta, lam: eta * lam),
     ("adamw", "lr", lambda lr, eta, lam: lr * eta * lam),
     ("sgdw", "constant", lambda lr, eta, lam: lam),
     ("sgd", "schedule", lambda lr, eta, lam: lr * eta * lam)],
)
def test_effective_decay_follows_convention(optimizer, convention, expected):
    cfg = _cfg(optimizer=optimizer, decay_convention=convention, lr=0.01,
               weight_decay=0.02, epochs=2, schedule="linear")
    h = run(cfg, data=TOY)["history"]
    for eta, d in zip(h["eta"], h["effective_decay"]):
        assert d == pytest.approx(expected(cfg.lr, eta, cfg.weight_decay), rel=1e-12)


# ----------------------------------------------------------------------------- schedules


def test_steps_per_epoch_is_ceil():
    assert train.steps_per_epoch(4000, 128) == 32
    assert train.steps_per_epoch(4096, 128) == 32
    assert train.steps_per_epoch(4097, 128) == 33
    with pytest.raises(ValueError, match="batch_size"):
        train.steps_per_epoch(10, 0)


@pytest.mark.parametrize(
    ("kw", "checks"),
    [
        (dict(schedule="fixed"), {0: 1.0, 599: 1.0}),
        (dict(schedule="step", milestones=(3, 6)), {29: 1.0, 30: 0.1, 60: 0.01}),
        (dict(schedule="step"), {29: 1.0, 30: 0.1, 60: 0.01, 80: 1e-3}),  # 30/60/80 %
        (dict(schedule="linear"), {0: 1.0, 50: 0.5, 100: 0.0}),
        (dict(schedule="cosine"), {0: 1.0, 50: 0.5, 100: 0.0}),
        (dict(schedule="restarts", T_0=2, T_mult=2), {0: 1.0, 10: 0.5, 20: 1.0, 40: 0.5,
                                                      60: 1.0}),
        (dict(schedule="restarts", T_0=0.5, T_mult=1), {0: 1.0, 5: 1.0}),
    ],
)
def test_schedule_is_built_in_updates(kw, checks):
    cfg = _cfg(epochs=10, **kw)
    schedule = train.build_schedule(cfg, spe=10)  # 10 updates per epoch, 100 in all
    for t, eta in checks.items():
        assert schedule(t) == pytest.approx(eta, abs=1e-12), t


def test_history_eta_is_that_of_each_epochs_last_update():
    cfg = _cfg(epochs=3, schedule="cosine")
    spe = train.steps_per_epoch(N_TRAIN, BATCH)
    schedule = train.build_schedule(cfg, spe)
    h = run(cfg, data=TOY)["history"]
    assert h["eta"] == pytest.approx([schedule(e * spe - 1) for e in (1, 2, 3)], rel=1e-12)


# ----------------------------------------------------------------------------- normalized


def test_normalized_decay_sets_lambda_per_restart():
    import weightdecay

    lam_norm = 0.05
    cfg = _cfg(optimizer="sgdw", lr=0.05, schedule="restarts", T_0=1, T_mult=2,
               weight_decay_norm=lam_norm, weight_decay=123.0, epochs=3)
    h = run(cfg, data=TOY)["history"]
    lam = [d / eta for d, eta in zip(h["effective_decay"], h["eta"])]

    def expected(period_epochs):
        return weightdecay.normalized_weight_decay(lam_norm, BATCH, N_TRAIN, period_epochs)

    # period 0 is epoch 1 (T_0 = 1), period 1 is epochs 2-3 (T_1 = 2): lambda drops by sqrt 2
    assert lam[0] == pytest.approx(expected(1), rel=1e-9)
    assert lam[1] == pytest.approx(expected(2), rel=1e-9)
    assert lam[2] == pytest.approx(expected(2), rel=1e-9)
    assert lam[0] / lam[2] == pytest.approx(math.sqrt(2), rel=1e-9)
    # weight_decay is ignored when weight_decay_norm is set
    assert _same(run(cfg.replace(weight_decay=0.0), data=TOY), run(cfg, data=TOY))


def test_normalized_decay_without_restarts_uses_run_length():
    import weightdecay

    cfg = _cfg(optimizer="adamw", schedule="fixed", weight_decay_norm=0.025, epochs=2)
    h = run(cfg, data=TOY)["history"]
    lam = weightdecay.normalized_weight_decay(0.025, BATCH, N_TRAIN, 2)
    assert h["effective_decay"] == pytest.approx([lam, lam], rel=1e-9)


# ----------------------------------------------------------------------------- the rest


def test_real_dataset_is_loaded_once_and_cached(monkeypatch):
    import weightdecay.harness.data as data_mod

    calls = []
    real = data_mod.load_dataset

    def counting(*a, **kw):
        calls.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(data_mod, "load_dataset", counting)
    from weightdecay.harness import build

    monkeypatch.setattr(build, "_DATASET_CACHE", {})
    cfg = RunConfig(dataset="digits", model="mlp", optimizer="adamw", lr=3e-3, epochs=2,
                    batch_size=64)
    a = run(cfg)
    b = run(cfg)
    assert len(calls) == 1
    assert _same(a, b)
    assert a["final_test_error"] < 0.5  # digits: chance is 0.9


def test_progress_bar(capsys):
    run(_cfg(epochs=1), data=TOY, progress=True)
    err = capsys.readouterr().err
    assert "1/1" in err and "epoch" in err


def test_decay_variants_reach_the_optimizer():
    """RunConfig's cautious / l1 / scale_invariant_only / corrected land in the optimizer."""
    import torch

    from weightdecay.harness.build import build_optimizer
    from weightdecay.harness.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn1d_bn", TOY)
    cfg = _cfg(model="cnn1d_bn", scale_invariant_only=True, cautious=True, l1=1e-4,
               decay_convention="corrected")
    with pytest.raises(ValueError, match="example_input"):
        build_optimizer(cfg, model)
    opt = build_optimizer(cfg, model, example_input=TOY.x_train[:BATCH])
    decayed = [p for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert len(decayed) == len(convs) and all(any(p is c for c in convs) for p in decayed)
    assert all(g["cautious"] and g["l1"] == 1e-4 and g["decay_convention"] == "corrected"
               for g in opt.param_groups)
    rec = run(cfg.replace(epochs=1), data=TOY)
    assert math.isfinite(rec["final_test_error"])
    with pytest.raises(ValueError, match="cautious"):
        _cfg(optimizer="adam", cautious=True)
    mlp = build_model("mlp", TOY)  # no normalization: nothing to decay is refused, not silent
    from weightdecay.harness.build import RunSetupError

    with pytest.raises(RunSetupError, match="nothing would be decayed"):
        build_optimizer(_cfg(scale_invariant_only=True), mlp, example_input=TOY.x_train[:BATCH])
    # lambda = 0 (a grid's no-decay row) on a model that has scale-invariant weights builds
    opt = build_optimizer(cfg.replace(weight_decay=0.0), model, example_input=TOY.x_train[:BATCH])
    assert all(g["weight_decay"] == 0 for g in opt.param_groups)

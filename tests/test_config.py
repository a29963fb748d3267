"""RunConfig: validation table, JSON round trip, stable key."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from weightdecay import DECAY_CONVENTIONS
from weightdecay.harness.config import (
    DATASETS,
    MODELS,
    OPTIMIZERS,
    SCHEDULES,
    RunConfig,
    default_milestones,
)

# (field, bad value, text the message must contain)
INVALID = [
    ("dataset", "mnist", "mnist1d"),
    ("model", "resnet50", "cnn1d_bn"),
    ("optimizer", "rmsprop", "sgdw"),
    ("optimizer", "AdamW", "adamw"),
    ("schedule", "cosine_restarts", "restarts"),
    ("decay_convention", "torch", "schedule"),
    ("lr", 0.0, "lr"),
    ("lr", -1e-3, "lr"),
    ("lr", float("nan"), "lr"),
    ("lr", float("inf"), "lr"),
    ("lr", "0.1", "lr"),
    ("lr", True, "lr"),
    ("weight_decay", -1e-4, "weight_decay"),
    ("weight_decay", float("nan"), "weight_decay"),
    ("weight_decay_norm", -0.025, "weight_decay_norm"),
    ("weight_decay_norm", float("inf"), "weight_decay_norm"),
    ("epochs", 0, "epochs"),
    ("epochs", -3, "epochs"),
    ("epochs", 2.5, "epochs"),
    ("batch_size", 0, "batch_size"),
    ("batch_size", 12.0, "batch_size"),
    ("seed", -1, "seed"),
    ("seed", 1.5, "seed"),
    ("T_0", 0, "T_0"),
    ("T_0", -2.0, "T_0"),
    ("T_0", float("nan"), "T_0"),
    ("T_mult", 0.0, "T_mult"),
    ("T_mult", -1.0, "T_mult"),
    ("T_mult", 0.5, "T_mult"),
    ("drop_factor", 0.0, "drop_factor"),
    ("drop_factor", float("nan"), "drop_factor"),
    ("momentum", 1.0, "momentum"),
    ("momentum", -0.1, "momentum"),
    ("milestones", (30, 20), "milestones"),
    ("milestones", (0, 10), "milestones"),
    ("milestones", (10, float("nan")), "milestones"),
    ("milestones", ("a",), "milestones"),
    ("device", "gpu", "device"),
    ("device", "cuda:x", "device"),
    ("decay_all", 1, "decay_all"),
]


@pytest.mark.parametrize(("field", "value", "needle"), INVALID)
def test_invalid_field_raises_naming_field_and_value(field, value, needle):
    with pytest.raises(ValueError) as info:
        RunConfig(**{field: value})
    msg = str(info.value)
    assert field in msg
    assert needle in msg
    if not (isinstance(value, float) and math.isnan(value)):
        assert repr(value) in msg or str(value) in msg


@pytest.mark.parametrize(
    ("field", "valid"),
    [("dataset", DATASETS), ("model", MODELS), ("optimizer", OPTIMIZERS),
     ("schedule", SCHEDULES), ("decay_convention", DECAY_CONVENTIONS)],
)
def test_unknown_name_lists_all_valid_names(field, valid):
    with pytest.raises(ValueError) as info:
        RunConfig(**{field: "nope"})
    for name in valid:
        assert name in str(info.value)


def test_restarts_needs_T_0():
    with pytest.raises(ValueError, match="T_0"):
        RunConfig(schedule="restarts")
    RunConfig(schedule="restarts", T_0=2)
    RunConfig(schedule="cosine")  # T_0 ignored otherwise


def test_validate_catches_mutation():
    cfg = RunConfig()
    cfg.lr = -1.0
    with pytest.raises(ValueError, match="lr"):
        cfg.validate()


@pytest.mark.parametrize("field", ["dataset", "model", "optimizer", "schedule"])
def test_valid_names_accepted(field):
    valid = {"dataset": DATASETS, "model": MODELS, "optimizer": OPTIMIZERS,
             "schedule": SCHEDULES}[field]
    for name in valid:
        extra = {"T_0": 1.0} if name == "restarts" else {}
        assert getattr(RunConfig(**{field: name}, **extra), field) == name


def test_every_library_decay_convention_is_accepted():
    # the library owns the names (weightdecay.DECAY_CONVENTIONS, "corrected" included)
    import weightdecay

    assert tuple(DECAY_CONVENTIONS) == tuple(weightdecay.DECAY_CONVENTIONS)
    assert "corrected" in DECAY_CONVENTIONS
    for name in DECAY_CONVENTIONS:
        assert RunConfig(decay_convention=name).decay_convention == name


def test_contract_field_names():
    expected = {
        "dataset", "model", "optimizer", "lr", "weight_decay", "weight_decay_norm",
        "decay_convention", "schedule", "T_0", "T_mult", "milestones", "drop_factor",
        "epochs", "batch_size", "seed", "device", "momentum", "decay_all",
        "width", "test_size", "eval_every", "cautious", "l1", "scale_invariant_only",
        "compile", "source_hash", "decay_subset", "monitor_every",
    }
    assert set(RunConfig.field_names()) == expected
    cfg = RunConfig()
    assert cfg.dataset == "mnist1d" and cfg.model == "cnn1d_bn"
    assert cfg.decay_convention == "schedule" and cfg.T_mult == 2.0
    assert cfg.drop_factor == 0.1 and cfg.device == "cpu" and cfg.momentum == 0.9
    assert cfg.decay_all is True


def test_round_trip_through_json():
    cfg = RunConfig(optimizer="sgdw", lr=0.05, weight_decay=1e-3, weight_decay_norm=0.025,
                    schedule="restarts", T_0=2.5, T_mult=1.5, milestones=[3, 6],
                    epochs=12, batch_size=64, seed=7, decay_all=False)
    d = cfg.to_dict()
    assert d["milestones"] == [3, 6]
    back = RunConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg
    assert back.milestones == (3, 6)
    assert back.key() == cfg.key()


def test_from_dict_rejects_unknown_keys_naming_them():
    d = RunConfig().to_dict()
    d["learning_rate"] = 0.1
    d["zeta"] = 1
    with pytest.raises(ValueError) as info:
        RunConfig.from_dict(d)
    assert "learning_rate" in str(info.value) and "zeta" in str(info.value)


def test_from_dict_defaults_and_validates():
    assert RunConfig.from_dict({}) == RunConfig()
    with pytest.raises(ValueError, match="epochs"):
        RunConfig.from_dict({"epochs": 0})


def test_key_is_stable_and_sensitive():
    a = RunConfig(lr=0.1, optimizer="sgdw")
    assert a.key() == RunConfig(optimizer="sgdw", lr=0.1).key()
    assert len(a.key()) == 16 and int(a.key(), 16) >= 0
    assert a.key() != a.replace(lr=0.2).key()
    assert a.key() != a.replace(seed=1).key()
    assert a.key(extra={"experiment": "fig2"}) != a.key()
    assert a.key(extra={"experiment": "fig2"}) != a.key(extra={"experiment": "fig1"})
    # int and float spellings of the same real number hash alike
    assert RunConfig(lr=1).key() == RunConfig(lr=1.0).key()


def test_key_is_stable_across_processes():
    cfg = RunConfig(optimizer="adam", lr=3e-4, weight_decay=1e-5, seed=3)
    code = (
        "from weightdecay.harness.config import RunConfig;"
        "print(RunConfig(optimizer='adam', lr=3e-4, weight_decay=1e-5, seed=3).key())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == cfg.key()


def test_default_milestones_are_30_60_80_percent():
    assert default_milestones(100) == (30, 60, 80)
    assert default_milestones(10) == (3, 6, 8)
    assert default_milestones(1) == (1,)
    assert RunConfig(epochs=100).resolved_milestones() == (30, 60, 80)
    assert RunConfig(epochs=100, milestones=[50]).resolved_milestones() == (50,)


def test_replace_validates():
    with pytest.raises(ValueError, match="batch_size"):
        RunConfig().replace(batch_size=-1)


def test_config_import_is_light():
    code = (
        "import sys; import weightdecay.harness.config;"
        "bad = [m for m in ('optuna', 'matplotlib', 'torch') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_keys_of_configs_planned_before_the_new_fields_do_not_change():
    # keys computed before width/test_size/eval_every existed (stores and checkpoints
    # made then must still match their runs); a field set away from its default changes it
    assert RunConfig().key() == "51a9f9c35e4ab70f"
    cfg = RunConfig(optimizer="sgdw", lr=0.25, weight_decay=2**-7, schedule="restarts", T_0=2)
    assert cfg.key({"experiment": "fig2"}) == "84e947d3a78d200f"
    keys = {RunConfig(**kw).key() for kw in ({}, {"width": 16}, {"test_size": 5000},
                                              {"eval_every": 5}, {"compile": False})}
    assert len(keys) == 5
    assert RunConfig(compile=True).key() == RunConfig().key()  # compiled: the default


@pytest.mark.parametrize("field,value,match", [
    ("width", 0, "width"), ("width", 2.0, "width"), ("test_size", 0, "test_size"),
    ("test_size", 10**6, "test_size"), ("eval_every", 0, "eval_every"),
    ("compile", 1, "compile"), ("compile", "no", "compile"),
])
def test_new_fields_are_validated(field, value, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**{field: value})


def test_test_size_is_for_generated_data_only():
    with pytest.raises(ValueError, match="only available for dataset 'mnist1d'"):
        RunConfig(dataset="digits", model="resnet_small", test_size=500)

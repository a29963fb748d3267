"""Scale-invariance-aware decay groups: which weights a following normalization makes
scale-invariant (f(c*W) = f(W), c > 0), on the harness's models and small ones."""

from __future__ import annotations

import copy

import pytest
import torch

import weightdecay as wd
from weightdecay.harness.models import build_model

MODELS = [  # name, input shape, the weights a normalization makes scale-invariant
    ("cnn1d_bn", (1, 40), {"features.0.weight", "features.3.weight", "features.6.weight"}),
    ("cnn1d", (1, 40), set()),
    ("mlp", (1, 40), set()),
    ("resnet_small", (3, 32, 32), {"stem.0.weight"} | {
        f"blocks.{i}.conv{j}.weight" for i in range(9) for j in (1, 2)} | {
        "blocks.3.shortcut.0.weight", "blocks.6.shortcut.0.weight"}),
]


def _output(model, x, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(x).double()


def _relative_change(model, name, x, c, before):
    """f(c*W) against f(W) = ``before``, in train mode (batch statistics)."""
    model = copy.deepcopy(model).train()
    with torch.no_grad():
        dict(model.named_parameters())[name].mul_(c)
    after = _output(model, x)
    return ((after - before).abs().max() / before.abs().max()).item()


@pytest.mark.parametrize("name,shape,expected", MODELS, ids=[m[0] for m in MODELS])
def test_finds_the_scale_invariant_weights_of_the_harness_models(name, shape, expected):
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=10).eval()
    x = torch.randn(8 if name == "resnet_small" else 16, *shape)
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    found = wd.find_scale_invariant_weights(model, x)
    assert set(found.invariant) == expected and found.rejected == []
    # nothing changed: weights, BatchNorm running statistics, modes, the random state
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not any(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    # the invariance holds for what it found, and not for the other weights
    weights = [n for n, p in model.named_parameters() if p.ndim >= 2]
    assert set(found.errors) == set(weights)
    before = _output(copy.deepcopy(model).train(), x)
    for weight in weights:
        change = _relative_change(model, weight, x, 3.0, before)
        if weight in expected:
            assert change <= 1e-3, (weight, change)
        else:
            assert change > 0.05, (weight, change)


def test_structure_proposes_and_the_probe_decides():
    """Linear with bias -> LayerNorm: structurally a candidate, numerically not invariant
    (the bias does not scale); without bias, and conv -> GroupNorm, invariant; dropout
    between the normalization and the head does not disturb the probe."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(),
        torch.nn.Linear(8, 8, bias=False), torch.nn.LayerNorm(8), torch.nn.Dropout(0.3),
        torch.nn.Unflatten(1, (2, 4)), torch.nn.Conv1d(2, 4, 3, padding=1, bias=False),
        torch.nn.GroupNorm(2, 4), torch.nn.Flatten(), torch.nn.Linear(16, 2))
    found = wd.find_scale_invariant_weights(model, torch.randn(5, 6))
    assert found.errors["0.weight"] > 1e-2
    assert found.invariant == ["3.weight", "7.weight"]
    assert found.rejected == ["0.weight"]
    assert found.normalizer == {"0.weight": "1", "3.weight": "4", "7.weight": "8"}
    assert "0.weight: followed by 1 but not invariant" in str(found)


def test_scale_invariant_groups(caplog):
    torch.manual_seed(0)
    model = build_model("cnn1d_bn", input_shape=(1, 40), num_classes=10)
    x = torch.randn(16, 1, 40)
    with caplog.at_level("INFO", logger="weightdecay"):
        groups = wd.param_groups_weight_decay(model, 0.05, scale_invariant_only=True,
                                              example_input=x, other_weight_decay=0.01)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.01, 0.0]
    assert groups[0]["param_names"] == ["features.0.weight", "features.3.weight",
                                        "features.6.weight"]
    assert groups[1]["param_names"] == ["head.weight"]
    assert all(n.endswith(".bias") or n.startswith("features.") for n in
               groups[2]["param_names"])
    summary = str(groups.summary)
    assert "decay (scale-invariant): 3 tensors" in summary and "other weights: 1" in summary
    assert "scale-invariant weights: 3 of 4 probed" in caplog.text
    assert groups.summary.scale_invariance.invariant == groups[0]["param_names"]
    opt = wd.AdamW(groups, lr=1e-3)  # usable as they are
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.01, 0.0]
    # a model without normalization: nothing is scale-invariant, the weights go to "other"
    mlp = build_model("mlp", input_shape=(1, 40), num_classes=10)
    groups = wd.param_groups_weight_decay(mlp, 0.05, scale_invariant_only=True,
                                          example_input=x)
    assert [g["weight_decay"] for g in groups] == [0.0, 0.0]
    assert len(groups[0]["param_names"]) == 3


def test_scale_invariant_groups_refuse_bad_arguments():
    model = build_model("mlp", input_shape=(1, 40), num_classes=10)
    with pytest.raises(ValueError, match="needs example_input"):
        wd.param_groups_weight_decay(model, 0.05, scale_invariant_only=True)
    with pytest.raises(ValueError, match="scale_invariant_only=True only"):
        wd.param_groups_weight_decay(model, 0.05, example_input=torch.randn(2, 1, 40))
    with pytest.raises(ValueError, match="other_weight_decay"):
        wd.param_groups_weight_decay(model, 0.05, scale_invariant_only=True,
                                     example_input=torch.randn(2, 1, 40),
                                     other_weight_decay=-1.0)
    with pytest.raises(ValueError, match="rtol"):
        wd.find_scale_invariant_weights(model, torch.randn(2, 1, 40), rtol=0.0)

"""Tests for weightdecay.harness.models: shapes, parameter counts, BN, Shake-Shake, helpers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from weightdecay.harness.data import Dataset, load_dataset
from weightdecay.harness.models import (
    CNN1d,
    ShakeShakeBlock,
    ShakeShakeResNet,
    build_model,
    count_parameters,
    default_model,
    shake_shake,
    weight_norm,
)
from weightdecay.registry import DATASETS, MODELS

torch.set_num_threads(1)

MNIST1D, DIGITS, CIFAR = (1, 40), (1, 8, 8), (3, 32, 32)

# model x compatible input shape (the datasets' shapes)
COMPATIBLE = [
    ("cnn1d_bn", MNIST1D),
    ("cnn1d", MNIST1D),
    ("mlp", MNIST1D),
    ("mlp", DIGITS),
    ("mlp", CIFAR),
    ("resnet_small", DIGITS),
    ("resnet_small", CIFAR),
    ("shakeshake26_2x64d", DIGITS),
    ("shakeshake26_2x64d", CIFAR),
]


def fake_dataset(shape, num_classes=10, n=4):
    x = torch.randn(n, *shape)
    y = torch.arange(n) % num_classes
    return Dataset("fake", x, y, x, y, num_classes=num_classes, input_shape=shape)


@pytest.mark.parametrize("name, shape", COMPATIBLE)
def test_forward_shapes_train_and_eval(name, shape):
    torch.manual_seed(0)
    model = build_model(name, fake_dataset(shape, num_classes=7))
    x = torch.randn(3, *shape)
    assert model(x).shape == (3, 7)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_every_registered_model_is_covered():
    assert {name for name, _ in COMPATIBLE} == set(MODELS)


@pytest.mark.parametrize(
    "name, low, high",
    [("cnn1d_bn", 5_000, 50_000), ("cnn1d", 5_000, 50_000), ("mlp", 5_000, 100_000),
     ("resnet_small", 20_000, 300_000)],
)
def test_small_models_are_small(name, low, high):
    shape = DIGITS if name == "resnet_small" else MNIST1D
    assert low <= count_parameters(build_model(name, input_shape=shape, num_classes=10)) <= high


def test_cnn1d_parameter_count_exact():
    # 3 convs of 32 channels, kernel 5: 1*32*5 + 2 * 32*32*5 (no bias with BN), 3 BN (2*32
    # each), head 32*10 + 10.
    bn = 1 * 32 * 5 + 2 * 32 * 32 * 5 + 3 * 2 * 32 + 32 * 10 + 10
    assert count_parameters(build_model("cnn1d_bn", input_shape=MNIST1D, num_classes=10)) == bn
    plain = 1 * 32 * 5 + 2 * 32 * 32 * 5 + 3 * 32 + 32 * 10 + 10
    assert count_parameters(build_model("cnn1d", input_shape=MNIST1D, num_classes=10)) == plain


def shake_shake_param_formula(width=64, n=4, in_ch=3, classes=10):
    """Parameter count of Shake-Shake depth 6n+2, 2xWd, computed by hand."""
    total = in_ch * 16 * 9 + 2 * 16  # stem conv + BN
    c = 16
    for out in (width, 2 * width, 4 * width):
        for i in range(n):
            branch = c * out * 9 + out * out * 9 + 2 * 2 * out
            total += 2 * branch
            if i == 0:  # two 1x1 convs to out/2 channels + BN over out channels
                total += 2 * c * (out // 2) + 2 * out
            c = out
    return total + c * classes + classes


def test_shakeshake26_2x64d_parameter_count():
    model = build_model("shakeshake26_2x64d", input_shape=CIFAR, num_classes=10)
    count = count_parameters(model)
    assert count == shake_shake_param_formula() == 11_653_978
    assert 11.4e6 <= count <= 11.8e6  # the paper's "11.6M"
    blocks = [m for m in model.modules() if isinstance(m, ShakeShakeBlock)]
    assert len(blocks) == 12  # 3 stages x 4 blocks: 26 = 12 blocks x 2 convs + stem + head
    widths = sorted({b.branch1[1].out_channels for b in blocks})
    assert widths == [64, 128, 256]


def test_shakeshake_other_sizes_match_formula():
    model = build_model("shakeshake26_2x64d", input_shape=CIFAR, num_classes=10,
                        depth=14, width=8)
    assert count_parameters(model) == shake_shake_param_formula(width=8, n=2)


def test_cnn1d_bn_has_batchnorm_after_every_conv_and_cnn1d_has_none():
    bn = build_model("cnn1d_bn", input_shape=MNIST1D, num_classes=10)
    plain = build_model("cnn1d", input_shape=MNIST1D, num_classes=10)
    layers = list(bn.features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv1d)]
    assert len(convs) == 3
    assert all(isinstance(layers[i + 1], nn.BatchNorm1d) for i in convs)
    assert all(layers[i].bias is None for i in convs)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in plain.modules())
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv1d))


def test_cnn1d_bn_conv_weights_are_scale_invariant():
    torch.manual_seed(0)
    x = torch.randn(16, *MNIST1D)
    for name, invariant in (("cnn1d_bn", True), ("cnn1d", False)):
        model = build_model(name, input_shape=MNIST1D, num_classes=10)
        before = model(x)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Conv1d):
                    m.weight.mul_(3.0)
        after = model(x)
        assert torch.allclose(before, after, atol=1e-4) == invariant, name


def test_shake_shake_function_forward_alpha_backward_beta():
    x1 = torch.randn(4, 2, 3, 3, requires_grad=True)
    x2 = torch.randn(4, 2, 3, 3, requires_grad=True)
    alpha = torch.rand(4, 1, 1, 1)
    beta = torch.rand(4, 1, 1, 1)
    out = shake_shake(x1, x2, alpha, beta)
    assert torch.allclose(out, alpha * x1 + (1 - alpha) * x2)
    g = torch.randn_like(out)
    out.backward(g)
    assert torch.allclose(x1.grad, beta * g) and torch.allclose(x2.grad, (1 - beta) * g)


def _block_parts(block, x):
    with torch.no_grad():
        return block.branch1(x), block.branch2(x), block.shortcut(x)


@pytest.mark.parametrize("cin, cout, stride", [(8, 8, 1), (4, 8, 2), (4, 8, 1)])
def test_shake_block_eval_averages_and_train_draws_alpha_per_image(cin, cout, stride):
    torch.manual_seed(0)
    block = ShakeShakeBlock(cin, cout, stride).double()  # float64: alpha is recovered by division
    x = torch.randn(6, cin, 8, 8, dtype=torch.float64)
    block.eval()  # BN with running stats, identical in the three calls below
    b1, b2, skip = _block_parts(block, x)
    with torch.no_grad():
        out = block(x)
    assert torch.allclose(out, 0.5 * (b1 + b2) + skip, atol=1e-6)
    assert skip.shape == out.shape == (6, cout, 8 // stride, 8 // stride)

    block.training = True  # mix with the training rule; branch BNs stay in eval mode
    with torch.no_grad():
        mixed = block(x)
    alpha = (mixed - skip - b2) / (b1 - b2)
    per_image = alpha.flatten(1)
    spread = per_image.max(1).values - per_image.min(1).values
    assert spread.max() < 1e-8  # one alpha per image
    a = per_image.median(1).values
    assert ((a >= 0) & (a <= 1)).all() and a.std() > 0.05  # uniform, different per image


def test_shake_shake_net_train_is_random_eval_is_deterministic():
    torch.manual_seed(0)
    model = ShakeShakeResNet(3, 10, depth=8, width=4)
    x = torch.randn(4, *CIFAR)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    c = model(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("shake_backward", [False, True])
def test_backward_uses_alpha_only_without_shake_backward(shake_backward):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 6, 6)
    block = ShakeShakeBlock(8, 8, 1, shake_backward=shake_backward)
    block.eval()
    block.training = True  # shake mixing, fixed BN statistics
    # gradient w.r.t. the two branch outputs equals (alpha, 1 - alpha) when beta = alpha
    captured = {}
    h1 = block.branch1.register_forward_hook(lambda m, i, o: captured.setdefault("b1", o))
    h2 = block.branch2.register_forward_hook(lambda m, i, o: captured.setdefault("b2", o))
    out = block(x)
    h1.remove()
    h2.remove()
    b1, b2 = captured["b1"], captured["b2"]
    b1.retain_grad()
    b2.retain_grad()
    out.sum().backward()
    alpha = ((out - x - b2) / (b1 - b2)).detach().flatten(1).median(1).values
    grad_weight = b1.grad.flatten(1).mean(1)  # beta per image
    assert torch.allclose(grad_weight, alpha, atol=1e-3) != shake_backward
    assert torch.allclose(b1.grad + b2.grad, torch.ones_like(b1.grad), atol=1e-6)


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="resnet50") as e:
        build_model("resnet50", input_shape=CIFAR, num_classes=10)
    for name in MODELS:
        assert name in str(e.value)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("cnn1d_bn", {"input_shape": CIFAR, "num_classes": 10}, r"cnn1d_bn.*1-D"),
        ("resnet_small", {"input_shape": MNIST1D, "num_classes": 10}, r"resnet_small.*images"),
        ("shakeshake26_2x64d", {"input_shape": MNIST1D, "num_classes": 10}, "shakeshake"),
        ("mlp", {"input_shape": MNIST1D}, "num_classes"),
        ("mlp", {"num_classes": 10}, "input_shape"),
        ("mlp", {"input_shape": (1, 0), "num_classes": 10}, "input_shape"),
        ("mlp", {"input_shape": MNIST1D, "num_classes": 0}, "num_classes"),
        ("mlp", {"input_shape": MNIST1D, "num_classes": 10, "hidden": 0}, "hidden"),
        ("mlp", {"input_shape": MNIST1D, "num_classes": 10, "depth": 3}, r"bad options.*mlp"),
        ("cnn1d", {"input_shape": MNIST1D, "num_classes": 10, "kernel_size": 4}, "kernel_size"),
        ("shakeshake26_2x64d", {"input_shape": CIFAR, "num_classes": 10, "depth": 27}, "depth"),
    ],
)
def test_bad_arguments_raise_value_error(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, **kwargs)


@pytest.mark.parametrize("name, shape", [("cnn1d_bn", MNIST1D), ("mlp", DIGITS),
                                         ("resnet_small", DIGITS)])
def test_init_is_deterministic_under_manual_seed(name, shape):
    def state(seed):
        torch.manual_seed(seed)
        return build_model(name, input_shape=shape, num_classes=10).state_dict()

    a, b, c = state(0), state(0), state(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_shakeshake_init_is_deterministic_under_manual_seed():
    def params(seed):
        torch.manual_seed(seed)
        return torch.nn.utils.parameters_to_vector(
            ShakeShakeResNet(3, 10, depth=8, width=8).parameters())

    assert torch.equal(params(0), params(0)) and not torch.equal(params(0), params(1))


def test_weight_norm_is_l2_norm_of_all_parameters():
    torch.manual_seed(0)
    model = build_model("cnn1d_bn", input_shape=MNIST1D, num_classes=10)
    flat = torch.cat([p.detach().flatten().double() for p in model.parameters()])
    assert math.isclose(weight_norm(model), flat.norm().item(), rel_tol=1e-12)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    assert math.isclose(weight_norm(model), 2 * flat.norm().item(), rel_tol=1e-6)
    model.features[1].running_mean.fill_(1e6)  # buffers do not count
    assert math.isclose(weight_norm(model), 2 * flat.norm().item(), rel_tol=1e-6)
    assert weight_norm(nn.ReLU()) == 0.0


def test_default_models():
    assert default_model("mnist1d") == "cnn1d_bn"
    assert {default_model(name) for name in DATASETS} <= set(MODELS)
    with pytest.raises(ValueError, match="imagenet"):
        default_model("imagenet")


@pytest.mark.parametrize("name, shape, option", [("cnn1d_bn", MNIST1D, "channels"),
                                                 ("mlp", DIGITS, "hidden"),
                                                 ("resnet_small", DIGITS, "width")])
def test_width_sets_the_models_own_width_option(name, shape, option):
    def count(**kw):
        torch.manual_seed(0)
        return count_parameters(build_model(name, input_shape=shape, num_classes=10, **kw))

    assert count(width=4) == count(**{option: 4}) < count()
    if option != "width":
        with pytest.raises(ValueError, match="not both"):
            build_model(name, input_shape=shape, num_classes=10, width=4, **{option: 4})


def test_mlp_learns_digits():
    """A short end-to-end check that data + model train: a few epochs on digits."""
    torch.manual_seed(0)
    ds = load_dataset("digits")
    model = build_model("mlp", ds)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        model.train()
        for x, y in ds.batches(64, generator=g):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(ds.x_test).argmax(1) == ds.y_test).float().mean().item()
    assert acc > 0.9


@pytest.mark.parametrize("name, shape", [("resnet_small", DIGITS), ("cnn1d_bn", MNIST1D)])
def test_model_can_fit_a_small_batch(name, shape):
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=10)
    x, y = torch.randn(32, *shape), torch.arange(32) % 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


# ----------------------------------------------------------------------------- layouts


def _reference_cnn1d(model: CNN1d) -> nn.Module:
    """The same network from torch's own Conv1d / BatchNorm1d on (B, C, L), same state."""
    layers = []
    for m in model.features:
        if isinstance(m, nn.Conv1d):
            layers.append(nn.Conv1d(m.in_channels, m.out_channels, m.kernel_size,
                                    padding=m.padding, bias=m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            layers.append(nn.BatchNorm1d(m.num_features))
        else:
            layers.append(nn.ReLU())

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.head = nn.Sequential(*layers), nn.Linear(*model.head.weight.T.shape)

        def forward(self, x):
            return self.head(self.features(x).mean(dim=-1))

    ref = Reference().to(next(model.parameters()).dtype)
    ref.load_state_dict(model.state_dict())
    return ref


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_cnn1d_channels_last_is_the_same_network(batch_norm, in_channels):
    """The (B, C, 1, L) channels-last layout computes torch's Conv1d/BatchNorm1d network
    (float64: to rounding), with the same state_dict, running statistics and gradients."""
    torch.manual_seed(0)
    model = CNN1d(in_channels, 10, channels=8, batch_norm=batch_norm).double()
    assert model.channels_last
    ref = _reference_cnn1d(model)
    assert list(ref.state_dict()) == list(model.state_dict())
    x = torch.randn(16, in_channels, 40, dtype=torch.float64)
    for mode in ("train", "eval", "train"):
        model.train(mode == "train")
        ref.train(mode == "train")
        out, expected = model(x), ref(x)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        out.square().sum().backward()
        expected.square().sum().backward()
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_cnn1d_without_channels_last_is_torchs_network_bit_for_bit():
    torch.manual_seed(0)
    model = CNN1d(1, 10, channels_last=False)
    ref = _reference_cnn1d(model)
    x = torch.randn(16, 1, 40)
    assert torch.equal(model(x), ref(x))
    with pytest.raises(ValueError, match="channels_last"):
        CNN1d(1, 10, channels_last=1)


def test_cnn1d_channels_last_keeps_its_conv_weights_scale_invariant():
    import weightdecay

    torch.manual_seed(0)
    model = build_model("cnn1d_bn", input_shape=MNIST1D, num_classes=10)
    found = weightdecay.find_scale_invariant_weights(model, torch.randn(32, *MNIST1D))
    assert found.invariant == ["features.0.weight", "features.3.weight", "features.6.weight"]

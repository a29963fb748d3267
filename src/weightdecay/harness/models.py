"""Models for the experiment harness, built by name with :func:`build_model` (the names and
their builders: :data:`weightdecay.registry.MODELS`).

=====================  =================  =============================================
name                   inputs             what it is
=====================  =================  =============================================
``cnn1d_bn``           ``(C, L)``         3 x [Conv1d(k=5) -> BatchNorm1d -> ReLU], global
                                          average pool, linear head (~11k params). The
                                          BN makes each conv's weights scale-invariant,
                                          as in the paper's ResNets: decay then acts on
                                          the effective learning rate.
``cnn1d``              ``(C, L)``         the same without BatchNorm (convs keep biases).
``mlp``                any                flatten, 2 hidden ReLU layers, linear head.
``resnet_small``       ``(C, H, W)``      CIFAR-style ResNet-20 (He et al. 2016) with
                                          widths 8/16/32 (~68k params); works for 8x8
                                          digits and 32x32 CIFAR-10.
``shakeshake26_2x64d`` ``(C, H, W)``      the paper's 26 2x64d Shake-Shake ResNet
                                          (Gastaldi 2017; 11.65M params for CIFAR-10).
=====================  =================  =============================================

Loshchilov & Hutter (ICLR 2019) run all CIFAR-10 experiments on the 26 2x64d Shake-Shake
net; the small models make the same experiments quick on MNIST-1D and digits.

Example::

    model = build_model("cnn1d_bn", dataset)              # or
    model = build_model("mlp", input_shape=(1, 40), num_classes=10, hidden=128)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import registry

if TYPE_CHECKING:
    from weightdecay.harness.data import Dataset

__all__ = [
    "CNN1d",
    "BatchNorm1dAs2d",
    "Conv1dAs2d",
    "ShakeShakeBlock",
    "ShakeShakeResNet",
    "build_model",
    "count_parameters",
    "default_model",
    "shake_shake",
    "weight_norm",
]


def _check_positive_int(arg: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{arg} must be a positive int, got {value!r}")
    return value


# --------------------------------------------------------------------------- 1-D CNN / MLP


class Conv1dAs2d(nn.Conv1d):
    """A :class:`torch.nn.Conv1d` (same parameters, same ``state_dict``) that also takes a
    ``(B, C, 1, L)`` input, computed as the 2-D convolution with kernel ``(1, k)`` and
    returned in channels-last memory order: the same numbers up to float rounding, and on
    CPU the layout in which oneDNN convolves short signals fastest
    (``benchmarks/bench_levers.py``). A ``(B, C, L)`` input is the plain Conv1d."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"Conv1dAs2d pads with zeros only, got padding_mode="
                             f"{self.padding_mode!r}")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            return super().forward(x)
        padding = self.padding if isinstance(self.padding, str) else (0, self.padding[0])
        out = F.conv2d(x, self.weight.unsqueeze(2), self.bias, (1, self.stride[0]), padding,
                       (1, self.dilation[0]), self.groups)
        return out.contiguous(memory_format=torch.channels_last)


class BatchNorm1dAs2d(nn.BatchNorm1d):
    """A :class:`torch.nn.BatchNorm1d` (same parameters, buffers, running-statistics update
    and ``state_dict``) that also takes a ``(B, C, 1, L)`` input: statistics over every
    dimension but C, as BatchNorm1d computes them over (B, L)."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3, 4):
            raise ValueError(f"expected 2D, 3D or 4D (B, C, 1, L) input (got {input.dim()}D)")


class CNN1d(nn.Module):
    """``depth`` x [Conv1d(kernel_size, 'same' padding) (-> BatchNorm1d) -> ReLU], global
    average pool over length, linear head.

    With ``batch_norm=True`` the convolutions have no bias (BN's shift replaces it) and every
    conv weight is scale-invariant: f(c·W) = f(W) for c > 0.

    ``channels_last=True`` (the default) computes the same network on the signal viewed as a
    ``(B, C, 1, L)`` image in channels-last memory order (:class:`Conv1dAs2d`,
    :class:`BatchNorm1dAs2d`): the same parameters, buffers and ``state_dict`` keys, the same
    function up to float rounding, and faster on CPU; ``False`` computes on ``(B, C, L)``.
    """

    def __init__(self, in_channels: int, num_classes: int, *, channels: int = 32,
                 depth: int = 3, kernel_size: int = 5, batch_norm: bool = True,
                 channels_last: bool = True):
        super().__init__()
        _check_positive_int("channels", channels)
        _check_positive_int("depth", depth)
        if _check_positive_int("kernel_size", kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be odd (for 'same' padding), got {kernel_size}")
        if not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be a bool, got {channels_last!r}")
        self.channels_last = channels_last
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(depth):
            layers.append(Conv1dAs2d(c, channels, kernel_size, padding=kernel_size // 2,
                                     bias=not batch_norm))
            if batch_norm:
                layers.append(BatchNorm1dAs2d(channels))
            layers.append(nn.ReLU(inplace=True))
            c = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def extra_repr(self) -> str:
        return f"channels_last={self.channels_last}"

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:  # (B, C, L) -> (B, C, 1, L), channels-last
            x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x).flatten(2).mean(dim=-1))


class MLP(nn.Module):
    """Flatten -> Linear(hidden) -> ReLU -> Linear(hidden) -> ReLU -> Linear(num_classes)."""

    def __init__(self, in_features: int, num_classes: int, *, hidden: int = 128):
        super().__init__()
        _check_positive_int("hidden", hidden)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# --------------------------------------------------------------------------- ResNet (small)


class BasicBlock(nn.Module):
    """Post-activation residual block (He et al. 2016): conv-BN-ReLU-conv-BN + shortcut,
    ReLU. The shortcut is a strided 1x1 conv + BN when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """CIFAR ResNet with 3 stages of ``blocks_per_stage`` blocks (depth 6n+2) and widths
    ``width, 2·width, 4·width``; stages 2 and 3 halve the resolution. Any input of at
    least 4x4 pixels works (8x8 digits: 8 -> 4 -> 2)."""

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 8,
                 blocks_per_stage: int = 3):
        super().__init__()
        _check_positive_int("width", width)
        _check_positive_int("blocks_per_stage", blocks_per_stage)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        c = width
        for stage, out in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(c, out, stride=2 if stage > 0 and i == 0 else 1))
                c = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


# --------------------------------------------------------------------------- Shake-Shake


class _ShakeShake(torch.autograd.Function):
    """y = α·x1 + (1−α)·x2 forward; gradients β·g and (1−β)·g backward (Gastaldi 2017)."""

    @staticmethod
    def forward(ctx, x1: Tensor, x2: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        ctx.save_for_backward(beta)
        return alpha * x1 + (1 - alpha) * x2

    @staticmethod
    def backward(ctx, grad: Tensor):
        (beta,) = ctx.saved_tensors
        return beta * grad, (1 - beta) * grad, None, None


def shake_shake(x1: Tensor, x2: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """Combine two residual branches: forward α·x1 + (1−α)·x2, backward with β instead of
    α. ``alpha``/``beta`` broadcast against the branches (shape ``(N, 1, 1, 1)`` for the
    per-image "Shake-Shake-Image" variant the paper uses)."""
    return _ShakeShake.apply(x1, x2, alpha, beta)


class ShakeShakeBlock(nn.Module):
    """Two branches of ReLU-Conv3x3-BN-ReLU-Conv3x3-BN, merged by :func:`shake_shake` in
    training (fresh uniform α, β per image; "Shake-Shake-Image") and by 0.5/0.5 in eval.

    Shortcut when the shape changes: ReLU, then two paths of strided 1x1 average pooling +
    1x1 conv to ``out/2`` channels, the second path shifted by one pixel, concatenated,
    BN (Gastaldi 2017, Sec. 2.1). Otherwise the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, *,
                 shake_forward: bool = True, shake_backward: bool = True):
        super().__init__()
        self.shake_forward = shake_forward
        self.shake_backward = shake_backward
        self.branch1 = self._branch(in_channels, out_channels, stride)
        self.branch2 = self._branch(in_channels, out_channels, stride)
        self.stride = stride
        self.needs_projection = stride != 1 or in_channels != out_channels
        if self.needs_projection:
            if out_channels % 2:
                raise ValueError(f"out_channels must be even for the two-path shortcut, "
                                 f"got {out_channels}")
            self.skip1 = nn.Conv2d(in_channels, out_channels // 2, 1, bias=False)
            self.skip2 = nn.Conv2d(in_channels, out_channels // 2, 1, bias=False)
            self.skip_bn = nn.BatchNorm2d(out_channels)

    @staticmethod
    def _branch(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.ReLU(inplace=False),  # the block's input is also the identity shortcut
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def shortcut(self, x: Tensor) -> Tensor:
        if not self.needs_projection:
            return x
        x = F.relu(x)
        p1 = F.avg_pool2d(x, 1, self.stride)
        p2 = F.avg_pool2d(F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1)), 1, self.stride)
        return self.skip_bn(torch.cat([self.skip1(p1), self.skip2(p2)], dim=1))

    def forward(self, x: Tensor) -> Tensor:
        b1, b2 = self.branch1(x), self.branch2(x)
        if self.training:
            # one alpha (forward) and one beta (backward) per image, uniform on [0, 1)
            shape, kw = (x.shape[0], 1, 1, 1), {"device": b1.device, "dtype": b1.dtype}
            alpha = torch.rand(shape, **kw) if self.shake_forward else torch.full(shape, 0.5, **kw)
            beta = torch.rand(shape, **kw) if self.shake_backward else alpha
            out = shake_shake(b1, b2, alpha, beta)
        else:
            out = 0.5 * (b1 + b2)
        return out + self.shortcut(x)


class ShakeShakeResNet(nn.Module):
    """Shake-Shake ResNet "depth 2xWd" (Gastaldi 2017) for CIFAR-10.

    Conv3x3(16)-BN stem; 3 stages of ``(depth − 2) / 6`` Shake-Shake blocks with widths
    ``W, 2W, 4W`` (stages 2 and 3 stride 2); ReLU, global average pool, linear head.
    26 2x64d has 4 blocks per stage and 11,653,978 parameters for 3x32x32 inputs and 10
    classes, the "11.6M" of Loshchilov & Hutter (2019), Sec. 4.
    """

    def __init__(self, in_channels: int, num_classes: int, *, depth: int = 26,
                 width: int = 64, shake_forward: bool = True, shake_backward: bool = True):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (e.g. 26), got {depth!r}")
        _check_positive_int("width", width)
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(16))
        blocks: list[nn.Module] = []
        c = 16
        for stage, out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(ShakeShakeBlock(c, out, 2 if stage > 0 and i == 0 else 1,
                                              shake_forward=shake_forward,
                                              shake_backward=shake_backward))
                c = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He-normal convs (fan_out), BN = identity, zero bias in the head, as in
        # Gastaldi's fb.resnet.torch-based code.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.blocks(self.stem(x)))
        return self.head(out.mean(dim=(2, 3)))


# --------------------------------------------------------------------------- builders
# (the targets of weightdecay.registry's model entries: builder(input_shape, num_classes, **kw))


def _needs(name: str, shape: tuple[int, ...], ndim: int, hint: str) -> None:
    if len(shape) != ndim:
        raise ValueError(f"model {name!r} needs inputs of {ndim} dims (without batch), "
                         f"got input_shape={shape}; {hint}")


def _cnn1d_bn(shape, k, **kw):
    _needs("cnn1d_bn", shape, 2, "it is for 1-D signals (C, L) such as mnist1d")
    return CNN1d(shape[0], k, batch_norm=True, **kw)


def _cnn1d(shape, k, **kw):
    _needs("cnn1d", shape, 2, "it is for 1-D signals (C, L) such as mnist1d")
    return CNN1d(shape[0], k, batch_norm=False, **kw)


def _mlp(shape, k, **kw):
    return MLP(math.prod(shape), k, **kw)


def _resnet_small(shape, k, **kw):
    _needs("resnet_small", shape, 3, "it is for images (C, H, W) such as digits or cifar10")
    return ResNetSmall(shape[0], k, **kw)


def _shakeshake26_2x64d(shape, k, **kw):
    _needs("shakeshake26_2x64d", shape, 3, "it is for images (C, H, W) such as cifar10")
    kw.setdefault("depth", 26)
    kw.setdefault("width", 64)
    return ShakeShakeResNet(shape[0], k, **kw)


def default_model(dataset_name: str) -> str:
    """The model the harness uses for a dataset when none is named (its registry entry)."""
    return registry.dataset(dataset_name).default_model


def build_model(
    name: str = "cnn1d_bn",
    dataset: Dataset | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    width: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build a model by name (one of :data:`weightdecay.registry.MODELS`) for a dataset's
    inputs and classes, with the builder the registry names.

    Args:
        name: model name, see the module docstring.
        dataset: a :class:`~weightdecay.harness.data.Dataset`; gives ``input_shape`` and
            ``num_classes``. Or pass those two instead.
        input_shape: one input's shape without the batch dimension, e.g. ``(1, 40)``.
        num_classes: number of output logits.
        width: the model's width option (its registry entry's ``width_option``:
            ``cnn1d*``: channels, ``mlp``: hidden, ``resnet_small``/``shakeshake26_2x64d``:
            width); ``None`` = the model's default.
        **kwargs: model options (``cnn1d*``: channels, depth, kernel_size, channels_last;
            ``mlp``: hidden; ``resnet_small``: width, blocks_per_stage;
            ``shakeshake26_2x64d``: depth, width, shake_forward, shake_backward).

    Initialization uses torch's global generator: seed it with ``torch.manual_seed``.
    """
    entry = registry.model(name)
    if width is not None:
        if entry.width_option in kwargs:
            raise ValueError(f"give width or {entry.width_option}, not both")
        kwargs[entry.width_option] = width
    if dataset is not None:
        input_shape = dataset.input_shape if input_shape is None else input_shape
        num_classes = dataset.num_classes if num_classes is None else num_classes
    if input_shape is None or num_classes is None:
        raise ValueError("build_model needs a dataset or both input_shape and num_classes "
                         f"(got input_shape={input_shape!r}, num_classes={num_classes!r})")
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"input_shape must be positive ints, got {input_shape!r}")
    _check_positive_int("num_classes", num_classes)
    try:
        return registry.resolve("model", name)(shape, num_classes, **kwargs)
    except TypeError as e:  # an option the model does not have
        raise ValueError(f"bad options {sorted(kwargs)} for model {name!r}: {e}") from e


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) in ``model``."""
    return sum(p.numel() for p in model.parameters())


def weight_norm(model: nn.Module) -> float:
    """L2 norm of all parameters together, ‖θ‖₂ = sqrt(Σ θᵢ²), accumulated in float64.

    Buffers (BN running stats) are not parameters and are not included. Weight decay shrinks
    this norm; with BN, its effect on scale-invariant weights is a larger effective step.
    """
    per_device: dict[torch.device, list[Tensor]] = {}
    with torch.no_grad():
        for p in model.parameters():
            per_device.setdefault(p.device, []).append(p.detach().double().pow(2).sum())
        total = sum(float(torch.stack(sq).sum()) for sq in per_device.values())
    return math.sqrt(total)

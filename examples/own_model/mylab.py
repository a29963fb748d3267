"""A user's own model and data set for `weightdecay sweep` (docs/own-model.md).

The harness imports the two functions below by the import strings a sweep spec names
(``model = "mylab:mlp"``, ``dataset = "mylab:blobs"``), from the spec's folder:

- a model is ``function(input_shape, num_classes) -> torch.nn.Module``;
- a data set is ``function() -> (x_train, y_train, x_test, y_test)``: inputs ``(N,
  *input_shape)`` as the model takes them (float32 here), integer class labels ``(N,)``.

Both are small enough that a sweep of 18 runs takes seconds on a CPU. The hidden layer is
followed by BatchNorm, so its weights are scale-invariant: the harness's
``scale_invariant_only`` (``weightdecay.find_scale_invariant_weights``) finds them as it
does in its own models.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Flatten -> Linear(64) -> BatchNorm -> ReLU -> Linear(num_classes)."""
    features = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 64), nn.BatchNorm1d(64), nn.ReLU(),
                         nn.Linear(64, num_classes))


def blobs(num_train: int = 256, num_test: int = 512, dim: int = 32, classes: int = 4):
    """Gaussian clusters in ``dim`` dimensions, one per class, overlapping enough that the
    test error stays well above 0, and few training points, so that decay matters:
    ``(x_train, y_train, x_test, y_test)``. Drawn from a fixed seed, so every worker loads
    the same data."""
    g = torch.Generator().manual_seed(1234)
    centres = torch.randn(classes, dim, generator=g) * 0.45

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        x = centres[y] + torch.randn(n, dim, generator=g)
        return x.float(), y

    x_train, y_train = draw(num_train)
    x_test, y_test = draw(num_test)
    return x_train, y_train, x_test, y_test

"""Parameter layouts for the benchmarks: one tensor, or ~200 tensors of ResNet-like shapes."""

from __future__ import annotations

import math


def resnet_like_shapes(n_params: int) -> list[tuple[int, ...]]:
    """~200 tensors shaped like a CIFAR ResNet (3x3 convs + BatchNorm scale/shift, a final
    linear layer), widths scaled so that the total is close to ``n_params``."""

    def layout(width: float) -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = []
        c_in = 3
        for stage in range(3):  # 3 stages x 11 blocks x 2 convs = 66 convs, each + BN (2)
            c = max(1, round(width * 2**stage))
            for _ in range(22):
                shapes += [(c, c_in, 3, 3), (c,), (c,)]
                c_in = c
        shapes += [(10, c_in), (10,)]
        return shapes

    lo, hi = 0.1, 4096.0
    for _ in range(60):  # bisection on the width
        mid = math.sqrt(lo * hi)
        total = sum(math.prod(s) for s in layout(mid))
        lo, hi = (mid, hi) if total < n_params else (lo, mid)
    return layout(hi)

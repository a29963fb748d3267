"""``flat=True``: what it does to a model, and what it refuses, with the library's own errors.

One contiguous buffer per param group for the parameters, one for their gradients and one per
state tensor, so an update is one kernel per group instead of one (or several) per tensor.
The checks below run the real optimizer; the messages printed are the ones it raises.

    python examples/flat_mode.py
"""

from __future__ import annotations

import torch
from torch import nn

import weightdecay as wd


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))


def refused(title: str, build) -> None:
    try:
        build()
    except (ValueError, RuntimeError) as exc:
        print(f"refused: {title}\n  {type(exc).__name__}: {exc}")
    else:
        raise AssertionError(f"{title} was accepted")


def main() -> None:
    m = model()
    opt = wd.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4, flat=True)
    weights = list(m.parameters())
    base = weights[0].untyped_storage().data_ptr()
    shared = all(p.untyped_storage().data_ptr() == base for p in weights)
    print(f"{len(weights)} parameter tensors, one buffer: {shared}")
    m(torch.randn(32, 8)).square().mean().backward()
    grads_shared = all(p.grad.untyped_storage().data_ptr()
                       == weights[0].grad.untyped_storage().data_ptr() for p in weights)
    print(f"their gradients, one buffer: {grads_shared}")
    opt.step()
    regular = wd.AdamW(model().parameters(), lr=1e-3, weight_decay=1e-4)
    regular.load_state_dict(opt.state_dict())  # per-parameter state: loads either way
    print("state_dict: per parameter, loads into a regular (non-flat) wd.AdamW")
    assert shared and grads_shared

    m = model()
    m[1].double()
    refused("mixed dtypes in one group",
            lambda: wd.AdamW(m.parameters(), lr=1e-3, flat=True))
    m = model()
    m[0].bias.requires_grad_(False)
    refused("a frozen parameter",
            lambda: wd.AdamW(m.parameters(), lr=1e-3, flat=True))
    m = model()
    opt = wd.AdamW(m.parameters(), lr=1e-3, flat=True)
    m.double()  # replaces every parameter's storage

    def step_after_replacing():
        m(torch.randn(4, 8, dtype=torch.float64)).sum().backward()
        opt.step()

    refused("parameters replaced after construction (model.double())", step_after_replacing)


if __name__ == "__main__":
    main()

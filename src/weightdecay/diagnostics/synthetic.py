"""A synthetic scale-invariant problem, to see the equilibrium without a network.

The loss ``<theta / ||theta||, xi_t>`` with fresh Gaussian noise xi_t at every update is
scale-invariant (multiplying theta by c > 0 changes nothing), its gradient
``(I - theta_hat theta_hat^T) xi_t / ||theta||`` is orthogonal to theta and scales as
1/||theta||, and successive gradients are independent: exactly the random-walk regime the
equilibrium formulas of :mod:`weightdecay.diagnostics.theory` assume. Any optimizer run on
it should turn theta by the predicted angle per update once the norm has settled.

    python -m weightdecay.diagnostics.synthetic --out docs/normalized-layers.png

draws the figure of the documentation page: AdamW's angular update for two base learning
rates 4x apart, in the paper's decay convention and in torch's (measured and predicted).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

import torch
from torch import nn

from .._validate import positive, positive_int
from .monitor import EquilibriumMonitor

__all__ = ["ScaleInvariantNoise", "simulate"]


class ScaleInvariantNoise(nn.Module):
    """``weight`` in R^dim and the loss <weight/||weight||, xi_t>, xi_t ~ N(0, I) drawn fresh
    from the module's own generator at every call of :meth:`loss`.

    Args:
        dim: number of elements.
        init_norm: ||weight|| at the start (random direction).
        seed: seeds the direction and the noise.
        dtype: float64 by default (the tests' precision).
    """

    def __init__(self, dim: int = 1000, *, init_norm: float = 1.0, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.dim = positive_int("dim", dim)
        self.generator = torch.Generator().manual_seed(seed)
        w = torch.randn(self.dim, dtype=dtype, generator=self.generator)
        self.weight = nn.Parameter(w * (positive("init_norm", init_norm) / w.norm()))

    def loss(self) -> torch.Tensor:
        xi = torch.randn(self.dim, dtype=self.weight.dtype, generator=self.generator)
        return (self.weight / self.weight.norm()) @ xi

    @torch.no_grad()
    def set_gradient(self) -> None:
        """``weight.grad`` = the gradient of :meth:`loss` (the same draw of xi_t), without
        autograd: (xi - theta_hat <theta_hat, xi>) / ||theta||."""
        xi = torch.randn(self.dim, dtype=self.weight.dtype, generator=self.generator)
        norm = self.weight.norm()
        unit = self.weight / norm
        self.weight.grad = xi.sub_(unit, alpha=float(unit @ xi)).div_(norm)


def simulate(
    make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    steps: int,
    *,
    dim: int = 1000,
    every: int = 10,
    init_norm: float = 1.0,
    seed: int = 0,
) -> list[dict]:
    """Run ``make_optimizer([weight])`` for ``steps`` updates on :class:`ScaleInvariantNoise`
    with an :class:`EquilibriumMonitor` measuring every ``every`` updates; returns its
    records (category ``"scale_invariant"``).

    Example:
        >>> import weightdecay as wd
        >>> records = simulate(lambda ps: wd.AdamW(ps, lr=1e-3, weight_decay=2e-3), 3000)
        >>> ratio = wd.diagnostics.equilibrium_ratio(records)["ratio"]   # close to 1
    """
    problem = ScaleInvariantNoise(dim, init_norm=init_norm, seed=seed)
    optimizer = make_optimizer([problem.weight])
    with EquilibriumMonitor(problem, optimizer, every, scale_invariant=["weight"]) as monitor:
        for _ in range(positive_int("steps", steps)):
            problem.set_gradient()
            optimizer.step()
    return monitor.records()


def figure(steps: int = 6000, dim: int = 1000):
    """AdamW on the synthetic problem: angular update against updates for alpha and 4*alpha,
    paper's convention (left: the same equilibrium) and torch's (right: 2x apart)."""
    from matplotlib.figure import Figure

    from .. import AdamW
    from .summary import equilibrium_ratio

    fig = Figure(figsize=(8.0, 3.0), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = (("paper's convention: d = η_t·λ (λ = 2e-3)", "schedule", 2e-3),
              ("torch's convention: d = lr_t·λ (λ = 1)", "lr", 1.0))
    for ax, (title, convention, lam) in zip(axes, panels):
        for alpha, color, dashes in ((1e-3, "C0", (6, 3)), (4e-3, "C1", (2, 2))):
            records = simulate(functools.partial(AdamW, lr=alpha, weight_decay=lam,
                                                 decay_convention=convention), steps, dim=dim)
            t = [r["step"] for r in records]
            ax.plot(t, [r["angular_update"] for r in records], color=color, lw=0.7, alpha=0.6,
                    label=f"α = {alpha:g}: measured")
            ax.plot(t, [r["predicted_angular_update"] for r in records], color=color,
                    dashes=dashes, lw=1.8, zorder=3, label=f"α = {alpha:g}: predicted")
            ratio = equilibrium_ratio(records)
            if ratio is not None:
                print(f"{convention:8s} alpha={alpha:g}: measured/predicted over updates "
                      f"{ratio['first_step']}-{ratio['last_step']}: {ratio['ratio']:.3f}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("update t")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("angle(θ_t, θ_{t−1}) (rad)")
    fig.suptitle(f"AdamW on ⟨θ/‖θ‖, ξ_t⟩, {dim} dimensions, β1 = 0.9", fontsize=10)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--steps", type=int, default=6000)
    args = parser.parse_args(argv)
    import io

    from .._io import write_atomic

    torch.set_num_threads(1)
    buf = io.BytesIO()
    figure(args.steps).savefig(buf, format="png", dpi=100, metadata={"Software": None})
    write_atomic(args.out, buf.getvalue())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

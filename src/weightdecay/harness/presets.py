"""The ``weightdecay reproduce`` presets, as sweep specs (plain data).

- ``quick``: Fig. 2 of the paper (SGD, SGDW, Adam, AdamW heat maps over (alpha, lambda))
  on MNIST-1D with the small BN 1-D CNN and cosine annealing; a few minutes on 2 CPU
  cores with 2 workers. Expected: the L2 variants (SGD, Adam) show a diagonal valley (the
  best L2 coefficient moves with the learning rate, Prop. 1: lambda' = lambda / alpha), the
  decoupled ones (SGDW, AdamW) a separable basin.
- ``full``: every figure (Figs. 1-4, Supp. Figs. 1 and 3) on MNIST-1D, 2 seeds for the
  heat maps; under an hour on 2 CPU cores.
- ``cifar10``: the paper's own settings (CIFAR-10, Shake-Shake 26 2x64d, batch 128, 100
  epochs, grids in powers of 2, normalized weight decay) for GPUs and many workers.

Grids are powers of 2. The L2 coefficient of ``sgd``/``adam`` and the decoupled lambda of
``sgdw``/``adamw`` live on different scales (Prop. 1: lambda' = lambda / alpha for SGD;
lambda is NOT multiplied by alpha in this library's default ``"schedule"`` convention),
so each optimizer gets its own decay grid, chosen by measurement to put its basin inside
the grid. Measured for ``quick`` (2-core CPU, 2 workers, 80 runs x 10 epochs):
3 min 14 s wall including the report; best final test errors ~1 %; the report's decoupling
statistic: SGD coupled (best lambda' moves 0.7 decades over an 8x range of learning rates,
rho = -1.00), Adam coupled (0.8 decades, rho = -0.80), SGDW decoupled (0.2 decades), AdamW
decoupled (0.2 decades). One seed, 1000 test examples: a cell's noise is ~0.4 %, close to
the differences inside a basin; the statistic fits a parabola per row for that reason.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PRESETS", "get_preset", "preset_names"]


def _pow2(lo: int, hi: int, step: int = 1) -> list[float]:
    """[2**lo, 2**(lo+step), ..., 2**hi] (exact binary fractions)."""
    return [2.0**k for k in range(lo, hi + 1, step)]


# -- quick: Fig. 2 on MNIST-1D ----------------------------------------------------------------

# learning-rate grids alpha [per update, before eta_t]: rows that train well in the budget
_LR_SGD = _pow2(-3, 0)  # 1/8 .. 1
_LR_ADAM = _pow2(-7, -4)  # 1/128 .. 1/16
# decay grids, one step = a factor 2 everywhere: decoupled lambda [per update, times eta_t]
# and L2 coefficients lambda' (Prop. 1: SGD's best lambda' moves as 1/alpha)
_WD_SGD_L2 = _pow2(-10, -6)
_WD_SGDW = _pow2(-9, -5)
_WD_ADAM_L2 = _pow2(-10, -6)
_WD_ADAMW = _pow2(-10, -6)
_QUICK_EPOCHS = 10

QUICK: dict[str, Any] = {
    "name": "quick",
    "description": (
        "Fig. 2 on MNIST-1D: SGD/SGDW/Adam/AdamW heat maps of the final test error over "
        "(learning rate, weight decay), cosine annealing, cnn1d_bn, 1 seed."
    ),
    "defaults": {"dataset": "mnist1d", "model": "cnn1d_bn", "batch_size": 128},
    "experiments": [
        {
            "name": "fig2",
            "figure": "fig2",
            "schedules": ["cosine"],
            "epochs": [_QUICK_EPOCHS],
            "seeds": [0],
            "optimizers": [
                {"optimizer": "sgd", "lr": _LR_SGD, "weight_decay": _WD_SGD_L2},
                {"optimizer": "sgdw", "lr": _LR_SGD, "weight_decay": _WD_SGDW},
                {"optimizer": "adam", "lr": _LR_ADAM, "weight_decay": _WD_ADAM_L2},
                {"optimizer": "adamw", "lr": _LR_ADAM, "weight_decay": _WD_ADAMW},
            ],
        }
    ],
}

# -- full: every figure on MNIST-1D -----------------------------------------------------------

_HEAT_EPOCHS = _QUICK_EPOCHS
_SEEDS2 = [0, 1]
_BEST_LR_ADAM = 2.0**-5  # in the basins of the quick preset (Adam and AdamW)
_BEST_LR_SGD = 2.0**-2
_BEST_WD_ADAMW = 2.0**-8
_BEST_WD_SGDW = 2.0**-6
_BEST_WD_ADAM_L2 = 2.0**-8

FULL: dict[str, Any] = {
    "name": "full",
    "description": "Figs. 1-4 and Supp. Figs. 1, 3 of the paper on MNIST-1D (cnn1d_bn).",
    "defaults": {"dataset": "mnist1d", "model": "cnn1d_bn", "batch_size": 128},
    "experiments": [
        {   # Fig. 1: Adam vs AdamW under fixed, step-drop (30/60/80 %, x0.1) and cosine
            "name": "fig1",
            "figure": "fig1",
            "schedules": ["fixed", "step", "cosine"],
            "epochs": [_HEAT_EPOCHS],
            "seeds": _SEEDS2,
            "optimizers": [
                {"optimizer": "adam", "lr": _LR_ADAM, "weight_decay": _WD_ADAM_L2},
                {"optimizer": "adamw", "lr": _LR_ADAM, "weight_decay": _WD_ADAMW},
            ],
        },
        {   # Fig. 2: the four optimizers, cosine
            "name": "fig2",
            "figure": "fig2",
            "schedules": ["cosine"],
            "epochs": [_HEAT_EPOCHS],
            "seeds": _SEEDS2,
            "optimizers": copy.deepcopy(QUICK["experiments"][0]["optimizers"]),
        },
        {   # Fig. 3: a long run, Adam vs AdamW over lambda at a fixed learning rate
            "name": "fig3",
            "figure": "fig3",
            "schedules": ["cosine"],
            "epochs": [60],
            "seeds": [0],
            "optimizers": [
                {"optimizer": "adam", "lr": [_BEST_LR_ADAM], "weight_decay": _pow2(-12, -4, 2)},
                {"optimizer": "adamw", "lr": [_BEST_LR_ADAM], "weight_decay": _pow2(-12, -4, 2)},
            ],
        },
        {   # Fig. 4: anytime performance; restarts with T_0 = 2, T_mult = 2 end at 2, 6, 14, 30
            "name": "fig4",
            "figure": "fig4",
            "epochs": [30],
            "seeds": _SEEDS2,
            "schedules": ["cosine"],
            "T_0": 2,
            "T_mult": 2.0,
            "optimizers": [
                {"optimizer": "adam", "lr": [_BEST_LR_ADAM], "weight_decay": [_BEST_WD_ADAM_L2]},
                {"optimizer": "adamw", "lr": [_BEST_LR_ADAM], "weight_decay": [_BEST_WD_ADAMW]},
                {"optimizer": "sgdw", "lr": [_BEST_LR_SGD], "weight_decay": [_BEST_WD_SGDW]},
                {"optimizer": "adamw", "lr": [_BEST_LR_ADAM], "weight_decay": [_BEST_WD_ADAMW],
                 "schedules": ["restarts"]},
                {"optimizer": "sgdw", "lr": [_BEST_LR_SGD], "weight_decay": [_BEST_WD_SGDW],
                 "schedules": ["restarts"]},
            ],
        },
        {   # Supp. Fig. 1: eta_t of SGDR with T_0 = 1, T_mult = 2 (ends at 1, 3, 7, 15)
            "name": "supp1",
            "figure": "supp1",
            "epochs": [15],
            "seeds": [0],
            "schedules": ["restarts"],
            "T_0": 1,
            "T_mult": 2.0,
            "optimizers": [
                {"optimizer": "adamw", "lr": [_BEST_LR_ADAM], "weight_decay": [_BEST_WD_ADAMW]},
            ],
        },
        {   # Supp. Fig. 3: raw lambda vs normalized lambda_norm at three budgets
            "name": "supp3",
            "figure": "supp3",
            "epochs": [4, 8, 16],
            "seeds": [0],
            "schedules": ["cosine"],
            "optimizers": [
                # lambda = lambda_norm * sqrt(b / (B*T)): b/B = 128/4000, T = 4..16 epochs
                {"optimizer": "adamw", "lr": _pow2(-6, -4, 2), "weight_decay": _pow2(-12, -4, 2)},
                {"optimizer": "adamw", "lr": _pow2(-6, -4, 2),
                 "weight_decay_norm": _pow2(-8, 0, 2)},
            ],
        },
    ],
}

# -- cifar10: the paper's settings --------------------------------------------------------------

CIFAR10: dict[str, Any] = {
    "name": "cifar10",
    "description": (
        "The paper's CIFAR-10 setting: Shake-Shake 26 2x64d, batch 128, 100 epochs, "
        "normalized weight decay, grids in powers of 2 (Figs. 1, 2); for GPUs."
    ),
    "defaults": {
        "dataset": "cifar10",
        "model": "shakeshake26_2x64d",
        "batch_size": 128,
        "device": "cuda",
    },
    "experiments": [
        {
            "name": "fig1",
            "figure": "fig1",
            "schedules": ["fixed", "step", "cosine"],
            "epochs": [100],
            "seeds": [0],
            "optimizers": [
                {"optimizer": "adam", "lr": _pow2(-13, -8), "weight_decay_norm": _pow2(-9, -4)},
                {"optimizer": "adamw", "lr": _pow2(-13, -8), "weight_decay_norm": _pow2(-9, -4)},
            ],
        },
        {
            "name": "fig2",
            "figure": "fig2",
            "schedules": ["cosine"],
            "epochs": [100],
            "seeds": [0],
            "optimizers": [
                {"optimizer": "sgd", "lr": _pow2(-6, -1), "weight_decay_norm": _pow2(-9, -4)},
                {"optimizer": "sgdw", "lr": _pow2(-6, -1), "weight_decay_norm": _pow2(-9, -4)},
                {"optimizer": "adam", "lr": _pow2(-13, -8), "weight_decay_norm": _pow2(-9, -4)},
                {"optimizer": "adamw", "lr": _pow2(-13, -8), "weight_decay_norm": _pow2(-9, -4)},
            ],
        },
    ],
}

#: preset name -> sweep spec
PRESETS: dict[str, dict[str, Any]] = {"quick": QUICK, "full": FULL, "cifar10": CIFAR10}


def preset_names() -> tuple[str, ...]:
    """Names of the presets."""
    return tuple(PRESETS)


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of the preset ``name`` (``quick``, ``full`` or ``cifar10``)."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is not valid; valid: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])

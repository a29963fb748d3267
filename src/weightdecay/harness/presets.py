"""The ``weightdecay reproduce`` presets, as sweep specs (plain data).

The designs were chosen on *pilot* seeds (1000, 1001; ``experiments/pilot_fig2*.toml``) and
are reported on other seeds; ``docs/experiment-design.md`` has the pilot's numbers. Common
to the MNIST-1D presets: the canonical 4000-example training set, a held-out test sample of
10,000 signals from the same generator (``test_size``: a test error's binomial noise is
±0.13 % at 2 % error, against ±0.4 % on the canonical 1000), the BatchNorm 1-D CNN at its
default width (32 channels: half the width was twice as fast but its noisier basins left
the pilot's SGD slope undecided), 10 epochs (6 epochs left SGD undertrained: slope
intervals twice as wide), cosine annealing, batch 128, grids in powers of 2.

- ``quick``: Fig. 2 (SGD, SGDW, Adam, AdamW) on a 16x range of learning rates (5 rows); in
  each row the 5 decay values (steps of 2: a coarser grid biased the fitted optima by up to
  0.3 in slope) of a band around the line through the pilot's per-row optima (the cells far
  from the optimum only confirmed that they are worse), widened by up to 3 values where a
  row's optimum falls on the band's edge, 2 seeds: 200 runs and those, the test error
  evaluated once, after the last epoch. Scores the Fig. 2 claims and the paired
  differences Δ.
- ``full``: every claim of the scorecard: Fig. 2 on a 32x range with 9 decay values and 3
  seeds; Fig. 1 (Adam/AdamW under fixed, step-drop, cosine); Fig. 3 (40-epoch runs);
  Fig. 4 (warm restarts, 30 epochs, 3 seeds); Supp. 3 (budgets of 5, 10, 20 epochs, raw λ
  vs λ_norm); torch's decay convention; and two mechanism ablations for AdamW's rising
  optimum (decay only the weights that BatchNorm makes scale-invariant; 3x the budget).
- ``mechanism``: why AdamW's best λ rises with α (the refutation of ``full``), scored by
  rules fixed in advance (docs/experiment-design.md, "The mechanism preset"; pilot seeds
  1000, 1001, ``experiments/pilot_mechanism.toml``): the equilibrium monitor
  (``monitor_every``) on constant-schedule AdamW/SGDW runs in the paper's and torch's
  conventions (every setting's decay per update in [2^-7, 2^-5]) and on cosine AdamW with
  the paper's and the corrected decay; AdamW's Fig. 2 with the decay restricted to the
  scale-invariant weights (``scale_invariant_only``) or to the others (``decay_subset``).
  3 seeds, 630 runs. ``full`` does not include it (its 60 minutes are spent): run both.
- ``variants``: SGDW and AdamW under the paper's decay, torch's, the corrected (AdamC) one,
  cautious decay and decay of the scale-invariant weights only, on equal terms (5 α × 8 λ,
  2 seeds each), ranked by best error with the Fig. 2 slope of each.
- ``cifar10``: the paper's own settings (CIFAR-10, Shake-Shake 26 2x64d, batch 128, 100
  epochs, grids in powers of 2, normalized weight decay) for GPUs and many workers.

``weight_decay`` is the decoupled λ for ``sgdw``/``adamw`` (per update, times η_t, NOT times
α) and the L2 coefficient λ' for ``sgd``/``adam`` (Prop. 1: λ' = λ/α for SGD), hence
separate grids, each centred on the pilot's basin.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PRESETS", "get_preset", "preset_names"]


def _pow2(lo: int, hi: int, step: int = 1) -> list[float]:
    """[2**lo, 2**(lo+step), ..., 2**hi] (exact binary fractions)."""
    return [2.0**k for k in range(lo, hi + 1, step)]


#: what every MNIST-1D experiment shares (see the module docstring for why)
_MNIST1D = {"dataset": "mnist1d", "model": "cnn1d_bn", "batch_size": 128,
            "test_size": 10_000}
#: one test evaluation per run (after the last epoch) where only the final error is used
_FINAL_ONLY = {"eval_every": 10}


# -- quick: Fig. 2 ------------------------------------------------------------------------------

#: the quick preset's bands (docs/experiment-design.md, "A banded grid"): the line through
#: pilot A's per-row optima of each optimizer, log2 λ* = c + s·log2 α, fitted on the pilot
#: seeds 1000, 1001 (``python experiments/analyze_band.py``: docs/results/band_design.json,
#: rounded to 2 decimals), and 5 cells per row: the fewest that kept, on the pilot's runs of
#: quick's own 5 rows, every slope and Δ interval within 1.2x of the whole grid's width (4
#: cells left Adam's slope without data; docs/experiment-design.md, "How many cells")
_QUICK_CELLS = 5
#: values a row's band may grow by where its optimum sits on the band's edge (bracketing;
#: weightdecay.harness.band): the line predicts each row's optimum only up to the seeds' noise
_QUICK_EXTEND = 3
_QUICK_BANDS = {"sgd": (-10.26, -0.81), "sgdw": (-6.49, 0.22), "adam": (-15.09, -1.11),
                "adamw": (-4.98, 0.46)}


def _banded(optimizer: str, lr: list[float], wd: list[float]) -> dict[str, Any]:
    c, slope = _QUICK_BANDS[optimizer]
    return {"optimizer": optimizer, "lr": lr, "weight_decay": wd,
            "band": {"lr": 1.0, "weight_decay": 2.0**c, "slope": slope, "cells": _QUICK_CELLS,
                     "extend": _QUICK_EXTEND}}


QUICK: dict[str, Any] = {
    "name": "quick",
    "description": (
        "Fig. 2 on MNIST-1D: SGD/SGDW/Adam/AdamW over 5 learning rates (16x), in each row "
        "the 5 decay values (steps of 2) around the pilot's optimum, cnn1d_bn, 10 epochs, "
        "cosine, 10k held-out test examples, 2 seeds: does the best decay move with the "
        "learning rate?"
    ),
    "defaults": dict(_MNIST1D),
    "experiments": [
        {
            "name": "fig2",
            "figure": "fig2",
            "schedules": ["cosine"],
            "epochs": [10],
            "seeds": [0, 1],
            **_FINAL_ONLY,
            # the decay grids are wide enough for every row's band (only its cells run)
            "optimizers": [
                _banded("sgd", _pow2(-4, 0), _pow2(-14, -3)),
                _banded("sgdw", _pow2(-4, 0), _pow2(-11, -3)),
                _banded("adam", _pow2(-7, -3), _pow2(-16, -4)),
                _banded("adamw", _pow2(-7, -3), _pow2(-12, -3)),
            ],
        }
    ],
}

# -- full: every claim --------------------------------------------------------------------------

_BEST_LR_ADAM = 2.0**-5  # inside both Adam basins of the pilot
_BEST_LR_SGD = 2.0**-1
_BEST_WD_ADAMW = 2.0**-7
_BEST_WD_SGDW = 2.0**-7
_BEST_WD_ADAM_L2 = 2.0**-9

_FIG2_FULL = [
    {"optimizer": "sgd", "lr": _pow2(-4, 1), "weight_decay": _pow2(-13, -5)},
    {"optimizer": "sgdw", "lr": _pow2(-4, 1), "weight_decay": _pow2(-11, -3)},
    {"optimizer": "adam", "lr": _pow2(-8, -3), "weight_decay": _pow2(-13, -5)},
    {"optimizer": "adamw", "lr": _pow2(-8, -3), "weight_decay": _pow2(-12, -4)},
]

FULL: dict[str, Any] = {
    "name": "full",
    "description": ("Every claim of the scorecard on MNIST-1D (cnn1d_bn, 10k held-out test), "
                    "but the mechanism claims: those are the mechanism preset's."),
    "defaults": dict(_MNIST1D),
    "experiments": [
        {   # Fig. 2: the four optimizers, 32x in alpha, 9 decay values, 3 seeds
            "name": "fig2", "figure": "fig2", "schedules": ["cosine"], "epochs": [10],
            "seeds": [0, 1, 2], **_FINAL_ONLY, "optimizers": copy.deepcopy(_FIG2_FULL),
        },
        {   # Fig. 1: Adam vs AdamW under fixed, step-drop (30/60/80 %, x0.1) and cosine
            "name": "fig1", "figure": "fig1", "schedules": ["fixed", "step", "cosine"],
            "epochs": [10], "seeds": [0, 1], **_FINAL_ONLY,
            "optimizers": [
                {"optimizer": "adam", "lr": _pow2(-7, -3), "weight_decay": _pow2(-12, -7)},
                {"optimizer": "adamw", "lr": _pow2(-7, -3), "weight_decay": _pow2(-11, -6)},
            ],
        },
        {   # Fig. 3: 40-epoch runs over lambda at one learning rate; curves every epoch
            "name": "fig3", "figure": "fig3", "schedules": ["cosine"], "epochs": [40],
            "seeds": [0, 1],
            "optimizers": [
                {"optimizer": "adam", "lr": [_BEST_LR_ADAM], "weight_decay": _pow2(-13, -7)},
                {"optimizer": "adamw", "lr": [_BEST_LR_ADAM], "weight_decay": _pow2(-11, -5)},
            ],
        },
        {   # Fig. 4: anytime performance; restarts with T_0 = 2, T_mult = 2 end at 2, 6, 14, 30
            "name": "fig4", "figure": "fig4", "epochs": [30], "seeds": [0, 1, 2],
            "schedules": ["cosine"], "T_0": 2, "T_mult": 2.0,
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
        {   # Supp. Fig. 3: raw lambda vs normalized lambda_norm at three budgets
            "name": "supp3", "figure": "supp3", "epochs": [5, 10, 20], "seeds": [0, 1],
            "schedules": ["cosine"], "eval_every": 20,
            "optimizers": [
                # lambda = lambda_norm * sqrt(b / (B*T)): b/B = 128/4000, T = 5..20 epochs
                {"optimizer": "adamw", "lr": _pow2(-6, -4), "weight_decay": _pow2(-11, -5)},
                {"optimizer": "adamw", "lr": _pow2(-6, -4), "weight_decay_norm": _pow2(-6, 0)},
            ],
        },
        {   # mechanism 1 (AdamW's best lambda rises with alpha in Fig. 2): is it the decay of
            # the parameters that BatchNorm does not make scale-invariant (the head, the
            # norms' scales)? Decay only the scale-invariant convolution weights.
            "name": "ablation_si", "figure": "ablation", "schedules": ["cosine"],
            "epochs": [10], "seeds": [0, 1], "scale_invariant_only": True, **_FINAL_ONLY,
            "optimizers": copy.deepcopy(_FIG2_FULL[1::2]),  # sgdw, adamw
        },
        {   # mechanism 2: is the rise a transient of short training (weight norms not yet at
            # their equilibrium)? AdamW's Fig. 2 at 3x the budget
            "name": "ablation_budget", "figure": "ablation", "schedules": ["cosine"],
            "epochs": [30], "seeds": [0, 1], "eval_every": 30,
            "optimizers": [
                {"optimizer": "adamw", "lr": _pow2(-7, -3), "weight_decay": _pow2(-12, -5)},
            ],
        },
        {   # torch's convention: decay lr_t * lambda (lambda in torch's units, lambda/alpha)
            "name": "conventions", "figure": "conventions", "schedules": ["cosine"],
            "epochs": [10], "seeds": [0, 1], "decay_convention": "lr", **_FINAL_ONLY,
            "optimizers": [
                {"optimizer": "sgdw", "lr": _pow2(-4, 1), "weight_decay": _pow2(-9, -2)},
                {"optimizer": "adamw", "lr": _pow2(-8, -3), "weight_decay": _pow2(-6, 1)},
            ],
        },
    ],
}

# -- mechanism: why AdamW's best lambda moves with alpha ----------------------------------------

#: the equilibrium monitor every 8 updates: 4 measurements per epoch of 32 updates
_MONITOR = {"monitor_every": 8}


def _corrected(lr_exp: int, paper_exps: tuple[int, ...]) -> dict:
    """AdamW under the corrected convention at one alpha = 2**lr_exp, its lambda in that
    convention's units (lr_t^2/lr_max * lambda) matched to the paper's 2**k at eta = 1:
    lambda = 2**k / alpha."""
    return {"optimizer": "adamw", "decay_convention": "corrected", "lr": [2.0**lr_exp],
            "weight_decay": [2.0 ** (k - lr_exp) for k in paper_exps]}


MECHANISM: dict[str, Any] = {
    "name": "mechanism",
    "description": (
        "Why AdamW's best decay moves with the learning rate (cnn1d_bn, MNIST-1D, 10k "
        "held-out test, 3 seeds): the equilibrium monitor on constant and cosine runs "
        "(rotation of the scale-invariant weights against the prediction, per convention; "
        "gradient norm at the end of a cosine run, paper's vs corrected decay), and AdamW's "
        "Fig. 2 with the decay restricted to the scale-invariant weights or to the others."
    ),
    "defaults": dict(_MNIST1D),
    "experiments": [
        {   # claims (a), (b): a constant schedule, every setting's decay per update d in
            # [2^-7, 2^-5] (>= 3 timescales 1/(2d) before the end of 320 updates; first order
            # in d); each optimizer over 4x in alpha, in the paper's and torch's conventions
            "name": "equilibrium", "figure": "equilibrium", "schedules": ["fixed"],
            "epochs": [10], "seeds": [0, 1, 2], **_FINAL_ONLY, **_MONITOR,
            "optimizers": [
                {"optimizer": "adamw", "lr": _pow2(-5, -3), "weight_decay": _pow2(-7, -5, 2)},
                {"optimizer": "adamw", "decay_convention": "lr", "lr": _pow2(-5, -3),
                 "weight_decay": [2.0**-2]},
                {"optimizer": "sgdw", "lr": _pow2(-3, -1), "weight_decay": _pow2(-7, -5, 2)},
                {"optimizer": "sgdw", "decay_convention": "lr", "lr": _pow2(-3, -1),
                 "weight_decay": [2.0**-4]},
            ],
        },
        {   # claim (d): cosine AdamW around the Fig. 2 optimum, the paper's decay and the
            # corrected one at the same decay per update at eta = 1
            "name": "gradnorm", "figure": "equilibrium", "schedules": ["cosine"],
            "epochs": [10], "seeds": [0, 1, 2], **_FINAL_ONLY, **_MONITOR,
            "optimizers": [
                {"optimizer": "adamw", "lr": _pow2(-6, -4), "weight_decay": _pow2(-7, -5, 2)},
                *[_corrected(e, (-7, -5)) for e in range(-6, -3)],
            ],
        },
        {   # claim (c): AdamW's Fig. 2 (32x in alpha, as the full preset's) with every
            # parameter decayed, only the scale-invariant conv weights, only the others
            "name": "decay_subsets", "figure": "decay_subsets", "schedules": ["cosine"],
            "epochs": [10], "seeds": [0, 1, 2], **_FINAL_ONLY,
            "optimizers": [
                {"optimizer": "adamw", "lr": _pow2(-8, -3), "weight_decay": _pow2(-12, -3)},
                {"optimizer": "adamw", "scale_invariant_only": True, "lr": _pow2(-8, -3),
                 "weight_decay": _pow2(-12, -3)},
                {"optimizer": "adamw", "decay_subset": "not_scale_invariant",
                 "lr": _pow2(-8, -3), "weight_decay": _pow2(-11, -2)},
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

# -- variants: the decay rules users ask for, on equal terms ---------------------------------

_LR_SGDW, _LR_ADAMW = _pow2(-4, 0), _pow2(-7, -3)


def _variant(optimizer: str, lr: list[float], wd: list[float], **setting: Any) -> dict:
    return {"optimizer": optimizer, "lr": lr, "weight_decay": wd, **setting}


VARIANTS: dict[str, Any] = {
    "name": "variants",
    "description": (
        "SGDW and AdamW under the paper's decay (eta_t*lambda), torch's (lr_t*lambda), "
        "corrected (AdamC: lr_t^2/lr_max*lambda), cautious, and decay of the scale-invariant "
        "weights only: Fig. 2 heat maps on MNIST-1D, 2 seeds, 10k held-out test examples."
    ),
    "defaults": dict(_MNIST1D),
    "experiments": [
        {
            "name": "variants", "figure": "variants", "schedules": ["cosine"],
            "epochs": [10], "seeds": [0, 1], **_FINAL_ONLY,
            # each grid in its convention's own units, centred on where the pilot's optimum
            # lands in them (lr/corrected: lambda/alpha; cautious decays about half the
            # coordinates, so its lambda sits about one step higher)
            "optimizers": [
                _variant("sgdw", _LR_SGDW, _pow2(-11, -4)),
                _variant("sgdw", _LR_SGDW, _pow2(-9, -2), decay_convention="lr"),
                _variant("sgdw", _LR_SGDW, _pow2(-9, -2), decay_convention="corrected"),
                _variant("sgdw", _LR_SGDW, _pow2(-10, -3), cautious=True),
                _variant("sgdw", _LR_SGDW, _pow2(-11, -4), scale_invariant_only=True),
                _variant("adamw", _LR_ADAMW, _pow2(-11, -4)),
                _variant("adamw", _LR_ADAMW, _pow2(-6, 1), decay_convention="lr"),
                _variant("adamw", _LR_ADAMW, _pow2(-6, 1), decay_convention="corrected"),
                _variant("adamw", _LR_ADAMW, _pow2(-10, -3), cautious=True),
                _variant("adamw", _LR_ADAMW, _pow2(-11, -4), scale_invariant_only=True),
            ],
        }
    ],
}

#: preset name -> sweep spec
PRESETS: dict[str, dict[str, Any]] = {"quick": QUICK, "full": FULL, "variants": VARIANTS,
                                      "mechanism": MECHANISM, "cifar10": CIFAR10}


def preset_names() -> tuple[str, ...]:
    """Names of the presets."""
    return tuple(PRESETS)


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of the preset ``name`` (one of :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is not valid; valid: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])

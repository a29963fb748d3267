"""weightdecay: paper-faithful decoupled weight decay for PyTorch.

Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019) and
"SGDR: Stochastic Gradient Descent with Warm Restarts" (ICLR 2017).

The public API is flat::

    import weightdecay as wd
    opt = wd.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)   # decay = eta_t * lambda
    sched = wd.schedules.cosine_restarts(T_0=1000, T_mult=2)
    lr_sched = wd.schedules.as_torch_scheduler(opt, sched)

Names are imported lazily so that ``import weightdecay`` stays cheap (the experiment
harness and the report pull in optuna and matplotlib only when used).
"""

from __future__ import annotations

import importlib

#: the one place the version is written (pyproject.toml reads it: dynamic = ["version"])
__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # optimizers (Algorithm 1 and 2 of the paper) and helpers
    "SGD": "weightdecay.optim.sgd",
    "SGDW": "weightdecay.optim.sgd",
    "Adam": "weightdecay.optim.adam",
    "AdamW": "weightdecay.optim.adam",
    "decoupled_weight_decay": "weightdecay.optim.wrap",
    "param_groups_weight_decay": "weightdecay.optim.groups",
    "find_scale_invariant_weights": "weightdecay.optim.groups",
    "DECAY_CONVENTIONS": "weightdecay.optim._decay",
    "decay_per_update": "weightdecay.optim._decay",
    # checkpoints to and from torch.optim, the meaning of every number kept
    "convert_state_dict": "weightdecay.optim._checkpoint",
    "torch_state_dict": "weightdecay.optim._checkpoint",
    # weight-decay arithmetic (paper App. B.1, conversions)
    "normalized_weight_decay": "weightdecay.decay",
    "NormalizedDecay": "weightdecay.decay",
    "torch_weight_decay": "weightdecay.decay",
    "paper_weight_decay": "weightdecay.decay",
    "ema_timescale": "weightdecay.decay",
    "weight_decay_for_timescale": "weightdecay.decay",
    "Timescale": "weightdecay.decay",
    # what decay does while training: equilibrium diagnostics (weightdecay.diagnostics)
    "EquilibriumMonitor": "weightdecay.diagnostics.monitor",
    # experiments (import optuna / matplotlib only when used)
    "RunConfig": "weightdecay.harness.config",
    "write_report": "weightdecay.api",
}

_SUBMODULES = ("optim", "schedules", "decay", "diagnostics", "registry", "harness", "report", "api",
               "cli")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"weightdecay.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'weightdecay' has no attribute {name!r}")


def __dir__():
    return __all__

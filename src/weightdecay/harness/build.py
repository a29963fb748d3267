"""What a :class:`RunConfig` builds: data set, model, optimizer, eta_t schedule in updates.

Epochs become updates here, with the library's arithmetic
(``weightdecay.schedules.updates_per_epoch`` = ceil(N / batch_size) and
``weightdecay.schedules.epochs_to_updates``, halves rounded up), before the library's
schedules, which count updates, are built. The training loop itself is
:mod:`weightdecay.harness.train`.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (Sec. 2,
Algorithms 1-2; App. B.1 normalized weight decay; SGDR, ICLR 2017, warm restarts).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import registry
from .config import RunConfig

__all__ = [
    "RunSetupError",
    "needs_example_input",
    "not_scale_invariant_groups",
    "build_network",
    "check_user_code",
    "build_normalized_decay",
    "build_optimizer",
    "build_schedule",
    "check_device",
    "get_dataset",
    "steps_per_epoch",
]

# (dataset name, device, test_size, user code hash) -> Dataset; loading a data set once per
# process suffices (a worker loads each data set once, whatever the number of its runs)
_DATASET_CACHE: dict[tuple[str, str, int | None, str | None], Any] = {}


def get_dataset(name: str, device: str = "cpu", test_size: int | None = None) -> Any:
    """``weightdecay.harness.data.load_dataset(name, device=device, test_size=test_size)``,
    cached per process (a user's data set: per version of its code).

    Never downloads (``download=False``): fetch data sets beforehand.
    """
    code = registry.user_code("dataset", name).sha256 if registry.is_import_string(name) \
        else None
    cache_key = (name, str(device), test_size, code)
    if cache_key not in _DATASET_CACHE:
        from .data import load_dataset

        _DATASET_CACHE[cache_key] = load_dataset(
            name, download=False, device=device, test_size=test_size
        )
    return _DATASET_CACHE[cache_key]


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Updates per epoch, ``ceil(num_train / batch_size)`` (the last batch may be short):
    the library's ``weightdecay.schedules.updates_per_epoch``."""
    from weightdecay.schedules import updates_per_epoch

    return updates_per_epoch(num_train, batch_size)


def _epochs_to_updates(epochs: float, spe: int) -> int:
    """The library's ``epochs_to_updates`` (halves round up), and at least one update so
    that a tiny fractional T_0 or milestone still gives a valid period."""
    from weightdecay.schedules import epochs_to_updates

    return max(1, epochs_to_updates(epochs, spe))


def build_schedule(config: RunConfig, spe: int) -> Any:
    """The eta_t schedule of ``config`` in UPDATES (``spe`` = updates per epoch).

    fixed -> ``constant()``; step -> ``step_drop`` at the (resolved) milestone epochs times
    ``spe`` with ``drop_factor``; linear / cosine -> over the whole run
    (``epochs * spe`` updates, eta_min = 0); restarts -> ``cosine_restarts(T_0 * spe,
    T_mult)`` (SGDR, eta_max = 1, eta_min = 0 in every period, as in the paper).
    """
    from weightdecay import schedules

    total = config.epochs * spe
    name = config.schedule
    if name == "fixed":
        return schedules.constant()
    if name == "step":
        ms = [_epochs_to_updates(m, spe) for m in config.resolved_milestones()]
        ms = sorted(set(ms))
        return schedules.step_drop(ms, factor=config.drop_factor)
    if name == "linear":
        return schedules.linear(total)
    if name == "cosine":
        return schedules.cosine(total)
    if name == "restarts":
        assert config.T_0 is not None  # RunConfig.validate: restarts need T_0
        return schedules.cosine_restarts(
            T_0=_epochs_to_updates(config.T_0, spe), T_mult=config.T_mult
        )
    raise ValueError(f"schedule={name!r} is not valid")  # pragma: no cover - validated


class RunSetupError(ValueError):
    """A valid configuration that cannot be set up for its model or data (a network for
    another kind of input; decay of scale-invariant weights only, on a model that has none)."""


def build_optimizer(
    config: RunConfig, model: torch.nn.Module, weight_decay: float | None = None,
    example_input: torch.Tensor | None = None,
) -> torch.optim.Optimizer:
    """The optimizer of ``config`` over ``model``'s parameters.

    ``weight_decay`` overrides ``config.weight_decay`` (the training loop passes
    lambda_norm to mark the decayed groups for :class:`weightdecay.NormalizedDecay`, which
    then sets them).
    With ``config.decay_all`` (the paper) every parameter is decayed; otherwise biases and
    1-D tensors go to a group with ``weight_decay=0`` via
    :func:`weightdecay.param_groups_weight_decay`. ``config.scale_invariant_only`` decays
    only the weights a following normalization makes scale-invariant, found on
    ``example_input`` (a training batch), every other parameter none;
    ``config.decay_subset="not_scale_invariant"`` the opposite
    (:func:`not_scale_invariant_groups`). ``config.cautious`` and
    ``config.l1`` go to the optimizer. ``config.momentum`` is SGD's momentum and Adam's
    beta1 (the paper uses one beta1 = 0.9 for both); beta2 = 0.999, eps = 1e-8.
    """
    import weightdecay

    lam = config.weight_decay if weight_decay is None else weight_decay
    cls = registry.optimizer(config.optimizer).cls()
    if config.decay_subset == "not_scale_invariant":
        params: Any = not_scale_invariant_groups(model, lam, example_input, config.model)
    elif config.scale_invariant_only:
        if example_input is None:
            raise ValueError("scale_invariant_only needs example_input, a training batch")
        params = weightdecay.param_groups_weight_decay(
            model, lam, scale_invariant_only=True, example_input=example_input,
            other_weight_decay=0.0)
        if not params.summary.scale_invariance.invariant:  # what the probe found, any λ
            raise RunSetupError(f"scale_invariant_only: no weight of model {config.model!r} is "
                             "scale-invariant (no normalization follows it), so nothing would "
                             "be decayed")
    elif config.decay_all:
        params = list(model.parameters())
    else:
        params = weightdecay.param_groups_weight_decay(model, lam, verbose=False)
    common: dict[str, Any] = {"lr": config.lr, "weight_decay": lam,
                              "decay_convention": config.decay_convention}
    if config.l1:
        common["l1"] = config.l1
    if config.cautious:
        common["cautious"] = True
    if config.optimizer in ("sgd", "sgdw"):
        return cls(params, momentum=config.momentum, **common)
    return cls(params, betas=(config.momentum, 0.999), eps=1e-8, **common)


def _user_network(name: str, dataset: Any) -> torch.nn.Module:
    """A user's model: ``function(input_shape, num_classes)``, which must return an
    ``nn.Module`` with parameters (:class:`weightdecay.registry.UserCodeError` otherwise)."""
    function = registry.user_code("model", name).function
    shape, k = tuple(dataset.input_shape), dataset.num_classes
    expected = f"expected {registry.EXPECTED['model']}"
    try:
        net = function(shape, k)
    except Exception as exc:  # the user's code: one line, whatever it raised
        why = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise registry.UserCodeError(f"model {name!r} called with input_shape={shape}, "
                                     f"num_classes={k} raised {why}; {expected}") from None
    if not isinstance(net, torch.nn.Module):
        raise registry.UserCodeError(f"model {name!r} returned a {type(net).__name__}; "
                                     f"{expected}")
    if not any(True for _ in net.parameters()):
        raise registry.UserCodeError(f"model {name!r} returned a module without parameters "
                                     f"(nothing to train); {expected}")
    return net


def check_user_code(config: RunConfig) -> None:
    """Before runs of ``config`` start: its user data set loads, its user model builds, and
    the model maps two training inputs to ``(2, num_classes)`` logits. Nothing to do with
    built-in names. Raises :class:`weightdecay.registry.UserCodeError` in one line."""
    if not (registry.is_import_string(config.model)
            or registry.is_import_string(config.dataset)):
        return
    data = get_dataset(config.dataset, "cpu", config.test_size)
    net = build_network(config, data)
    x = data.x_train[:2]
    try:
        with torch.no_grad():
            out = net.eval()(x)
    except Exception as exc:  # the user's code: one line, whatever it raised
        why = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise registry.UserCodeError(
            f"model {config.model!r} on data set {config.dataset!r}: the forward pass of two "
            f"training inputs ({tuple(x.shape)}, {x.dtype}) raised {why}") from None
    want = (len(x), data.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise registry.UserCodeError(
            f"model {config.model!r} on data set {config.dataset!r} returned {got} for two "
            f"inputs; expected logits of shape {want} (a batch, num_classes)")


def needs_example_input(config: RunConfig) -> bool:
    """Whether :func:`build_optimizer` needs a training batch (to find the scale-invariant
    weights)."""
    return config.scale_invariant_only or config.decay_subset is not None


def not_scale_invariant_groups(model: torch.nn.Module, weight_decay: float,
                               example_input: torch.Tensor | None, model_name: str = "model"
                               ) -> list[dict[str, Any]]:
    """Param groups that decay every parameter of ``model`` *except* the weights a following
    normalization makes scale-invariant (``decay_subset="not_scale_invariant"``).

    The scale-invariant weights are found on ``example_input`` (a training batch) by
    :func:`weightdecay.find_scale_invariant_weights` (module structure, confirmed on the
    batch). Group 0 (``weight_decay``) holds everything else -- the head, the normalizations'
    scales and shifts, biases, weights without a normalization after them, as the paper
    decays them (``decay_all``); group 1 (``weight_decay = 0``) the scale-invariant weights.
    For a network with BatchNorm this is the complement of ``scale_invariant_only``: which
    part of the decay makes AdamW's best lambda move with alpha (Xie & Li, ICML 2024, arXiv
    2404.04454: a weight that is not scale-invariant is confined to ||theta||_inf <= alpha /
    lambda in the paper's convention).

    Raises:
        RunSetupError: the model has no scale-invariant weight (the subset would be all).
    """
    import weightdecay

    if example_input is None:
        raise ValueError("decay_subset needs example_input, a training batch")
    invariant = set(weightdecay.find_scale_invariant_weights(model, example_input).invariant)
    if not invariant:
        raise RunSetupError(f"decay_subset='not_scale_invariant': no weight of model "
                            f"{model_name!r} is scale-invariant (no normalization follows it), "
                            "so the subset would be every parameter")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [(n, p) for n, p in named if n not in invariant]
    keep = [(n, p) for n, p in named if n in invariant]
    return [{"params": [p for _, p in members], "param_names": [n for n, _ in members],
             "weight_decay": lam}
            for members, lam in ((decay, weight_decay), (keep, 0.0)) if members]


def build_network(config: RunConfig, dataset: Any) -> torch.nn.Module:
    """The network of ``config`` for ``dataset``
    (:func:`weightdecay.harness.models.build_model`, ``config.width`` its width option; a
    user's model: its function called with the data set's input shape and classes)."""
    from .models import build_model

    if registry.is_import_string(config.model):
        return _user_network(config.model, dataset)
    try:
        return build_model(config.model, dataset, width=config.width)
    except ValueError as exc:  # e.g. a 1-D network for images: the config cannot be set up
        raise RunSetupError(str(exc)) from None


def build_normalized_decay(
    config: RunConfig, optimizer: torch.optim.Optimizer, schedule: Any, n_train: int, spe: int
) -> Any:
    """``weightdecay.NormalizedDecay`` for ``config.weight_decay_norm`` (App. B.1): lambda =
    lambda_norm * sqrt(b / (B * T)), T = run length or current restart period in epochs."""
    import weightdecay

    total = config.epochs * spe
    return weightdecay.NormalizedDecay(
        optimizer,
        config.weight_decay_norm,
        config.batch_size,
        n_train,
        schedule=schedule,
        total_updates=total,
        updates_per_epoch=spe,
    )


def check_device(device: str) -> None:
    """Raise :class:`ValueError` unless this torch can use ``device`` here."""
    kind, _, index = device.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} is not available: this torch has no CUDA "
                             "support or sees no GPU; use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} is not available: torch sees "
                             f"{torch.cuda.device_count()} GPU(s)")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} is not available on this machine; use cpu")

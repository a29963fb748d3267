"""One training run of the experiment harness: a :class:`RunConfig` in, a metrics record out.

:func:`run` trains one network the way the experiments of Loshchilov & Hutter,
"Decoupled Weight Decay Regularization" (ICLR 2019, Sec. 4) do:

1. seed everything (``torch.manual_seed`` for initialisation, a dedicated
   ``torch.Generator`` for shuffling and augmentation);
2. load the data set (cached per process, or passed in with ``data=``) and build the model;
3. build SGD / SGDW / Adam / AdamW from :mod:`weightdecay`, the eta_t schedule in
   **updates** (epochs are converted here, ``steps_per_epoch = ceil(N / batch_size)``)
   driven through :func:`weightdecay.schedules.as_torch_scheduler`, and
   :class:`weightdecay.NormalizedDecay` when ``weight_decay_norm`` is set (App. B.1);
4. train for ``epochs`` epochs, recording per epoch the mean training loss, the test error,
   the weight norm, eta_t and the decay multiplier actually applied;
5. stop on a NaN/inf loss or weights (``diverged=True``: a result, not an exception);
6. checkpoint atomically at the end of every epoch and resume from the checkpoint when it
   exists, bit-identically on CPU.

The hot loop does one host sync per epoch (the loss is accumulated as a tensor), so the
harness costs a few percent over a hand-written loop (see ``benchmarks/bench_harness.py``).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import RunConfig
from .vectors import pack_wrong

__all__ = [
    "HISTORY_KEYS",
    "RECORD_KEYS",
    "build_optimizer",
    "build_schedule",
    "evaluate",
    "get_dataset",
    "misclassified",
    "run",
    "steps_per_epoch",
]

#: per-epoch lists in ``record["history"]`` (all of equal length)
HISTORY_KEYS = ("epoch", "train_loss", "test_error", "weight_norm", "eta", "effective_decay",
                "test_wrong")
#: keys of the dict returned by :func:`run`
RECORD_KEYS = (
    "final_test_error",
    "best_test_error",
    "final_train_loss",
    "diverged",
    "wall_seconds",
    "num_test",
    "final_test_wrong",
    "history",
)

_OPTIMIZER_CLASSES = {"sgd": "SGD", "sgdw": "SGDW", "adam": "Adam", "adamw": "AdamW"}
_DECOUPLED = ("sgdw", "adamw")
_CHECKPOINT_FORMAT = 1
# Test-set forward passes are chunked so that big test sets (CIFAR-10: 10k) fit in memory.
_EVAL_BATCH = 1000

# (dataset name, device) -> Dataset; loading MNIST-1D or CIFAR-10 once per process is enough
_DATASET_CACHE: dict[tuple[str, str, int | None], Any] = {}
# the model option that config.width sets, per model name
_WIDTH_OPTION = {"cnn1d_bn": "channels", "cnn1d": "channels", "mlp": "hidden",
                 "resnet_small": "width", "shakeshake26_2x64d": "width"}


# ------------------------------------------------------------------------------ building


def get_dataset(name: str, device: str = "cpu", test_size: int | None = None) -> Any:
    """``weightdecay.harness.data.load_dataset(name, device=device, test_size=test_size)``,
    cached per process.

    Never downloads (``download=False``): fetch data sets beforehand.
    """
    cache_key = (name, str(device), test_size)
    if cache_key not in _DATASET_CACHE:
        from .data import load_dataset

        _DATASET_CACHE[cache_key] = load_dataset(
            name, download=False, device=device, test_size=test_size
        )
    return _DATASET_CACHE[cache_key]


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Updates per epoch, ``ceil(num_train / batch_size)`` (the last batch may be short)."""
    if num_train <= 0:
        raise ValueError(f"num_train must be > 0, got {num_train!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size!r}")
    return math.ceil(num_train / batch_size)


def _epochs_to_updates(epochs: float, spe: int) -> int:
    # at least one update so that a tiny fractional T_0 still gives a valid period
    return max(1, round(epochs * spe))


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
        return schedules.cosine_restarts(
            T_0=_epochs_to_updates(config.T_0, spe), T_mult=config.T_mult
        )
    raise ValueError(f"schedule={name!r} is not valid")  # pragma: no cover - validated


def build_optimizer(
    config: RunConfig, model: torch.nn.Module, weight_decay: float | None = None
) -> torch.optim.Optimizer:
    """The optimizer of ``config`` over ``model``'s parameters.

    ``weight_decay`` overrides ``config.weight_decay`` (:func:`run` passes lambda_norm to
    mark the decayed groups for :class:`weightdecay.NormalizedDecay`, which then sets them).
    With ``config.decay_all`` (the paper) every parameter is decayed; otherwise biases and
    1-D tensors go to a group with ``weight_decay=0`` via
    :func:`weightdecay.param_groups_weight_decay`. ``config.momentum`` is SGD's momentum and
    Adam's beta1 (the paper uses one beta1 = 0.9 for both); beta2 = 0.999, eps = 1e-8.
    """
    import weightdecay

    lam = config.weight_decay if weight_decay is None else weight_decay
    cls = getattr(weightdecay, _OPTIMIZER_CLASSES[config.optimizer])
    if config.decay_all:
        params: Any = list(model.parameters())
    else:
        params = weightdecay.param_groups_weight_decay(model, lam, verbose=False)
    common = {"lr": config.lr, "weight_decay": lam, "decay_convention": config.decay_convention}
    if config.optimizer in ("sgd", "sgdw"):
        return cls(params, momentum=config.momentum, **common)
    return cls(params, betas=(config.momentum, 0.999), eps=1e-8, **common)


def _build_normalized_decay(
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


# ------------------------------------------------------------------------------ metrics


@torch.no_grad()
def misclassified(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean vector: True where ``model`` (eval mode) misclassifies an example of ``(x, y)``."""
    model.eval()
    return torch.cat([
        model(x[i : i + _EVAL_BATCH]).argmax(dim=1) != y[i : i + _EVAL_BATCH]
        for i in range(0, len(y), _EVAL_BATCH)
    ])


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Classification error of ``model`` on ``(x, y)`` in [0, 1] (eval mode, one sync)."""
    return misclassified(model, x, y).sum().item() / len(y)


def _weight_norm(model: torch.nn.Module) -> float:
    try:
        from .models import weight_norm
    except ImportError:  # pragma: no cover - models.py is part of the harness
        with torch.no_grad():
            total = sum(p.detach().double().pow(2).sum() for p in model.parameters())
            return math.sqrt(float(total))
    return float(weight_norm(model))


def _effective_decay(optimizer_name: str, convention: str, group: Mapping, lr_t: float,
                     lam: float) -> float:
    """Per-update multiplier d_t of theta (theta <- theta - d_t theta) at the last update.

    Decoupled (SGDW/AdamW): eta_t*lambda ("schedule", the paper), lr_t*lambda ("lr") or
    lambda ("constant"). L2 (SGD/Adam): lr_t*lambda', the decay that plain SGD with L2
    coefficient lambda' amounts to (Prop. 1); for Adam it is only nominal, since the
    preconditioner rescales it per coordinate (Prop. 2).
    """
    if lam == 0:
        return 0.0
    if optimizer_name not in _DECOUPLED or convention == "lr":
        return lr_t * lam
    if convention == "constant":
        return lam
    return lr_t / group["initial_lr"] * lam


# ------------------------------------------------------------------------------ state


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "generator": generator.get_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
    }


def _set_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])
    random.setstate(_as_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))


def _as_tuples(obj: Any) -> Any:
    return tuple(_as_tuples(o) for o in obj) if isinstance(obj, (list, tuple)) else obj


def _save_atomic(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` via a temporary file and ``os.replace`` (atomic on POSIX)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_checkpoint(path: str) -> dict[str, Any]:
    # Everything saved is tensors and plain Python values, so the safe loader suffices.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"checkpoint_path={path!r} cannot be read as a harness checkpoint ({err}); "
            "remove it to start the run afresh"
        ) from err


def _stored_config(stored: Any) -> Any:
    """A checkpoint's config with the fields it predates filled in by their defaults."""
    try:
        return RunConfig.from_dict(stored).to_dict()
    except (ValueError, TypeError):
        return stored


def _empty_history() -> dict[str, list]:
    return {k: [] for k in HISTORY_KEYS}


def _record(history: dict[str, list], diverged: bool, wall: float,
            num_test: int) -> dict[str, Any]:
    finite = [e for e in history["test_error"] if math.isfinite(e)]
    if diverged or not history["epoch"]:
        final_err = best_err = final_loss = float("nan")
    else:
        final_err = history["test_error"][-1]
        best_err = min(finite) if finite else float("nan")
        final_loss = history["train_loss"][-1]
    return {
        "final_test_error": final_err,
        "best_test_error": best_err,
        "final_train_loss": final_loss,
        "diverged": bool(diverged),
        "wall_seconds": wall,
        "num_test": int(num_test),  # test-set size: the binomial noise of a test error
        # which test examples the final model gets wrong (pack_wrong), None if diverged
        "final_test_wrong": (None if diverged or not history.get("test_wrong")
                             else history["test_wrong"][-1]),
        "history": {k: list(v) for k, v in history.items()},
    }


# ------------------------------------------------------------------------------ the run


def run(
    config: RunConfig | Mapping[str, Any],
    checkpoint_path: str | os.PathLike | None = None,
    progress: bool = False,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    data: Any = None,
) -> dict[str, Any]:
    """Train one network as described by ``config``; return its metrics record.

    Args:
        config: a :class:`RunConfig` (or its ``to_dict()``); validated here.
        checkpoint_path: file written atomically (tmp + ``os.replace``) at the end of every
            epoch with model, optimizer, schedulers, RNG states, history and epoch. If it
            exists at start, the run resumes from it (it must have been written for the
            same config, else ``ValueError``); the result is bit-identical on CPU to an
            uninterrupted run. A finished or diverged checkpoint returns its record at once.
        progress: show a tqdm bar over epochs.
        on_epoch: called as ``on_epoch(epoch, metrics)`` after each epoch's checkpoint,
            ``metrics`` holding that epoch's history values plus ``"diverged"``. An
            exception it raises (e.g. ``optuna.TrialPruned``) propagates.
        data: a preloaded data set (``load_dataset`` result) to skip loading; by default
            ``config.dataset`` is loaded once per process and cached.

    Returns:
        ``{"final_test_error", "best_test_error", "final_train_loss", "diverged",
        "wall_seconds", "num_test", "final_test_wrong", "history"}``. Test errors are
        fractions in [0, 1]; ``final_test_wrong`` says which test examples the final model
        misclassifies (text, :func:`weightdecay.harness.vectors.pack_wrong`); the loss is
        the mean cross-entropy over the last epoch's batches (nats); ``wall_seconds`` sums
        all resumed segments. ``history`` maps each of :data:`HISTORY_KEYS` to a list with
        one value per epoch (``eta``: eta_t of the last update of the epoch;
        ``effective_decay``: the multiplier d_t with theta <- theta - d_t*theta applied at
        that update; ``test_error``: NaN at epochs skipped by ``config.eval_every``;
        ``test_wrong``: the packed per-example vector of each evaluated epoch, else None). A
        diverged run (NaN/inf loss or weights) stops with ``diverged=True`` and NaN
        final/best errors and loss; its last history row is the epoch where it diverged.
    """
    start_time = time.perf_counter()
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    config.validate()
    device = torch.device(config.device)

    checkpoint = None
    if checkpoint_path is not None:
        checkpoint_path = os.fspath(checkpoint_path)
        if os.path.exists(checkpoint_path):
            checkpoint = _load_checkpoint(checkpoint_path)
            if _stored_config(checkpoint.get("config")) != config.to_dict():
                raise ValueError(
                    f"checkpoint_path={checkpoint_path!r} holds a run of a different config "
                    f"({checkpoint.get('config')!r}); remove it or pass another path"
                )
            if checkpoint["epoch"] >= config.epochs or checkpoint["diverged"]:
                return _record(checkpoint["history"], checkpoint["diverged"],
                               checkpoint["wall_seconds"], checkpoint.get("num_test", 0))

    # 1. seed everything
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)  # also seeds CUDA
    generator = torch.Generator().manual_seed(config.seed)  # shuffling and augmentation

    # 2. data and model
    if data is not None and getattr(data, "name", config.dataset) != config.dataset:
        raise ValueError(
            f"data holds dataset {data.name!r} but config.dataset={config.dataset!r}"
        )
    if data is not None and config.test_size is not None and data.num_test != config.test_size:
        raise ValueError(f"data has {data.num_test} test examples but "
                         f"config.test_size={config.test_size}")
    dataset = (data if data is not None
               else get_dataset(config.dataset, config.device, config.test_size))
    x_test = dataset.x_test.to(device)
    y_test = dataset.y_test.to(device)
    n_train = len(dataset.y_train)
    spe = steps_per_epoch(n_train, config.batch_size)

    from .models import build_model

    options = {} if config.width is None else {_WIDTH_OPTION[config.model]: config.width}
    model = build_model(config.model, dataset, **options).to(device)

    # 3. optimizer, schedule (in updates), normalized decay
    schedule = build_schedule(config, spe)
    if config.weight_decay_norm is None:
        optimizer = build_optimizer(config, model)
    else:
        # NormalizedDecay treats groups created with weight_decay == 0 as no-decay groups
        # and overwrites the others at construction: mark the decayed ones with lambda_norm
        optimizer = build_optimizer(config, model, weight_decay=config.weight_decay_norm)
    from weightdecay.schedules import as_torch_scheduler

    lr_scheduler = as_torch_scheduler(optimizer, schedule)
    normalized = None
    if config.weight_decay_norm is not None:
        normalized = _build_normalized_decay(config, optimizer, schedule, n_train, spe)

    history = _empty_history()
    start_epoch = 0
    wall_before = 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        if normalized is not None:
            normalized.load_state_dict(checkpoint["normalized_decay"])
        _set_rng_state(checkpoint["rng"], generator)
        history = checkpoint["history"]
        start_epoch = checkpoint["epoch"]
        wall_before = checkpoint["wall_seconds"]

    group = optimizer.param_groups[0]
    # the group whose decay we report: with decay_all=False, biases and norm scales (1-D
    # tensors) sit in a group with weight_decay = 0; report the group of the weights
    decay_group = next(
        (g for g in optimizer.param_groups if any(p.ndim > 1 for p in g["params"])), group
    )

    epochs: Any = range(start_epoch + 1, config.epochs + 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(epochs, total=config.epochs, initial=start_epoch, unit="epoch",
                   desc=f"{config.optimizer} lr={config.lr:g}")
        epochs = bar

    diverged = False
    try:
        for epoch in epochs:
            # 4. one epoch: no host sync inside the loop
            model.train()
            loss_sum = torch.zeros((), device=device)
            n_batches = 0
            lr_t = group["lr"]
            lam_t = decay_group["weight_decay"]
            for xb, yb in dataset.batches(
                config.batch_size, shuffle=True, generator=generator, device=device
            ):
                lr_t = group["lr"]  # what this update applies (read before stepping)
                lam_t = decay_group["weight_decay"]
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                lr_scheduler.step()
                if normalized is not None:
                    normalized.step()
                loss_sum += loss.detach()
                n_batches += 1

            # 5. metrics and divergence
            train_loss = loss_sum.item() / n_batches
            norm = _weight_norm(model)
            diverged = not (math.isfinite(train_loss) and math.isfinite(norm))
            test_error, test_wrong = float("nan"), None
            if not diverged and (epoch % config.eval_every == 0 or epoch == config.epochs):
                wrong = misclassified(model, x_test, y_test)
                test_error = wrong.sum().item() / len(y_test)
                test_wrong = pack_wrong(wrong.cpu().numpy())
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "test_error": test_error,
                "weight_norm": norm,
                "eta": lr_t / group["initial_lr"],
                "effective_decay": _effective_decay(
                    config.optimizer, config.decay_convention, decay_group, lr_t, lam_t
                ),
                "test_wrong": test_wrong,
            }
            for k in HISTORY_KEYS:
                history[k].append(row[k])
            wall = wall_before + time.perf_counter() - start_time

            # 6. checkpoint, then report
            if checkpoint_path is not None:
                _save_atomic(
                    {
                        "format": _CHECKPOINT_FORMAT,
                        "config": config.to_dict(),
                        "epoch": epoch,
                        "diverged": diverged,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "lr_scheduler": lr_scheduler.state_dict(),
                        "normalized_decay": (
                            normalized.state_dict() if normalized is not None else None
                        ),
                        "rng": _rng_state(generator),
                        "history": history,
                        "wall_seconds": wall,
                        "num_test": dataset.num_test,
                    },
                    checkpoint_path,
                )
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.4g}", test_err=f"{test_error:.4f}")
            if on_epoch is not None:
                on_epoch(epoch, {**row, "diverged": diverged})
            if diverged:
                break
    finally:
        if bar is not None:
            bar.close()

    wall = wall_before + time.perf_counter() - start_time
    return _record(history, diverged, wall, dataset.num_test)

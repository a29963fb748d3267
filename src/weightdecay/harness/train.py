"""One training run of the experiment harness: a :class:`RunConfig` in, a metrics record out.

:func:`run` trains one network the way the experiments of Loshchilov & Hutter,
"Decoupled Weight Decay Regularization" (ICLR 2019, Sec. 4) do, in named stages:

0. resume: a checkpoint that exists is read and checked
   (:func:`weightdecay.harness.checkpoint.load_checkpoint`); a finished or diverged one
   returns its record at once;
1. set-up (:func:`_set_up`): seed everything (``torch.manual_seed`` for initialisation, a
   dedicated ``torch.Generator`` for shuffling and augmentation), load the data set
   (cached per process, or passed in with ``data=``), build the model, SGD / SGDW / Adam /
   AdamW, the eta_t schedule in **updates** and :class:`weightdecay.NormalizedDecay` when
   ``weight_decay_norm`` is set (App. B.1) -- see :mod:`weightdecay.harness.build` --
   then restore the checkpoint's state, and prepare the training step (compiled once per
   process where ``config.compile`` asks for it and it pays and works, else eager: see
   :mod:`weightdecay.harness.step`);
2. one epoch (:func:`_epoch`): the updates, then the mean training loss, the test error,
   the weight norm, eta_t and the decay multiplier actually applied; a NaN/inf loss or
   weights stops the run (``diverged=True``: a result, not an exception);
3. checkpoint (:func:`_save`): atomically at the end of every epoch, so that a resumed
   run is bit-identical on CPU to an uninterrupted one;
4. record (:func:`_record`): the metrics record of :data:`RECORD_KEYS`.

The hot loop does one host sync per epoch (the loss is accumulated as a tensor), so the
harness costs a few percent over a hand-written loop (see ``benchmarks/bench_harness.py``).
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from .. import registry
from .build import (
    build_network,
    build_normalized_decay,
    build_optimizer,
    build_schedule,
    check_device,
    get_dataset,
    needs_example_input,
    steps_per_epoch,
)
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)
from .config import RunConfig
from .models import weight_norm
from .step import LossFunction, batch_sizes, loss_function
from .vectors import pack_wrong

__all__ = [
    "HISTORY_KEYS",
    "RECORD_KEYS",
    "build_optimizer",
    "build_schedule",
    "check_device",
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

# Test-set forward passes are chunked so that big test sets (CIFAR-10: 10k) fit in memory.
_EVAL_BATCH = 1000


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


def _effective_decay(optimizer_name: str, group: Mapping, lr_t: float, lam: float) -> float:
    """Per-update multiplier d_t of theta (theta <- theta - d_t theta) at an update that
    applied learning rate ``lr_t`` and decay ``lam`` in ``group``.

    Decoupled (SGDW/AdamW): the library's own rule (``weightdecay.optim._decay``:
    eta_t*lambda for "schedule", the paper; lr_t*lambda for "lr"; lambda for "constant").
    L2 (SGD/Adam): lr_t*lambda', the decay that plain SGD with L2 coefficient lambda'
    amounts to (Prop. 1); for Adam it is only nominal, since the preconditioner rescales it
    per coordinate (Prop. 2).
    """
    if not registry.is_decoupled(optimizer_name):
        return lr_t * lam
    from weightdecay import decay_per_update

    return decay_per_update({**group, "lr": lr_t, "weight_decay": lam})


# ------------------------------------------------------------------------------ record


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
        # which test examples the final model gets wrong (vectors.pack_wrong)
        "final_test_wrong": (None if diverged or not history.get("test_wrong")
                             else history["test_wrong"][-1]),
        "history": {k: list(v) for k, v in history.items()},
    }


# ------------------------------------------------------------------------------ stages


@dataclasses.dataclass
class _Run:
    """Everything one run carries from stage to stage."""

    config: RunConfig
    device: torch.device
    dataset: Any
    x_test: torch.Tensor
    y_test: torch.Tensor
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    normalized: Any  # weightdecay.NormalizedDecay or None
    generator: torch.Generator
    history: dict[str, list]
    loss: LossFunction  # loss(x, y): forward and loss of one batch (compiled or eager)
    group: dict = dataclasses.field(default_factory=dict)  # lr reported (eta = lr/initial_lr)
    decay_group: dict = dataclasses.field(default_factory=dict)  # the decay reported
    start_epoch: int = 0
    wall_before: float = 0.0


def _finished_record(checkpoint: Mapping[str, Any], config: RunConfig) -> dict[str, Any] | None:
    """Stage 0: the record of a finished or diverged checkpoint (``None``: train on)."""
    if checkpoint["epoch"] < config.epochs and not checkpoint["diverged"]:
        return None
    return _record(checkpoint["history"], checkpoint["diverged"], checkpoint["wall_seconds"],
                   checkpoint.get("num_test", 0))


def _set_up(config: RunConfig, data: Any, checkpoint: Mapping[str, Any] | None) -> _Run:
    """Stage 1: seed, data, model, optimizer, schedule (in updates), normalized decay;
    then the state of ``checkpoint`` restored, if resuming."""
    check_device(config.device)
    device = torch.device(config.device)
    # seed everything: initialisation from torch's global RNG, shuffling and augmentation
    # from a dedicated generator
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)  # also seeds CUDA
    generator = torch.Generator().manual_seed(config.seed)

    if data is not None and getattr(data, "name", config.dataset) != config.dataset:
        raise ValueError(
            f"data holds dataset {data.name!r} but config.dataset={config.dataset!r}"
        )
    if data is not None and config.test_size is not None and data.num_test != config.test_size:
        raise ValueError(f"data has {data.num_test} test examples but "
                         f"config.test_size={config.test_size}")
    dataset = (data if data is not None
               else get_dataset(config.dataset, config.device, config.test_size))
    n_train = len(dataset.y_train)
    spe = steps_per_epoch(n_train, config.batch_size)

    model = build_network(config, dataset).to(device)

    schedule = build_schedule(config, spe)
    # the first training examples, for finding scale-invariant weights (a forward pass that
    # changes nothing: modes, buffers and random state are restored)
    probe = (dataset.x_train[:config.batch_size].to(device)
             if needs_example_input(config) else None)
    # NormalizedDecay treats groups created with weight_decay == 0 as no-decay groups and
    # overwrites the others at construction: mark the decayed ones with lambda_norm
    optimizer = build_optimizer(config, model, weight_decay=config.weight_decay_norm,
                                example_input=probe)
    from weightdecay.schedules import as_torch_scheduler

    lr_scheduler = as_torch_scheduler(optimizer, schedule)
    normalized = None
    if config.weight_decay_norm is not None:
        normalized = build_normalized_decay(config, optimizer, schedule, n_train, spe)

    # compiled (if at all) now, before the first update: never in the middle of the run
    loss = loss_function(model, config, batch_sizes(n_train, config.batch_size),
                         dataset.x_train.shape[1:], dataset.x_train.dtype)
    state = _Run(config=config, device=device, dataset=dataset,
                 x_test=dataset.x_test.to(device), y_test=dataset.y_test.to(device),
                 model=model, optimizer=optimizer, lr_scheduler=lr_scheduler,
                 normalized=normalized, generator=generator, history=_empty_history(),
                 loss=loss)
    if checkpoint is not None:
        _restore(state, checkpoint)
    # read after the restore: Optimizer.load_state_dict replaces the group dicts
    state.group = optimizer.param_groups[0]
    # the group whose decay we report: with decay_all=False, biases and norm scales (1-D
    # tensors) sit in a group with weight_decay = 0 (and with scale_invariant_only the
    # other weights too); report a decayed group of weights
    weights = [g for g in optimizer.param_groups if any(p.ndim > 1 for p in g["params"])]
    state.decay_group = next((g for g in weights if g["weight_decay"] > 0),
                             weights[0] if weights else state.group)
    return state


def _restore(state: _Run, checkpoint: Mapping[str, Any]) -> None:
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    if state.normalized is not None:
        state.normalized.load_state_dict(checkpoint["normalized_decay"])
    set_rng_state(checkpoint["rng"], state.generator)
    state.history = checkpoint["history"]
    state.start_epoch = checkpoint["epoch"]
    state.wall_before = checkpoint["wall_seconds"]


def _epoch(state: _Run, epoch: int) -> tuple[dict[str, Any], bool]:
    """Stage 2: one epoch of updates (no host sync inside), then its metrics; returns the
    history row and whether the run diverged (NaN/inf loss or weights)."""
    config, group, decay_group = state.config, state.group, state.decay_group
    state.model.train()
    loss_sum = torch.zeros((), device=state.device)
    n_batches = 0
    lr_t = group["lr"]
    lam_t = decay_group["weight_decay"]
    for xb, yb in state.dataset.batches(
        config.batch_size, shuffle=True, generator=state.generator, device=state.device
    ):
        lr_t = group["lr"]  # what this update applies (read before stepping)
        lam_t = decay_group["weight_decay"]
        loss = state.loss(xb, yb)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.lr_scheduler.step()
        if state.normalized is not None:
            state.normalized.step()
        loss_sum += loss.detach()
        n_batches += 1

    train_loss = loss_sum.item() / n_batches
    norm = float(weight_norm(state.model))
    diverged = not (math.isfinite(train_loss) and math.isfinite(norm))
    test_error, test_wrong = float("nan"), None
    if not diverged and (epoch % config.eval_every == 0 or epoch == config.epochs):
        wrong = misclassified(state.model, state.x_test, state.y_test)
        test_error = wrong.sum().item() / len(state.y_test)
        test_wrong = pack_wrong(wrong.cpu().numpy())
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "test_error": test_error,
        "weight_norm": norm,
        "eta": lr_t / group["initial_lr"],
        "effective_decay": _effective_decay(config.optimizer, decay_group, lr_t, lam_t),
        "test_wrong": test_wrong,
    }
    for k in HISTORY_KEYS:
        state.history[k].append(row[k])
    return row, diverged


def _attach_monitor(state: _Run) -> Any:
    """``config.monitor_every``: the equilibrium monitor on the run's optimizer
    (:class:`weightdecay.harness.monitoring.RunMonitor`; a resumed run continues its blocks in
    ``history["monitor"]``), or None. It reads the weights only: training is unchanged."""
    config = state.config
    if config.monitor_every is None:
        return None
    from .monitoring import RunMonitor

    return RunMonitor(state.model, state.optimizer, config.monitor_every,
                      state.dataset.x_train[:config.batch_size].to(state.device),
                      steps_per_epoch(len(state.dataset.y_train), config.batch_size),
                      state.history)


def _save(state: _Run, epoch: int, diverged: bool, wall: float, path: str) -> None:
    """Stage 3: the checkpoint after ``epoch`` (atomic)."""
    save_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            "config": state.config.to_dict(),
            "epoch": epoch,
            "diverged": diverged,
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "lr_scheduler": state.lr_scheduler.state_dict(),
            "normalized_decay": (
                state.normalized.state_dict() if state.normalized is not None else None
            ),
            "rng": rng_state(state.generator),
            "history": state.history,
            "wall_seconds": wall,
            "num_test": state.dataset.num_test,
        },
        path,
    )


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
        ``test_wrong``: the packed per-example vector of each evaluated epoch, else None;
        with ``config.monitor_every``, also ``"monitor"``: the equilibrium monitor's blocks,
        :mod:`weightdecay.harness.monitoring`). A
        diverged run (NaN/inf loss or weights) stops with ``diverged=True`` and NaN
        final/best errors and loss; its last history row is the epoch where it diverged.
    """
    start_time = time.perf_counter()
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    config.validate()
    path = None if checkpoint_path is None else os.fspath(checkpoint_path)
    checkpoint = None if path is None else load_checkpoint(path, config, HISTORY_KEYS)
    try:
        if checkpoint is not None and (done := _finished_record(checkpoint, config)):
            return done
        state = _set_up(config, data, checkpoint)
        monitor = _attach_monitor(state)
    except (KeyError, TypeError, IndexError, RuntimeError) as err:
        if checkpoint is None:
            raise
        raise CheckpointError(f"checkpoint_path={path!r} does not fit this run ({err}); "
                              "remove it to start the run afresh") from err

    epochs: Any = range(state.start_epoch + 1, config.epochs + 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(epochs, total=config.epochs, initial=state.start_epoch, unit="epoch",
                   desc=f"{config.optimizer} lr={config.lr:g}")
        epochs = bar
    diverged = False
    try:
        for epoch in epochs:
            row, diverged = _epoch(state, epoch)
            if monitor is not None:
                monitor.end_epoch()
            wall = state.wall_before + time.perf_counter() - start_time
            if path is not None:
                _save(state, epoch, diverged, wall, path)
            if bar is not None:
                bar.set_postfix(loss=f"{row['train_loss']:.4g}",
                                test_err=f"{row['test_error']:.4f}")
            if on_epoch is not None:
                on_epoch(epoch, {**row, "diverged": diverged})
            if diverged:
                break
    finally:
        if bar is not None:
            bar.close()
        if monitor is not None:
            monitor.close()

    wall = state.wall_before + time.perf_counter() - start_time
    return _record(state.history, diverged, wall, state.dataset.num_test)

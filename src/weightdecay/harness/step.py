"""The training step of the harness: forward, loss and backward of one batch, compiled with
``torch.compile`` where that pays, once per process.

:func:`loss_function` gives the function the training loop
(:mod:`weightdecay.harness.train`) calls at every update, ``loss = fn(x, y)``: the mean
cross-entropy of the batch (nats), a tensor whose ``backward()`` fills the gradients of the
run's model. Two kinds, one model:

- **eager**: ``F.cross_entropy(model(x), y)``, op by op;
- **compiled**: the same function through ``torch.compile`` (TorchDynamo traces it as one
  graph, AOTAutograd derives the backward graph, Inductor fuses batch norm, ReLU and the
  loss into a few C++ kernels around oneDNN's convolutions). The same mathematics; the float
  rounding differs from eager.

Where: ``config.compile`` (on by default) compiles the models of :data:`COMPILED_MODELS` on
the devices of :data:`COMPILED_DEVICES`, where ``benchmarks/bench_levers.py`` measures that it
pays (``docs/results/bench_levers.txt``); every other run is eager. The environment variable
``WEIGHTDECAY_COMPILE=0`` turns compilation off for a whole process and the workers it
starts (a machine where compiling costs more than it saves; the test suite outside its
``compile`` tests).

Once per process: the compiled functions are kept for the life of the process, one per
(model structure, batch shape, dtype, device) -- a fresh model of the same architecture in
the next run reuses them; nothing is recompiled. Before a run's first update, every batch
shape the run will meet (full batches and the last, shorter one) is compiled on a copy of the
model, on zeros, with the random states saved and restored. So compilation never happens in
the middle of a run, and a failure there (no C compiler, a platform torch.compile does not
support, an Inductor error) falls back before the run has computed anything: a warning
once, and the eager step from then on in this process, never a mix of the two within a run.

One compiler at a time per machine: where Inductor's cache has not got the kernels yet (a new
machine), every worker of a sweep would generate and compile the same C++. A process that has
something to compile therefore takes an exclusive lock on a file in Inductor's cache folder
first (:func:`compile_lock`): the first worker compiles while the others wait (asleep), then
load what it wrote. With two workers: 0.89x the CPU-seconds, 1.08x the wall time of each
compiling for itself (``benchmarks/bench_compile_lock.py``); however many workers, one
compiles. The lock dies with its process; where the file cannot be locked (a read-only or unusual
file system), each process compiles on its own, as before.

Determinism: the compiled kernels are fixed functions of their inputs (no atomics; a fixed
reduction order for a given number of threads), so a run repeated in the same process, in a
fresh process (which loads the same kernels from Inductor's on-disk cache or generates them
again) and a run resumed from a checkpoint give bit-identical numbers, as eager runs do.

Paper: the training objective of Loshchilov & Hutter, "Decoupled Weight Decay Regularization"
(ICLR 2019, Sec. 4): the loss whose gradient Algorithms 1 and 2 take; weight decay stays in
the optimizer's update, outside this function.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import time
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:
    import fcntl
except ImportError:  # not a POSIX system: no lock, each process compiles on its own
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "COMPILED_DEVICES",
    "COMPILED_MODELS",
    "ENV_SWITCH",
    "LossFunction",
    "batch_sizes",
    "compile_lock",
    "compile_unavailable",
    "loss_function",
]

#: models whose training step ``config.compile`` compiles (measured to pay; models that draw
#: random numbers in their forward pass, such as Shake-Shake, stay eager)
COMPILED_MODELS = ("cnn1d_bn", "cnn1d")
#: devices on which it does (measured on CPU only)
COMPILED_DEVICES = ("cpu",)
#: the environment variable that turns compilation off in a process when set to "0"
ENV_SWITCH = "WEIGHTDECAY_COMPILE"

_log = logging.getLogger("weightdecay")
# (model structure, batch shape, dtype, device) -> compiled loss function, for this process
_COMPILED: dict[tuple, Callable[..., Tensor]] = {}
# why compilation is off in this process (set at the first failure, which warns once)
_UNAVAILABLE: list[str] = []


def _loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y)


class LossFunction:
    """``fn(x, y)`` -> the mean cross-entropy of ``model`` on the batch (a tensor to call
    ``backward()`` on). ``compiled`` says which kind it is; a compiled one takes only the
    batch sizes it was prepared for."""

    def __init__(self, model: nn.Module, by_size: dict[int, Callable[..., Tensor]] | None):
        self.model = model
        self._by_size = by_size
        self.compiled = by_size is not None

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if self._by_size is None:
            return _loss(self.model, x, y)
        fn = self._by_size.get(x.shape[0])
        if fn is None:  # compiling now would happen mid-run: refuse instead
            raise RuntimeError(f"the compiled training step was prepared for batches of "
                               f"{sorted(self._by_size)} examples, not {x.shape[0]}")
        return fn(self.model, x, y)


def batch_sizes(num_train: int, batch_size: int) -> tuple[int, ...]:
    """The sizes of the batches of one pass over ``num_train`` examples (the last batch
    holds the remainder; it is not dropped)."""
    sizes = {min(batch_size, num_train)}
    if num_train > batch_size and num_train % batch_size:
        sizes.add(num_train % batch_size)
    return tuple(sorted(sizes, reverse=True))


def compile_unavailable() -> str | None:
    """Why this process trains eagerly although compilation was asked for (``None``: it
    has not failed here)."""
    return _UNAVAILABLE[0] if _UNAVAILABLE else None


def _structure(model: nn.Module) -> tuple:
    """What the compiled graph depends on: the model's class, its modules' options (their
    ``repr``) and its tensors' names, shapes, dtypes, devices (and whether they take
    gradients)."""
    return (type(model), repr(model),
            tuple((n, tuple(p.shape), p.dtype, p.device, p.requires_grad)
                  for n, p in model.named_parameters()),
            tuple((n, tuple(b.shape), b.dtype, b.device) for n, b in model.named_buffers()))


#: the file :func:`compile_lock` locks, in Inductor's cache folder
_LOCK_NAME = "weightdecay-compile.lock"


def _lock_path() -> str:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return os.path.join(cache_dir(), _LOCK_NAME)


@contextlib.contextmanager
def compile_lock(path: str | None = None) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (default: ``weightdecay-compile.lock`` in
    Inductor's cache folder) while compiling, so that the processes sharing that cache compile
    one at a time and the later ones load what the first wrote. Yields whether the lock is
    held: ``False`` where the file cannot be opened or locked (then nothing waits)."""
    fd = -1
    try:
        if fcntl is None:
            raise OSError("no fcntl.flock on this platform")
        path = _lock_path() if path is None else path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException as exc:  # no lock here, or interrupted while waiting for it
        if fd >= 0:
            os.close(fd)
        if not isinstance(exc, OSError):
            raise
        _log.info("compiling without the lock (%s)", exc)
        fd = -1
    try:
        yield fd >= 0
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock


def _new_compiled() -> Callable[..., Tensor]:
    # a code object of its own: TorchDynamo keeps its cache (and its recompile limit) per code
    # object, so each key holds exactly one graph however many keys a process meets
    fn = types.FunctionType(_loss.__code__.replace(), _loss.__globals__, "_loss")
    return torch.compile(fn, dynamic=False, fullgraph=True)


def _compile(model: nn.Module, key: tuple) -> Callable[..., Tensor]:
    """The compiled loss function for ``key`` = (``_structure(model)``, batch size, one
    example's shape, dtype, device): compiled now (forward and backward) on a copy of
    ``model`` and zeros, leaving every random state as it was."""
    _, size, input_shape, dtype, device = key
    if key in _COMPILED:
        return _COMPILED[key]
    import torch._inductor.config as inductor_config

    fn = _new_compiled()
    start = time.perf_counter()
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda), \
                inductor_config.patch(compile_threads=1):  # no pool of compile workers
            twin = copy.deepcopy(model).train()
            x = torch.zeros((size, *input_shape), dtype=dtype, device=device)
            y = torch.zeros(size, dtype=torch.long, device=device)
            fn(twin, x, y).backward()
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    _COMPILED[key] = fn
    _log.info("compiled the training step of %s for batches of %d in %.1f s",
              type(model).__name__, size, time.perf_counter() - start)
    return fn


def loss_function(model: nn.Module, config: Any, sizes: Iterable[int],
                  input_shape: Iterable[int], dtype: torch.dtype = torch.float32
                  ) -> LossFunction:
    """The loss function of one run: compiled for every batch size in ``sizes`` when
    ``config.compile`` asks for it, ``config.model`` is in :data:`COMPILED_MODELS`, the
    device in :data:`COMPILED_DEVICES`, :data:`ENV_SWITCH` is not ``"0"`` and compilation
    works in this process; eager otherwise.

    ``config``: the run's :class:`~weightdecay.harness.config.RunConfig`; ``sizes``: the
    batch sizes the run will meet (:func:`batch_sizes`); ``input_shape``, ``dtype``: one
    example's shape (without the batch dimension) and the inputs' dtype.

    Called before the run's first update. Where compilation fails, this warns once
    (``RuntimeWarning``) and returns the eager function, as it does for the rest of the
    process.
    """
    device = torch.device(config.device)
    wanted = (config.compile and config.model in COMPILED_MODELS
              and device.type in COMPILED_DEVICES
              and os.environ.get(ENV_SWITCH, "").strip() != "0")
    if not wanted or _UNAVAILABLE:
        return LossFunction(model, None)
    shape = tuple(int(s) for s in input_shape)
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            raise RuntimeError("torch.compile is not supported on this platform")
        structure = _structure(model)
        keys = {size: (structure, size, shape, dtype, device) for size in sizes}
        todo = any(key not in _COMPILED for key in keys.values())
        with compile_lock() if todo else contextlib.nullcontext(False):
            by_size = {size: _compile(model, key) for size, key in keys.items()}
    except Exception as exc:  # any failure to compile: train eagerly, from now on
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        _UNAVAILABLE.append(reason)
        warnings.warn(f"the training step cannot be compiled here ({reason}); training "
                      "eagerly from now on in this process (the same model, other float "
                      "rounding)", RuntimeWarning, stacklevel=2)
        return LossFunction(model, None)
    return LossFunction(model, by_size)

"""Datasets for the experiment harness: in-memory tensors, fast batching, augmentation.

The data sets, all held in memory as tensors (no ``DataLoader`` workers), by the names of
:data:`weightdecay.registry.DATASETS`:

``mnist1d`` (default)
    MNIST-1D (Greydanus 2020), *generated offline* with the ``mnist1d`` package from its
    default arguments (seed 42): 4000 train / 1000 test signals of length 40, 10 classes,
    shape ``(N, 1, 40)``. Generation takes a few seconds, so the arrays are cached as
    ``.npz`` under the cache directory (see :func:`cache_dir`). The package's download
    path is never used.
``digits``
    scikit-learn's bundled 8x8 digits (offline): 1437 train / 360 test, shape
    ``(N, 1, 8, 8)``, pixels scaled to [0, 1] and then standardized with the training
    mean/std. The split is stratified and fixed (``random_state=0``).
``cifar10``
    CIFAR-10 with the paper's augmentation (:mod:`weightdecay.harness.cifar10`: the
    official archive, MD5-checked, read without running code from it).
``"package.module:function"``
    A user's own data set (:func:`user_dataset`): the function returns
    ``(x_train, y_train, x_test, y_test)`` tensors, or a :class:`Dataset`.

Example::

    ds = load_dataset("mnist1d")
    g = torch.Generator().manual_seed(0)
    for x, y in ds.batches(128, shuffle=True, generator=g):
        ...
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import registry
from .._io import atomic_open
from .config import MAX_TEST_SIZE

__all__ = [
    "Dataset",
    "cache_dir",
    "load_dataset",
    "load_digits",
    "load_mnist1d",
    "random_crop_flip",
    "user_dataset",
]

# Bump when the cached arrays' content or layout changes, so stale caches are not reused.
_MNIST1D_CACHE_VERSION = 1
#: seed of MNIST-1D's generator for held-out test signals (``test_size``); the canonical
#: data set uses the package's default seed, 42
MNIST1D_HELDOUT_SEED = 1042

Augment = Callable[[Tensor, "torch.Generator | None"], Tensor]


# --------------------------------------------------------------------------- container


@dataclass
class Dataset:
    """All of a dataset, in memory, as tensors.

    Attributes:
        name: dataset name (one of :data:`weightdecay.registry.DATASETS` for the
            built-in ones).
        x_train, y_train: training inputs ``(N, *input_shape)`` float32 and int64 labels.
        x_test, y_test: test inputs and labels, same layout.
        num_classes: labels lie in ``[0, num_classes)``.
        input_shape: shape of one input, without the batch dimension, e.g. ``(1, 40)``.
        augment: optional ``augment(x, generator) -> x`` applied to each *training* batch
            on the batch's device (see :func:`random_crop_flip`); ``None`` for no
            augmentation.
        mean, std: per-channel normalization already applied to ``x_*`` (informational;
            ``None`` when the data came normalized, as MNIST-1D does).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    augment: Augment | None = field(default=None, repr=False)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        for split, x, y in (("train", self.x_train, self.y_train),
                            ("test", self.x_test, self.y_test)):
            if tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"{self.name}: x_{split} has shape {tuple(x.shape)}, expected "
                    f"(N, *{self.input_shape})"
                )
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"{self.name}: y_{split} has shape {tuple(y.shape)}, expected "
                    f"({x.shape[0]},) to match x_{split}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(
                    f"{self.name}: y_{split} has labels in [{int(y.min())}, {int(y.max())}], "
                    f"expected [0, {self.num_classes})"
                )

    @property
    def num_train(self) -> int:
        """Number of training examples (B in the paper's normalized-decay formula)."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: str | torch.device) -> Dataset:
        """A copy with all tensors on ``device`` (the same object if already there)."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        return replace(
            self,
            x_train=self.x_train.to(device), y_train=self.y_train.to(device),
            x_test=self.x_test.to(device), y_test=self.y_test.to(device),
        )

    def subset(self, num_train: int | None = None, num_test: int | None = None) -> Dataset:
        """A copy keeping the first ``num_train`` / ``num_test`` examples (for quick runs)."""
        for arg, value, total in (("num_train", num_train, self.num_train),
                                  ("num_test", num_test, self.num_test)):
            if value is not None and not 1 <= value <= total:
                raise ValueError(f"{arg} must be in [1, {total}], got {value}")
        return replace(
            self,
            x_train=self.x_train[:num_train], y_train=self.y_train[:num_train],
            x_test=self.x_test[:num_test], y_test=self.y_test[:num_test],
        )

    def num_batches(self, batch_size: int, split: str = "train", drop_last: bool = False) -> int:
        """Batches per pass over ``split`` (per epoch, for the training split)."""
        n = self.num_train if split == "train" else self.num_test
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        *,
        split: str = "train",
        drop_last: bool = False,
        augment: bool | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Iterate over ``(x, y)`` batches of one pass over ``split``.

        Args:
            batch_size: examples per batch (b in the paper).
            shuffle: draw a fresh permutation (from ``generator``) for this pass.
            generator: seeds the permutation and the augmentation; ``None`` uses torch's
                global generator.
            device: where the batches go (default: where the data lives).
            split: ``"train"`` or ``"test"``.
            drop_last: skip the final incomplete batch.
            augment: apply :attr:`augment`; default ``True`` for the training split and
                ``False`` for the test split.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if split == "train":
            x, y = self.x_train, self.y_train
        elif split == "test":
            x, y = self.x_test, self.y_test
        else:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if augment is None:
            augment = split == "train"
        fn = self.augment if augment else None
        device = torch.device(device) if device is not None else x.device
        n = x.shape[0]
        if shuffle:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            order = torch.randperm(n, generator=generator, device=gen_device).to(x.device)
        else:
            order = None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if order is None:
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            else:
                idx = order[start:start + batch_size]
                xb, yb = x[idx], y[idx]
            xb = xb.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            if fn is not None:
                xb = fn(xb, generator)
            yield xb, yb


# --------------------------------------------------------------------------- augmentation


def random_crop_flip(padding: int = 4, flip: bool = True) -> Augment:
    """The paper's CIFAR augmentation, vectorized over a batch of image tensors.

    Each image ``(C, H, W)`` is zero-padded by ``padding`` pixels on every side, a random
    ``H x W`` window is cropped, and with probability 1/2 it is flipped horizontally
    (Loshchilov & Hutter 2019, Sec. 4, following Gastaldi 2017). The data are normalized
    first, so the zero padding is the per-channel mean, as in fb.resnet.torch.

    Returns ``augment(x, generator) -> x`` for ``x`` of shape ``(N, C, H, W)``. Random
    numbers come from ``generator`` (on its own device) and the work happens on ``x``'s
    device with one gather: no Python loop over images.
    """
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int (pixels), got {padding!r}")

    def augment(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"random_crop_flip expects (N, C, H, W) images, got {tuple(x.shape)}")
        n, c, h, w = x.shape
        gen_device = generator.device if generator is not None else torch.device("cpu")
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gen_device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gen_device)
        dy, dx = dy.to(x.device), dx.to(x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)  # (N, H) rows of the padded image
        cols = torch.arange(w, device=x.device).expand(n, w)
        if flip:
            flipped = torch.rand(n, generator=generator, device=gen_device).to(x.device) < 0.5
            cols = torch.where(flipped[:, None], cols.flip(1), cols)
        cols = dx[:, None] + cols  # (N, W)
        padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        i_n = torch.arange(n, device=x.device)[:, None, None, None]
        i_c = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[i_n, i_c, rows[:, None, :, None], cols[:, None, None, :]]

    return augment


# --------------------------------------------------------------------------- cache


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """The data/cache directory: ``root`` if given, else ``$WEIGHTDECAY_CACHE``, else
    ``~/.cache/weightdecay``."""
    if root is None:
        root = os.environ.get("WEIGHTDECAY_CACHE") or "~/.cache/weightdecay"
    return Path(root).expanduser()


# --------------------------------------------------------------------------- mnist1d


def _mnist1d_module():
    try:
        import mnist1d.data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'mnist1d' package is needed to generate MNIST-1D: "
            "pip install 'weightdecay[harness]'"
        ) from e
    return mnist1d.data


def _mnist1d_raw(args) -> tuple[np.ndarray, np.ndarray]:
    """The signals of ``mnist1d.data.make_dataset(args)`` *before* its final centering
    and scaling, in the same order: the package's generator, line for line, minus the
    normalization (which :func:`_mnist1d_arrays` applies with the canonical statistics).

    ``make_dataset`` reseeds Python's and numpy's global generators; they are restored.
    """
    m = _mnist1d_module()
    templates = m.get_templates()
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        m.set_seed(args.seed)
        xs, ys = [], []
        for label_ix in range(len(templates["y"])):
            for _ in range(args.num_samples // len(templates["y"])):
                x, _t = m.transform(templates["x"][label_ix], templates["t"], args)
                xs.append(x)
                ys.append(templates["y"][label_ix])
        order = np.random.permutation(len(ys))
        x_all, y_all = np.stack(xs)[order], np.stack(ys)[order]
        if args.shuffle_seq:
            x_all = x_all[..., np.random.permutation(args.final_seq_length)]
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return x_all, y_all


def _mnist1d_arrays(test_size: int | None = None) -> dict[str, np.ndarray]:
    """Generate MNIST-1D offline from the package's default arguments (seed 42).

    With ``test_size=None`` the test split is the canonical one (the last 1000 of the 5000
    generated signals). With ``test_size=n`` it is ``n`` *held-out* signals drawn from the
    same generator (same templates and transformations) with seed
    :data:`MNIST1D_HELDOUT_SEED`, normalized with the canonical data's statistics: a
    larger sample from the same distribution, for test errors with less binomial noise.
    The training split is the canonical one either way.
    """
    args = _mnist1d_module().get_dataset_args()
    x_raw, y = _mnist1d_raw(args)
    mean, std = x_raw.mean(), x_raw.std()
    x = (x_raw - mean) / std  # what make_dataset returns (tested to be identical)
    split = int(len(y) * args.train_split)
    out = {
        "x_train": x[:split].astype(np.float32)[:, None, :],
        "y_train": y[:split].astype(np.int64),
        "x_test": x[split:].astype(np.float32)[:, None, :],
        "y_test": y[split:].astype(np.int64),
    }
    if test_size is not None:
        n_classes = 10
        args.seed = MNIST1D_HELDOUT_SEED
        args.num_samples = -(-test_size // n_classes) * n_classes
        hx, hy = _mnist1d_raw(args)
        out["x_test"] = ((hx[:test_size] - mean) / std).astype(np.float32)[:, None, :]
        out["y_test"] = hy[:test_size].astype(np.int64)
    return out


def _mnist1d_cache_ok(arrays: dict[str, np.ndarray], num_test: int) -> bool:
    shapes = {"x_train": (4000, 1, 40), "y_train": (4000,),
              "x_test": (num_test, 1, 40), "y_test": (num_test,)}
    return all(k in arrays and arrays[k].shape == s for k, s in shapes.items())


def load_mnist1d(root: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 *, test_size: int | None = None) -> Dataset:
    """MNIST-1D, generated offline and cached as ``<root>/mnist1d_v1_seed42.npz``.

    ``test_size=None`` gives the canonical 4000/1000 split; ``test_size=n`` keeps the
    canonical training set and replaces the test set by ``n`` held-out signals from the
    same generator (see :func:`_mnist1d_arrays`; cached as ``..._test<n>.npz``).

    ``root`` defaults to :func:`cache_dir`. A cache that cannot be read is regenerated
    (with a warning). The write is atomic, so parallel sweep workers may share the cache.
    """
    if test_size is not None and (
        isinstance(test_size, bool) or not isinstance(test_size, int)
        or not 1 <= test_size <= MAX_TEST_SIZE
    ):
        raise ValueError(
            f"test_size must be an int in [1, {MAX_TEST_SIZE}] or None, got {test_size!r}"
        )
    suffix = "" if test_size is None else f"_test{test_size}"
    path = cache_dir(root) / f"mnist1d_v{_MNIST1D_CACHE_VERSION}_seed42{suffix}.npz"
    num_test = 1000 if test_size is None else test_size
    arrays = None
    if path.exists():
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in f.files}
            if not _mnist1d_cache_ok(arrays, num_test):
                raise ValueError("unexpected arrays or shapes")
        except Exception as e:  # any unreadable cache is regenerated
            warnings.warn(f"ignoring unreadable MNIST-1D cache {path} ({e}); regenerating",
                          stacklevel=2)
            arrays = None
    if arrays is None:
        arrays = _mnist1d_arrays(test_size)
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # (numpy's stub: allow_pickle)
    t = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
    return Dataset("mnist1d", t["x_train"], t["y_train"], t["x_test"], t["y_test"],
                   num_classes=10, input_shape=(1, 40))


# --------------------------------------------------------------------------- digits


def load_digits(device: str | torch.device = "cpu") -> Dataset:
    """scikit-learn's 8x8 digits (bundled, offline): 1437 train / 360 test, ``(N, 1, 8, 8)``.

    Pixels (0..16) are scaled to [0, 1], then standardized with the training set's mean and
    std. The split is stratified with ``random_state=0``, so it is the same everywhere.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=360, random_state=0, stratify=y)
    mean, std = float(x_tr.mean()), float(x_tr.std())
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return Dataset("digits", t(x_tr), t(y_tr), t(x_te), t(y_te), num_classes=10,
                   input_shape=(1, 8, 8), mean=(mean,), std=(std,))


# --------------------------------------------------------------------------- user data


def _user_tensors(name: str, value: object) -> Dataset:
    """``value`` (what the user's function returned) as a :class:`Dataset` named ``name``,
    or :class:`weightdecay.registry.UserCodeError` saying what was expected."""
    expected = f"expected {registry.EXPECTED['dataset']}"
    if isinstance(value, Dataset):
        return replace(value, name=name)
    parts = ("x_train", "y_train", "x_test", "y_test")
    if not isinstance(value, (tuple, list)) or len(value) != 4:
        what = (f"a {type(value).__name__} of {len(value)}" if isinstance(value, (tuple, list))
                else f"a {type(value).__name__}")
        raise registry.UserCodeError(f"dataset {name!r} returned {what}; {expected}")
    for part, t in zip(parts, value):
        if not isinstance(t, Tensor):
            raise registry.UserCodeError(f"dataset {name!r}: {part} is a "
                                         f"{type(t).__name__}, not a tensor; {expected}")
        if t.ndim < (2 if part.startswith("x") else 1) or t.shape[0] < 1:
            raise registry.UserCodeError(
                f"dataset {name!r}: {part} has shape {tuple(t.shape)}; expected "
                + ("(N, *input_shape)" if part.startswith("x") else "(N,) class labels")
                + " with N >= 1")
    x_tr, y_tr, x_te, y_te = value
    if y_tr.is_floating_point() or y_te.is_floating_point() or y_tr.dtype == torch.bool:
        raise registry.UserCodeError(f"dataset {name!r}: y_train and y_test must hold integer "
                                     f"class labels, got {y_tr.dtype} and {y_te.dtype}")
    y_tr, y_te = y_tr.long(), y_te.long()
    low = int(min(y_tr.min(), y_te.min()))
    if low < 0:
        raise registry.UserCodeError(f"dataset {name!r}: class labels must be >= 0, got {low}")
    try:
        return Dataset(name, x_tr, y_tr, x_te, y_te,
                       num_classes=int(max(y_tr.max(), y_te.max())) + 1,
                       input_shape=tuple(x_tr.shape[1:]))
    except ValueError as exc:
        raise registry.UserCodeError(f"{exc}; {expected}") from None


def user_dataset(name: str, device: str | torch.device = "cpu") -> Dataset:
    """The data set of a user's function ``"package.module:function"``, on ``device``.

    The function is called without arguments and returns ``(x_train, y_train, x_test,
    y_test)`` -- inputs ``(N, *input_shape)`` in the dtype the model takes, integer class
    labels ``(N,)`` in ``[0, num_classes)``, ``num_classes`` being the largest label + 1 --
    or a :class:`Dataset`. Anything else, or an exception it raises, is a
    :class:`weightdecay.registry.UserCodeError` in one line. Importing the module is the
    caller's decision (``--allow-module``)."""
    function = registry.user_code("dataset", name).function
    try:
        value = function()
    except Exception as exc:  # the user's code: one line, whatever it raised
        why = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise registry.UserCodeError(f"dataset {name!r} raised {why}; expected "
                                     f"{registry.EXPECTED['dataset']}") from None
    return _user_tensors(name, value).to(device)


# --------------------------------------------------------------------------- entry point


def _load_mnist1d(*, root: str | os.PathLike | None = None, download: bool = False,
                  device: str | torch.device = "cpu", augment: bool = True,
                  test_size: int | None = None) -> Dataset:
    """The registry's loader of ``mnist1d`` (no download, no augmentation)."""
    return load_mnist1d(root, device=device, test_size=test_size)


def _load_digits(*, root: str | os.PathLike | None = None, download: bool = False,
                 device: str | torch.device = "cpu", augment: bool = True,
                 test_size: int | None = None) -> Dataset:
    """The registry's loader of ``digits`` (bundled with scikit-learn: no files)."""
    return load_digits(device=device)


def load_dataset(
    name: str = "mnist1d",
    root: str | os.PathLike | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    *,
    augment: bool = True,
    test_size: int | None = None,
) -> Dataset:
    """Load a dataset by name: one of :data:`weightdecay.registry.DATASETS` (``mnist1d``,
    ``digits``, ``cifar10``), through the registry's loader.

    Args:
        name: dataset name, or a user's ``"package.module:function"`` (:func:`user_dataset`;
            ``root``, ``download``, ``augment`` and ``test_size`` do not apply).
        root: cache/data folder (default :func:`cache_dir`: ``$WEIGHTDECAY_CACHE`` or
            ``~/.cache/weightdecay``). ``digits`` needs none.
        download: for ``cifar10`` only, fetch the archive if the batches are missing.
        device: where the tensors live (``"cpu"``, ``"cuda"``, ...).
        augment: attach the dataset's standard training augmentation (``cifar10`` only;
            the others have none).
        test_size: generated data sets (``mnist1d``) only: ``n`` held-out test signals from
            the generator instead of the canonical 1000 (:func:`load_mnist1d`); ``None`` =
            canonical.
    """
    if registry.is_import_string(name):
        if test_size is not None:
            raise ValueError(f"test_size={test_size!r} is only available for a generated "
                             f"built-in data set, not {name!r}")
        return user_dataset(name, device)
    entry = registry.dataset(name)
    if test_size is not None and not entry.generated:
        generated = [n for n in registry.DATASETS if registry.dataset(n).generated]
        raise ValueError(
            f"test_size={test_size!r} is only available for {', '.join(generated)} (a "
            f"generated data set); {name!r} has a fixed test split"
        )
    loader = registry.resolve("dataset", name)
    return loader(root=root, download=download, device=device, augment=augment,
                  test_size=test_size)

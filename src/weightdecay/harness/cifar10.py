"""CIFAR-10 for the experiment harness: the official archive, checked, and its batches read
without running code from them.

CIFAR-10 comes as the standard python-pickle batches (``data_batch_1..5``, ``test_batch``) in
``root/cifar-10-batches-py/`` (``root`` may also point at that folder itself). Images are
normalized per channel with training-set statistics, and the training batches get the
augmentation of the paper (Loshchilov & Hutter, ICLR 2019, Sec. 4; Gastaldi 2017): 4-pixel
zero pad, random 32x32 crop, random horizontal flip
(:func:`weightdecay.harness.data.random_crop_flip`). :func:`download_cifar10` fetches the
official archive and checks its MD5; unpickling admits numpy arrays and plain containers only.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch

from .data import Dataset, cache_dir, random_crop_flip

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "download_cifar10",
    "extract_tar",
    "file_md5",
    "load_cifar10",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"



class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a CIFAR batch needs no more,
    and refusing every other global keeps a tampered file from running code."""

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if module.startswith("numpy.core"):  # pickles written before numpy 2
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _cifar_dir(root: str | os.PathLike | None) -> Path:
    base = cache_dir(root)
    if (base / CIFAR10_DIRNAME).is_dir():
        return base / CIFAR10_DIRNAME
    if (base / CIFAR10_TRAIN_FILES[0]).exists() or base.name == CIFAR10_DIRNAME:
        return base
    return base / CIFAR10_DIRNAME


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 pickle batch -> (uint8 images (N, 3, 32, 32), int64 labels (N,))."""
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: corrupt CIFAR-10 batch, cannot unpickle it ({e})") from e
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        keys = sorted(str(k) for k in batch)
        raise ValueError(f"{path}: missing key b'data' or b'labels' (found keys {keys})")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise ValueError(
            f"{path}: b'data' has shape {data.shape} and dtype {data.dtype}, "
            "expected (N, 3072) uint8"
        )
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: b'labels' has shape {labels.shape} and dtype {labels.dtype}, "
            f"expected {data.shape[0]} integers (one per image)"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(
            f"{path}: label out of range [0, 9]: found values in "
            f"[{labels.min()}, {labels.max()}]"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(
    root: str | os.PathLike | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    augment: bool = True,
) -> Dataset:
    """CIFAR-10 from the python-pickle batches, normalized, with the paper's augmentation.

    Args:
        root: folder holding ``cifar-10-batches-py/`` or that folder itself; default
            :func:`cache_dir`.
        download: fetch and verify the official archive first if the batches are missing.
        device: where the tensors live.
        augment: attach :func:`random_crop_flip` (4-pixel pad, crop, flip) to the training
            batches.

    Images are scaled to [0, 1] and normalized per channel with the training set's mean
    and std (stored in ``Dataset.mean``/``Dataset.std``).
    """
    folder = _cifar_dir(root)
    files = [*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE]
    missing = [name for name in files if not (folder / name).is_file()]
    if missing and download:
        download_cifar10(folder.parent)
        missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 batches missing in {folder}: {', '.join(missing)}. Get them with "
            f"`--download` (load_dataset('cifar10', download=True)) or unpack {CIFAR10_URL} "
            f"into {folder.parent}"
        )
    train = [_read_cifar_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    x_test, y_test = _read_cifar_batch(folder / CIFAR10_TEST_FILE)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])

    x_train_t = torch.from_numpy(x_train).to(device).float().div_(255.0)
    x_test_t = torch.from_numpy(x_test).to(device).float().div_(255.0)
    mean = x_train_t.mean(dim=(0, 2, 3))
    std = x_train_t.std(dim=(0, 2, 3)).clamp_min(1e-6)  # a constant channel must not be /0
    x_train_t = (x_train_t - mean[:, None, None]) / std[:, None, None]
    x_test_t = (x_test_t - mean[:, None, None]) / std[:, None, None]
    return Dataset(
        "cifar10", x_train_t, torch.from_numpy(y_train).to(device),
        x_test_t, torch.from_numpy(y_test).to(device),
        num_classes=10, input_shape=(3, 32, 32),
        augment=random_crop_flip(4) if augment else None,
        mean=tuple(mean.tolist()), std=tuple(std.tolist()),
    )


def file_md5(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 digest of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def extract_tar(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract a (gzipped) tar into ``dest``, refusing members that would land outside it,
    links, and device files."""
    dest = Path(dest).resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                target = (dest / member.name).resolve()
                if target != dest and dest not in target.parents:
                    raise ValueError(f"{archive}: member {member.name!r} escapes {dest}")
                if not (member.isfile() or member.isdir()):
                    raise ValueError(f"{archive}: member {member.name!r} is not a plain file")
            tar.extractall(dest, filter="data")
    except tarfile.TarError as e:
        raise ValueError(f"{archive}: corrupt or unreadable tar archive ({e})") from e


def download_cifar10(
    root: str | os.PathLike | None = None,
    *,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    timeout: float = 60.0,
) -> Path:
    """Download the CIFAR-10 archive into ``root``, check its MD5, and extract it.

    ``url`` may be an ``http(s)://`` or ``file://`` URL or a local path (tests inject a small
    archive this way). An archive already in ``root`` with the right MD5 is reused. A wrong
    MD5 raises ``ValueError`` naming the file and both digests, and the file is deleted.

    Returns the folder with the batches, ``root/cifar-10-batches-py``.
    """
    root = cache_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlparse(url).path).name or "cifar-10-python.tar.gz"
    archive = root / name
    if not (archive.is_file() and file_md5(archive) == md5):
        part = archive.with_name(archive.name + ".part")
        parsed = urllib.parse.urlparse(url)
        try:
            if parsed.scheme in ("http", "https", "file"):
                with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as f:
                    shutil.copyfileobj(resp, f, length=1 << 20)
            else:
                shutil.copyfile(url, part)
        except (OSError, ValueError) as e:
            part.unlink(missing_ok=True)
            raise OSError(f"could not fetch CIFAR-10 from {url}: {e}") from e
        got = file_md5(part)
        if got != md5:
            part.unlink(missing_ok=True)
            raise ValueError(
                f"{archive}: MD5 checksum mismatch (expected {md5}, got {got}); "
                "the download is corrupt or not the CIFAR-10 archive"
            )
        os.replace(part, archive)
    extract_tar(archive, root)
    folder = root / CIFAR10_DIRNAME
    if not folder.is_dir():
        raise ValueError(f"{archive}: archive has no {CIFAR10_DIRNAME}/ folder")
    return folder


def _load_cifar10(*, root: str | os.PathLike | None = None, download: bool = False,
                  device: str | torch.device = "cpu", augment: bool = True,
                  test_size: int | None = None) -> Dataset:
    """The registry's loader of ``cifar10`` (:mod:`weightdecay.registry`)."""
    return load_cifar10(root, download=download, device=device, augment=augment)

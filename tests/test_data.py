"""Tests for weightdecay.harness.data and .cifar10: datasets, caching, CIFAR format, download,
augmentation."""

from __future__ import annotations

import io
import os
import pickle
import random
import tarfile
import warnings

import numpy as np
import pytest
import torch

from weightdecay.harness import cifar10 as C
from weightdecay.harness import data as D
from weightdecay.harness.cifar10 import (
    CIFAR10_MD5,
    CIFAR10_URL,
    download_cifar10,
    extract_tar,
    file_md5,
    load_cifar10,
)
from weightdecay.harness.data import Dataset, cache_dir, load_dataset, random_crop_flip
from weightdecay.registry import DATASETS

torch.set_num_threads(1)


# --------------------------------------------------------------------------- helpers


def write_cifar(folder, n_per_batch=20, n_test=20, seed=0, labels=None, data=None,
                corrupt=None):
    """Write tiny CIFAR-10 batches in the real format (bytes keys, uint8 N x 3072)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_per_batch
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        if name == "data_batch_1":
            if labels is not None:
                batch[b"labels"] = labels
            if data is not None:
                batch[b"data"] = data
        with open(os.path.join(folder, name), "wb") as f:
            if corrupt is not None and name == corrupt:
                f.write(b"\x80\x04not really a pickle")
            else:
                pickle.dump(batch, f, protocol=2)
    return folder


def make_tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def cifar_archive(tmp_path):
    """A small cifar-10-python.tar.gz with the real layout; returns (path, md5)."""
    src = write_cifar(tmp_path / "src" / "cifar-10-batches-py", n_per_batch=4, n_test=4)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    return archive, file_md5(archive)


def toy_dataset(n_train=10, n_test=7, augment=None):
    x_train = torch.arange(n_train, dtype=torch.float32).reshape(n_train, 1, 1)
    x_test = torch.arange(n_test, dtype=torch.float32).reshape(n_test, 1, 1) + 100
    return Dataset("toy", x_train, torch.arange(n_train) % 3, x_test, torch.arange(n_test) % 3,
                   num_classes=3, input_shape=(1, 1), augment=augment)


# --------------------------------------------------------------------------- mnist1d


@pytest.fixture(scope="session")
def mnist1d(tmp_path_factory):
    """One generated MNIST-1D per session (generation takes ~5 s); records whether the
    global RNGs survived generation and whether the reload generated again."""
    root = tmp_path_factory.mktemp("mnist1d_cache")
    py_state, np_state = random.getstate(), np.random.get_state()
    ds = load_dataset("mnist1d", root=root)
    rng_kept = random.getstate() == py_state and np.array_equal(
        np.random.get_state()[1], np_state[1])
    generated = []
    with pytest.MonkeyPatch.context() as mp:  # the reload must come from the cache
        real = D._mnist1d_arrays
        mp.setattr(D, "_mnist1d_arrays", lambda *a: generated.append(a) or real(*a))
        again = load_dataset("mnist1d", root=root)
    return {"ds": ds, "again": again, "root": root, "rng_kept": rng_kept,
            "regenerated": len(generated)}


def test_mnist1d_shapes_dtypes_and_labels(mnist1d):
    ds = mnist1d["ds"]
    assert ds.name == "mnist1d" and ds.num_classes == 10 and ds.input_shape == (1, 40)
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_test.shape == (1000, 1, 40)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.num_train == 4000 and ds.num_test == 1000
    counts = torch.bincount(ds.y_train, minlength=10)
    assert counts.min() > 350 and counts.max() < 450  # 500 per class before the split
    assert abs(ds.x_train.mean().item()) < 0.05 and 0.9 < ds.x_train.std().item() < 1.1
    assert ds.augment is None


def test_mnist1d_cache_is_written_reused_and_identical(mnist1d):
    # the canonical cache (other tests add held-out ``_test<n>`` files beside it)
    assert (mnist1d["root"] / "mnist1d_v1_seed42.npz").exists()
    assert not list(mnist1d["root"].glob(".*.tmp"))
    assert mnist1d["regenerated"] == 0  # generation takes seconds; the cache must not
    ds, again = mnist1d["ds"], mnist1d["again"]
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)


def test_mnist1d_generation_leaves_global_rngs_alone(mnist1d):
    assert mnist1d["rng_kept"]


def test_mnist1d_is_exactly_the_packages_make_dataset(mnist1d):
    # the generator is re-run without its final normalization (to normalize held-out
    # signals with the canonical statistics): it must reproduce make_dataset bit for bit
    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())
    ds = mnist1d["ds"]
    assert np.array_equal(ds.x_train[:, 0].numpy(), ref["x"].astype(np.float32))
    assert np.array_equal(ds.x_test[:, 0].numpy(), ref["x_test"].astype(np.float32))
    assert np.array_equal(ds.y_train.numpy(), ref["y"]) and np.array_equal(
        ds.y_test.numpy(), ref["y_test"])


def test_mnist1d_held_out_test_sample(mnist1d):
    root = mnist1d["root"]
    ds = load_dataset("mnist1d", root=root, test_size=2005)
    canon = mnist1d["ds"]
    assert torch.equal(ds.x_train, canon.x_train) and torch.equal(ds.y_train, canon.y_train)
    assert ds.x_test.shape == (2005, 1, 40) and ds.num_test == 2005
    counts = torch.bincount(ds.y_test, minlength=10)
    assert counts.min() >= 150  # every class is drawn (~200 each)
    # fresh draws: no held-out signal equals a training or canonical test signal
    pool = torch.cat([canon.x_train, canon.x_test])[:, 0]
    assert torch.cdist(ds.x_test[:, 0], pool).min() > 1e-3
    # normalized with the canonical statistics: about mean 0, std 1, not exactly
    assert abs(ds.x_test.mean().item()) < 0.05 and 0.9 < ds.x_test.std().item() < 1.1
    assert (root / "mnist1d_v1_seed42_test2005.npz").exists()
    again = load_dataset("mnist1d", root=root, test_size=2005)
    assert torch.equal(again.x_test, ds.x_test)
    for bad in (0, -1, 2.5, True, 10**9):
        with pytest.raises(ValueError, match="test_size"):
            load_dataset("mnist1d", root=root, test_size=bad)
    with pytest.raises(ValueError, match="only available for mnist1d"):
        load_dataset("digits", test_size=100)


def test_mnist1d_env_var_selects_the_cache(mnist1d, monkeypatch):
    monkeypatch.setenv("WEIGHTDECAY_CACHE", str(mnist1d["root"]))
    monkeypatch.setattr(D, "_mnist1d_arrays", lambda test_size=None: pytest.fail("cache not used"))
    ds = load_dataset("mnist1d")
    assert torch.equal(ds.x_train, mnist1d["ds"].x_train)


def test_mnist1d_corrupt_cache_is_regenerated(mnist1d, tmp_path, monkeypatch):
    ref = mnist1d["ds"]
    good = {"x_train": ref.x_train.numpy(), "y_train": ref.y_train.numpy(),
            "x_test": ref.x_test.numpy(), "y_test": ref.y_test.numpy()}
    calls = []
    monkeypatch.setattr(D, "_mnist1d_arrays", lambda test_size=None: calls.append(1) or good)
    path = tmp_path / "mnist1d_v1_seed42.npz"
    assert (mnist1d["root"] / path.name).exists()
    path.write_bytes(b"garbage, not an npz")
    with pytest.warns(UserWarning, match="unreadable MNIST-1D cache"):
        ds = load_dataset("mnist1d", root=tmp_path)
    assert calls == [1] and torch.equal(ds.x_train, ref.x_train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("mnist1d", root=tmp_path)  # the rewritten cache now loads quietly
    assert calls == [1]
    assert not list(tmp_path.glob(".*.tmp"))


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("WEIGHTDECAY_CACHE", raising=False)
    assert cache_dir() == cache_dir("~/.cache/weightdecay")
    assert str(cache_dir()).endswith(os.path.join(".cache", "weightdecay"))
    monkeypatch.setenv("WEIGHTDECAY_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "explicit") == tmp_path / "explicit"


# --------------------------------------------------------------------------- digits


def test_digits_split_shapes_and_scaling():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.input_shape == (1, 8, 8)
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-3
    assert set(ds.y_test.tolist()) == set(range(10))  # stratified
    again = load_dataset("digits")
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)
    # undoing the normalization gives back pixels k/16, k = 0..16
    raw = ds.x_train * ds.std[0] + ds.mean[0]
    assert torch.allclose(raw * 16, (raw * 16).round(), atol=1e-3)


# --------------------------------------------------------------------------- cifar10


@pytest.mark.parametrize("point_at_folder", [False, True])
def test_cifar10_loads_real_format(tmp_path, point_at_folder):
    folder = write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", root=folder if point_at_folder else tmp_path)
    assert ds.x_train.shape == (100, 3, 32, 32) and ds.x_test.shape == (20, 3, 32, 32)
    assert ds.y_train.dtype == torch.int64 and int(ds.y_train.max()) < 10
    assert ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    # per-channel normalization with training statistics
    assert torch.allclose(ds.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(ds.x_train.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    assert len(ds.mean) == 3 and len(ds.std) == 3
    assert ds.augment is not None
    assert load_dataset("cifar10", root=tmp_path, augment=False).augment is None


def test_cifar10_pixel_layout_is_channel_then_row_major(tmp_path):
    data = np.zeros((20, 3072), dtype=np.uint8)
    data[0, 1 * 1024 + 5 * 32 + 7] = 255  # green channel, row 5, column 7 of image 0
    folder = write_cifar(tmp_path / "cifar-10-batches-py", data=data)
    ds = load_cifar10(tmp_path)
    raw = ds.x_train[0] * torch.tensor(ds.std)[:, None, None] + \
        torch.tensor(ds.mean)[:, None, None]
    assert torch.isclose(raw[1, 5, 7], torch.tensor(1.0), atol=1e-5)
    assert raw[0].abs().max() < 1e-5 and raw[2].abs().max() < 1e-5
    assert folder.is_dir()


def test_cifar10_missing_folder_says_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="--download") as e:
        load_dataset("cifar10", root=tmp_path)
    assert "cifar-10-batches-py" in str(e.value)


def test_cifar10_missing_one_batch_is_named(tmp_path):
    folder = write_cifar(tmp_path / "cifar-10-batches-py")
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"corrupt": "data_batch_2"}, r"data_batch_2.*corrupt"),
        ({"data": np.zeros((20, 3000), np.uint8)}, r"data_batch_1.*\(N, 3072\) uint8"),
        ({"data": np.zeros((20, 3072), np.float32)}, r"data_batch_1.*uint8"),
        ({"labels": [10] * 20}, r"data_batch_1.*label out of range"),
        ({"labels": [-1] * 20}, r"data_batch_1.*label out of range"),
        ({"labels": [0] * 19}, r"data_batch_1.*one per image"),
    ],
)
def test_cifar10_bad_batches_name_file_and_problem(tmp_path, kwargs, message):
    write_cifar(tmp_path / "cifar-10-batches-py", **kwargs)
    with pytest.raises(ValueError, match=message):
        load_cifar10(tmp_path)


def test_cifar10_pickle_with_foreign_globals_is_refused(tmp_path):
    folder = write_cifar(tmp_path / "cifar-10-batches-py")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match=r"test_batch.*not allowed"):
        load_cifar10(tmp_path)


def test_cifar10_missing_keys(tmp_path):
    folder = write_cifar(tmp_path / "cifar-10-batches-py")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"pixels": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(ValueError, match=r"test_batch.*missing key"):
        load_cifar10(tmp_path)


def test_download_verifies_md5_and_extracts(tmp_path):
    archive, md5 = cifar_archive(tmp_path)
    root = tmp_path / "data"
    folder = download_cifar10(root, url=str(archive), md5=md5)
    assert folder == root / "cifar-10-batches-py"
    ds = load_cifar10(root)
    assert ds.num_train == 20 and ds.num_test == 4
    # the verified archive is kept and reused: the url is not needed a second time
    assert file_md5(root / "cifar-10-python.tar.gz") == md5
    download_cifar10(root, url=str(tmp_path / "missing" / "cifar-10-python.tar.gz"), md5=md5)


def test_download_from_file_url(tmp_path):
    archive, md5 = cifar_archive(tmp_path)
    folder = download_cifar10(tmp_path / "data", url=archive.as_uri(), md5=md5)
    assert (folder / "test_batch").is_file()


def test_download_md5_mismatch_is_refused_and_cleaned(tmp_path):
    archive, _ = cifar_archive(tmp_path)
    root = tmp_path / "data"
    with pytest.raises(ValueError, match=r"cifar-10-python.tar.gz.*MD5.*expected 0{32}"):
        download_cifar10(root, url=str(archive), md5="0" * 32)
    assert not any(root.iterdir())  # neither the archive nor a .part file is left


def test_download_unreachable_source(tmp_path):
    with pytest.raises(OSError, match="could not fetch"):
        download_cifar10(tmp_path, url=str(tmp_path / "nope.tar.gz"), md5=CIFAR10_MD5)


def test_load_with_download_flag_fetches_then_loads(tmp_path, monkeypatch):
    archive, md5 = cifar_archive(tmp_path)
    real = C.download_cifar10
    seen = []

    def fake(root, **kw):
        seen.append(root)
        return real(root, url=str(archive), md5=md5)

    monkeypatch.setattr(C, "download_cifar10", fake)
    ds = load_dataset("cifar10", root=tmp_path / "data", download=True)
    assert seen == [tmp_path / "data"] and ds.num_train == 20
    load_dataset("cifar10", root=tmp_path / "data", download=True)
    assert len(seen) == 1  # present batches are not fetched again


def test_official_constants():
    assert CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"


@pytest.mark.parametrize("bad", ["../evil.txt", "/tmp/abs_evil.txt"])
def test_extract_refuses_escaping_members(tmp_path, bad):
    archive = make_tar(tmp_path / "bad.tar.gz", {"ok.txt": b"1", bad: b"2"})
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ValueError, match="escapes"):
        extract_tar(archive, dest)
    assert not (tmp_path / "evil.txt").exists()


def test_extract_refuses_links_and_corrupt_archives(tmp_path):
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ValueError, match="not a plain file"):
        extract_tar(archive, tmp_path / "out")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar at all")
    with pytest.raises(ValueError, match="corrupt"):
        extract_tar(junk, tmp_path / "out")


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="imagenet") as e:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(e.value)


# --------------------------------------------------------------------------- augmentation


def all_crops(img, padding):
    """Every padded crop of img (C, H, W), flipped and not: the allowed outputs."""
    _, h, w = img.shape
    p = torch.nn.functional.pad(img, (padding,) * 4)
    out = []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = p[:, dy:dy + h, dx:dx + w]
            out += [crop, crop.flip(-1)]
    return out


def test_random_crop_flip_outputs_are_padded_crops():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 6, 5)
    g = torch.Generator().manual_seed(1)
    y = random_crop_flip(2)(x, g)
    assert y.shape == x.shape and y.dtype == x.dtype
    for i in range(len(x)):
        assert any(torch.equal(y[i], c) for c in all_crops(x[i], 2)), i
    assert not torch.equal(y, x)


def test_random_crop_flip_is_seeded_and_varied():
    x = torch.randn(256, 3, 32, 32)
    aug = random_crop_flip(4)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # with padding 0 only flips remain: about half the images are mirrored
    f = random_crop_flip(0)(x, torch.Generator().manual_seed(3))
    mirrored = torch.tensor([torch.equal(f[i], x[i].flip(-1)) for i in range(len(x))])
    kept = torch.tensor([torch.equal(f[i], x[i]) for i in range(len(x))])
    assert bool((mirrored | kept).all()) and 0.35 < mirrored.float().mean() < 0.65
    # without flip and padding the augmentation is the identity
    assert torch.equal(random_crop_flip(0, flip=False)(x, None), x)


def test_random_crop_flip_rejects_bad_input():
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(-1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_crop_flip(4)(torch.zeros(3, 32, 32), None)


# --------------------------------------------------------------------------- batching


def test_batches_cover_each_example_once_and_are_seeded():
    ds = toy_dataset(10)
    g = torch.Generator().manual_seed(0)
    got = [(x.flatten().tolist(), y.tolist()) for x, y in ds.batches(4, generator=g)]
    assert [len(x) for x, _ in got] == [4, 4, 2]
    seen = sum((x for x, _ in got), [])
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    for x, y in got:  # pairs stay together
        assert y == [int(v) % 3 for v in x]
    again = [x.flatten().tolist() for x, _ in ds.batches(4, generator=torch.Generator()
                                                          .manual_seed(0))]
    assert again == [x for x, _ in got]
    assert ds.num_batches(4) == 3 and ds.num_batches(4, drop_last=True) == 2


def test_batches_order_split_drop_last():
    ds = toy_dataset(10, 7)
    plain = [x.flatten().tolist() for x, _ in ds.batches(3, shuffle=False)]
    assert plain == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    dropped = list(ds.batches(3, shuffle=False, drop_last=True))
    assert len(dropped) == 3
    test = [x.flatten().tolist() for x, _ in ds.batches(5, shuffle=False, split="test")]
    assert test == [[100, 101, 102, 103, 104], [105, 106]]


def test_augment_applies_to_train_batches_only():
    calls = []

    def aug(x, g):
        calls.append(g)
        return x + 1000

    ds = toy_dataset(6, 4, augment=aug)
    g = torch.Generator().manual_seed(0)
    train = torch.cat([x for x, _ in ds.batches(4, generator=g)])
    assert train.min() >= 1000 and calls == [g, g]
    test = torch.cat([x for x, _ in ds.batches(4, split="test")])
    assert test.max() < 1000 and len(calls) == 2
    plain = torch.cat([x for x, _ in ds.batches(4, augment=False)])
    assert plain.max() < 1000


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_batches_reject_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        next(toy_dataset().batches(bad))


def test_batches_reject_bad_split():
    with pytest.raises(ValueError, match="split"):
        next(toy_dataset().batches(2, split="valid"))


def test_dataset_validates_shapes_and_labels():
    x = torch.zeros(4, 1, 3)
    with pytest.raises(ValueError, match="x_train"):
        Dataset("d", x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long),
                num_classes=2, input_shape=(1, 4))
    with pytest.raises(ValueError, match="y_test"):
        Dataset("d", x, torch.zeros(4, dtype=torch.long), x, torch.zeros(3, dtype=torch.long),
                num_classes=2, input_shape=(1, 3))
    with pytest.raises(ValueError, match=r"y_train.*\[0, 2\)"):
        Dataset("d", x, torch.full((4,), 2), x, torch.zeros(4, dtype=torch.long),
                num_classes=2, input_shape=(1, 3))


def test_subset_and_to():
    ds = toy_dataset(10, 7)
    small = ds.subset(4, 2)
    assert small.num_train == 4 and small.num_test == 2 and small.name == "toy"
    with pytest.raises(ValueError, match="num_train"):
        ds.subset(11)
    assert ds.to("cpu") is ds
    if torch.cuda.is_available():
        assert ds.to("cuda").x_train.is_cuda

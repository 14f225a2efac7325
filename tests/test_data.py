"""Tests of pixelcnn.data.

The MNIST and binarized MNIST tests read the real files of the shared data folder ($PIXELCNN_DATA, else
../shared/data next to the repository) and check them against published facts; Fashion-MNIST comes from
Debian's package. CIFAR-10 files, tarballs and image folders are written here in the published formats.
No test reaches the network: urllib is replaced by a stub that fails, or that serves given bytes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import requires_data
from pixelcnn import data
from pixelcnn.data import ImageDataset, available_datasets, data_root, dataset_info, load_dataset
from pixelcnn.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PIXELCNN_DATA") or REPO.parent / "shared" / "data")
SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000, "trainval": 60_000}


def value_range(t: torch.Tensor) -> tuple[int, int]:
    low, high = torch.aminmax(t)
    return int(low), int(high)


def is_binary(t: torch.Tensor) -> bool:
    """Values 0 and 1 only, both present (cheaper than unique() on millions of pixels)."""
    return value_range(t) == (0, 1)


def mean(t: torch.Tensor) -> float:
    """Exact mean of an integer tensor, without a float64 copy of millions of pixels."""
    return t.sum(dtype=torch.int64).item() / t.numel()

MAKE_TEST = "run `make test`, which points PIXELCNN_DATA at ../shared/data"
needs_mnist = requires_data(all((SHARED / "mnist" / n).is_file() for n in data.IDX_FILES),
                            f"the four MNIST .gz files in {SHARED / 'mnist'}", MAKE_TEST)
needs_binarized = requires_data((SHARED / "binarized_mnist" / "binarized_mnist.npz").is_file(),
                                f"binarized_mnist.npz in {SHARED / 'binarized_mnist'}", MAKE_TEST)
needs_debian_fashion = requires_data(all((data.DEBIAN_FASHION_MNIST / n).is_file() for n in data.IDX_FILES),
                                     "Fashion-MNIST from Debian", "sudo apt-get install dataset-fashion-mnist "
                                     "(`make test` does)")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No test reaches the network, the user's cache or a $PIXELCNN_DATA set outside."""
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.delenv("PIXELCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@functools.lru_cache(maxsize=None)
def shared(name: str, split: str) -> ImageDataset:
    """A split of the shared files, loaded once for the whole module (tests must not modify it)."""
    return load_dataset(name, split, data_dir=SHARED, download=False)


@functools.lru_cache(maxsize=None)
def debian_fashion(split: str) -> ImageDataset:
    return load_dataset("fashion_mnist", split, download=False)


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes):
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


def serve(monkeypatch, bodies: dict[str, bytes]) -> list[str]:
    """Make urlopen answer the URLs in ``bodies`` and fail for any other; returns the URLs asked for."""
    asked = []

    def urlopen(url, *args, **kwargs):
        asked.append(url)
        if url not in bodies:
            raise urllib.error.URLError(f"no route to {url}")
        return FakeResponse(bodies[url])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


# ----------------------------------------------------------------------------------------------------
# Names, info and roots


def test_available_datasets_and_their_info():
    assert available_datasets() == ["mnist", "binarized_mnist", "dynamic_binarized_mnist", "fashion_mnist", "cifar10",
                                    "emoji"]
    expected = {"mnist": ((1, 28, 28), 256, 10), "binarized_mnist": ((1, 28, 28), 2, None),
                "dynamic_binarized_mnist": ((1, 28, 28), 2, 10), "fashion_mnist": ((1, 28, 28), 256, 10),
                "cifar10": ((3, 32, 32), 256, 10), "emoji": ((3, 32, 32), 256, None)}
    for name, (shape, levels, classes) in expected.items():
        info = dataset_info(name)
        assert (info.image_shape, info.levels, info.num_classes) == (shape, levels, classes)
    assert dataset_info("fashion_mnist").class_names[9] == "Ankle boot"
    assert dataset_info("cifar10").class_names[0] == "airplane"


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError) as err:
        load_dataset("cifar100")
    for name in [*available_datasets(), "folder:PATH", "'cifar100'"]:
        assert name in str(err.value)
    with pytest.raises(DataError, match="unknown dataset"):
        dataset_info("imagenet")


@pytest.mark.parametrize("name", ["mnist", "folder:somewhere"])
def test_unknown_split_lists_the_valid_splits(name):
    with pytest.raises(DataError) as err:
        load_dataset(name, "validation", download=False)
    assert "'validation'" in str(err.value) and "train, valid, test, trainval" in str(err.value)


def test_image_size_applies_only_to_folders():
    with pytest.raises(DataError, match="mnist images are 28x28: expected image_size None or 28, got 32"):
        load_dataset("mnist", image_size=32, download=False)
    assert dataset_info("cifar10", image_size=32).image_shape == (3, 32, 32)


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELCNN_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("PIXELCNN_DATA")
    assert data_root() == tmp_path / "cache" / "pixelcnn"          # XDG_CACHE_HOME, set by `isolated`
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "pixelcnn"


@needs_mnist
def test_files_missing_under_data_dir_are_found_under_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELCNN_DATA", str(SHARED))
    d = load_dataset("mnist", "test", data_dir=tmp_path / "empty", download=False)
    assert d.labels[:3].tolist() == [7, 2, 1]


# ----------------------------------------------------------------------------------------------------
# MNIST


@needs_mnist
def test_shared_mnist_files_have_the_published_checksums():
    published_md5 = {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                     "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                     "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                     "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
    for remote in data.REMOTE_FILES["mnist"]:
        raw = (SHARED / "mnist" / remote.name).read_bytes()
        assert hashlib.md5(raw).hexdigest() == published_md5[remote.name]
        assert hashlib.new(remote.algorithm, raw).hexdigest() == remote.digest


@needs_mnist
@pytest.mark.parametrize("split", data.SPLITS)
def test_mnist_splits(split):
    d = shared("mnist", split)
    assert len(d) == SIZES[split] and d.images.shape == (SIZES[split], 1, 28, 28) and d.image_shape == (1, 28, 28)
    assert d.images.dtype == torch.uint8 and d.labels.dtype == torch.int64 and d.labels.shape == (len(d),)
    assert (d.levels, d.num_classes, d.class_names) == (256, 10, [str(i) for i in range(10)])
    assert value_range(d.images) == (0, 255)
    assert torch.bincount(d.labels).gt(0).tolist() == [True] * 10


@needs_mnist
def test_mnist_matches_published_facts():
    train, test, trainval = shared("mnist", "train"), shared("mnist", "test"), shared("mnist", "trainval")
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(trainval.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mean(trainval.images) == pytest.approx(33.3184, abs=1e-4)
    assert mean(test.images) == pytest.approx(33.7912, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param("mnist", marks=needs_mnist),
                                  pytest.param("binarized_mnist", marks=needs_binarized),
                                  pytest.param("dynamic_binarized_mnist", marks=needs_mnist)])
def test_trainval_is_train_then_valid(name):
    train, valid, trainval = (shared(name, s) for s in ("train", "valid", "trainval"))
    assert torch.equal(trainval.images[:len(train)], train.images)
    assert torch.equal(trainval.images[len(train):], valid.images)       # dynamic: the fixed valid bits
    if train.labels is not None:
        assert torch.equal(trainval.labels, torch.cat([train.labels, valid.labels]))


@needs_mnist
def test_batch_gives_int64_images_and_labels():
    d = shared("mnist", "test")
    x, y = d.batch(torch.tensor([0, 2, 9999]))
    assert x.dtype == torch.int64 and x.shape == (3, 1, 28, 28) and torch.equal(x, d.images[[0, 2, 9999]].long())
    assert y.tolist() == [7, 1, d.labels[9999].item()]


@needs_mnist
def test_a_dataset_is_a_torch_dataset_for_a_dataloader():
    d = shared("mnist", "test")
    assert isinstance(d, torch.utils.data.Dataset)
    x, y = next(iter(torch.utils.data.DataLoader(d, batch_size=4)))
    assert torch.equal(x, d.batch(torch.arange(4))[0]) and torch.equal(y, d.labels[:4])
    image, label = d[-1]
    assert torch.equal(image, d.images[9999].long()) and label == d.labels[9999]
    unlabelled = replace(d, labels=None, num_classes=None, class_names=None)
    assert torch.equal(unlabelled[3], d.images[3].long())
    with pytest.raises(IndexError, match="expected an index in \\[-10000, 10000\\), got 10000"):
        d[10000]


# ----------------------------------------------------------------------------------------------------
# Binarized MNIST


@needs_binarized
@pytest.mark.parametrize("split", data.SPLITS)
def test_binarized_mnist_splits(split):
    d = shared("binarized_mnist", split)
    assert d.images.shape == (SIZES[split], 1, 28, 28) and d.images.dtype == torch.uint8
    assert is_binary(d.images)
    assert (d.levels, d.labels, d.num_classes, d.class_names) == (2, None, None, None)
    x, y = d.batch(torch.arange(4))
    assert x.dtype == torch.int64 and y is None


@needs_binarized
def test_binarized_mnist_is_larochelle_and_murrays():
    published = {"train": ("43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a", 0.13056),
                 "valid": ("069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e", 0.13113),
                 "test": ("ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86", 0.13251)}
    for split, (sha, ones) in published.items():
        images = shared("binarized_mnist", split).images
        assert hashlib.sha256(images.reshape(len(images), 784).numpy().tobytes()).hexdigest() == sha
        assert mean(images) == pytest.approx(ones, abs=5e-6)


@needs_binarized
def test_binarized_npz_with_other_bits_fails_its_content_checksum(tmp_path):
    with np.load(SHARED / "binarized_mnist" / "binarized_mnist.npz", allow_pickle=False) as f:
        arrays = dict(f)
    arrays["valid"][7, 3] ^= 1
    (tmp_path / "binarized_mnist").mkdir()
    np.savez(tmp_path / "binarized_mnist" / "binarized_mnist.npz", **arrays)
    assert len(load_dataset("binarized_mnist", "test", data_dir=tmp_path, download=False)) == 10_000
    with pytest.raises(DataError) as err:
        load_dataset("binarized_mnist", "valid", data_dir=tmp_path, download=False)
    assert "expected content sha256 069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e" in str(err.value)
    assert "binarized_mnist.npz" in str(err.value)


def amat_text(bits: np.ndarray) -> bytes:
    """Larochelle's .amat layout: one image a line, 784 digits separated by single spaces."""
    text = np.full((len(bits), 1568), ord(" "), np.uint8)
    text[:, 0::2] = bits.reshape(len(bits), 784) + ord("0")
    text[:, -1] = ord("\n")
    return text.tobytes()


@needs_binarized
@pytest.mark.parametrize("index, split", [(1, "valid"), (2, "test")])
def test_amat_layout_of_the_shared_bits_has_the_published_sha256(index, split):
    # Larochelle's files rebuilt from the shared bits match their published sha256 byte for byte, so the
    # layout amat_text writes (and the tiny files below use) is the layout of the real files.
    remote = data.REMOTE_FILES["binarized_mnist"][index]
    assert remote.name == f"binarized_mnist_{split}.amat"
    assert hashlib.sha256(amat_text(shared("binarized_mnist", split).images.numpy())).hexdigest() == remote.digest


def test_binarized_mnist_download_checks_and_converts_the_amat_files(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    bits = {s: rng.integers(0, 2, (n, 784), dtype=np.uint8) for s, n in (("train", 5), ("valid", 2), ("test", 3))}
    bodies, remotes = {}, []
    for remote, (split, b) in zip(data.REMOTE_FILES["binarized_mnist"], bits.items()):
        bodies[remote.urls[0]] = amat_text(b)
        remotes.append(replace(remote, digest=hashlib.sha256(amat_text(b)).hexdigest()))
        monkeypatch.setitem(data.BINARIZED_CONTENT_SHA256, split, hashlib.sha256(b.tobytes()).hexdigest())
    monkeypatch.setitem(data.REMOTE_FILES, "binarized_mnist", tuple(remotes))
    asked = serve(monkeypatch, bodies)
    d = load_dataset("binarized_mnist", "trainval", data_dir=tmp_path, download=True)
    assert sorted(asked) == sorted(bodies)
    assert d.images.shape == (7, 1, 28, 28)
    assert torch.equal(d.images.reshape(7, 784), torch.from_numpy(np.concatenate([bits["train"], bits["valid"]])))
    assert [p.name for p in (tmp_path / "binarized_mnist").iterdir()] == ["binarized_mnist.npz"]   # .amat removed
    with np.load(tmp_path / "binarized_mnist" / "binarized_mnist.npz", allow_pickle=False) as archive:
        assert archive["test"].shape == (3, 98) and archive["test"].dtype == np.uint8


# ----------------------------------------------------------------------------------------------------
# Dynamically binarized MNIST


@needs_mnist
def test_dynamic_binarization_draws_fresh_bits_from_the_generator():
    d, grey = shared("dynamic_binarized_mnist", "train"), shared("mnist", "train").images
    assert (len(d), d.levels, d.num_classes) == (50_000, 2, 10) and torch.equal(d.intensities, grey)
    assert is_binary(d.images)                               # the static copy is binary as well
    idx = torch.arange(2000)
    x1, y1 = d.batch(idx, torch.Generator().manual_seed(1))
    x2, _ = d.batch(idx, torch.Generator().manual_seed(1))
    x3, _ = d.batch(idx, torch.Generator().manual_seed(2))
    assert x1.dtype == torch.int64 and is_binary(x1)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    g = torch.Generator().manual_seed(3)
    assert not torch.equal(d.batch(idx, g)[0], d.batch(idx, g)[0])
    assert torch.all(x3[grey[idx] == 0] == 0) and torch.all(x3[grey[idx] == 255] == 1)
    assert mean(x3) == pytest.approx(mean(grey[idx]) / 255, abs=2e-3)
    assert y1[:5].tolist() == [5, 0, 4, 1, 9]


@needs_mnist
@pytest.mark.parametrize("split, sha", [
    ("valid", "5f5c53ba9dc09af62db2d1916939d60af935646d152e48d303644f3ce7acb9c2"),
    ("test", "b6d3406e7c56060705d989552f71b80bcebff2c4dd1c4d94ad7ce20f60e62c2e")])
def test_dynamic_binarization_is_fixed_for_evaluation(split, sha):
    d, grey = shared("dynamic_binarized_mnist", split), shared("mnist", split).images
    assert d.intensities is None and is_binary(d.images)
    # pinned: these bits must never change, or published evaluation numbers would stop being comparable
    assert hashlib.sha256(d.images.numpy().tobytes()).hexdigest() == sha
    idx = torch.arange(100)
    for seed in (1, 2):
        assert torch.equal(d.batch(idx, torch.Generator().manual_seed(seed))[0], d.images[idx].long())
    assert torch.all(d.images[grey == 0] == 0) and torch.all(d.images[grey == 255] == 1)
    assert mean(d.images) == pytest.approx(mean(grey) / 255, abs=2e-3)
    assert torch.equal(d.labels, shared("mnist", split).labels)


# ----------------------------------------------------------------------------------------------------
# Fashion-MNIST (Debian's copy)


@needs_debian_fashion
@pytest.mark.parametrize("split", data.SPLITS)
def test_fashion_mnist_splits_from_debian(split):
    d = debian_fashion(split)
    assert d.images.shape == (SIZES[split], 1, 28, 28) and (d.levels, d.num_classes) == (256, 10)
    assert d.class_names == list(data.FASHION_MNIST_CLASSES)
    assert value_range(d.images) == (0, 255)


@needs_debian_fashion
def test_fashion_mnist_matches_published_facts():
    assert debian_fashion("train").labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert debian_fashion("test").labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert torch.bincount(debian_fashion("trainval").labels).tolist() == [6000] * 10
    assert torch.bincount(debian_fashion("test").labels).tolist() == [1000] * 10


def test_fashion_mnist_under_a_root_is_checked_against_zalandos_md5(tmp_path):
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    for name in data.IDX_FILES:
        (folder / name).write_bytes(b"not the real file")
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", "train", data_dir=tmp_path, download=False)
    message = str(err.value)
    assert str(folder / "train-images-idx3-ubyte.gz") in message
    assert "expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d" in message
    assert f"got {hashlib.md5(b'not the real file').hexdigest()}" in message


# ----------------------------------------------------------------------------------------------------
# Missing, corrupted and downloaded files


@needs_mnist
def test_corrupted_file_fails_its_checksum(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in data.IDX_FILES:
        (folder / name).symlink_to(SHARED / "mnist" / name)
    raw = bytearray((SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    raw[200] ^= 0xFF
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(raw)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    message = str(err.value)
    assert str(folder / "t10k-labels-idx1-ubyte.gz") in message
    assert "expected f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6" in message
    assert f"got {hashlib.sha256(raw).hexdigest()}" in message


@pytest.mark.parametrize("name, key, files", [
    ("mnist", "mnist", data.IDX_FILES),
    ("dynamic_binarized_mnist", "mnist", data.IDX_FILES),
    ("fashion_mnist", "fashion_mnist", (*data.IDX_FILES, "dataset-fashion-mnist")),
    ("binarized_mnist", "binarized_mnist", ("binarized_mnist_train.amat", "binarized_mnist_valid.amat",
                                            "binarized_mnist_test.amat", "binarized_mnist.npz")),
    ("cifar10", "cifar10", ("cifar-10-python.tar.gz", "cifar-10-batches-py"))])
def test_missing_files_without_download_say_what_to_put_where(monkeypatch, tmp_path, name, key, files):
    monkeypatch.setattr(data.downloads, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(DataError) as err:
        load_dataset(name, "test", data_dir=tmp_path / "root", download=False)
    message = str(err.value)
    for needed in (*files, f"{tmp_path / 'root' / key}/", "--data-dir", "PIXELCNN_DATA", "downloading is disabled"):
        assert needed in message
    assert not (tmp_path / "root").exists()


def test_failed_download_names_files_and_urls_and_leaves_nothing(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "test", data_dir=tmp_path, download=True)
    message = str(err.value)
    assert "download failed" in message and "network disabled in tests" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in message
    assert all(name in message for name in data.IDX_FILES)
    assert list((tmp_path / "mnist").iterdir()) == []


@needs_mnist
def test_download_tries_the_mirrors_in_turn_and_writes_checked_files(monkeypatch, tmp_path):
    bodies = {r.urls[1]: (SHARED / "mnist" / r.name).read_bytes() for r in data.REMOTE_FILES["mnist"]}
    asked = serve(monkeypatch, bodies)
    d = load_dataset("mnist", "test", data_dir=tmp_path)
    assert d.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert asked[:2] == [r.urls[i] for r in data.REMOTE_FILES["mnist"][:1] for i in (0, 1)]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(data.IDX_FILES)   # no .part left


def test_download_with_the_wrong_checksum_is_refused(monkeypatch, tmp_path):
    remote = data.REMOTE_FILES["mnist"][0]
    serve(monkeypatch, {url: b"tampered" for url in remote.urls})
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(err.value)
    assert f"expected {remote.digest}, got {hashlib.sha256(b'tampered').hexdigest()}" in message
    assert list((tmp_path / "mnist").iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# CIFAR-10, written here in the published format


class Python2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 strings and names numpy.core, as the published batches do."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        size = bytes([len(raw)]) if len(raw) < 256 else struct.pack("<i", len(raw))
        self.write((pickle.SHORT_BINSTRING if len(raw) < 256 else pickle.BINSTRING) + size + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def dump_py2(obj, path: Path) -> None:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    # protocol 2 names globals as text lines, so renaming NumPy 2's module keeps the pickle valid
    path.write_bytes(buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


def write_cifar(folder: Path, per_batch: int = 4, n_test: int = 3) -> dict[str, np.ndarray]:
    """A tiny cifar-10-batches-py folder; returns the rows and labels written."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    written = {}
    names = [*data.CIFAR_TRAIN_BATCHES, "test_batch"]
    for i, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        label = "testing batch 1 of 1" if name == "test_batch" else f"training batch {i + 1} of 5"
        dump_py2({"batch_label": label, "labels": labels, "data": rows,
                  "filenames": [f"image_{i}_{j}.png" for j in range(n)]}, folder / name)
        written[name] = (rows, np.array(labels))
    dump_py2({"num_cases_per_batch": per_batch, "label_names": list(data.CIFAR10_CLASSES), "num_vis": 3072},
             folder / "batches.meta")
    return written


def test_cifar10_reads_the_published_pickle_layout(tmp_path):
    rows = np.zeros((4, 3072), np.uint8)
    # a known colour at row 2, column 7 of image 1: planes R, G, B of 32x32, row-major
    for channel, value in enumerate((10, 200, 30)):
        rows[1, channel * 1024 + 2 * 32 + 7] = value
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar(folder)
    dump_py2({"batch_label": "training batch 1 of 5", "labels": [3, 1, 4, 1], "data": rows,
              "filenames": ["a.png", "b.png", "c.png", "d.png"]}, folder / "data_batch_1")
    d = load_dataset("cifar10", "train", data_dir=tmp_path, download=False)
    assert d.images[1, :, 2, 7].tolist() == [10, 200, 30]
    assert int(d.images[1].sum()) == 240 and d.images[1, :, 7, 2].tolist() == [0, 0, 0]
    assert d.labels[:4].tolist() == [3, 1, 4, 1]
    assert d.class_names == list(data.CIFAR10_CLASSES) and (d.levels, d.num_classes) == (256, 10)


def test_cifar10_splits(tmp_path):
    written = write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    rows = np.concatenate([written[b][0] for b in data.CIFAR_TRAIN_BATCHES]).reshape(20, 3, 32, 32)
    labels = np.concatenate([written[b][1] for b in data.CIFAR_TRAIN_BATCHES])
    splits = {s: load_dataset("cifar10", s, data_dir=tmp_path, download=False) for s in data.SPLITS}
    assert {s: len(d) for s, d in splits.items()} == {"train": 18, "valid": 2, "test": 3, "trainval": 20}
    assert torch.equal(splits["trainval"].images, torch.from_numpy(rows))
    assert torch.equal(splits["valid"].images, torch.from_numpy(rows[18:]))       # the last tenth
    assert splits["train"].labels.tolist() == labels[:18].tolist()
    assert torch.equal(splits["test"].images, torch.from_numpy(written["test_batch"][0].reshape(3, 3, 32, 32)))
    assert splits["test"].image_shape == (3, 32, 32) and splits["test"].labels.dtype == torch.int64


def make_cifar_tarball(tmp_path: Path, monkeypatch, extra: tarfile.TarInfo | None = None) -> Path:
    """cifar10/cifar-10-python.tar.gz holding a tiny batches folder; its md5 patched into REMOTE_FILES."""
    write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "root" / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x" * extra.size))
    remote = data.REMOTE_FILES["cifar10"][0]
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(data.REMOTE_FILES, "cifar10", (replace(remote, digest=md5),))
    return archive


def test_cifar10_tarball_is_checked_and_extracted(monkeypatch, tmp_path):
    archive = make_cifar_tarball(tmp_path, monkeypatch)
    d = load_dataset("cifar10", "test", data_dir=tmp_path / "root", download=False)
    assert len(d) == 3 and d.image_shape == (3, 32, 32)
    extracted = archive.parent / "cifar-10-batches-py"
    assert sorted(p.name for p in extracted.iterdir()) == sorted(data.CIFAR_FILES)
    assert [p.name for p in archive.parent.iterdir() if p.name.startswith(".")] == []     # no temporary left


def test_cifar10_tarball_with_the_wrong_md5_is_refused(monkeypatch, tmp_path):
    archive = make_cifar_tarball(tmp_path, monkeypatch)
    monkeypatch.setitem(data.REMOTE_FILES, "cifar10", (replace(data.REMOTE_FILES["cifar10"][0],
                                                               digest="c58f30108f718f92721af3b95e74349a"),))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=tmp_path / "root", download=False)
    assert str(archive) in str(err.value) and "expected c58f30108f718f92721af3b95e74349a" in str(err.value)
    assert not (archive.parent / "cifar-10-batches-py").exists()


@pytest.mark.parametrize("member_name", ["cifar-10-batches-py/../../escaped", "/tmp/absolute", "elsewhere/file"])
def test_cifar10_tarball_members_outside_the_folder_are_refused(monkeypatch, tmp_path, member_name):
    member = tarfile.TarInfo(member_name)
    member.size = 1
    archive = make_cifar_tarball(tmp_path, monkeypatch, extra=member)
    with pytest.raises(DataError, match="expected only plain files under cifar-10-batches-py/"):
        load_dataset("cifar10", data_dir=tmp_path / "root", download=False)
    assert not (tmp_path / "escaped").exists() and not (archive.parent / "cifar-10-batches-py").exists()


class RunsCode:
    def __init__(self, victim: Path):
        self.victim = victim

    def __reduce__(self):
        return os.remove, (str(self.victim),)


def test_cifar10_pickles_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar(folder)
    victim = tmp_path / "victim"
    victim.write_text("still here")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": RunsCode(victim)}, protocol=2))
    with pytest.raises(DataError, match="expected only NumPy arrays and plain containers"):
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert victim.read_text() == "still here"


def test_cifar10_batch_of_the_wrong_shape_is_refused(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar(folder)
    dump_py2({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}, folder / "test_batch")
    with pytest.raises(DataError, match=r"expected 'data' a uint8 array of shape \(N, 3072\), got a uint8 array "
                                        r"of shape \(2, 1024\)"):
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)


# ----------------------------------------------------------------------------------------------------
# folder:PATH


def save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def bands(width: int, height: int, colours: list[tuple[int, tuple[int, int, int] | int]], mode: str) -> Image.Image:
    """An image of vertical bands (mode RGB) or horizontal bands (mode L): (size, colour) in order."""
    a = np.zeros((height, width, 3) if mode == "RGB" else (height, width), np.uint8)
    start = 0
    for size, colour in colours:
        if mode == "RGB":
            a[:, start:start + size] = colour
        else:
            a[start:start + size] = colour
        start += size
    return Image.fromarray(a, mode)


def test_folder_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    # 96x32 RGB: red | green | blue; the centred 32x32 square lies inside the green band with margins
    save(bands(96, 32, [(24, (255, 0, 0)), (48, (0, 255, 0)), (24, (0, 0, 255))], "RGB"), tmp_path / "wide.png")
    # 40x120 grey: black / white / black; the centred 40x40 square lies inside the white band
    save(bands(40, 120, [(30, 0), (60, 255), (30, 0)], "L"), tmp_path / "tall.png")
    d = load_dataset(f"folder:{tmp_path}", "trainval", image_size=16)
    assert d.images.shape == (2, 3, 16, 16) and d.labels is None and d.levels == 256
    tall, wide = d.images.int()                    # in path order
    assert (wide - torch.tensor([0, 255, 0])[:, None, None]).abs().max() <= 1
    assert (tall - 255).abs().max() <= 1           # grey became RGB with R = G = B


def test_folder_of_grey_images_loads_one_channel(tmp_path):
    save(Image.new("L", (50, 30), 77), tmp_path / "a.png")
    save(Image.new("1", (20, 20), 1), tmp_path / "b.png")
    save(Image.new("LA", (30, 50), (200, 128)), tmp_path / "c.png")
    save(Image.fromarray(np.array([[0, 128 * 257], [65535, 65535]], np.uint16)), tmp_path / "d.png")   # 16-bit
    save(Image.new("L", (40, 40), 9), tmp_path / "e.jpeg")
    d = load_dataset(f"folder:{tmp_path}", "trainval", image_size=2)
    assert d.images.shape == (5, 1, 2, 2) and dataset_info(f"folder:{tmp_path}", 2).image_shape == (1, 2, 2)
    assert d.images[[0, 1, 2], 0, 0, 0].tolist() == [77, 255, 200]
    assert d.images[3, 0].tolist() == [[0, 128], [255, 255]]      # scaled from 16 bits, not clipped
    assert abs(int(d.images[4, 0, 0, 0]) - 9) <= 2                  # JPEG is lossy


def test_folder_sub_folders_are_classes(tmp_path):
    for i, (cls, colour) in enumerate([("dogs", (0, 0, 200)), ("cats", (200, 0, 0)), ("cats", (190, 0, 0))]):
        save(Image.new("RGB", (24 + i, 20), colour), tmp_path / cls / f"{i}.png")
    save(Image.new("L", (20, 20), 50), tmp_path / "dogs" / "puppies" / "small.jpg")     # nested: still dogs
    (tmp_path / "notes.txt").write_text("not an image")
    d = load_dataset(f"folder:{tmp_path}", "trainval")
    assert d.class_names == ["cats", "dogs"] and d.num_classes == 2
    assert d.images.shape == (4, 3, 32, 32)                          # default image_size 32, RGB
    assert d.labels.tolist() == [0, 0, 1, 1]                         # cats/1, cats/2, dogs/0, dogs/puppies
    assert d.images[:, 0, 16, 16].tolist()[:3] == [200, 190, 0] and d.images[2, 2, 16, 16] == 200
    info = dataset_info(f"folder:{tmp_path}")
    assert (info.image_shape, info.num_classes, info.class_names) == ((3, 32, 32), 2, ("cats", "dogs"))


def test_folder_splits_are_seeded_disjoint_and_cover_every_image(tmp_path):
    for i in range(41):
        save(Image.new("L", (8, 8), i * 5), tmp_path / f"img{i:02d}.png")
    name = f"folder:{tmp_path}"
    values = {s: load_dataset(name, s, image_size=4).images[:, 0, 0, 0].tolist() for s in data.SPLITS}
    assert {s: len(v) for s, v in values.items()} == {"train": 37, "valid": 2, "test": 2, "trainval": 39}
    assert sorted(values["train"] + values["valid"] + values["test"]) == [i * 5 for i in range(41)]
    assert sorted(values["trainval"]) == sorted(values["train"] + values["valid"])
    assert values["valid"] != values["train"][:2]                    # shuffled, not the first files
    assert load_dataset(name, "valid", image_size=4).images[:, 0, 0, 0].tolist() == values["valid"]


def test_folder_of_one_image_puts_it_in_train(tmp_path):
    save(Image.new("RGB", (5, 5), (1, 2, 3)), tmp_path / "only.png")
    assert len(load_dataset(f"folder:{tmp_path}", "train")) == 1
    assert load_dataset(f"folder:{tmp_path}", "test").images.shape == (0, 3, 32, 32)


@pytest.mark.parametrize("setup, match", [
    (lambda p: p.mkdir(), "found none"),
    (lambda p: None, "got nothing there"),
    (lambda p: (save(Image.new("L", (4, 4)), p / "a.png"), save(Image.new("L", (4, 4)), p / "cls" / "b.png")),
     "got 1 at the top and 1 in sub-folders"),
    (lambda p: (p.mkdir(), (p / "broken.png").write_bytes(b"\x89PNG garbage")), "broken.png: expected a PNG or JPEG"),
])
def test_folder_bad_inputs(tmp_path, setup, match):
    setup(tmp_path / "images")
    with pytest.raises(DataError, match=match):
        load_dataset(f"folder:{tmp_path / 'images'}")


def test_folder_bad_name_or_size(tmp_path):
    save(Image.new("L", (4, 4)), tmp_path / "a.png")
    with pytest.raises(DataError, match="expected folder:PATH with the path"):
        load_dataset("folder:")
    with pytest.raises(DataError, match="expected image_size a positive integer, got 0"):
        load_dataset(f"folder:{tmp_path}", image_size=0)


def test_image_dataset_checks_its_tensors():
    with pytest.raises(DataError, match=r"expected images with values in \[0, 2\), got a maximum of 5"):
        ImageDataset("x", "train", torch.full((1, 1, 2, 2), 5, dtype=torch.uint8), None, 2, None, None)
    with pytest.raises(DataError, match=r"expected labels in \[0, 3\)"):
        ImageDataset("x", "train", torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 3]), 256, 3, None)
    with pytest.raises(DataError, match="expected images a uint8 tensor"):
        ImageDataset("x", "train", torch.zeros(2, 2, 2), None, 256, None, None)

"""MNIST, Fashion-MNIST (IDX files), dynamically binarized MNIST, and the fixed binarization of
Larochelle & Murray."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pixelcnn.data import downloads
from pixelcnn.data.dataset import SPLITS, ImageDataset, make_dataset, take_split
from pixelcnn.data.downloads import IDX_FILES, REMOTE_FILES, dataset_folder, has_all, search_roots, verify
from pixelcnn.errors import DataError

logger = logging.getLogger(__name__)

# dynamic_binarized_mnist: the valid and test bits are drawn once from this seed (see _fixed_bits), so
# every run, machine and library version evaluates on the same binary images.
EVAL_BINARIZATION_SEED = 0

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
_CLASSES = {"mnist": MNIST_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}


# ----- MNIST, Fashion-MNIST and dynamically binarized MNIST (IDX files)


def _idx_folder(key: str, data_dir: str | os.PathLike | None, download: bool) -> tuple[Path, bool]:
    """The folder with the four IDX files of ``key``, and whether to check them against REMOTE_FILES."""
    roots_have_it = any(has_all(root / key, IDX_FILES) for root in search_roots(data_dir))
    if key == "fashion_mnist" and not roots_have_it and has_all(downloads.DEBIAN_FASHION_MNIST, IDX_FILES):
        # Debian's dataset-fashion-mnist recompressed the .gz files, so their md5s differ from Zalando's
        # although the IDX content is the same. These are checked by their IDX headers and sizes instead.
        return downloads.DEBIAN_FASHION_MNIST, False
    return dataset_folder(key, IDX_FILES, data_dir, download), True


def _read_idx(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Gunzip an IDX file of unsigned bytes and check its header says ``shape``."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: expected a gzipped IDX file, got unreadable data ({e})") from e
    ndim = len(shape)
    offset = 4 * (1 + ndim)           # magic number, then one big-endian uint32 per dimension
    header = tuple(int(v) for v in np.frombuffer(data[:offset], ">u4")) if len(data) >= offset else ()
    expected = (0x800 + ndim, *shape)     # 0x08: unsigned bytes
    if header != expected or len(data) != offset + int(np.prod(shape)):
        raise DataError(f"{path}: expected an IDX file of uint8 with shape {shape} ({offset} + "
                        f"{int(np.prod(shape))} bytes), got header {header} and {len(data)} bytes")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def _read_idx_pair(key: str, folder: Path, prefix: str, n: int, checked: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) and labels (n,) of one IDX file pair (prefix "train" or "t10k")."""
    names = (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
    if checked:
        remotes = {r.name: r for r in REMOTE_FILES[key]}
        for name in names:
            verify(folder / name, remotes[name])
    images = _read_idx(folder / names[0], (n, 28, 28))
    labels = _read_idx(folder / names[1], (n,))
    if labels.max() > 9:
        raise DataError(f"{folder / names[1]}: expected labels 0 to 9, got {labels.max()}")
    return images, labels


MNIST_VALID_SIZE = 10_000      # MNIST and Fashion-MNIST: valid is the last 10,000 of the 60,000 training images


def _idx_split(key: str, split: str, data_dir, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 28, 28) and labels of one split of MNIST or Fashion-MNIST (valid: last 10,000)."""
    folder, checked = _idx_folder(key, data_dir, download)
    if split == "test":
        images, labels = _read_idx_pair(key, folder, "t10k", 10_000, checked)
    else:
        images, labels = _read_idx_pair(key, folder, "train", 60_000, checked)
        images, labels = take_split(images, split, MNIST_VALID_SIZE), take_split(labels, split, MNIST_VALID_SIZE)
    return images[:, None], labels


def load_idx_dataset(name: str, split: str, data_dir, download: bool) -> ImageDataset:
    images, labels = _idx_split(name, split, data_dir, download)
    return make_dataset(name, split, images, labels, 256, list(_CLASSES[name]))


def _fixed_bits(grey: np.ndarray, split: str) -> np.ndarray:
    """One Bernoulli(grey / 255) draw per pixel, the same on every machine and NumPy version.

    NumPy's compatibility policy keeps the raw streams of its bit generators fixed (unlike the distribution
    methods built on them), so the draws use PCG64's raw words, seeded by (EVAL_BINARIZATION_SEED, split);
    tests/test_data.py pins the resulting bits.
    With r the top 32 bits of a word, floor(r * 255 / 2**32) < grey exactly when r / 2**32 < grey / 255:
    a probability of grey / 255 to within 2**-32, in integer arithmetic.
    """
    rng = np.random.PCG64(np.random.SeedSequence([EVAL_BINARIZATION_SEED, SPLITS.index(split)]))
    flat = grey.reshape(-1)
    bits = np.empty(flat.shape, np.uint8)
    chunk = 1 << 22                                    # bounds the temporary uint64 arrays to 32 MiB
    for start in range(0, flat.size, chunk):
        g = flat[start:start + chunk]
        r = rng.random_raw(len(g))
        r >>= np.uint64(32)                            # in place: r = floor(r * 255 / 2**32), 0..254
        r *= np.uint64(255)
        r >>= np.uint64(32)
        bits[start:start + len(g)] = r < g
    return bits.reshape(grey.shape)


def load_dynamic_binarized(name: str, split: str, data_dir, download: bool) -> ImageDataset:
    """MNIST whose train/trainval batches are binarized afresh; valid and test binarized once, seeded."""
    grey, labels = _idx_split("mnist", split, data_dir, download)
    if split == "trainval":                           # keep the valid part's bits equal to split "valid"
        n_train = len(grey) - MNIST_VALID_SIZE
        fixed = np.concatenate([_fixed_bits(grey[:n_train], "train"), _fixed_bits(grey[n_train:], "valid")])
    else:
        fixed = _fixed_bits(grey, split)
    dynamic = grey if split in ("train", "trainval") else None
    return make_dataset(name, split, fixed, labels, 2, list(MNIST_CLASSES), intensities=dynamic)


# ----- binarized MNIST, the fixed binarization of Larochelle & Murray

BINARIZED_NPZ = "binarized_mnist.npz"
# sha256 of each unpacked (N, 784) uint8 array in C order: independent of the zip container.
BINARIZED_CONTENT_SHA256 = {
    "train": "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
    "valid": "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
    "test": "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86",
}


def _check_content(bits: np.ndarray, key: str, what: str) -> None:
    actual = hashlib.sha256(np.ascontiguousarray(bits).tobytes()).hexdigest()
    if actual != BINARIZED_CONTENT_SHA256[key]:
        raise DataError(f"{what}: expected content sha256 {BINARIZED_CONTENT_SHA256[key]} for the {key} "
                        f"bits, got {actual}. The file is corrupted or not Larochelle & Murray's binarization")


def _read_binarized(path: Path, key: str) -> np.ndarray:
    """The (N, 784) bits of array ``key`` of the npz, checked against its content checksum."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            packed = archive[key]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: expected an npz archive with uint8 arrays train, valid and test, "
                        f"got unreadable data or no {key!r} ({e})") from e
    if packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[1] != 98:
        raise DataError(f"{path}: expected {key!r} a uint8 array (N, 98) of packed bits, got "
                        f"{packed.dtype} of shape {packed.shape}")
    bits = np.unpackbits(packed, axis=1)                                              # (N, 784)
    _check_content(bits, key, f"{path} [{key}]")
    return bits


def _amat_bits(path: Path) -> np.ndarray:
    """Parse a Larochelle .amat file: one image a line, 784 digits 0/1 each followed by a space or newline."""
    text = np.fromfile(path, dtype=np.uint8)
    if text.size % 1568:
        raise DataError(f"{path}: expected lines of 1568 bytes (784 digits and separators), got {text.size} bytes")
    lines = text.reshape(-1, 1568)
    digits, seps = lines[:, 0::2], lines[:, 1::2]
    if not ((seps[:, :-1] == ord(" ")).all() and (seps[:, -1] == ord("\n")).all() and (digits >> 1 == 24).all()):
        raise DataError(f"{path}: expected 784 digits 0/1 separated by single spaces on each line")
    return digits - ord("0")


def _convert_amat(folder: Path) -> None:
    """Check Larochelle's three .amat files and write their bits as binarized_mnist.npz (atomically)."""
    arrays = {}
    for remote, key in zip(REMOTE_FILES["binarized_mnist"], ("train", "valid", "test")):
        verify(folder / remote.name, remote)
        bits = _amat_bits(folder / remote.name)
        _check_content(bits, key, str(folder / remote.name))
        arrays[key] = np.packbits(bits, axis=1)
    logger.info("converting the .amat files in %s into %s", folder, BINARIZED_NPZ)
    fd, tmp = tempfile.mkstemp(prefix=f".{BINARIZED_NPZ}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez_compressed(out, **arrays)
        os.replace(tmp, folder / BINARIZED_NPZ)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def load_binarized(name: str, split: str, data_dir, download: bool) -> ImageDataset:
    folder = dataset_folder("binarized_mnist", (BINARIZED_NPZ,), data_dir, download, prepare=_convert_amat,
                             discard_downloads=True)
    keys = ("train", "valid") if split == "trainval" else (split,)
    bits = np.concatenate([_read_binarized(folder / BINARIZED_NPZ, k) for k in keys])
    return make_dataset(name, split, bits.reshape(-1, 1, 28, 28), None, 2, None)

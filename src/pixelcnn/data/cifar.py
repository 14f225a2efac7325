"""CIFAR-10, the python pickle batches as published."""

from __future__ import annotations

import logging
import os
import pickle
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np

from pixelcnn.data.dataset import ImageDataset, make_dataset, take_split
from pixelcnn.data.downloads import REMOTE_FILES, dataset_folder, has_all, verify
from pixelcnn.errors import DataError

logger = logging.getLogger(__name__)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = (*CIFAR_TRAIN_BATCHES, "test_batch", "batches.meta")

# The published batches were pickled by Python 2 and need exactly these globals to rebuild their NumPy
# arrays; NumPy 2 renamed numpy.core to numpy._core. The array's own __reduce__ names the function, so
# no private module is imported here.
_RECONSTRUCT = np.ndarray(0).__reduce__()[0]
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _BatchUnpickler(pickle.Unpickler):
    """Rebuilds plain containers and NumPy arrays only: a pickle cannot run code through it."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"expected only NumPy arrays and plain containers, got a reference "
                                         f"to {module}.{name}")
        return _PICKLE_GLOBALS[module, name]


def _unpickle(path: Path) -> dict:
    """A CIFAR batch as a dict with str keys (Python 2 strings load as bytes)."""
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except Exception as e:     # a damaged pickle can fail in many ways; each means the same to the user
        raise DataError(f"{path}: expected a CIFAR-10 python batch (a pickled dict), got unreadable data "
                        f"({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"a {type(value).__name__}"


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) and labels (N,) of one batch file."""
    batch = _unpickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise DataError(f"{path}: expected 'data' a uint8 array of shape (N, 3072), got {_describe(data)}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: expected 'labels' a list of integers, got {_describe(labels)}") from e
    if labels.shape != (len(data),) or (labels.size and not (labels.min() >= 0 and labels.max() <= 9)):
        raise DataError(f"{path}: expected {len(data)} labels from 0 to 9, got {_describe(labels)} "
                        f"with values {sorted(set(labels.reshape(-1).tolist()))[:12]}")
    # Each row is the red plane, then green, then blue, each 32x32 row-major: exactly (3, 32, 32).
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar_names(path: Path) -> list[str]:
    names = _unpickle(path).get("label_names")
    if not (isinstance(names, list) and len(names) == 10 and all(isinstance(n, (bytes, str)) for n in names)):
        raise DataError(f"{path}: expected 'label_names' a list of 10 strings, got {_describe(names)}")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


def _safe_member(member: tarfile.TarInfo, archive: Path) -> tarfile.TarInfo:
    """Refuse anything but plain files and folders under cifar-10-batches-py/ (no links, no '..')."""
    parts = PurePosixPath(member.name).parts
    if not parts or parts[0] != CIFAR_DIR or ".." in parts or not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: expected only plain files under {CIFAR_DIR}/, got member {member.name!r}")
    return member


def _extract_cifar(folder: Path) -> None:
    """Check the CIFAR-10 archive in ``folder`` and extract its batches into ``folder/cifar-10-batches-py``."""
    remote = REMOTE_FILES["cifar10"][0]
    archive = folder / remote.name
    verify(archive, remote)
    logger.info("extracting %s", archive)
    try:
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=folder) as tmp:
            _extract_members(archive, Path(tmp))
            (folder / CIFAR_DIR).mkdir(exist_ok=True)
            for name in CIFAR_FILES:                       # each file appears whole or not at all
                os.replace(Path(tmp) / CIFAR_DIR / name, folder / CIFAR_DIR / name)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{archive}: could not extract it into {folder} ({e})") from e


def _extract_members(archive: Path, tmp: Path) -> None:
    """Extract the archive into ``tmp`` after checking every member, and check every batch came out."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [_safe_member(m, archive) for m in tar.getmembers()]
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}    # Python >= 3.10.12
        tar.extractall(tmp, members=members, **extra)
    if not has_all(tmp / CIFAR_DIR, CIFAR_FILES):
        raise DataError(f"{archive}: expected {CIFAR_DIR}/ with {', '.join(CIFAR_FILES)}, got "
                        f"{sorted(p.name for p in (tmp / CIFAR_DIR).glob('*'))}")


def load_cifar10(name: str, split: str, data_dir, download: bool) -> ImageDataset:
    """CIFAR-10; valid is the last tenth (5,000) of the 50,000 training images."""
    needed = tuple(f"{CIFAR_DIR}/{f}" for f in CIFAR_FILES)
    folder = dataset_folder("cifar10", needed, data_dir, download, prepare=_extract_cifar) / CIFAR_DIR
    class_names = _read_cifar_names(folder / "batches.meta")
    if split == "test":
        images, labels = _read_cifar_batch(folder / "test_batch")
    else:
        pairs = [_read_cifar_batch(folder / b) for b in CIFAR_TRAIN_BATCHES]
        images, labels = (np.concatenate(parts) for parts in zip(*pairs))
        n_valid = len(images) // 10
        images, labels = take_split(images, split, n_valid), take_split(labels, split, n_valid)
    return make_dataset(name, split, images, labels, 256, class_names)

"""Datasets: files on disk -> integer image tensors; download and checksums.

Every dataset loads as an :class:`ImageDataset`: uint8 images ``(N, C, H, W)`` with values in
``[0, levels)``, optional int64 labels, and ``batch(indices, generator)``, which gives the int64 tensors
that ``model.log_prob`` takes.

=========================  =======  ======  ===========  ============================================
name                       shape    levels  labels       train / valid / test
=========================  =======  ======  ===========  ============================================
mnist                      1x28x28  256     10 digits    first 50,000 / last 10,000 of train / 10,000
binarized_mnist            1x28x28  2       none         50,000 / 10,000 / 10,000 (Larochelle & Murray)
dynamic_binarized_mnist    1x28x28  2       10 digits    as mnist; train bits drawn afresh per batch
fashion_mnist              1x28x28  256     10 classes   as mnist
cifar10                    3x32x32  256     10 classes   first 45,000 / last 5,000 of train / 10,000
folder:PATH                CxSxS    256     sub-folders  90% / 5% / 5% of the images (seeded, by path)
=========================  =======  ======  ===========  ============================================

A fourth split, ``trainval``, is train followed by valid.

Files are looked for under each root in turn: the ``data_dir`` argument (``--data-dir``), then
``$PIXELCNN_DATA``, then the per-user cache ``$XDG_CACHE_HOME/pixelcnn`` (default
``~/.cache/pixelcnn``). The layout under a root is::

    mnist/            train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
                      t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz
    fashion_mnist/    the same four names (also found in Debian's /usr/share/datasets/fashion-mnist)
    binarized_mnist/  binarized_mnist.npz  (or binarized_mnist_{train,valid,test}.amat, converted once)
    cifar10/          cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
                      (or cifar-10-python.tar.gz, extracted once)

Missing files are downloaded into the first root (:func:`data_root`), checked against
:data:`REMOTE_FILES` and written atomically. Where that cannot be done, a :class:`DataError` says which
files to put in which folder.

References: Y. LeCun et al., "Gradient-based learning applied to document recognition", 1998 (MNIST);
H. Larochelle and I. Murray, "The Neural Autoregressive Distribution Estimator", AISTATS 2011 (binarized
MNIST); H. Xiao, K. Rasul and R. Vollgraf, "Fashion-MNIST", 2017; A. Krizhevsky, "Learning Multiple Layers
of Features from Tiny Images", 2009 (CIFAR-10).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import pickle
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

from pixelcnn.errors import DataError

__all__ = [
    "ImageDataset", "DatasetInfo", "available_datasets", "dataset_info", "load_dataset", "data_root",
    "SPLITS", "FOLDER_PREFIX", "REMOTE_FILES",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test", "trainval")
FOLDER_PREFIX = "folder:"
ENV_VAR = "PIXELCNN_DATA"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# dynamic_binarized_mnist: the valid and test bits are drawn once from this seed (see _fixed_bits), so
# every run, machine and library version evaluates on the same binary images.
EVAL_BINARIZATION_SEED = 0
# folder:PATH: fractions of the images in train / valid / test, and the seed that orders them.
FOLDER_SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
FOLDER_SPLIT_SEED = 0
FOLDER_DEFAULT_IMAGE_SIZE = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# What Pillow raises for a file that is not an image it can decode (or one too large to be safe).
_IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)


# ----------------------------------------------------------------------------------------------------
# The dataset object


@dataclass(eq=False, repr=False)
class ImageDataset:
    """One split of a dataset, held in memory.

    ``images`` always holds values in ``[0, levels)``. For the dynamically binarized train and trainval
    splits, ``intensities`` holds the grey MNIST images and :meth:`batch` draws fresh
    Bernoulli(intensity / 255) bits on every call; ``images`` is then one fixed draw, for code that
    wants a static copy.
    """

    name: str
    split: str
    images: torch.Tensor                 # uint8 (N, C, H, W)
    labels: torch.Tensor | None          # int64 (N,)
    levels: int
    num_classes: int | None
    class_names: list[str] | None
    intensities: torch.Tensor | None = field(default=None)   # uint8 (N, C, H, W) grey, 0..255

    def __post_init__(self) -> None:
        _check_images(self.images, self.levels, "images")
        if self.intensities is not None:
            _check_images(self.intensities, 256, "intensities")
            if self.intensities.shape != self.images.shape:
                raise DataError(f"expected intensities of shape {tuple(self.images.shape)}, "
                                f"got {tuple(self.intensities.shape)}")
        if self.labels is not None:
            _check_labels(self.labels, len(self.images), self.num_classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_shape={self.image_shape}, levels={self.levels}, num_classes={self.num_classes}, "
                f"dynamic={self.intensities is not None})")

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """int64 images ``(B, C, H, W)`` and int64 labels ``(B,)`` (or None) of the examples ``indices``.

        Dynamic binarization draws its bits here from ``generator`` (torch's default one when None).
        """
        indices = torch.as_tensor(indices, dtype=torch.long)
        if self.intensities is None:
            x = self.images[indices].long()
        else:
            p = self.intensities[indices].float() / 255.0                            # (B, C, H, W)
            x = torch.bernoulli(p, generator=generator).long()
        y = None if self.labels is None else self.labels[indices]
        return x, y


def _check_images(images: torch.Tensor, levels: int, what: str) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(f"expected {what} a uint8 tensor (N, C, H, W), got {images.dtype} of shape "
                        f"{tuple(images.shape)}")
    if images.numel() and int(images.max()) >= levels:
        raise DataError(f"expected {what} with values in [0, {levels}), got a maximum of {int(images.max())}")


def _check_labels(labels: torch.Tensor, n: int, num_classes: int | None) -> None:
    if labels.dtype != torch.int64 or tuple(labels.shape) != (n,):
        raise DataError(f"expected labels an int64 tensor of shape ({n},), got {labels.dtype} of shape "
                        f"{tuple(labels.shape)}")
    if num_classes is not None and n and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise DataError(f"expected labels in [0, {num_classes}), got values from {int(labels.min())} "
                        f"to {int(labels.max())}")


def _make_dataset(name: str, split: str, images: np.ndarray, labels: np.ndarray | None, levels: int,
                  class_names: list[str] | None, intensities: np.ndarray | None = None) -> ImageDataset:
    """Wrap uint8 numpy arrays (copied, so the tensors own writable memory) as an ImageDataset."""
    def tensor(a: np.ndarray | None, dtype: np.dtype) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.array(a, dtype=dtype))

    return ImageDataset(name=name, split=split, images=tensor(images, np.uint8), labels=tensor(labels, np.int64),
                        levels=levels, num_classes=None if class_names is None else len(class_names),
                        class_names=class_names, intensities=tensor(intensities, np.uint8))


# ----------------------------------------------------------------------------------------------------
# Names, shapes and where files live


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds, known without loading its pixels."""

    name: str
    image_shape: tuple[int, int, int]
    levels: int
    num_classes: int | None
    class_names: tuple[str, ...] | None
    description: str


MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_BUILTIN: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("mnist", (1, 28, 28), 256, 10, MNIST_CLASSES, "MNIST digits, 8-bit grey"),
    DatasetInfo("binarized_mnist", (1, 28, 28), 2, None, None,
                "MNIST binarized once by Larochelle & Murray (2011), no labels"),
    DatasetInfo("dynamic_binarized_mnist", (1, 28, 28), 2, 10, MNIST_CLASSES,
                "MNIST with fresh Bernoulli(x/255) bits for every training batch; fixed bits for valid/test"),
    DatasetInfo("fashion_mnist", (1, 28, 28), 256, 10, FASHION_MNIST_CLASSES, "Fashion-MNIST, 8-bit grey"),
    DatasetInfo("cifar10", (3, 32, 32), 256, 10, CIFAR10_CLASSES, "CIFAR-10, 8-bit RGB"),
)}


def available_datasets() -> list[str]:
    """Names of the built-in datasets; ``folder:PATH`` is accepted as well."""
    return list(_BUILTIN)


def dataset_info(name: str, image_size: int | None = None) -> DatasetInfo:
    """Shape, levels and classes of dataset ``name`` without loading it.

    For ``folder:PATH`` this lists the folder and reads image headers (not pixels) to find the channels.
    """
    if name.startswith(FOLDER_PREFIX):
        return _folder_info(name, image_size)
    info = _builtin_info(name)
    _check_native_size(info, image_size)
    return info


def _builtin_info(name: str) -> DatasetInfo:
    if name not in _BUILTIN:
        raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(_BUILTIN)}, "
                        f"or {FOLDER_PREFIX}PATH for a folder of PNG/JPEG images")
    return _BUILTIN[name]


def _check_native_size(info: DatasetInfo, image_size: int | None) -> None:
    size = info.image_shape[1]
    if image_size is not None and image_size != size:
        raise DataError(f"{info.name} images are {size}x{size}: expected image_size None or {size}, got "
                        f"{image_size} (image_size resizes only {FOLDER_PREFIX}PATH datasets)")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")


def _cache_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "pixelcnn"


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder downloads go to: ``data_dir``, else ``$PIXELCNN_DATA``, else the per-user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else _cache_root()


def _search_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """Every root files are looked for under, in order, without repeats."""
    roots = [Path(data_dir).expanduser()] if data_dir is not None else []
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    roots.append(_cache_root())
    return list(dict.fromkeys(roots))


def _has_all(folder: Path, names: tuple[str, ...]) -> bool:
    return all((folder / n).is_file() for n in names)


# ----------------------------------------------------------------------------------------------------
# Checksums and downloads


@dataclass(frozen=True)
class RemoteFile:
    """A file a dataset needs: its name inside the dataset folder, where to fetch it, its checksum."""

    name: str
    urls: tuple[str, ...]
    algorithm: str          # "md5" or "sha256"
    digest: str


IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                  "https://storage.googleapis.com/cvdf-datasets/mnist/",
                  "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")
_BINARIZED_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"


def _idx_remote(mirrors: tuple[str, ...], algorithm: str, digests: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(n, tuple(m + n for m in mirrors), algorithm, d) for n, d in zip(IDX_FILES, digests))


# The published checksums of the original files, keyed by dataset folder.
REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    # sha256 of the original gzipped files (their md5s are the published f68b3c2d..., d53e105e..., 9fb629c4...,
    # ec29112d...); see the README of the shared data folder.
    "mnist": _idx_remote(_MNIST_MIRRORS, "sha256", (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")),
    # md5s published by Zalando. Debian's copies are recompressed and differ; see _idx_folder.
    "fashion_mnist": _idx_remote(_FASHION_MIRRORS, "md5", (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")),
    # Larochelle's text files, converted once into binarized_mnist.npz.
    "binarized_mnist": tuple(RemoteFile(f"binarized_mnist_{s}.amat", (f"{_BINARIZED_URL}binarized_mnist_{s}.amat",),
                                        "sha256", d) for s, d in (
        ("train", "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
        ("valid", "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
        ("test", "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"))),
    "cifar10": (RemoteFile("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                           "md5", "c58f30108f718f92721af3b95e74349a"),),
}

# What to tell a user who must fetch the files by hand, beyond the list of files.
_MANUAL_HINTS = {
    "binarized_mnist": "binarized_mnist.npz (keys train/valid/test, packbits of 784 bits a row) may stand in "
                       "for the three .amat files.",
    "fashion_mnist": f"Or install the Debian package dataset-fashion-mnist (files in {DEBIAN_FASHION_MNIST}).",
    "cifar10": "The archive is extracted there into cifar-10-batches-py/; the extracted folder may stand in for it.",
}


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest(what: str, remote: RemoteFile, actual: str) -> None:
    if actual != remote.digest:
        raise DataError(f"{what} failed its {remote.algorithm} check: expected {remote.digest}, got {actual}. "
                        "The file is corrupted or incomplete: delete it and load again to download it afresh, "
                        "or put a good copy there")


def _verify(path: Path, remote: RemoteFile) -> None:
    """Raise DataError naming ``path`` unless its checksum is the published one."""
    _check_digest(str(path), remote, _file_digest(path, remote.algorithm))


def _missing_error(key: str, data_dir: str | os.PathLike | None, reason: str) -> DataError:
    """A DataError that says which files to put in which folder."""
    target = data_root(data_dir) / key
    lines = [f"{key} data not found ({reason}). Put these files in {target}/:"]
    lines += [f"  {r.name}  (from {r.urls[0]}, {r.algorithm} {r.digest})" for r in REMOTE_FILES[key]]
    if key in _MANUAL_HINTS:
        lines.append(_MANUAL_HINTS[key])
    roots = ", ".join(str(r / key) for r in _search_roots(data_dir))
    lines.append(f"Looked in: {roots}. Choose the data folder with --data-dir DIR or the environment "
                 f"variable {ENV_VAR}; files are downloaded there when downloading is enabled.")
    return DataError("\n".join(lines))


def _download(key: str, data_dir: str | os.PathLike | None, download: bool) -> tuple[Path, list[Path]]:
    """Fetch the missing REMOTE_FILES[key] into ``data_root(data_dir)/key``; the folder and new files."""
    target = data_root(data_dir) / key
    if not download:
        raise _missing_error(key, data_dir, "downloading is disabled")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _missing_error(key, data_dir, f"cannot create {target}: {e.strerror}") from e
    fetched = []
    for remote in REMOTE_FILES[key]:
        if not (target / remote.name).is_file():
            _fetch(key, data_dir, remote, target / remote.name)
            fetched.append(target / remote.name)
    return target, fetched


def _fetch(key: str, data_dir: str | os.PathLike | None, remote: RemoteFile, dest: Path) -> None:
    """Download ``remote`` to ``dest``, trying each URL in turn."""
    failures = []
    for url in remote.urls:
        try:
            _fetch_url(url, remote, dest)
            return
        except (OSError, DataError) as e:       # urllib's URLError, HTTPError and timeouts are OSErrors
            failures.append(f"{url}: {e}")
    raise _missing_error(key, data_dir, "download failed: " + "; ".join(failures))


def _fetch_url(url: str, remote: RemoteFile, dest: Path) -> None:
    """Stream ``url`` into a temporary sibling of ``dest``; check it, then rename it into place."""
    logger.info("downloading %s to %s", url, dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.new(remote.algorithm, usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in _chunks_with_progress(response, dest.name):
                out.write(chunk)
                digest.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        _check_digest(f"{dest.name} downloaded from {url}", remote, digest.hexdigest())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _chunks_with_progress(response, name: str) -> Iterator[bytes]:
    """The body of an HTTP response in 1 MiB chunks, with a tqdm bar when stderr is a terminal."""
    from tqdm.auto import tqdm

    total = int(response.headers.get("Content-Length") or 0) or None
    with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None, leave=False) as bar:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            bar.update(len(chunk))
            yield chunk


def _dataset_folder(key: str, needed: tuple[str, ...], data_dir: str | os.PathLike | None, download: bool,
                    prepare: Callable[[Path], None] | None = None, discard_downloads: bool = False) -> Path:
    """The first folder ``<root>/key`` that holds every file in ``needed``.

    Without one, a folder that holds the REMOTE_FILES is ``prepare``d (converted or extracted into the
    ``needed`` files); without that either, the REMOTE_FILES are downloaded and prepared.
    """
    roots = _search_roots(data_dir)
    for root in roots:
        if _has_all(root / key, needed):
            return root / key
    sources = tuple(r.name for r in REMOTE_FILES[key])
    for root in roots:
        if prepare is not None and _has_all(root / key, sources):
            prepare(root / key)
            return root / key
    folder, fetched = _download(key, data_dir, download)
    if prepare is not None:
        prepare(folder)
        for path in fetched if discard_downloads else ():
            path.unlink()
    return folder


# ----------------------------------------------------------------------------------------------------
# MNIST, Fashion-MNIST and dynamically binarized MNIST (IDX files)


def _idx_folder(key: str, data_dir: str | os.PathLike | None, download: bool) -> tuple[Path, bool]:
    """The folder with the four IDX files of ``key``, and whether to check them against REMOTE_FILES."""
    roots_have_it = any(_has_all(root / key, IDX_FILES) for root in _search_roots(data_dir))
    if key == "fashion_mnist" and not roots_have_it and _has_all(DEBIAN_FASHION_MNIST, IDX_FILES):
        # Debian's dataset-fashion-mnist recompressed the .gz files, so their md5s differ from Zalando's
        # although the IDX content is the same. These are checked by their IDX headers and sizes instead.
        return DEBIAN_FASHION_MNIST, False
    return _dataset_folder(key, IDX_FILES, data_dir, download), True


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
            _verify(folder / name, remotes[name])
    images = _read_idx(folder / names[0], (n, 28, 28))
    labels = _read_idx(folder / names[1], (n,))
    if labels.max() > 9:
        raise DataError(f"{folder / names[1]}: expected labels 0 to 9, got {labels.max()}")
    return images, labels


MNIST_VALID_SIZE = 10_000      # MNIST and Fashion-MNIST: valid is the last 10,000 of the 60,000 training images


def _take_split(train: np.ndarray, split: str, n_valid: int) -> np.ndarray:
    """The rows of split train, valid or trainval when valid is the last ``n_valid`` rows of ``train``."""
    n_train = len(train) - n_valid
    return {"train": train[:n_train], "valid": train[n_train:], "trainval": train}[split]


def _idx_split(key: str, split: str, data_dir, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 28, 28) and labels of one split of MNIST or Fashion-MNIST (valid: last 10,000)."""
    folder, checked = _idx_folder(key, data_dir, download)
    if split == "test":
        images, labels = _read_idx_pair(key, folder, "t10k", 10_000, checked)
    else:
        images, labels = _read_idx_pair(key, folder, "train", 60_000, checked)
        images, labels = _take_split(images, split, MNIST_VALID_SIZE), _take_split(labels, split, MNIST_VALID_SIZE)
    return images[:, None], labels


def _load_idx_dataset(name: str, split: str, data_dir, download: bool) -> ImageDataset:
    images, labels = _idx_split(name, split, data_dir, download)
    return _make_dataset(name, split, images, labels, 256, list(_BUILTIN[name].class_names))


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


def _load_dynamic_binarized(name: str, split: str, data_dir, download: bool) -> ImageDataset:
    """MNIST whose train/trainval batches are binarized afresh; valid and test binarized once, seeded."""
    grey, labels = _idx_split("mnist", split, data_dir, download)
    if split == "trainval":                           # keep the valid part's bits equal to split "valid"
        n_train = len(grey) - MNIST_VALID_SIZE
        fixed = np.concatenate([_fixed_bits(grey[:n_train], "train"), _fixed_bits(grey[n_train:], "valid")])
    else:
        fixed = _fixed_bits(grey, split)
    dynamic = grey if split in ("train", "trainval") else None
    return _make_dataset(name, split, fixed, labels, 2, list(MNIST_CLASSES), intensities=dynamic)


# ----------------------------------------------------------------------------------------------------
# Binarized MNIST, the fixed binarization of Larochelle & Murray


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
        _verify(folder / remote.name, remote)
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


def _load_binarized(name: str, split: str, data_dir, download: bool) -> ImageDataset:
    folder = _dataset_folder("binarized_mnist", (BINARIZED_NPZ,), data_dir, download, prepare=_convert_amat,
                             discard_downloads=True)
    keys = ("train", "valid") if split == "trainval" else (split,)
    bits = np.concatenate([_read_binarized(folder / BINARIZED_NPZ, k) for k in keys])
    return _make_dataset(name, split, bits.reshape(-1, 1, 28, 28), None, 2, None)


# ----------------------------------------------------------------------------------------------------
# CIFAR-10, the python pickle batches as published


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
    _verify(archive, remote)
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
    if not _has_all(tmp / CIFAR_DIR, CIFAR_FILES):
        raise DataError(f"{archive}: expected {CIFAR_DIR}/ with {', '.join(CIFAR_FILES)}, got "
                        f"{sorted(p.name for p in (tmp / CIFAR_DIR).glob('*'))}")


def _load_cifar10(name: str, split: str, data_dir, download: bool) -> ImageDataset:
    """CIFAR-10; valid is the last tenth (5,000) of the 50,000 training images."""
    needed = tuple(f"{CIFAR_DIR}/{f}" for f in CIFAR_FILES)
    folder = _dataset_folder("cifar10", needed, data_dir, download, prepare=_extract_cifar) / CIFAR_DIR
    class_names = _read_cifar_names(folder / "batches.meta")
    if split == "test":
        images, labels = _read_cifar_batch(folder / "test_batch")
    else:
        pairs = [_read_cifar_batch(folder / b) for b in CIFAR_TRAIN_BATCHES]
        images, labels = (np.concatenate(parts) for parts in zip(*pairs))
        n_valid = len(images) // 10
        images, labels = _take_split(images, split, n_valid), _take_split(labels, split, n_valid)
    return _make_dataset(name, split, images, labels, 256, class_names)


# ----------------------------------------------------------------------------------------------------
# folder:PATH, the user's own PNG/JPEG images


def _folder_path(name: str) -> Path:
    path = name[len(FOLDER_PREFIX):]
    if not path:
        raise DataError(f"expected {FOLDER_PREFIX}PATH with the path of a folder of images, got {name!r}")
    return Path(path).expanduser()


def _image_size(image_size: int | None) -> int:
    if image_size is None:
        return FOLDER_DEFAULT_IMAGE_SIZE
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"expected image_size a positive integer, got {image_size!r}")
    return image_size


def _folder_files(root: Path) -> tuple[list[Path], list[str] | None]:
    """The sorted image files under ``root`` and, when they sit in sub-folders, the sorted class names."""
    if not root.is_dir():
        raise DataError(f"expected a folder of PNG/JPEG images at {root}, got "
                        f"{'a file' if root.exists() else 'nothing there'}")
    files = sorted((p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise DataError(f"expected images ({', '.join(IMAGE_SUFFIXES)}) in {root} or its sub-folders, found none")
    top = sum(p.parent == root for p in files)
    if top == len(files):
        return files, None
    if top:
        raise DataError(f"{root}: expected images either all directly in the folder or all in class "
                        f"sub-folders, got {top} at the top and {len(files) - top} in sub-folders")
    return files, sorted({p.relative_to(root).parts[0] for p in files})


def _is_grey(path: Path) -> bool:
    """Whether the image's mode is a grey one (1, L, LA, I, I;16, F), reading its header only."""
    try:
        with Image.open(path) as im:
            return ImageMode.getmode(im.mode).basemode == "L"
    except _IMAGE_ERRORS as e:
        raise DataError(f"{path}: expected a PNG or JPEG image, got unreadable data ({e})") from e


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit grey PNGs (modes I;16 and I) scaled to 0..255: Pillow's convert("L") would clip them at 255."""
    if im.mode == "I" or im.mode.startswith("I;16"):
        return Image.fromarray(np.round(np.asarray(im, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
    return im


def _load_image(path: Path, mode: str, size: int) -> np.ndarray:
    """One image, upright (EXIF), in ``mode``, shorter side resized to ``size`` and centre-cropped: (C, S, S)."""
    try:
        with Image.open(path) as im:
            im = _to_8bit(ImageOps.exif_transpose(im)).convert(mode)     # alpha, if any, is dropped
            im = ImageOps.fit(im, (size, size), method=Image.Resampling.BICUBIC)
    except _IMAGE_ERRORS as e:
        raise DataError(f"{path}: expected a PNG or JPEG image, got unreadable data ({e})") from e
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _folder_split(files: list[Path], root: Path, split: str) -> list[Path]:
    """The files of ``split``: a permutation of the sorted paths seeded by FOLDER_SPLIT_SEED, then cut.

    The permutation sorts by a SHA-256 of the seed and relative path, so it is the same on every machine
    and Python version. Train gets the rest after floor(5%) valid and floor(5%) test: never empty.
    """
    def key(p: Path) -> str:
        return hashlib.sha256(f"{FOLDER_SPLIT_SEED}:{p.relative_to(root).as_posix()}".encode()).hexdigest()

    order = sorted(files, key=key)
    n_valid, n_test = (int(len(files) * f) for f in FOLDER_SPLIT_FRACTIONS[1:])
    n_train = len(files) - n_valid - n_test
    parts = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid],
             "test": order[n_train + n_valid:], "trainval": order[:n_train + n_valid]}
    rank = {p: i for i, p in enumerate(files)}
    return sorted(parts[split], key=rank.__getitem__)      # within a split, in path order


def _folder_info(name: str, image_size: int | None) -> DatasetInfo:
    root = _folder_path(name)
    files, class_names = _folder_files(root)
    return _folder_info_of(name, root, files, class_names, _image_size(image_size))


def _folder_info_of(name: str, root: Path, files: list[Path], class_names: list[str] | None,
                    size: int) -> DatasetInfo:
    channels = 1 if all(_is_grey(p) for p in files) else 3
    return DatasetInfo(name, (channels, size, size), 256, None if class_names is None else len(class_names),
                       None if class_names is None else tuple(class_names), f"{len(files)} images in {root}")


def _load_folder(name: str, split: str, image_size: int | None) -> ImageDataset:
    """A folder of PNG/JPEG images: grey if every image is, else RGB; labels from sub-folders."""
    root = _folder_path(name)
    size = _image_size(image_size)
    files, class_names = _folder_files(root)
    channels = _folder_info_of(name, root, files, class_names, size).image_shape[0]
    chosen = _folder_split(files, root, split)
    mode = "L" if channels == 1 else "RGB"
    images = np.zeros((len(chosen), channels, size, size), np.uint8)
    for i, path in enumerate(chosen):
        images[i] = _load_image(path, mode, size)
    labels = None
    if class_names is not None:
        index = {c: i for i, c in enumerate(class_names)}
        labels = np.array([index[p.relative_to(root).parts[0]] for p in chosen], np.int64)
    return _make_dataset(name, split, images, labels, 256, class_names)


# ----------------------------------------------------------------------------------------------------
# The entry point


_LOADERS: dict[str, Callable[[str, str, str | os.PathLike | None, bool], ImageDataset]] = {
    "mnist": _load_idx_dataset,
    "fashion_mnist": _load_idx_dataset,
    "binarized_mnist": _load_binarized,
    "dynamic_binarized_mnist": _load_dynamic_binarized,
    "cifar10": _load_cifar10,
}


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool = True, image_size: int | None = None) -> ImageDataset:
    """Load one split (train, valid, test or trainval) of dataset ``name`` into memory.

    ``data_dir`` is looked in first, then ``$PIXELCNN_DATA``, then the per-user cache; missing files are
    downloaded into the first of these when ``download`` is true. ``image_size`` is the side length of
    ``folder:PATH`` images (default 32); built-in datasets keep their own size.
    """
    if name.startswith(FOLDER_PREFIX):
        _check_split(split)
        dataset = _load_folder(name, split, image_size)
    else:
        _check_native_size(_builtin_info(name), image_size)
        _check_split(split)
        dataset = _LOADERS[name](name, split, data_dir, download)
    logger.info("loaded %r", dataset)
    return dataset

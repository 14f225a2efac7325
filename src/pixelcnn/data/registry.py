"""Dataset names -> what they hold and how to load them; the one entry point, :func:`load_dataset`."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable

from pixelcnn.data.cifar import CIFAR10_CLASSES, load_cifar10
from pixelcnn.data.dataset import DatasetInfo, ImageDataset, check_split
from pixelcnn.data.emoji import EMOJI_SIZES, load_emoji
from pixelcnn.data.folders import FOLDER_PREFIX, folder_info, load_folder
from pixelcnn.data.mnist import (FASHION_MNIST_CLASSES, MNIST_CLASSES, load_binarized, load_dynamic_binarized,
                                 load_idx_dataset)
from pixelcnn.errors import DataError

logger = logging.getLogger(__name__)

_BUILTIN: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("mnist", (1, 28, 28), 256, 10, MNIST_CLASSES, "MNIST digits, 8-bit grey"),
    DatasetInfo("binarized_mnist", (1, 28, 28), 2, None, None,
                "MNIST binarized once by Larochelle & Murray (2011), no labels"),
    DatasetInfo("dynamic_binarized_mnist", (1, 28, 28), 2, 10, MNIST_CLASSES,
                "MNIST with fresh Bernoulli(x/255) bits for every training batch; fixed bits for valid/test"),
    DatasetInfo("fashion_mnist", (1, 28, 28), 256, 10, FASHION_MNIST_CLASSES, "Fashion-MNIST, 8-bit grey"),
    DatasetInfo("cifar10", (3, 32, 32), 256, 10, CIFAR10_CLASSES, "CIFAR-10, 8-bit RGB"),
    DatasetInfo("emoji", (3, EMOJI_SIZES[0], EMOJI_SIZES[0]), 256, None, None,
                "Noto Color Emoji glyphs drawn on white, 8-bit RGB, 32x32 or 64x64, no labels"),
)}

# Built-ins drawn at a choice of sizes: name -> the accepted image sizes, the first the default (in _BUILTIN).
_SIZES: dict[str, tuple[int, ...]] = {"emoji": EMOJI_SIZES}


def available_datasets() -> list[str]:
    """Names of the built-in datasets; ``folder:PATH`` is accepted as well."""
    return list(_BUILTIN)


def dataset_info(name: str, image_size: int | None = None) -> DatasetInfo:
    """Shape, levels and classes of dataset ``name`` without loading it.

    For ``folder:PATH`` this lists the folder and reads image headers (not pixels) to find the channels.
    """
    if name.startswith(FOLDER_PREFIX):
        return folder_info(name, image_size)
    info = _builtin_info(name)
    size = _builtin_size(info, image_size)
    return dataclasses.replace(info, image_shape=(info.image_shape[0], size, size))


def _builtin_info(name: str) -> DatasetInfo:
    if name not in _BUILTIN:
        raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(_BUILTIN)}, "
                        f"or {FOLDER_PREFIX}PATH for a folder of PNG/JPEG images")
    return _BUILTIN[name]


def _builtin_size(info: DatasetInfo, image_size: int | None) -> int:
    """The side length of built-in ``info``'s images at ``image_size`` (None: its default)."""
    sizes = _SIZES.get(info.name, (info.image_shape[1],))
    if image_size is None:
        return sizes[0]
    if isinstance(image_size, int) and not isinstance(image_size, bool) and image_size in sizes:
        return image_size
    if len(sizes) == 1:
        raise DataError(f"{info.name} images are {sizes[0]}x{sizes[0]}: expected image_size None or {sizes[0]}, got "
                        f"{image_size} (image_size resizes only {FOLDER_PREFIX}PATH datasets and {', '.join(_SIZES)})")
    accepted = f"{', '.join(map(str, sizes[:-1]))} or {sizes[-1]}"
    raise DataError(f"{info.name} images are drawn at {accepted} pixels square: expected image_size {accepted} "
                    f"(None: {sizes[0]}), got {image_size!r}")


_LOADERS: dict[str, Callable[[str, str, str | os.PathLike | None, bool], ImageDataset]] = {
    "mnist": load_idx_dataset,
    "fashion_mnist": load_idx_dataset,
    "binarized_mnist": load_binarized,
    "dynamic_binarized_mnist": load_dynamic_binarized,
    "cifar10": load_cifar10,
}
# The loaders of the datasets in _SIZES, which take the image size in place of ``download``.
_SIZED_LOADERS: dict[str, Callable[[str, str, str | os.PathLike | None, int], ImageDataset]] = {
    "emoji": load_emoji,
}


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool = True, image_size: int | None = None) -> ImageDataset:
    """Load one split (train, valid, test or trainval) of dataset ``name`` into memory.

    ``data_dir`` is looked in first, then ``$PIXELCNN_DATA``, then the per-user cache; missing files are
    downloaded into the first of these when ``download`` is true. ``image_size`` is the side length of
    ``folder:PATH`` images (default 32) and of emoji (32 or 64, default 32); other built-in datasets keep
    their own size.
    """
    if name.startswith(FOLDER_PREFIX):
        check_split(split)
        dataset = load_folder(name, split, image_size)
    else:
        size = _builtin_size(_builtin_info(name), image_size)
        check_split(split)
        if name in _SIZED_LOADERS:
            dataset = _SIZED_LOADERS[name](name, split, data_dir, size)
        else:
            dataset = _LOADERS[name](name, split, data_dir, download)
    logger.info("loaded %r", dataset)
    return dataset

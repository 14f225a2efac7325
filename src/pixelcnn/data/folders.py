"""folder:PATH, the user's own PNG/JPEG images."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

from pixelcnn.data.dataset import DatasetInfo, ImageDataset, make_dataset
from pixelcnn.errors import DataError

FOLDER_PREFIX = "folder:"
# folder:PATH: fractions of the images in train / valid / test, and the seed that orders them.
FOLDER_SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
FOLDER_SPLIT_SEED = 0
FOLDER_DEFAULT_IMAGE_SIZE = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# What Pillow raises for a file that is not an image it can decode (or one too large to be safe).
_IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)


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


def folder_info(name: str, image_size: int | None) -> DatasetInfo:
    root = _folder_path(name)
    files, class_names = _folder_files(root)
    return _folder_info_of(name, root, files, class_names, _image_size(image_size))


def _folder_info_of(name: str, root: Path, files: list[Path], class_names: list[str] | None,
                    size: int) -> DatasetInfo:
    channels = 1 if all(_is_grey(p) for p in files) else 3
    return DatasetInfo(name, (channels, size, size), 256, None if class_names is None else len(class_names),
                       None if class_names is None else tuple(class_names), f"{len(files)} images in {root}")


def load_folder(name: str, split: str, image_size: int | None) -> ImageDataset:
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
    return make_dataset(name, split, images, labels, 256, class_names)

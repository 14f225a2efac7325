"""The dataset object: one split held in memory as integer image tensors, and what a dataset holds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pixelcnn.errors import DataError

SPLITS = ("train", "valid", "test", "trainval")


@dataclass(eq=False, repr=False)
class ImageDataset(torch.utils.data.Dataset):
    """One split of a dataset, held in memory; a map-style ``torch.utils.data.Dataset`` whose item i is
    (image (C, H, W) int64, label) with labels, the image alone without (:meth:`batch` takes many at once).

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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"expected an index in [-{len(self)}, {len(self)}), got {index}")
        x, y = self.batch(torch.tensor([index]))
        return x[0] if y is None else (x[0], y[0])

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


def make_dataset(name: str, split: str, images: np.ndarray, labels: np.ndarray | None, levels: int,
                  class_names: list[str] | None, intensities: np.ndarray | None = None) -> ImageDataset:
    """Wrap uint8 numpy arrays (copied, so the tensors own writable memory) as an ImageDataset."""
    def tensor(a: np.ndarray | None, dtype: np.dtype) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.array(a, dtype=dtype))

    return ImageDataset(name=name, split=split, images=tensor(images, np.uint8), labels=tensor(labels, np.int64),
                        levels=levels, num_classes=None if class_names is None else len(class_names),
                        class_names=class_names, intensities=tensor(intensities, np.uint8))


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds, known without loading its pixels."""

    name: str
    image_shape: tuple[int, int, int]
    levels: int
    num_classes: int | None
    class_names: tuple[str, ...] | None
    description: str


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")


def take_split(train: np.ndarray, split: str, n_valid: int) -> np.ndarray:
    """The rows of split train, valid or trainval when valid is the last ``n_valid`` rows of ``train``."""
    n_train = len(train) - n_valid
    return {"train": train[:n_train], "valid": train[n_train:], "trainval": train}[split]

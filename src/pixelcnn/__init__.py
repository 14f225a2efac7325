"""pixelcnn: autoregressive image models with exact likelihoods.

    import pixelcnn
    model = pixelcnn.create("gated_pixelcnn", image_shape=(1, 28, 28), levels=256)
    log_p = model.log_prob(x)                 # (B,) nats, x integer (B, 1, 28, 28)
    images = model.sample(16, generator=torch.Generator().manual_seed(0))
    model.save_pretrained("my-model")
    model = pixelcnn.load("my-model")
"""

from __future__ import annotations

import os
from typing import Any

from pixelcnn.errors import (CheckpointError, CompressionError, ConfigError, DataError, InvalidImageError,
                             InvalidLabelError, PixelCNNError, TrainingError)
from pixelcnn import masks
from pixelcnn.models import REGISTRY
from pixelcnn.models import get as _get_model
from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.version import __version__

__all__ = [
    "AutoregressiveModel", "available_models", "create", "load", "compress", "decompress", "masks", "__version__",
    "PixelCNNError", "InvalidImageError", "InvalidLabelError", "ConfigError", "CheckpointError", "DataError",
    "TrainingError", "CompressionError",
]


def __getattr__(name: str) -> Any:
    """``compress`` and ``decompress`` load the compressor (and constriction) on first use, so that
    importing the package, the trainer or a model does not."""
    if name in ("compress", "decompress"):
        from pixelcnn import coding

        return getattr(coding, name)
    raise AttributeError(f"module 'pixelcnn' has no attribute {name!r}")


def available_models() -> list[str]:
    """Names accepted by :func:`create`."""
    return sorted(REGISTRY)


def create(name: str, image_shape: tuple[int, int, int] = (1, 28, 28), levels: int = 256,
           **hyperparameters: Any) -> AutoregressiveModel:
    """Build a freshly initialised model of family ``name`` for images of ``image_shape`` (C, H, W)."""
    cls = _get_model(name)
    config = cls.config_class.from_dict({"image_shape": tuple(image_shape), "levels": levels, **hyperparameters})
    return cls(config)


def load(path: str | os.PathLike, map_location: str | None = "cpu") -> AutoregressiveModel:
    """Rebuild a model from a checkpoint folder, a run folder or ``"pretrained:NAME"``."""
    from pixelcnn.loading import load_model

    return load_model(path, map_location)

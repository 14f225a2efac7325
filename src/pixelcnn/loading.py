"""Rebuilding models from checkpoint folders."""

from __future__ import annotations

import os

from pixelcnn import checkpoint
from pixelcnn.errors import CheckpointError, ConfigError
from pixelcnn.models import get as get_model


def load_model(path: str | os.PathLike, map_location: str | None = "cpu"):
    folder = checkpoint.resolve(path)
    meta = checkpoint.read_config(folder)
    try:
        cls = get_model(meta["model"])
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{folder / checkpoint.CONFIG_FILE} does not describe a model this pixelcnn can build: {e}") from None
    return checkpoint.build_model(cls, folder, meta, map_location)

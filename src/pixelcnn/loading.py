"""Rebuilding models from checkpoint folders."""

from __future__ import annotations

import os

from safetensors import SafetensorError
from safetensors.torch import load_file

from pixelcnn import checkpoint
from pixelcnn.errors import CheckpointError, ConfigError
from pixelcnn.models import get as get_model


def load_model(path: str | os.PathLike, map_location: str | None = "cpu"):
    folder = checkpoint.resolve(path)
    meta = checkpoint.read_config(folder)
    try:
        cls = get_model(meta["model"])
        config = cls.config_class.from_dict(meta["config"])
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{folder / checkpoint.CONFIG_FILE} does not describe a model this pixelcnn can build: {e}") from None
    model = cls(config)
    weights = folder / checkpoint.WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no {checkpoint.WEIGHTS_FILE}: expected the model weights there")
    try:
        state = load_file(str(weights), device=str(map_location or "cpu"))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is corrupted: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not match {folder / checkpoint.CONFIG_FILE}: {e}") from None
    model.eval()
    return model.to(map_location) if map_location else model

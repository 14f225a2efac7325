"""Checkpoints shipped inside the package, loadable offline as ``pixelcnn.load("pretrained:NAME")``.

Each lives in this package's folder, ``pixelcnn/pretrained/NAME/``, as an ordinary checkpoint folder, and
``pixelcnn/pretrained/manifest.json`` records for each: the model, the dataset, the exact
training command, the machine and training time, and the test score measured with
``pixelcnn eval`` (mean and standard deviation of the per-image NLL, so that an evaluation on a
subset can be checked against it).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pixelcnn.errors import CheckpointError


def _root() -> Path:
    return Path(str(resources.files("pixelcnn.pretrained")))


def manifest() -> dict[str, dict[str, Any]]:
    """NAME -> description of every shipped checkpoint."""
    file = _root() / "manifest.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def available() -> list[str]:
    return sorted(manifest())


def pretrained_path(name: str) -> Path:
    """The checkpoint folder of shipped checkpoint ``name``."""
    known = manifest()
    if name not in known:
        raise CheckpointError(f"unknown pretrained checkpoint {name!r}; expected one of {sorted(known) or 'none shipped'}")
    folder = _root() / name
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"pretrained checkpoint {name!r} is listed but its folder {folder} is missing")
    return folder

"""Checkpoint folders that describe themselves.

A checkpoint is a folder::

    config.json         {"format_version", "package_version", "model", "config"}
    model.safetensors   the weights to sample from (the EMA weights where training keeps them)
    training_state.pt   optional: optimizer, scheduler, step, RNG states (see training.py)

Folders are written atomically: everything goes into a temporary sibling folder which then
replaces the old one by two renames. A reader that finds only the ``.old`` sibling (the process
died between the renames) uses it, so a kill at any moment leaves a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from safetensors import SafetensorError
from safetensors.torch import load_file

from pixelcnn.errors import CheckpointError, ConfigError
from pixelcnn.version import __version__

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_STATE_FILE = "training_state.pt"


def write_folder_atomically(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Create folder ``path`` by calling ``fill(tmp)`` on a temporary sibling, then swapping it in.

    One writer per folder is assumed (a training run writes its own checkpoints): temporary
    folders left by a killed writer are removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):     # left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        fill(tmp)
        _fsync_folder(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(path.name + ".old")
    if old.exists():
        if path.exists():
            shutil.rmtree(old)
        else:                       # an earlier swap died half-way: .old is the good copy
            os.rename(old, path)
    if path.exists():
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def _fsync_folder(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def existing_folder(path: str | os.PathLike) -> Path | None:
    """``path`` if it exists, else its ``.old`` sibling left by an interrupted swap, else None."""
    path = Path(path)
    if path.is_dir():
        return path
    old = path.with_name(path.name + ".old")
    return old if old.is_dir() else None


def write_config(folder: Path, model_name: str, config: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    meta = {"format_version": FORMAT_VERSION, "package_version": __version__, "model": model_name, "config": config}
    if metadata:
        meta["metadata"] = metadata
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def read_config(folder: Path) -> dict[str, Any]:
    """Read and check ``config.json``; errors name the file and what was wrong."""
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint folder: expected {CONFIG_FILE} and {WEIGHTS_FILE} in it")
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is corrupted: expected JSON, got a parse error ({e})") from None
    if not isinstance(meta, dict) or not {"format_version", "model", "config"} <= set(meta):
        raise CheckpointError(f"{file} is corrupted: expected keys format_version, model and config")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has checkpoint format version {meta['format_version']!r}; "
            f"this pixelcnn reads version {FORMAT_VERSION}"
        )
    return meta


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder (its best, else last) or a pretrained name."""
    text = str(path)
    if not text.strip():
        raise CheckpointError(f"expected a checkpoint folder, a run folder or pretrained:NAME, got {text!r}")
    if text.startswith("pretrained:"):
        from pixelcnn.pretrained import pretrained_path

        return pretrained_path(text.split(":", 1)[1])
    p = Path(path)
    for candidate in (p, p / "checkpoints" / "best", p / "checkpoints" / "last"):
        folder = existing_folder(candidate)
        if folder is not None and (folder / CONFIG_FILE).is_file():
            return folder
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist: expected a checkpoint folder or a run folder")
    raise CheckpointError(
        f"{p} is neither a checkpoint folder (with {CONFIG_FILE} and {WEIGHTS_FILE}) "
        f"nor a run folder (with checkpoints/best or checkpoints/last)"
    )


def build_model(cls, folder: Path, meta: dict[str, Any], map_location: str | None = "cpu"):
    """An instance of model class ``cls`` from checkpoint ``folder`` (its ``meta``, config.json read), in eval mode."""
    try:
        config = cls.config_class.from_dict(meta["config"])
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{folder / CONFIG_FILE} does not describe a model this pixelcnn can build: {e}") from None
    model = cls(config)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}: expected the model weights there")
    try:
        state = load_file(str(weights), device=str(map_location or "cpu"))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is corrupted: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not match {folder / CONFIG_FILE}: {e}") from None
    model.eval()
    return model.to(map_location) if map_location else model

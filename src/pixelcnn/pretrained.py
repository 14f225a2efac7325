"""Checkpoints shipped inside the package, loadable offline as ``pixelcnn.load("pretrained:NAME")``.

Each lives in ``pixelcnn/pretrained/NAME/`` as an ordinary checkpoint folder, and
``pixelcnn/pretrained/manifest.json`` records for each: the model, the dataset, the exact
training command, the machine and training time, and the test score measured with
``pixelcnn eval`` (mean and standard deviation of the per-image NLL, so that an evaluation on a
subset can be checked against it).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from pixelcnn.errors import CheckpointError


def _root() -> Path:
    return Path(str(resources.files("pixelcnn"))) / "pretrained"


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


def random_subset(data, size: int, seed: int = 0):
    """``size`` images drawn without replacement (seeded): a fair sample, unlike the first ones
    (MNIST's test set, for one, is ordered by the writers' origin)."""
    import dataclasses

    import torch

    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    pick = lambda t: None if t is None else t[idx]   # noqa: E731
    return dataclasses.replace(data, images=data.images[idx], labels=pick(data.labels),
                               intensities=pick(data.intensities))


def reproduce(names: list[str] | None = None, limit: int | None = None, data_dir=None,
              batch_size: int = 256) -> list[dict[str, Any]]:
    """Evaluate shipped checkpoints on their test split (a random subset of ``limit`` images if given).

    Each row holds the recorded full-test figure and, for a subset, the standard error of its
    mean, so that the agreement can be judged: |subset - full| should be a few standard errors.
    """
    import pixelcnn
    from pixelcnn.data import load_dataset
    from pixelcnn.training import evaluate

    rows = []
    for name in names or available():
        info = manifest()[name]
        model = pixelcnn.load(f"pretrained:{name}")
        data = load_dataset(info["dataset"], "test", data_dir=data_dir)
        full = len(data)
        if limit is not None and limit < full:
            data = random_subset(data, limit)
        result = evaluate(model, data, batch_size)
        n = result["images"]
        # standard error of a mean of n draws without replacement from the full test set
        stderr = info["test_nll_std_nats"] / math.sqrt(n) * math.sqrt(max(0.0, 1 - n / full))
        rows.append({"name": name, "images": n, "nll_nats": result["nll_nats"], "bits_per_dim": result["bits_per_dim"],
                     "recorded_nll_nats": info["test_nll_nats"], "recorded_bits_per_dim": info["test_bits_per_dim"],
                     "stderr_nats": stderr})
    return rows

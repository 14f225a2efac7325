"""Add a trained run's best checkpoint to the package as ``pretrained:NAME``.

Evaluates it on the full test split (mean and standard deviation of the per-image NLL), copies
config.json and model.safetensors into src/pixelcnn/pretrained/NAME/ and records everything in
src/pixelcnn/pretrained/manifest.json.

    python benchmarks/ship_pretrained.py RUN NAME --command "pixelcnn train ..." --training "60 min, 2-core CPU"
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import torch

import pixelcnn
from pixelcnn import checkpoint
from pixelcnn.data import load_dataset
from pixelcnn.superres import cond_images

ROOT = Path(__file__).resolve().parents[1] / "src" / "pixelcnn" / "pretrained"


@torch.no_grad()
def per_image_nll(model, data, batch: int = 500) -> torch.Tensor:
    out = []
    conditional = model.config.num_classes is not None
    for start in range(0, len(data), batch):
        x, y = data.batch(torch.arange(start, min(start + batch, len(data))))
        out.append(-model.log_prob(x, y if conditional else None, cond_images(model, x)).double())
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("name")
    p.add_argument("--command", required=True, help="the exact training command")
    p.add_argument("--training", required=True, help="machine and training time")
    args = p.parse_args()
    folder = checkpoint.resolve(args.run)
    meta = checkpoint.read_config(folder)
    model = pixelcnn.load(folder)
    dataset = meta["metadata"]["dataset"]
    nll = per_image_nll(model, load_dataset(dataset, "test"))
    dims = math.prod(model.image_shape)
    dest = ROOT / args.name
    dest.mkdir(parents=True, exist_ok=True)
    for f in (checkpoint.CONFIG_FILE, checkpoint.WEIGHTS_FILE):
        shutil.copy2(folder / f, dest / f)
    entry = {"model": model.name, "dataset": dataset, "parameters": model.num_parameters(),
             "size_mb": (dest / checkpoint.WEIGHTS_FILE).stat().st_size / 2**20,
             "test_images": len(nll), "test_nll_nats": nll.mean().item(), "test_nll_std_nats": nll.std().item(),
             "test_bits_per_dim": nll.mean().item() / (dims * math.log(2)), "command": args.command,
             "training": args.training}
    manifest_file = ROOT / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    manifest[args.name] = entry
    manifest_file.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(json.dumps({args.name: entry}, indent=2))


if __name__ == "__main__":
    main()

"""Add a trained run's best checkpoint to the package as ``pretrained:NAME``.

Evaluates it on the full test split (or a seeded random subset, --subset) (mean and standard deviation of the per-image NLL), copies
config.json and model.safetensors into src/pixelcnn/pretrained/NAME/ and records everything in
src/pixelcnn/pretrained/manifest.json.

    python benchmarks/ship_pretrained.py RUN NAME --command "pixelcnn train ..." --training "60 min, 2-core CPU"
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pixelcnn
from pixelcnn import checkpoint
from pixelcnn.data import load_dataset
from pixelcnn.evaluation import evaluate, random_subset

ROOT = Path(__file__).resolve().parents[1] / "src" / "pixelcnn" / "pretrained"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("name")
    p.add_argument("--command", required=True, help="the exact training command")
    p.add_argument("--training", required=True, help="machine and training time")
    p.add_argument("--subset", type=int, help="evaluate a random (seeded) subset of N test images, the one "
                                              "`pixelcnn pretrained --reproduce --subset N` uses (slow models)")
    args = p.parse_args()
    folder = checkpoint.resolve(args.run)
    meta = checkpoint.read_config(folder)
    model = pixelcnn.load(folder)
    dataset = meta["metadata"]["dataset"]
    data = load_dataset(dataset, "test")
    # a completion model: the NLL of the unknown pixels of random training-style masks given the known ones
    test = evaluate(model, data if args.subset is None else random_subset(data, args.subset),
                    completion=model.config.inpainting)
    dest = ROOT / args.name
    dest.mkdir(parents=True, exist_ok=True)
    for f in (checkpoint.CONFIG_FILE, checkpoint.WEIGHTS_FILE):
        shutil.copy2(folder / f, dest / f)
    entry = {"model": model.name, "dataset": dataset, "parameters": model.num_parameters(),
             "size_mb": (dest / checkpoint.WEIGHTS_FILE).stat().st_size / 2**20,
             "test_images": test["images"], "test_nll_nats": test["nll_nats"], "test_nll_std_nats": test["nll_std_nats"],
             "test_bits_per_dim": test["bits_per_dim"], "command": args.command,
             "training": args.training, **({"test_task": "completion of random masks (evaluate(completion=True)): "
                                           "nats per image and bits per unknown sub-pixel"}
                                          if model.config.inpainting else {})}
    manifest_file = ROOT / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    manifest[args.name] = entry
    manifest_file.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(json.dumps({args.name: entry}, indent=2))


if __name__ == "__main__":
    main()

"""Writes tests/data/codec/: compressed files that every later release must decode bit for bit, on any machine.

Each folder holds a model (a shipped checkpoint's name in ``source.json``, or its own weights in
``model/``) and ``images.pxc``, the first images of a seeded random batch (or of the MNIST test
split) compressed with it, and for the small models ``images-naive.pxc``, the same coded with the
whole-network stepper (``method="naive"``). test_coding.py decodes them with the code of the day,
here and under the kernels of other CPUs: a change to any network's arithmetic or to the exact
arithmetic of the format that would make users' files undecodable fails there. ``format2*.pxc``
are the same images written by pixelcnn 0.1.0 (format version 2, float32 arithmetic, on an AMD
EPYC), kept to test what decoding such a file does. The small models were made with random weights
far from their initialisation by that release; an existing ``model/`` is reused. Run from the
repository root with the release whose files are to be kept:

    PIXELCNN_DATA=../shared/data python tests/data/make_codec_files.py [FOLDER ...]

With FOLDER names (e.g. a new family's), only those are written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import pixelcnn
from pixelcnn.data import load_dataset

OUT = Path(__file__).resolve().parent / "codec"
SMALL = {  # folder (a family) -> (image shape, levels, hyperparameters): every stepper, grayscale and colour
    "pixelcnn": ((3, 5, 6), 16, dict(hidden=12, layers=2, output_hidden=8)),
    "row_lstm": ((1, 6, 5), 256, dict(hidden=6, layers=2, output_hidden=8)),
    "diagonal_bilstm": ((3, 4, 5), 8, dict(hidden=6, layers=1, output_hidden=0)),
    "pixelcnn_pp": ((3, 6, 5), 256, dict(filters=8, resnet_blocks=1, mixtures=3)),
    "gated_pixelcnn": ((3, 5, 5), 256, dict(hidden=12, layers=3, output_hidden=0)),
    "lmconv": ((1, 5, 6), 2, dict(hidden=6, layers=2, orders=("hilbert",), order_symmetries=2)),
    "multiscale": ((3, 7, 5), 16, dict(hidden=6, layers=2, output_hidden=8, scales=2, within_group="raster")),
    "multiscale-independent": ((3, 7, 5), 16, dict(hidden=6, layers=2, output_hidden=8, scales=2,
                                                  within_group="independent")),
    "pixelsnail": ((3, 5, 4), 16, dict(hidden=6, layers=2, residual_blocks=1, head_channels=4, output_hidden=8)),
}
FAMILY = {"multiscale-independent": "multiscale"}      # folders named otherwise than their family


def far_from_init(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))


def main(only: list[str]) -> None:
    for i, (name, (shape, levels, hp)) in enumerate(SMALL.items()):
        if only and name not in only:
            continue
        folder = OUT / name
        if (folder / "model").is_dir():
            model = pixelcnn.load(folder / "model").eval()
        else:
            torch.manual_seed(i)
            model = pixelcnn.create(FAMILY.get(name, name), image_shape=shape, levels=levels, **hp).eval()
            far_from_init(model, i)
            model.save_pretrained(folder / "model")
        images = torch.randint(0, levels, (3, *shape), generator=torch.Generator().manual_seed(i))
        (folder / "images.pxc").write_bytes(pixelcnn.compress(model, images))
        (folder / "images-naive.pxc").write_bytes(pixelcnn.compress(model, images, method="naive"))
        (folder / "source.json").write_text(json.dumps({"model": "model", "images": "3 seeded random images"}) + "\n")
    for name in ("mnist", "mnist-lmconv"):
        if only and name not in only:
            continue
        model = pixelcnn.load(f"pretrained:{name}").eval()
        images = load_dataset("mnist", "test").images[:2]
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "images.pxc").write_bytes(pixelcnn.compress(model, images))
        (folder / "source.json").write_text(json.dumps({"model": f"pretrained:{name}", "images": "MNIST test 0..1"}) + "\n")
        print(name, len((folder / "images.pxc").read_bytes()), "bytes")


if __name__ == "__main__":
    main(sys.argv[1:])

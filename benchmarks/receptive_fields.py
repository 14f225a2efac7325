"""docs/receptive_fields.png: what the middle pixel of a 28x28 image depends on under each family at its defaults
(weights at their initial values), side by side, with the counts printed; the README shows it.

    OMP_NUM_THREADS=1 python benchmarks/receptive_fields.py [--families pixelcnn gated_pixelcnn diagonal_bilstm pixelsnail]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import pixelcnn
from pixelcnn.receptive_field import draw, receptive_field

OUT = Path(__file__).resolve().parents[1] / "docs" / "receptive_fields.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["pixelcnn", "gated_pixelcnn", "diagonal_bilstm", "pixelsnail"])
    parser.add_argument("--pixel", type=int, nargs=2, default=(14, 14))
    args = parser.parse_args()
    torch.set_num_threads(1)
    panels = []
    for name in args.families:
        torch.manual_seed(0)
        model = pixelcnn.create(name, image_shape=(1, 28, 28), levels=256)
        field = receptive_field(model, tuple(args.pixel))
        n = field.counts()
        print(f"{name}: sees {n['seen']} of {n['past']} earlier sub-pixels, {n['unseen_pixels']} earlier pixels unseen")
        panel = Image.new("RGB", (28 * 8, 28 * 8 + 20), (255, 255, 255))
        panel.paste(draw(field, scale=8), (0, 20))
        ImageDraw.Draw(panel).text((4, 4), f"{name}: {n['unseen_pixels']} unseen", fill=(0, 0, 0))
        panels.append(panel)
    sheet = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), panels[0].height), (255, 255, 255))
    for k, panel in enumerate(panels):
        sheet.paste(panel, (k * (panel.width + 8), 0))
    sheet.save(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

"""Writes tests/data/pretrained_nll.json: each shipped checkpoint's mean NLL of its first 16 test images, as
this release computes it, for test_pretrained.py to hold later code to (to float32's rounding). Run from the
repository root after a change that is meant to change these figures (a new or retrained checkpoint):

    PIXELCNN_DATA=../shared/data python tests/data/make_pretrained_nll.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pixelcnn import pretrained  # noqa: E402
from test_pretrained import first_images_nll  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    figures = {name: first_images_nll(name) for name in pretrained.available()}
    (HERE / "pretrained_nll.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

"""`python main.py --epochs 100 --lr 0.001 --batch_size 64` trains, as in the small PixelCNN repositories.

It is `pixelcnn train` with the same flags (see `python main.py --help`); every other command is
on the `pixelcnn` program.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from pixelcnn.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))

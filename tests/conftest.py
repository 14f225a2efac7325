import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("PIXELCNN_DATA", str(ROOT.parent / "shared" / "data"))
torch.set_num_threads(1)   # tiny tensors: threads cost more than they give


def data_available() -> bool:
    return (Path(os.environ["PIXELCNN_DATA"]) / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


needs_mnist = pytest.mark.skipif(not data_available(), reason="MNIST files not found in $PIXELCNN_DATA")

# A model small enough that a few training steps, an evaluation and a sample take seconds.
TINY = ["--hidden", "8", "--layers", "2", "--output-hidden", "0"]

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


SKIP_MISSING_DATA = "PIXELCNN_SKIP_MISSING_DATA"     # =1: tests whose data is missing skip instead of failing


def requires_data(available: bool, what: str, install: str):
    """Mark a test that needs data files: where they are missing it fails, naming the command that
    installs them, unless $PIXELCNN_SKIP_MISSING_DATA=1 (which CI never sets) makes it skip."""
    return pytest.mark.requires_data(available=available, what=what, install=install)


def pytest_runtest_setup(item):
    for mark in item.iter_markers("requires_data"):
        if not mark.kwargs["available"]:
            message = (f"{mark.kwargs['what']} not found: {mark.kwargs['install']} "
                       f"(or set {SKIP_MISSING_DATA}=1 to skip the tests that need it)")
            if os.environ.get(SKIP_MISSING_DATA) == "1":
                pytest.skip(message)
            pytest.fail(message, pytrace=False)


needs_mnist = requires_data(data_available(), f"MNIST in $PIXELCNN_DATA ({os.environ['PIXELCNN_DATA']}/mnist)",
                            "run `make test`, which points PIXELCNN_DATA at ../shared/data, or put the four "
                            "MNIST .gz files there")

# A model small enough that a few training steps, an evaluation and a sample take seconds.
TINY = ["--hidden", "8", "--layers", "2", "--output-hidden", "0"]

"""Shipped checkpoints load offline, are causal, sample, and reproduce their recorded test scores."""

import json
import math
from pathlib import Path

import pytest
import torch

import pixelcnn
from pixelcnn import evaluation, pretrained
from pixelcnn.data import load_dataset
from conftest import needs_mnist
from exact import dependency_violations

SHIPPED = pretrained.available()


def test_checkpoints_are_shipped_with_their_training_record():
    assert SHIPPED, "no pretrained checkpoints in the package"
    for name, info in pretrained.manifest().items():
        assert info["command"].startswith("pixelcnn train") and info["training"]
        assert info["test_images"] > 0 and info["test_nll_nats"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_loads_offline_causal_and_samples(name):
    model = pixelcnn.load(f"pretrained:{name}")           # strict: the config matches the weights
    c, h, w = model.image_shape
    info = pretrained.manifest()[name]
    assert info["parameters"] == model.num_parameters()
    corners = [(0, 0), (h // 2, w // 2), (h - 1, w - 1), (h - 1, 0)]
    labels = None if model.config.num_classes is None else torch.tensor([0, 1])
    assert dependency_violations(model, labels, positions=corners, order=model.default_order()) == []
    labels = None if model.config.num_classes is None else 3
    images = model.sample(2, labels=labels, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, c, h, w) and images.min() >= 0 and images.max() < model.levels


def test_unknown_pretrained_name_lists_the_shipped_ones():
    with pytest.raises(pixelcnn.CheckpointError, match="unknown pretrained checkpoint 'imagenet'"):
        pixelcnn.load("pretrained:imagenet")


# Images of each checkpoint's test split that the reproduction draws (a split no larger is evaluated whole):
# their mean NLL lies within a few standard errors of the recorded full-test figure.
SUBSET = 100
# The exact NLLs of each checkpoint's first test images, as this release computes them (tests/data/make_pretrained_nll.py).
FIRST_IMAGES = json.loads((Path(__file__).parent / "data" / "pretrained_nll.json").read_text())


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("name", SHIPPED)
def test_reproduce_on_a_subset_agrees_with_the_recorded_full_evaluation(name):
    row, = evaluation.reproduce([name], subset=SUBSET)
    assert row["images"] == min(SUBSET, pretrained.manifest()[name]["test_images"])
    # A split of at most SUBSET images is evaluated whole (no sampling error), to float32's rounding, which
    # another CPU's kernels may do differently (1e-5 of the figure).
    assert abs(row["nll_nats"] - row["recorded_nll_nats"]) < 5 * row["stderr_nats"] + 1e-5 * row["recorded_nll_nats"], row
    assert math.isfinite(row["bits_per_dim"])


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("name", SHIPPED)
def test_the_first_test_images_score_what_they_scored_when_recorded(name):
    """A change to a family's arithmetic, its loading or the checkpoint shows here to float32's rounding (and
    another CPU's kernels, 1e-5), where the subset's standard error above would hide it."""
    assert set(FIRST_IMAGES) == set(SHIPPED)
    assert first_images_nll(name) == pytest.approx(FIRST_IMAGES[name], rel=1e-5)


def first_images_nll(name: str, n: int = 16) -> float:
    """The mean NLL in nats of the first ``n`` test images, as ``pixelcnn pretrained --reproduce`` scores them
    (a completion model on the unknown pixels of each image's validation mask)."""
    model = pixelcnn.load(f"pretrained:{name}")
    data = load_dataset(pretrained.manifest()[name]["dataset"], "test")
    return evaluation.evaluate(model, data, batch_size=n, limit=n, completion=model.config.inpainting)["nll_nats"]


def test_from_pretrained_loads_like_load_and_checks_the_family():
    model = pixelcnn.models.get("gated_pixelcnn").from_pretrained("pretrained:mnist")
    assert isinstance(model, pixelcnn.AutoregressiveModel) and model.name == "gated_pixelcnn"
    with pytest.raises(pixelcnn.ConfigError, match="expected from_pretrained on a family's class"):
        pixelcnn.AutoregressiveModel.from_pretrained("pretrained:mnist-lmconv")
    with pytest.raises(pixelcnn.CheckpointError, match="expected a lmconv checkpoint at pretrained:mnist, got a gated_pixelcnn one"):
        pixelcnn.models.get("lmconv").from_pretrained("pretrained:mnist")

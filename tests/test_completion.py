"""Completion keeps known pixels bit for bit and samples the exact conditional of the rest."""

import numpy as np
import pytest
import torch
from PIL import Image

import pixelcnn
from pixelcnn.cli import main
from conftest import TINY_FLAGS, needs_mnist
from exact import all_images, chi_square_pvalue, draws_for, image_index, tiny_model


@pytest.mark.parametrize("name", pixelcnn.available_models())
def test_known_pixels_are_never_changed(name):
    model = tiny_model(name, (3, 3, 4), 5)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (3, 3, 3, 4), generator=g)
    known = torch.rand(x.shape, generator=g) < 0.5
    out = model.complete(x, known, n=4, generator=g)
    assert out.shape == (3, 4, 3, 3, 4)
    assert torch.equal(out[known[:, None].expand_as(out)], x[:, None].expand_as(out)[known[:, None].expand_as(out)])


@pytest.mark.slow
@pytest.mark.parametrize("name", pixelcnn.available_models())
def test_completions_follow_the_exact_conditional_of_the_unknown_pixels(name):
    """Keep the first pixel of a 1x2x2 image; the other three follow p(x | x_0) by enumeration."""
    model = tiny_model(name, (1, 2, 2), 3, seed=2)
    images = all_images((1, 2, 2), 3)
    with torch.no_grad():
        p = model.log_prob(images).exp()
    first = 1
    consistent = images[:, 0, 0, 0] == first
    target = torch.where(consistent, p, torch.zeros_like(p))
    x = torch.full((1, 1, 2, 2), first)
    known = torch.zeros_like(x, dtype=torch.bool)
    known[0, 0, 0, 0] = True
    out = model.complete(x, known, n=draws_for(int(consistent.sum())), generator=torch.Generator().manual_seed(0))[0]
    counts = torch.bincount(image_index(out, 3), minlength=len(images))
    assert counts[~consistent].sum() == 0
    assert chi_square_pvalue(counts[consistent], target[consistent]) > 1e-3


def test_a_mask_per_image_broadcasts_and_a_bad_mask_is_rejected():
    model = tiny_model("gated_pixelcnn", (1, 3, 3), 4)
    x = torch.randint(0, 4, (2, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    known = torch.zeros(1, 3, 3, dtype=torch.bool)
    known[0, 0] = True                                                 # the top row of every image
    out = model.complete(x, known, n=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, :, 0, 0], x[:, None, 0, 0].expand(2, 2, 3))
    with pytest.raises(pixelcnn.InvalidImageError, match="got shape \\(4, 4\\)"):
        model.complete(x, torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(pixelcnn.InvalidImageError, match="got torch.int64"):
        model.complete(x, torch.zeros_like(x))


def test_temperature_sharpens_towards_the_mode():
    model = tiny_model("gated_pixelcnn", (1, 2, 2), 4, seed=3)
    images = all_images((1, 2, 2), 4)
    with torch.no_grad():
        mode = images[model.log_prob(images).argmax()]
    g = torch.Generator().manual_seed(0)
    cold = model.sample(2000, temperature=0.05, generator=g)
    warm = model.sample(2000, temperature=1.0, generator=g)
    hit = lambda s: (s == mode).flatten(1).all(1).float().mean()   # noqa: E731
    assert hit(cold) > 0.95 and hit(cold) > hit(warm)
    with pytest.raises(ValueError, match="expected temperature to be a finite number > 0"):
        model.sample(1, temperature=0)


@pytest.mark.slow
@needs_mnist
def test_complete_command_from_dataset_file_and_mask(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "binarized_mnist", "--max-steps", "2", "--batch-size", "8", "--valid-limit", "8",
                 "--samples", "0", *TINY_FLAGS, "--out", str(run)]) == 0
    grid = tmp_path / "grid.png"
    assert main(["complete", str(run), "--from-dataset", "binarized_mnist", "--index", "0..2", "--keep-rows", "14",
                 "--n", "3", "--out", str(grid), "--npy", str(tmp_path / "c.npy")]) == 0
    assert Image.open(grid).size == (5 * 30 + 2, 3 * 30 + 2)
    out = np.load(tmp_path / "c.npy")
    assert out.shape == (3, 3, 1, 28, 28)
    digit = tmp_path / "digit.png"
    Image.fromarray((out[0, 0, 0] * 255).astype(np.uint8)).save(digit)
    mask = np.zeros((28, 28), np.uint8)
    mask[:, :10] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["complete", str(run), "--image", str(digit), "--mask", str(tmp_path / "mask.png"), "--n", "2",
                 "--out", str(tmp_path / "g2.png"), "--npy", str(tmp_path / "c2.npy")]) == 0
    c2 = np.load(tmp_path / "c2.npy")
    assert (c2[0, :, 0, :, :10] == out[0, 0, 0, :, :10]).all()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "small.png")
    assert main(["complete", str(run), "--image", str(digit), "--mask", str(tmp_path / "small.png")]) == 2
    assert "expected a 28x28 mask, got 5x5" in capsys.readouterr().err


@pytest.mark.parametrize("name,words", [("gated_pixelcnn", "raster order"), ("multiscale", "coarse-to-fine order"),
                                        ("lmconv", "the known pixels first")])
def test_complete_names_the_order_its_nll_conditions_in(name, words):
    from pixelcnn.commands import completion_nll

    model = tiny_model(name, (1, 4, 4), 4)
    x = torch.randint(0, 4, (2, 1, 4, 4))
    known = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    known[..., :2, :] = True
    nll, given = completion_nll(model, x, known, None, None)
    with torch.no_grad():
        expected = float(-model.conditional_log_prob(x, known).mean())
    assert words in given and nll == pytest.approx(expected)

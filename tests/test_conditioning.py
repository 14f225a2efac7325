"""Class-conditional and image-conditional (super-resolution) models stay exact distributions."""

import numpy as np
import pytest
import torch
from PIL import Image

import pixelcnn
from pixelcnn.cli import main
from pixelcnn.superres import downsample
from conftest import TINY_FLAGS, needs_mnist
from exact import dependency_violations, sampling_pvalue, tiny_model, total_log_mass
from test_cached_sampling import drive

MODELS = pixelcnn.available_models()


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape,levels", [((1, 2, 2), 2), ((3, 2, 2), 2)])
def test_exact_for_every_label(name, shape, levels):
    model = tiny_model(name, shape, levels, num_classes=3)
    for label in range(3):
        assert abs(total_log_mass(model, label)) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape,levels,cond", [((1, 2, 2), 2, (1, 1, 1)), ((1, 2, 3), 3, (1, 1, 3)),
                                                ((3, 2, 2), 2, (3, 1, 1))])
def test_exact_for_random_conditioning_images(name, shape, levels, cond):
    model = tiny_model(name, shape, levels, cond_shape=cond)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        y = torch.randint(0, levels, cond, generator=g)
        assert abs(total_log_mass(model, cond_image=y)) < 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_conditioning_keeps_causality(name):
    model = tiny_model(name, (3, 3, 4), 4, num_classes=2, cond_shape=(3, 3, 2))
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (2, 3, 3, 2), generator=g)
    assert dependency_violations(model, torch.tensor([0, 1]), cond_image=y, order=model.default_order()) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_samples_with_a_fixed_label_follow_that_labels_distribution(name):
    model = tiny_model(name, (1, 2, 2), 3, seed=4, num_classes=3)
    assert sampling_pvalue(model, labels=2) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_samples_given_a_conditioning_image_follow_the_conditional(name):
    model = tiny_model(name, (1, 2, 2), 3, seed=5, cond_shape=(1, 1, 1))
    assert sampling_pvalue(model, cond_image=torch.tensor([[[2]]])) > 1e-3


@pytest.mark.parametrize("name", MODELS)
def test_changing_the_label_or_image_changes_the_distribution(name):
    model = tiny_model(name, (1, 3, 3), 4, num_classes=2, cond_shape=(1, 1, 1))
    x = torch.randint(0, 4, (4, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, 1, 1, 1, dtype=torch.long)
    a = model.log_prob(x, torch.zeros(4, dtype=torch.long), y)
    assert (a - model.log_prob(x, torch.ones(4, dtype=torch.long), y)).abs().min() > 1e-6
    assert (a - model.log_prob(x, torch.zeros(4, dtype=torch.long), y + 3)).abs().min() > 1e-6


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn"])
def test_a_few_training_steps_tell_two_labels_apart(name):
    torch.manual_seed(0)
    model = pixelcnn.create(name, image_shape=(1, 4, 4), levels=2, num_classes=2, hidden=8, layers=2, output_hidden=0)
    x = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)]).long().repeat(8, 1, 1, 1)     # label i: all i
    labels = torch.tensor([0, 1]).repeat(8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(30):
        loss = model.nll(x, labels).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    zeros, ones = x[:1], x[1:2]
    zero = torch.zeros(1, dtype=torch.long)
    assert model.log_prob(zeros, zero) > model.log_prob(zeros, zero + 1) + 2
    assert model.log_prob(ones, zero + 1) > model.log_prob(ones, zero) + 2


@pytest.mark.parametrize("name", MODELS)
def test_cached_sampling_equals_naive_with_a_conditioning_image(name):
    model = tiny_model(name, (1, 4, 4), 4, num_classes=2, cond_shape=(1, 2, 2)).float()
    if not model.cached:                                       # declared; test_generated names every such family
        pytest.skip(f"{name} has no cached path")
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (3, 1, 2, 2), generator=g)
    x = torch.randint(0, 4, (3, 1, 4, 4), generator=g)
    assert drive(model, x, torch.tensor([0, 1, 1]), cond_image=y) < 1e-4
    a = model.sample(3, labels=1, cond_image=y, method="naive", generator=torch.Generator().manual_seed(1))
    b = model.sample(3, labels=1, cond_image=y, method="cached", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_conditioning_errors_say_what_was_expected():
    model = pixelcnn.create("gated_pixelcnn", image_shape=(1, 4, 4), levels=4, hidden=8, layers=2, num_classes=3,
                            cond_shape=(1, 2, 2))
    x = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    y = torch.zeros(2, 1, 2, 2, dtype=torch.long)
    with pytest.raises(pixelcnn.InvalidLabelError, match="conditional: expected labels of shape \\(2,\\) in \\[0, 3\\), got None"):
        model.log_prob(x, cond_image=y)
    with pytest.raises(pixelcnn.InvalidLabelError, match="expected labels in \\[0, 3\\), got values in \\[0, 3\\]"):
        model.log_prob(x, torch.tensor([0, 3]), y)
    with pytest.raises(pixelcnn.InvalidImageError, match="expected cond_image of shape \\(2, 1, 2, 2\\), got None"):
        model.log_prob(x, torch.tensor([0, 1]))
    with pytest.raises(pixelcnn.InvalidImageError, match="integer cond_image of shape \\(B, 1, 2, 2\\).*got shape \\(2, 1, 3, 3\\)"):
        model.log_prob(x, torch.tensor([0, 1]), torch.zeros(2, 1, 3, 3, dtype=torch.long))
    with pytest.raises(pixelcnn.InvalidLabelError, match="out of|in \\[0, 3\\)"):
        model.sample(2, labels=5, cond_image=y[0])


def test_downsampling_is_the_rounded_block_mean():
    x = torch.tensor([[[[0, 2, 255, 255], [1, 1, 255, 253], [0, 0, 9, 9], [0, 0, 9, 9]]]])
    assert downsample(x, (1, 2, 2)).tolist() == [[[[1, 254], [0, 9]]]]


@pytest.mark.slow
@needs_mnist
def test_conditional_and_superres_command_line(tmp_path, capsys):
    common = ["--dataset", "mnist", "--max-steps", "2", "--batch-size", "8", "--valid-limit", "8", "--samples", "2",
              *TINY_FLAGS]
    cond, sr, plain = tmp_path / "cond", tmp_path / "sr", tmp_path / "plain"
    assert main(["train", *common, "--conditional", "--out", str(cond)]) == 0
    assert main(["train", *common, "--task", "superres", "--scale", "2", "--out", str(sr)]) == 0
    assert main(["train", *common, "--out", str(plain)]) == 0
    capsys.readouterr()
    assert main(["sample", str(cond), "--labels", "0,1,2", "--n", "2", "--out", str(tmp_path / "c.png"),
                 "--npy", str(tmp_path / "c.npy")]) == 0
    assert np.load(tmp_path / "c.npy").shape == (6, 1, 28, 28)
    assert Image.open(tmp_path / "c.png").size == (2 * 30 + 2, 3 * 30 + 2)          # one row per class
    assert main(["eval", str(cond), "--limit", "8"]) == 0
    assert "class-conditional NLL" in capsys.readouterr().out
    assert main(["eval", str(sr), "--limit", "8", "--baseline", str(plain)]) == 0
    out = capsys.readouterr().out
    assert "super-resolution (given 14x14) NLL" in out and "baseline" in out
    assert main(["upscale", str(sr), "--from-dataset", "mnist", "--index", "0..1", "--n", "2",
                 "--out", str(tmp_path / "u.png"), "--npy", str(tmp_path / "u.npy")]) == 0
    assert np.load(tmp_path / "u.npy").shape == (2, 2, 1, 28, 28)
    assert Image.open(tmp_path / "u.png").size == (4 * 30 + 2, 2 * 30 + 2)   # input, 2 samples, original
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((14, 14), np.uint8)).save(small)
    assert main(["upscale", str(sr), "--image", str(small), "--n", "1", "--out", str(tmp_path / "u2.png")]) == 0
    assert main(["upscale", str(plain), "--image", str(small)]) == 2
    assert main(["sample", str(cond), "--label", "11"]) == 2
    assert "expected --label in [0, 10) for this model, got [11]" in capsys.readouterr().err

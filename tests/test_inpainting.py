"""Completion models (``inpainting=True``) and ``conditional_log_prob`` on every family.

A completion model conditions every unknown sub-pixel on all the known ones; the exactness of
that conditional is checked here by enumeration and by sampling, for every family, on tiny
images with masks whose known pixels come after unknown ones (where it differs from the past).
The causality of the known-pixel network is checked with the other generated tests
(``test_generated.py``).
"""

import itertools
import json

import numpy as np
import pytest
import torch

import pixelcnn
from conftest import TINY_FLAGS, needs_mnist
from exact import chi_square_pvalue, draws_for, randomise, tiny_model
from generated import build, case_id, cases
from pixelcnn import masks
from pixelcnn.cli import main
from pixelcnn.data import load_dataset
from pixelcnn.evaluation import evaluate
from pixelcnn.training import warm_start

FAMILIES = pixelcnn.available_models()
# Sizes whose completions can be enumerated with a few unknown sub-pixels.
SIZES = ((1, 3), (2, 2), (2, 3), (3, 2))


def completions(x: torch.Tensor, known: torch.Tensor, levels: int) -> torch.Tensor:
    """Every image that equals x (1, C, H, W) where ``known``: (levels ** unknown, C, H, W)."""
    unknown = (~known[0]).nonzero().tolist()
    out = x.repeat(levels ** len(unknown), 1, 1, 1)
    for i, values in enumerate(itertools.product(range(levels), repeat=len(unknown))):
        for (c, h, w), v in zip(unknown, values):
            out[i, c, h, w] = v
    return out


def a_mask(shape, seed: int) -> torch.Tensor:
    """(1, C, H, W) known sub-pixels: the last known, the first unknown, the rest at random; at most 4 unknown."""
    g = torch.Generator().manual_seed(seed)
    known = (torch.rand(shape, generator=g) < 0.5).view(-1)
    known[0], known[-1] = False, True
    while (~known).sum() > 4:
        known[int((~known).nonzero()[-1])] = True
    return known.view(1, *shape)


def enumerated_cases():
    return [pytest.param(name, case, id=f"{name}-{case_id(case)}") for name in FAMILIES
            for case in cases(name, sizes=SIZES, max_images=4096)]


@pytest.mark.parametrize("name,case", enumerated_cases())
def test_conditional_probabilities_of_every_completion_sum_to_one(name, case):
    model, labels, cond_image = build(name, case, batch=1, seed=11)
    x = torch.randint(0, model.levels, (1, *model.image_shape), generator=torch.Generator().manual_seed(12))
    known = a_mask(model.image_shape, seed=13)
    xs = completions(x, known, model.levels)
    n = len(xs)
    labels = None if labels is None else labels.expand(n)
    cond_image = None if cond_image is None else cond_image.expand(n, -1, -1, -1)
    with torch.no_grad():
        logp = model.conditional_log_prob(xs, known.expand_as(xs), labels, cond_image)
    assert abs(torch.logsumexp(logp, 0).item()) < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_completions_follow_exp_conditional_log_prob_given_a_later_known_pixel(name):
    """1x2x2, levels 3, the last pixel known: the three unknown ones follow exp(conditional_log_prob),
    which for a completion model depends on that later pixel."""
    model = tiny_model(name, (1, 2, 2), 3, seed=4, inpainting=True)
    x = torch.full((1, 1, 2, 2), 2)
    known = torch.zeros_like(x, dtype=torch.bool)
    known[0, 0, 1, 1] = True
    xs = completions(x, known, 3)
    with torch.no_grad():
        p = model.conditional_log_prob(xs, known.expand_as(xs)).exp()
        other = model.conditional_log_prob(xs.where(~known, 0), known.expand_as(xs)).exp()
    assert (p - other).abs().max() > 1e-3                  # the known pixel after the hole changes it
    out = model.complete(x, known, n=draws_for(len(xs)), generator=torch.Generator().manual_seed(5))[0]
    assert bool((out[:, 0, 1, 1] == 2).all())
    index = ((out.flatten(1)[:, :3] * torch.tensor([9, 3, 1])).sum(1))
    counts = torch.bincount(index, minlength=27)
    assert chi_square_pvalue(counts, p) > 1e-3


@pytest.mark.parametrize("name", FAMILIES)
def test_known_pixels_are_copied_bit_for_bit_by_a_completion_model(name):
    model = tiny_model(name, (3, 3, 4), 5, inpainting=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (3, 3, 3, 4), generator=g)
    known = torch.rand(x.shape, generator=g) < 0.5
    out = model.complete(x, known, n=3, generator=g)
    keep = known[:, None].expand_as(out)
    assert torch.equal(out[keep], x[:, None].expand_as(out)[keep])


def test_a_completion_model_warm_started_from_a_raster_one_starts_as_that_model(tmp_path):
    raster = tiny_model("gated_pixelcnn", (1, 5, 4), 4, seed=1).float()
    raster.save_pretrained(tmp_path / "raster")
    model = pixelcnn.create("gated_pixelcnn", **{**raster.config.to_dict(), "inpainting": True})
    randomise(model, seed=2)
    warm_start(model, tmp_path / "raster")
    x = torch.randint(0, 4, (6, 1, 5, 4), generator=torch.Generator().manual_seed(3))
    known = masks.random_known(6, 5, 4, torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model.eval().conditional_log_prob(x, known), raster.eval().conditional_log_prob(x, known))


def test_a_raster_models_conditional_log_prob_is_its_log_prob_of_the_unknown_subpixels_given_the_past():
    model = tiny_model("pixelcnn", (3, 3, 2), 4, seed=6)
    x = torch.randint(0, 4, (5, 3, 3, 2), generator=torch.Generator().manual_seed(7))
    known = torch.rand(x.shape, generator=torch.Generator().manual_seed(8)) < 0.5
    with torch.no_grad():
        per = model.distribution.log_prob_per_channel(model(x), x)
        assert torch.allclose(model.conditional_log_prob(x, known), (per * ~known).flatten(1).sum(1))
        assert torch.allclose(model.conditional_log_prob(x, torch.zeros_like(known)), model.log_prob(x))


@pytest.mark.parametrize("name", ["pixelcnn_pp"])
def test_per_channel_log_probs_sum_to_the_per_pixel_ones(name):
    model = tiny_model(name, (3, 2, 3), 7, seed=9)
    x = torch.randint(0, 7, (4, 3, 2, 3), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        params = model(x)
        per_channel = model.distribution.log_prob_per_channel(params, x)
        assert torch.allclose(per_channel.sum(1), model.distribution.log_prob_per_pixel(params, x))


BAD = [
    (lambda m, x: m.conditional_log_prob(x, torch.zeros(2, 2, dtype=torch.bool)), "got shape (2, 2)"),
    (lambda m, x: m.conditional_log_prob(x, torch.zeros_like(x)), "expected a boolean mask `known`"),
    (lambda m, x: m.conditional_log_prob(x + 9, torch.zeros_like(x, dtype=torch.bool)), "got values in [9, "),
    (lambda m, x: m.complete(x, torch.ones_like(x, dtype=torch.bool)), "expected at least one unknown sub-pixel"),
    (lambda m, x: m(x, known=torch.ones(2, dtype=torch.bool)), "got shape (2,)"),
]


@pytest.mark.parametrize("call,message", BAD)
def test_bad_completion_input_is_refused_in_one_line(call, message):
    model = tiny_model("gated_pixelcnn", (1, 3, 3), 4, inpainting=True)
    x = torch.zeros(1, 1, 3, 3, dtype=torch.long)
    with pytest.raises(pixelcnn.InvalidImageError) as e:
        call(model, x)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_model_without_inpainting_refuses_known_in_forward():
    model = tiny_model("gated_pixelcnn", (1, 3, 3), 4)
    with pytest.raises(pixelcnn.InvalidImageError, match="does not condition on known pixels"):
        model(torch.zeros(1, 1, 3, 3, dtype=torch.long), known=torch.ones(1, 1, 3, 3, dtype=torch.bool))


def test_inpainting_and_a_conditioning_image_cannot_be_combined():
    with pytest.raises(pixelcnn.ConfigError, match="got both"):
        pixelcnn.create("gated_pixelcnn", image_shape=(1, 4, 4), inpainting=True, cond_shape=(1, 2, 2))


@pytest.mark.parametrize("name", masks.NAMED)
def test_named_masks_keep_what_their_names_say(name):
    known = masks.named(name, 200, 8, 6, torch.Generator().manual_seed(0))
    assert known.shape == (200, 1, 8, 6) and known.dtype == torch.bool
    share = known.float().mean().item()
    expected = {"centre": 1 - 12 / 48, "random-50": 0.5, "random-20": 0.2}.get(name, 0.5 if name.endswith("-half") else None)
    if expected is not None:
        assert abs(share - expected) < 0.02
    if name == "bottom-half":
        assert known[:, :, 4:].all() and not known[:, :, :4].any()
    if name == "right-half":
        assert known[..., 3:].all() and not known[..., :3].any()
    if name == "strokes":
        assert 0 < share < 1


def test_training_masks_are_reproducible_and_of_every_kind():
    a = masks.random_known(300, 7, 9, torch.Generator().manual_seed(1))
    b = masks.random_known(300, 7, 9, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (300, 1, 7, 9)
    known = a.flatten(1).float().mean(1)
    assert (known == 0).any() and ((known > 0) & (known < 1)).float().mean() > 0.6
    assert 0.3 < known.mean() < 0.7


@pytest.mark.slow
@needs_mnist
def test_inpainting_from_the_command_line_trains_completes_and_scores(tmp_path, capsys):
    """--task inpainting warm-started (--freeze-init) from a density run; complete with a named mask; eval --completion."""
    common = ["--dataset", "mnist", "--batch-size", "8", "--valid-limit", "8", "--samples", "0", *TINY_FLAGS]
    plain, inpaint = tmp_path / "plain", tmp_path / "inpaint"
    assert main(["train", *common, "--max-steps", "1", "--out", str(plain)]) == 0
    assert main(["train", *common, "--max-steps", "2", "--task", "inpainting", "--init-from", str(plain),
                 "--freeze-init", "--out", str(inpaint)]) == 0
    last = pixelcnn.load(inpaint)
    assert last.config.inpainting
    frozen, start = pixelcnn.load(plain).state_dict(), last.state_dict()
    assert all(torch.equal(start[k], v) for k, v in frozen.items())                 # the copied tensors stayed fixed
    assert start["known_net.out.weight"].abs().sum() > 0                          # the completion term was trained
    lines = [json.loads(line) for line in (inpaint / "metrics.jsonl").read_text().splitlines()]
    valid = load_dataset("mnist", "valid")
    scored = evaluate(last, valid, limit=8, completion=True)      # the unknown pixels of training-style masks
    assert lines[-1]["event"] == "end" and lines[-1]["valid_bits_per_dim"] == pytest.approx(scored["bits_per_dim"])
    assert scored["nll_nats"] < evaluate(last, valid, limit=8)["nll_nats"]           # fewer pixels than whole images
    capsys.readouterr()
    assert main(["complete", str(inpaint), "--from-dataset", "mnist", "--index", "0..1", "--mask", "centre",
                 "--n", "2", "--out", str(tmp_path / "c.png"), "--npy", str(tmp_path / "c.npy")]) == 0
    out = capsys.readouterr().out
    assert "given every known pixel" in out and np.load(tmp_path / "c.npy").shape == (2, 2, 1, 28, 28)
    assert main(["eval", str(inpaint), "--limit", "4", "--completion", "--baseline", str(plain)]) == 0
    out = capsys.readouterr().out
    assert out.count("completion of random masks") == 2
    assert main(["complete", str(inpaint), "--from-dataset", "mnist", "--mask", "middle"]) == 2
    assert "expected --mask to be a PNG file or one of centre, " in capsys.readouterr().err
    assert main(["train", *common, "--freeze-init", "--out", str(tmp_path / "bad")]) == 2
    assert "expected --freeze-init with --init-from" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
@needs_mnist
def test_a_frozen_warm_started_inpainting_run_resumes_on_its_trajectory(tmp_path):
    from pixelcnn import training

    small = dict(hidden=8, layers=2, output_hidden=0)
    base = training.TrainConfig(dataset="mnist", batch_size=8, max_steps=1, valid_limit=8, samples=0)
    training.train(base, tmp_path / "plain", **small)
    cfg = training.TrainConfig(dataset="mnist", batch_size=8, max_steps=4, valid_limit=8, samples=0, log_every=1,
                               task="inpainting", init_from=str(tmp_path / "plain"), freeze_init=True, lr=3e-3)
    training.train(cfg, tmp_path / "straight", **small)
    training.train(training.TrainConfig(**{**cfg.to_dict(), "max_steps": 2}), tmp_path / "split", **small)
    training.resume(tmp_path / "split", max_steps=4)
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last" / "training_state.pt", weights_only=True)["model"]
            for r in ("straight", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["known_net.out.weight"], torch.zeros_like(a["known_net.out.weight"]))

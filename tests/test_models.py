"""The public API: create, log_prob, sample, checkpoints, and clear errors for bad input."""

import json

import pytest
import torch

import pixelcnn
from pixelcnn.models.base import ORDER_WORDS
from pixelcnn.models.layers import shaped_from_full
from pixelcnn.serve.work import COMPLETION_NOTES
from exact import input_gradient, randomise, tiny_model


@pytest.mark.slow
@pytest.mark.parametrize("name", pixelcnn.available_models())
@pytest.mark.parametrize("shape,levels", [((1, 2, 2), 2), ((1, 7, 5), 256), ((3, 4, 4), 16)])
def test_defaults_work_on_small_and_odd_images(name, shape, levels):
    model = pixelcnn.create(name, image_shape=shape, levels=levels)
    x = torch.randint(0, levels, (2, *shape))
    lp = model.log_prob(x)
    assert lp.shape == (2,) and torch.isfinite(lp).all() and (lp < 0).all()
    s = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, *shape) and s.dtype == torch.long and 0 <= s.min() and s.max() < levels


def test_registry_has_the_convolutional_families():
    assert {"pixelcnn", "gated_pixelcnn"} <= set(pixelcnn.available_models())


@pytest.mark.parametrize("name", pixelcnn.available_models())
@pytest.mark.parametrize("shape,levels", [((1, 3, 4), 2), ((1, 3, 4), 5), ((3, 3, 4), 5)])
def test_training_loss_equals_minus_log_prob(name, shape, levels):
    model = tiny_model(name, shape, levels)
    x = torch.randint(0, levels, (3, *shape))
    torch.testing.assert_close(model.nll(x), -model.log_prob(x))


@pytest.mark.parametrize("name", pixelcnn.available_models())
def test_sampling_is_deterministic_for_a_generator(name):
    model = tiny_model(name, (1, 3, 3), 4)
    a = model.sample(5, generator=torch.Generator().manual_seed(3))
    b = model.sample(5, generator=torch.Generator().manual_seed(3))
    c = model.sample(5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", pixelcnn.available_models())
def test_checkpoint_round_trip(name, tmp_path):
    model = tiny_model(name, (1, 4, 4), 4).float()
    x = torch.randint(0, 4, (3, 1, 4, 4))
    model.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"config.json", "model.safetensors"}
    loaded = pixelcnn.load(tmp_path / "ckpt")
    assert type(loaded) is type(model) and loaded.config == model.config
    torch.testing.assert_close(loaded.log_prob(x), model.eval().log_prob(x), rtol=0, atol=0)


def test_gated_shaped_and_masked_convolutions_compute_the_same_function():
    masked = randomise(pixelcnn.create("gated_pixelcnn", image_shape=(3, 5, 6), levels=8, hidden=12, layers=3,
                                       conv_impl="masked", dilations=(1, 2))).double()
    shaped = pixelcnn.create("gated_pixelcnn", image_shape=(3, 5, 6), levels=8, hidden=12, layers=3,
                             dilations=(1, 2)).double()
    target = shaped.state_dict()
    state = {k: shaped_from_full(v * masked.state_dict().get(k.replace("weight", "mask"), 1), target[k].shape)
             if v.shape != target[k].shape else v for k, v in masked.state_dict().items() if k in target}
    shaped.load_state_dict(state)
    assert any(v.shape != target[k].shape for k, v in masked.state_dict().items() if k in target)
    x = torch.randint(0, 8, (4, 3, 5, 6))
    torch.testing.assert_close(shaped.log_prob(x), masked.log_prob(x), rtol=1e-10, atol=1e-10)


# ----- bad input --------------------------------------------------------------------------


@pytest.fixture
def model():
    return pixelcnn.create("gated_pixelcnn", image_shape=(1, 4, 4), levels=4, hidden=8, layers=2)


@pytest.mark.parametrize("x,fragment", [
    (torch.zeros(2, 3, 4, 4, dtype=torch.long), "got shape (2, 3, 4, 4)"),
    (torch.zeros(2, 1, 5, 4, dtype=torch.long), "got shape (2, 1, 5, 4)"),
    (torch.zeros(1, 4, 4, dtype=torch.long), "got shape (1, 4, 4)"),
    (torch.zeros(2, 1, 4, 4), "got dtype torch.float32"),
    (torch.full((2, 1, 4, 4), 4), "got values in [4, 4]"),
    (torch.full((2, 1, 4, 4), -1), "got values in [-1, -1]"),
])
def test_bad_images_are_rejected_with_what_was_expected(model, x, fragment):
    with pytest.raises(pixelcnn.InvalidImageError) as e:
        model.log_prob(x)
    assert "expected integer images of shape (B, 1, 4, 4) with values in [0, 4)" in str(e.value)
    assert fragment in str(e.value)


def test_labels_for_an_unconditional_model_are_rejected(model):
    with pytest.raises(pixelcnn.InvalidLabelError, match="unconditional"):
        model.log_prob(torch.zeros(2, 1, 4, 4, dtype=torch.long), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("name", pixelcnn.available_models())
def test_every_family_checks_the_fields_every_model_has(name):
    """A family adds its fields' checks to the shared ones; one that replaced them would pass these."""
    for kwargs in ({"levels": 1}, {"num_classes": 0}, {"cond_shape": (1, 2)}, {"cond_features": 0},
                   {"inpainting": 1}, {"image_shape": (1, 4)}):
        field = next(iter(kwargs))
        with pytest.raises(pixelcnn.ConfigError, match=f"^expected {field} to be "):
            pixelcnn.create(name, **{"image_shape": (1, 4, 4), **kwargs})


@pytest.mark.parametrize("kwargs,fragment", [
    ({"levels": 1}, "expected levels to be an integer in [2, 256], got 1"),
    ({"levels": 300}, "expected levels to be an integer in [2, 256], got 300"),
    ({"image_shape": (1, 0, 4)}, "expected image_shape to be 3 integers >= 1 (C, H, W), got (1, 0, 4)"),
    ({"hidden": 2, "image_shape": (3, 4, 4)}, "expected hidden to be an integer >= 3, got 2"),
    ({"kernel_size": 4}, "expected kernel_size to be an odd integer >= 1, got 4"),
    ({"colour": 3}, "has no field(s) colour"),
])
def test_bad_hyperparameters_name_what_was_expected(kwargs, fragment):
    args = {"image_shape": (1, 4, 4), "levels": 4, **kwargs}
    with pytest.raises(pixelcnn.ConfigError) as e:
        pixelcnn.create("gated_pixelcnn", **args)
    assert fragment in str(e.value)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(pixelcnn.ConfigError, match="unknown model 'pixelgan'.*gated_pixelcnn"):
        pixelcnn.create("pixelgan")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(pixelcnn.CheckpointError, match="does not exist"):
        pixelcnn.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(pixelcnn.CheckpointError, match="neither a checkpoint folder"):
        pixelcnn.load(tmp_path / "empty")


def test_corrupted_checkpoints(model, tmp_path):
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(pixelcnn.CheckpointError, match="model.safetensors is corrupted"):
        pixelcnn.load(ckpt)
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(pixelcnn.CheckpointError, match="config.json is corrupted"):
        pixelcnn.load(ckpt)


def test_checkpoint_from_another_format_version(model, tmp_path):
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    meta = json.loads((ckpt / "config.json").read_text())
    meta["format_version"] = 99
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(pixelcnn.CheckpointError, match="format version 99; this pixelcnn reads version 1"):
        pixelcnn.load(ckpt)


def test_weights_that_do_not_match_the_config(model, tmp_path):
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    meta = json.loads((ckpt / "config.json").read_text())
    meta["config"]["hidden"] = 16
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(pixelcnn.CheckpointError, match="does not match"):
        pixelcnn.load(ckpt)


def test_a_swap_interrupted_between_renames_still_loads(model, tmp_path):
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    ckpt.rename(tmp_path / "ckpt.old")         # as if killed after the first rename
    assert pixelcnn.load(tmp_path / "ckpt").config == model.config
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt").is_dir() and not (tmp_path / "ckpt.old").exists()


def test_gated_pixelcnn_has_no_blind_spot():
    model = tiny_model("gated_pixelcnn", (1, 6, 6), 4)
    h, w = 5, 2
    grad = input_gradient(model, h, w)[0]
    for h2 in range(6):
        for w2 in range(6):
            before = (h2, w2) < (h, w)
            assert (grad[h2, w2] > 0) == before, (h2, w2)


def test_pixelcnn_has_the_documented_blind_spot():
    """3x3 mask-B stacks miss the region up and to the right (van den Oord et al. 2016b, fig. 1)."""
    model = tiny_model("pixelcnn", (1, 8, 8), 4, first_kernel=3, layers=3)
    grad = input_gradient(model, 4, 1)[0]
    assert grad[3, 0] > 0 and grad[4, 0] > 0
    assert grad[0, 7] == 0


@pytest.mark.parametrize("name", ["gated_pixelcnn", "lmconv", "pixelcnn_pp"])
def test_likelihoods_inside_a_callers_bf16_autocast_are_the_float32_ones(name):
    """Training runs the network under autocast; a log-probability asked for inside it is still fp32."""
    model = pixelcnn.create(name, image_shape=(1, 8, 7), levels=16, **({"filters": 16, "resnet_blocks": 1}
                                                                        if name == "pixelcnn_pp" else {})).eval()
    x = torch.randint(0, 16, (3, 1, 8, 7), generator=torch.Generator().manual_seed(0))
    known = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    with torch.no_grad():
        plain = (model.log_prob(x), model.conditional_log_prob(x, known), model.log_prob_per_pixel(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model(x).dtype == torch.bfloat16                  # the autocast is on for the network itself
            inside = (model.log_prob(x), model.conditional_log_prob(x, known), model.log_prob_per_pixel(x))
    for a, b in zip(plain, inside):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)


@pytest.mark.parametrize("name", pixelcnn.available_models())
def test_each_family_keeps_its_declared_order(name):
    """``generation_order`` is what the stepper visits: raster (no order), any (named orders and "auto",
    per-order likelihoods), or coarse to fine (every 2**scales-th pixel of the first row first)."""
    cls = pixelcnn.models.get(name)
    model = tiny_model(name, (1, 5, 6), 3)
    order = model.default_order()
    assert cls.generation_order in ORDER_WORDS and cls.generation_order in COMPLETION_NOTES   # said in words
    if cls.generation_order == "raster":
        assert order is None
        with pytest.raises(pixelcnn.errors.ConfigError, match="raster order only"):
            model.visiting_order("auto")
        return
    assert torch.equal(order.indices.sort().values, torch.arange(30))
    x = torch.randint(0, 3, (2, 1, 5, 6), generator=torch.Generator().manual_seed(0))
    if cls.generation_order == "any":
        assert model.any_order and len(model.order_names) == model.log_prob_per_order(x).shape[0]
        assert len(model.visiting_order("auto", torch.ones(1, 1, 5, 6, dtype=torch.bool))[0]) == 30
    else:
        assert not model.any_order and order.indices[:2].tolist() == [0, model.config.stride]
        with pytest.raises(pixelcnn.errors.ConfigError, match="coarse to fine"):
            model.visiting_order("auto")


def test_evaluating_gives_the_callers_mode_back_even_on_an_error():
    model = pixelcnn.create("pixelcnn_pp", image_shape=(1, 4, 4), levels=2, dropout=0.5)
    for mode in (True, False):
        model.train(mode)
        with pytest.raises(KeyError), model.evaluating():
            assert not model.training and not any(m.training for m in model.modules())
            raise KeyError("inside")
        assert model.training is mode and all(m.training is mode for m in model.modules())


@pytest.mark.parametrize("name", pixelcnn.available_models())
def test_network_and_stepper_take_an_order_and_a_one_order_family_refuses_another(name):
    """Every family's network and cached stepper take ``order`` (None: its own); one that generates in a single
    order refuses any other permutation instead of ignoring it."""
    model = tiny_model(name, (1, 4, 4), 2)
    x = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    xf = model.preprocess(x)
    own = model.default_order()
    other = torch.arange(15, -1, -1)                                     # bottom-right first: nobody's default
    assert torch.equal(model.network(xf, None, own), model.network(xf, None))
    if model.any_order:
        assert model.network(xf, None, other).shape == model.network(xf, None).shape
        return
    with pytest.raises(pixelcnn.ConfigError, match="only: expected no order or its own"):
        model.network(xf, None, other)
    if model.cached:
        with pytest.raises(pixelcnn.ConfigError, match="only: expected no order or its own"):
            model.cached_stepper(x, None, other)

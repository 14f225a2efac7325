"""PixelCNN++: its discretized logistic mixture on its own, then the whole model.

The mixture is checked against a direct float64 computation from the logistic CDF, for
normalisation with extreme parameters, for a faithful sampler, and for the chain rule across
channels; the model for its receptive field, faithful sampling, its parameter count and its errors
(normalisation, causality and cached == naive over its declared branches: test_generated.py).
"""

import hashlib
import math
import re

import pytest
import torch

import pixelcnn
from exact import all_images, chi_square_pvalue, input_gradient, randomise, sampling_pvalue
from pixelcnn.distributions import make_distribution, sample_inverse_cdf
from pixelcnn.errors import ConfigError

# ----- the discretized logistic mixture ------------------------------------------------------------


def random_params(dist, shape, seed=0, extreme=False, dtype=torch.float64):
    """(B, P, *S) parameters; ``extreme`` mixes in huge/tiny log-scales and means far outside [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn((shape[0], dist.num_params, *shape[1:]), generator=g, dtype=torch.float64)
    if extreme:
        picks = torch.tensor([-1e3, -60.0, -20.0, -7.5, 0.0, 8.0, 40.0, 120.0, 1e3], dtype=torch.float64)
        wild = picks[torch.randint(len(picks), p.shape, generator=g)]
        p = torch.where(torch.rand(p.shape, generator=g) < 0.5, wild, p * 10)
    return p.to(dtype)


def direct_log_prob(params, x, levels, mixtures):
    """log p(x) per image straight from the logistic CDF in float64: no log-space tricks, one bin at a time."""
    p, k = params.double(), mixtures
    b, _, *rest = p.shape
    c_ = x.shape[1]
    means = p[:, k : k + c_ * k].reshape(b, c_, k, *rest)
    log_scales = p[:, k + c_ * k : k + 2 * c_ * k].reshape(b, c_, k, *rest).clamp(min=-7.0)   # the reference's floor
    coeffs = torch.tanh(p[:, k + 2 * c_ * k :].reshape(b, -1, k, *rest))
    y = x.double() * 2 / (levels - 1) - 1
    h = 1.0 / (levels - 1)
    prob, pair = torch.softmax(p[:, :k], dim=1), 0
    for c in range(c_):
        mu = means[:, c]
        for j in range(c):                       # pairs in the order (1,0), (2,0), (2,1), ...
            mu, pair = mu + coeffs[:, pair] * y[:, j : j + 1], pair + 1
        s = log_scales[:, c].exp()
        xc, yc = x[:, c : c + 1], y[:, c : c + 1]
        upper = torch.where(xc == levels - 1, math.inf, (yc + h - mu) / s)
        lower = torch.where(xc == 0, -math.inf, (yc - h - mu) / s)
        # F(u) - F(l), or the same mass as F(-l) - F(-u) in the right tail, where F(u) and F(l)
        # are both close to 1 and their difference would cancel.
        mass = torch.where(lower > 0, torch.sigmoid(-lower) - torch.sigmoid(-upper), torch.sigmoid(upper) - torch.sigmoid(lower))
        prob = prob * mass
    return prob.sum(1).log().flatten(1).sum(1)


def every_pixel(channels, levels):
    """(L^C, C, 1, 1): every value of one pixel."""
    return all_images((channels, 1, 1), levels)


@pytest.mark.parametrize("channels,levels", [(1, 2), (1, 256), (3, 2), (3, 5), (2, 16), (4, 3)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_probabilities_of_every_pixel_value_sum_to_one_even_for_extreme_parameters(channels, levels, dtype):
    dist = make_distribution("logistic_mixture", channels, levels, mixtures=4)
    xs = every_pixel(channels, levels)
    for seed in range(4):
        params = random_params(dist, (1, 1, 1), seed=seed, extreme=seed > 0, dtype=dtype)
        logp = dist.log_prob(params.expand(len(xs), -1, -1, -1), xs)
        assert torch.isfinite(logp).all()
        assert abs(torch.logsumexp(logp.double(), 0).item()) < (1e-9 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("channels,levels", [(3, 256), (1, 256), (4, 7)])
def test_each_conditional_sums_to_one_even_for_extreme_parameters(channels, levels):
    dist = make_distribution("logistic_mixture", channels, levels, mixtures=5)
    g = torch.Generator().manual_seed(1)
    params = random_params(dist, (64,), seed=2, extreme=True, dtype=torch.float32)
    x = torch.randint(0, levels, (64, channels), generator=g)
    for c in range(channels):
        lp = dist.conditional(params, x, c)
        assert lp.shape == (64, levels)
        assert not torch.isnan(lp).any()
        assert (torch.logsumexp(lp.double(), 1).abs() < 1e-5).all()


@pytest.mark.parametrize("channels,levels", [(3, 256), (1, 256), (3, 4), (2, 2)])
def test_log_prob_matches_a_direct_computation_from_the_logistic_cdf(channels, levels):
    dist = make_distribution("logistic_mixture", channels, levels, mixtures=5)
    g = torch.Generator().manual_seed(3)
    params = random_params(dist, (4, 3, 5), seed=4)
    x = torch.randint(0, levels, (4, channels, 3, 5), generator=g)
    x[0, :, 0, 0], x[0, :, 0, 1] = 0, levels - 1          # both edge bins appear
    expected = direct_log_prob(params, x, levels, 5)
    torch.testing.assert_close(dist.log_prob(params, x), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dist.log_prob(params.float(), x).double(), expected, rtol=1e-5, atol=1e-3)


def test_tiny_masses_keep_their_precision_in_float32():
    """Bins ~e^-284 and ~e^-148 from the mean, in the left and the right tail.

    In float32, sigmoid(upper) - sigmoid(lower) is 0 there (underflow on the left, cancellation
    of two numbers close to 1 on the right): the naive formula gives log 0. The stable one keeps
    the relative precision of float32.
    """
    dist = make_distribution("logistic_mixture", 1, 256, mixtures=1)
    params = torch.tensor([[0.0, 1.0, -5.0], [0.0, -1.0, -5.0]], dtype=torch.float64).view(2, 3, 1, 1)
    x = torch.tensor([10, 128]).view(2, 1, 1, 1)                      # (logit, mean, log-scale) above
    expected = direct_log_prob(params, x, 256, 1)
    assert expected.max() < -100
    y, mean, inv_scale = x.view(2).float() * 2 / 255 - 1, torch.tensor([1.0, -1.0]), torch.tensor(5.0).exp()
    naive = torch.sigmoid(inv_scale * (y + 1 / 255 - mean)) - torch.sigmoid(inv_scale * (y - 1 / 255 - mean))
    assert (naive == 0).all()                                          # float32 loses both
    got = dist.log_prob(params.float(), x).double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)


def test_gradients_stay_finite_for_extreme_parameters():
    dist = make_distribution("logistic_mixture", 3, 256, mixtures=4)
    params = random_params(dist, (8, 4, 4), seed=5, extreme=True, dtype=torch.float32).requires_grad_(True)
    x = torch.randint(0, 256, (8, 3, 4, 4), generator=torch.Generator().manual_seed(6))
    x[:, :, 0] = 0
    x[:, :, 1] = 255
    logp = dist.log_prob(params, x)
    assert torch.isfinite(logp).all()
    logp.sum().backward()
    assert torch.isfinite(params.grad).all()


@pytest.mark.parametrize("channels,levels", [(3, 256), (4, 5), (1, 9)])
def test_conditionals_over_channels_multiply_to_the_joint(channels, levels):
    dist = make_distribution("logistic_mixture", channels, levels, mixtures=6)
    params = random_params(dist, (3, 2, 4), seed=7)
    x = torch.randint(0, levels, (3, channels, 2, 4), generator=torch.Generator().manual_seed(8))
    total = torch.zeros(3, dtype=torch.float64)
    for h in range(2):
        for w in range(4):
            for c in range(channels):
                lp = dist.conditional(params[:, :, h, w], x[:, :, h, w], c)
                total += lp.gather(1, x[:, c, h, w].unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(total, dist.log_prob(params, x), rtol=1e-10, atol=1e-10)


def test_sampler_histogram_matches_the_probabilities():
    """Channel by channel through ``conditional`` and the inverse CDF, as every sampler does."""
    levels, n = 4, 20000
    dist = make_distribution("logistic_mixture", 3, levels, mixtures=3)
    params = random_params(dist, (1,), seed=9) * 0.5
    gen = torch.Generator().manual_seed(10)
    x = torch.zeros(n, 3, dtype=torch.long)
    for c in range(3):
        u = torch.rand(n, generator=gen, dtype=torch.float64)
        x[:, c] = sample_inverse_cdf(dist.conditional(params.expand(n, -1), x, c), u)
    xs = every_pixel(3, levels)
    probs = dist.log_prob(params.view(1, -1, 1, 1).expand(len(xs), -1, 1, 1), xs).exp()
    index = (x * torch.tensor([levels**2, levels, 1])).sum(1)
    counts = torch.bincount(index, minlength=len(xs))
    assert chi_square_pvalue(counts, probs) > 1e-3
    # ...and the test has teeth: the same samples against the first channel's marginal only are rejected.
    assert chi_square_pvalue(counts, probs.view(levels, -1).sum(1).repeat_interleave(levels**2)) < 1e-6


def test_layout_and_groups():
    dist = make_distribution("logistic_mixture", 3, 256, mixtures=10)
    assert dist.num_params == 100                          # the paper's 10 per component for RGB
    assert make_distribution("logistic_mixture", 1, 256, mixtures=10).num_params == 30
    assert make_distribution("logistic_mixture", 4, 256, mixtures=2).num_params == 2 * (1 + 8 + 6)
    assert (dist.param_groups() == 0).all() and dist.param_groups().shape == (100,)


# ----- the model -------------------------------------------------------------------------------------


def pp(shape, levels=4, seed=0, **hp):
    """A small randomised float64 model, the same on every run (its initialisation is seeded too)."""
    hp = {"filters": 6, "resnet_blocks": 1, "mixtures": 3, **hp}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = pixelcnn.create("pixelcnn_pp", image_shape=shape, levels=levels, **hp).double()
    return randomise(model, seed).eval()


def test_every_earlier_pixel_is_seen_no_blind_spot():
    model = pp((1, 6, 6), stages=2, resnet_blocks=2)
    for h, w in [(5, 2), (3, 5), (4, 0)]:
        grad = input_gradient(model, h, w)[0]
        seen = grad > 0
        earlier = torch.tensor([[(h2, w2) < (h, w) for w2 in range(6)] for h2 in range(6)])
        assert torch.equal(seen, earlier), (h, w)


@pytest.mark.parametrize("hw", [(5, 7), (9, 4), (4, 4), (6, 11)])
def test_any_size_at_least_the_minimum_keeps_its_shape(hw):
    model = pp((1, *hw), stages=3)
    x = torch.randint(0, 4, (2, 1, *hw))
    assert model(x).shape == (2, 9, *hw)
    assert torch.isfinite(model.log_prob(x)).all()


def test_samples_follow_exp_log_prob_in_colour_with_labels():
    model = pp((3, 2, 1), levels=3, seed=1, stages=1, num_classes=3, mixtures=2)
    assert sampling_pvalue(model, seed=0, labels=2) > 1e-3


def test_parameter_count_at_paper_size():
    """53.6M; the paper gives no figure, later tables cite PixelCNN++ at 53M (e.g. Shi et al. 2024, MD4)."""
    model = pixelcnn.create("pixelcnn_pp", image_shape=(3, 32, 32), levels=256)
    cfg = model.config
    assert (cfg.filters, cfg.resnet_blocks, cfg.stages, cfg.mixtures, cfg.dropout) == (160, 5, 3, 10, 0.5)
    assert model.num_parameters() == 53_618_660
    assert abs(model.num_parameters() / 53e6 - 1) < 0.02


@pytest.mark.parametrize("shape,stages,message", [
    ((3, 2, 2), 3, "at least 4x4 pixels, got 2x2; use stages <= 2"),
    ((1, 3, 8), 3, "at least 4x4 pixels, got 3x8; use stages <= 2"),
    ((3, 16, 7), 5, "at least 16x16 pixels, got 16x7; use stages <= 3"),
    ((1, 1, 5), 2, "at least 2x2 pixels, got 1x5; use stages <= 1"),
])
def test_too_small_images_give_a_clear_error(shape, stages, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        pixelcnn.create("pixelcnn_pp", image_shape=shape, levels=4, stages=stages, filters=4)


@pytest.mark.parametrize("field,value", [("stages", 0), ("filters", 0), ("mixtures", 0), ("dropout", 1.0),
                                         ("dropout", -0.1), ("resnet_blocks", -1)])
def test_bad_hyperparameters_are_rejected(field, value):
    with pytest.raises(ConfigError, match=field):
        pixelcnn.create("pixelcnn_pp", image_shape=(3, 8, 8), levels=4, **{field: value})


def test_dropout_acts_in_training_only():
    model = pp((3, 4, 4), stages=2, dropout=0.5)
    x = torch.randint(0, 4, (2, 3, 4, 4))
    assert torch.equal(model.log_prob(x), model.log_prob(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model.log_prob(x), model.log_prob(x))


def test_grayscale_round_trips_through_a_checkpoint(tmp_path):
    model = pp((1, 8, 8), levels=256, stages=3)
    x = torch.randint(0, 256, (2, 1, 8, 8))
    model.save_pretrained(tmp_path / "m")
    loaded = pixelcnn.load(tmp_path / "m").double()
    assert loaded.config == model.config
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x))


# ----- the U-Net's passes, on whole maps and one pixel at a time ----------------------------------------


def test_the_down_pass_takes_the_up_pass_activations_in_mirror_order_through_its_shortcuts():
    """The reference's u_list / ul_list: the first layer's output, every downsampled map and every block's
    output of the up pass; the down pass starts from the last pair and each of its blocks pops the next."""
    model = pp((1, 7, 6), stages=3, resnet_blocks=2)
    u_kept, ul_kept, inputs, skips = [], [], [], []

    def up_block(module, args, kwargs, out):
        if not u_kept:                                   # the first layer's (u, ul)
            u_kept.append(args[0])
            ul_kept.append(args[1])
        u_kept.append(out[0])
        ul_kept.append(out[1])

    def down_block(module, args, kwargs):
        inputs.append(args[:2])
        skips.append(args[2:])

    for u_layer, ul_layer in zip(model.down_u, model.down_ul):     # a stage after the first starts downsampled
        u_layer.register_forward_hook(lambda module, args, out: u_kept.append(out))
        ul_layer.register_forward_hook(lambda module, args, out: ul_kept.append(out))
    for block in [block for stage in model.up_pass for block in stage]:
        block.register_forward_hook(up_block, with_kwargs=True)
    for block in [block for stage in model.down_pass for block in stage]:
        block.register_forward_pre_hook(down_block, with_kwargs=True)
    with torch.no_grad():
        model(torch.randint(0, 4, (2, 1, 7, 6)))
    kept = list(zip(u_kept, ul_kept))
    assert len(kept) == 3 * (2 + 1) and len(skips) == len(kept) - 1 == 2 + 3 + 3
    assert inputs[0][0] is kept[-1][0] and inputs[0][1] is kept[-1][1]
    for skip, pair in zip(skips, reversed(kept[:-1])):
        assert skip[0] is pair[0] and skip[1] is pair[1]


def test_the_steppers_schedule_gives_the_networks_probabilities_on_a_deeper_u_net():
    """Four stages on 9x11 (maps of 9x11, 5x6, 3x3, 2x2), deeper than the generated cases: at most pixels the
    stepper's up pass stops early and its down pass starts from cached coarser outputs."""
    model = pp((3, 9, 11), levels=7, seed=3, stages=4, resnet_blocks=2, num_classes=3, cond_shape=(3, 5, 6))
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 7, (2, 3, 9, 11), generator=g)
    labels, cond_image = torch.tensor([0, 2]), torch.randint(0, 7, (2, 3, 5, 6), generator=g)
    with torch.no_grad():
        params = model(x, labels, cond_image)
        stepper = model.cached_stepper(torch.zeros_like(x), model.condition(labels, cond_image, 2))
        for h in range(9):
            for w in range(11):
                for c in range(3):
                    expected = model.distribution.conditional(params[:, :, h, w], x[:, :, h, w], c)
                    torch.testing.assert_close(stepper.log_probs(c, h, w), expected, rtol=0, atol=1e-10)
                    stepper.set(c, h, w, x[:, c, h, w])


@pytest.mark.parametrize("hp,digest", [
    ({"image_shape": (3, 32, 32), "levels": 256}, "838586f0287991cf5fcc0662841795bdd718a6e19bf9635e697afab3f138636c"),
    ({"image_shape": (1, 8, 8), "levels": 4, "num_classes": 3, "cond_shape": (1, 4, 4), "filters": 4,
      "resnet_blocks": 1, "stages": 3, "mixtures": 2}, "d0a17c9df4394e61ab472c76aace0800370ea4916ecede80366284416de194a0"),
])
def test_the_module_tree_is_the_one_saved_checkpoints_hold(hp, digest):
    """Parameter names, shapes and order of pixelcnn 0.1.0's checkpoints: a renamed or reshaped module would
    stop every saved model from loading (``load_state_dict(strict=True)``)."""
    model = pixelcnn.create("pixelcnn_pp", **hp)
    listing = "\n".join(f"{name} {tuple(value.shape)}" for name, value in model.state_dict().items())
    assert hashlib.sha256(listing.encode()).hexdigest() == digest

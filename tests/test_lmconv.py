"""LMConv in any order: orders, exactness, causality, faithful sampling, exact completion, cached == naive.

The model-agnostic suites (test_exactness, test_cached_sampling, ...) hold lmconv to the raster
standard through its tiny settings; this file checks every other order, their symmetries,
random permutations and the order ensemble.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

import pixelcnn
from conftest import needs_mnist
from exact import all_images, chi_square_pvalue, dependency_violations, draws_for, image_index, randomise
from pixelcnn.models.lmconv import orders
from pixelcnn.cli import main
from pixelcnn.coding import container
from pixelcnn.coding.arithmetic import released_forms
from pixelcnn.errors import ConfigError, PixelCNNError
from pixelcnn.models.layers import channel_groups
from pixelcnn.models.lmconv import local_conv
from pixelcnn.models.common import gate_groups
from pixelcnn.models.lmconv import AUTO_ORDERS, MEMO_SIZE
from pixelcnn.models.lmconv.local_conv import SPLIT_MEMO, LocallyMaskedConv2d, reference_copy, split_taps, tap_masks
from pixelcnn.models.lmconv.orders import InvalidOrderError
from pixelcnn.sampling import NaiveStepper

# (image shape, levels): the tiny images of the exactness tests, grey, colour and non-square.
ENUMERABLE = [((1, 2, 2), 2), ((1, 3, 3), 2), ((3, 2, 2), 2), ((1, 2, 3), 4)]


@pytest.fixture(autouse=True)
def split_form_at_every_size(monkeypatch):
    """The locally masked convolutions take their split form (``LocallyMaskedConv2d.forward``) here even on these tiny
    images, as they do on real ones; the model-agnostic suites run them in the unfold form below ``SMALL_INPUT``."""
    monkeypatch.setattr(local_conv, "SMALL_INPUT", 0)


def lmconv(shape, levels, seed=0, **hp):
    """A small lmconv trained on s_curve and hilbert in all 8 symmetries, weights far from init."""
    settings = {"hidden": 6, "layers": 2, "output_hidden": 6, "first_kernel": 3, "dilations": (1, 2),
                "orders": ("s_curve", "hilbert"), "order_symmetries": 8, **hp}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = pixelcnn.create("lmconv", image_shape=shape, levels=levels, **settings).double()
    return randomise(model, seed).eval()


def some_orders(shape, seed=0):
    """Named orders with a few symmetries, and two random permutations."""
    _, h, w = shape
    g = torch.Generator().manual_seed(seed)
    named = ["raster", "s_curve:0", "s_curve:5", "hilbert:0", "hilbert:3", "hilbert:6"]
    return named + [torch.randperm(h * w, generator=g) for _ in range(2)]


# ----- orders -------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width", [(1, 1), (1, 5), (4, 1), (3, 3), (4, 6), (7, 5), (28, 28), (5, 12)])
def test_named_orders_are_permutations_that_step_to_neighbours(height, width):
    for name in orders.NAMES:
        seen = set()
        for s in range(orders.SYMMETRIES):
            order = orders.named(name, height, width, s)
            assert torch.equal(order.sort().values, torch.arange(height * width)), (name, s)
            h, w = order // width, order % width
            steps = torch.maximum((h.diff()).abs(), (w.diff()).abs())
            if name != "raster" and len(steps):
                assert steps.max() == 1, (name, s)           # s_curve and hilbert never jump
            seen.add(tuple(order.tolist()))
        if height > 1 and width > 1 and name != "raster":   # 8 different orders (a Hilbert rectangle: 4)
            assert len(seen) == (4 if name == "hilbert" and height != width else orders.SYMMETRIES), name


def test_hilbert_curve_of_a_square_is_the_classic_one():
    assert orders.named("hilbert", 4, 4).tolist() == [0, 1, 5, 4, 8, 12, 13, 9, 10, 14, 15, 11, 7, 6, 2, 3]


def test_known_first_splits_the_training_order_needing_fewest_swaps():
    candidates = torch.stack([orders.named("s_curve", 6, 7, s) for s in range(8)])
    bottom = torch.zeros(6, 7, dtype=torch.bool)
    bottom[3:] = True                                         # bottom half known: s_curve:2 starts there
    assert torch.equal(orders.known_first(bottom, candidates), candidates[2])
    known = torch.zeros(6, 7, dtype=torch.bool)
    known[:, :2] = True
    known[4:, :] = True
    order = orders.known_first(known, candidates)
    n = int(known.sum())
    assert known.flatten()[order[:n]].all() and not known.flatten()[order[n:]].any()
    swaps = []
    for row in candidates:                                    # pairs (unknown visited, then a known one)
        seen = known.flatten()[row].long()
        swaps.append(int(((1 - seen) * (seen.sum() - seen.cumsum(0))).sum()))
    base = candidates[min(range(8), key=lambda k: swaps[k])]
    rank = orders.ranks(base)
    assert (rank[order[:n]].diff() > 0).all() and (rank[order[n:]].diff() > 0).all()   # base's order kept
    assert torch.equal(orders.known_first(torch.zeros(6, 7, dtype=torch.bool), candidates), candidates[0])


def onion_masks(height: int, width: int) -> list[torch.Tensor]:
    hole = torch.ones(height, width, dtype=torch.bool)
    hole[1:height - 1, 2:width - 1] = False
    bottom = torch.zeros(height, width, dtype=torch.bool)
    bottom[height // 2:] = True
    scattered = torch.rand(height, width, generator=torch.Generator().manual_seed(1)) < 0.5
    corner = torch.ones(height, width, dtype=torch.bool)
    corner[0, 0] = False
    return [hole, bottom, scattered, corner, ~corner]


@pytest.mark.parametrize("height,width", [(6, 7), (5, 5), (1, 6), (7, 2)])
def test_onion_visits_the_known_pixels_outside_in_then_the_unknown_ones_from_their_border(height, width):
    candidates = torch.stack([orders.named("s_curve", height, width, s) for s in range(8)])
    for known in onion_masks(height, width):
        order = orders.onion(known, candidates)
        orders.check_permutation(order, height * width)
        n, flat = int(known.sum()), known.flatten()
        assert flat[order[:n]].all() and not flat[order[n:]].any()
        depth_known, depth_unknown = orders.rings(known).flatten(), orders.rings(~known).flatten()
        assert (depth_known[order[:n]].diff() <= 0).all()               # farthest from the unknown pixels first
        assert (depth_unknown[order[n:]].diff() >= 0).all()             # the unknown ones from their border inwards
        rank = orders.ranks(orders.known_first(known, candidates))
        for depth, part in ((depth_known, order[:n]), (depth_unknown, order[n:])):
            for d in depth[part].unique():                              # a ring in the split order's order
                assert (rank[part[depth[part] == d]].diff() > 0).all()
    everything = torch.ones(height, width, dtype=torch.bool)
    assert torch.equal(orders.onion(everything, candidates), candidates[0])
    assert torch.equal(orders.onion(~everything, candidates), candidates[0])


def test_rings_are_chebyshev_distances_to_the_other_pixels():
    known = torch.ones(5, 6, dtype=torch.bool)
    known[2, 3] = False
    hs, ws = torch.meshgrid(torch.arange(5), torch.arange(6), indexing="ij")
    expected = torch.maximum((hs - 2).abs(), (ws - 3).abs())
    assert torch.equal(orders.rings(known), expected)
    assert torch.equal(orders.rings(~known), (~known).long())           # the one pixel: ring 1; the others: 0


BAD_ORDERS = [
    ("zigzag", "got 'zigzag'"),
    ("hilbert:8", "got 'hilbert:8'"),
    ("s_curve:x", "got 's_curve:x'"),
    (torch.arange(5), "got shape (5,)"),
    (torch.arange(6).view(2, 3), "got shape (2, 3)"),
    (torch.arange(6.0), "got dtype torch.float32"),
    (torch.tensor([0, 1, 2, 3, 4, 4]), "with 1 indices missing (e.g. [5])"),
    (torch.tensor([0, 1, 2, 3, 4, 6]), "got values in [0, 6]"),
    ([0, 1, 2, 3, 4, 5], "got list"),
]


@pytest.mark.parametrize("order,got", BAD_ORDERS, ids=[str(i) for i in range(len(BAD_ORDERS))])
def test_bad_orders_are_refused_in_one_line_naming_expected_and_got(order, got):
    model = lmconv((1, 2, 3), 2)
    x = torch.zeros((1, 1, 2, 3), dtype=torch.long)
    for call in (lambda: model.log_prob(x, order=order), lambda: model.sample(1, order=order)):
        with pytest.raises(InvalidOrderError) as err:
            call()
        message = str(err.value)
        assert "expected" in message and got in message and "\n" not in message
        assert isinstance(err.value, PixelCNNError)


@pytest.mark.parametrize("settings,got", [({"orders": ("raster", "spiral")}, "'spiral'"),
                                          ({"orders": ()}, "got none"),
                                          ({"order_symmetries": 9}, "got 9"),
                                          ({"order_symmetries": 0}, "got 0"),
                                          ({"dilations": (1, 0)}, "got (1, 0)")])
def test_bad_order_settings_are_refused(settings, got):
    with pytest.raises(ConfigError, match="expected|must") as err:
        pixelcnn.create("lmconv", image_shape=(1, 4, 4), levels=2, **settings)
    assert got in str(err.value)


def test_training_orders_are_each_name_in_its_symmetries_and_explicit_ones_alone():
    config = lmconv((1, 3, 4), 2, orders=("s_curve", "hilbert:2", "s_curve:1"), order_symmetries=3).config
    assert config.order_specs() == ["s_curve:0", "s_curve:1", "s_curve:2", "hilbert:2"]


def test_raster_only_families_refuse_other_orders():
    model = pixelcnn.create("gated_pixelcnn", image_shape=(1, 3, 3), levels=2, hidden=4, layers=1)
    model.sample(1, order="raster")
    with pytest.raises(ConfigError, match="raster order only.*got 's_curve'"):
        model.sample(1, order="s_curve")


# ----- exactness ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("shape,levels", ENUMERABLE)
def test_probabilities_sum_to_one_in_every_order_and_for_the_ensemble(shape, levels):
    model = lmconv(shape, levels)
    x = all_images(shape, levels)
    with torch.no_grad():
        for order in some_orders(shape) + [None]:
            assert abs(torch.logsumexp(model.log_prob(x, order=order), 0).item()) < 1e-9, order


def test_the_ensemble_is_the_mean_of_its_orders_and_they_differ():
    model = lmconv((1, 3, 3), 2)
    x = all_images((1, 3, 3), 2)[::37]
    with torch.no_grad():
        per = torch.stack([model.log_prob(x, order=spec) for spec in model.config.order_specs()])
        mixture = model.log_prob(x)
    torch.testing.assert_close(mixture, per.exp().mean(0).log())
    assert (per.max(0).values - per.min(0).values).min() > 1e-3      # the orders are different models


@pytest.mark.parametrize("shape", [(1, 3, 4), (3, 3, 3)])
def test_parameters_depend_only_on_subpixels_earlier_in_the_order(shape):
    model = lmconv(shape, 4, first_kernel=5, dilations=(1, 2))
    for order in some_orders(shape, seed=1):
        order = model.resolve_order(order)
        assert dependency_violations(model, order=order) == [], order


def test_the_order_aware_dependency_check_catches_the_wrong_order():
    """Evaluated in one order but checked against another, the check must find leaks."""
    model = lmconv((1, 3, 4), 4)
    hilbert, s_curve = model.resolve_order("hilbert:1"), model.resolve_order("s_curve:2")
    original = model.network
    model.network = lambda x, cond, order=None: original(x, cond, hilbert)
    assert dependency_violations(model, order=s_curve) != []


def test_every_earlier_pixel_of_a_small_image_is_seen():
    """No blind spot in a small image: the last pixel of an order depends on every other pixel."""
    model = lmconv((1, 4, 4), 4, first_kernel=3, layers=3, dilations=(1, 2))
    for spec in ["s_curve:3", "hilbert:6"]:
        order = model.resolve_order(spec)
        xf = model.preprocess(torch.randint(0, 4, (2, 1, 4, 4))).requires_grad_(True)
        h, w = order[-1]
        grad, = torch.autograd.grad(model.network(xf, None, order)[:, :, h, w].abs().sum(), xf)
        seen = grad.abs().sum(0)[0].flatten() > 0
        assert seen.sum() == 15 and not seen[order.indices[-1]], spec


# ----- the locally masked convolution: its forward against the unfold reference -----------------


def local_layer(kernel, dilation, mask_type, colours, seed=0):
    """A layer with lmconv's colour groups (mask A: the image and the ones channel in; mask B: a block's gate out),
    float64, weights and bias far from init."""
    if mask_type == "A":
        conv = LocallyMaskedConv2d(colours + 1, 6, kernel, torch.cat([torch.arange(colours), torch.tensor([-1])]),
                                   channel_groups(6, colours), "A", dilation)
    else:
        conv = LocallyMaskedConv2d(6, 12, kernel, channel_groups(6, colours), gate_groups(6, colours), "B", dilation)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 3)
    return conv.double()


def layer_orders(height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    named = ["raster", "s_curve:0", "s_curve:3", "s_curve:6", "hilbert:1"]
    return [orders.resolve(n, height, width) for n in named] + [torch.randperm(height * width, generator=g)
                                                               for _ in range(2)]


def outputs_and_gradients(conv, forward, x, masks, grad):
    """The output of ``forward`` and the gradients of <output, grad> for the input, the weight and the bias."""
    x = x.detach().requires_grad_(True)
    out = forward(x, masks)
    inputs = (x, conv.conv.weight, conv.conv.bias)
    return (out.detach(), *torch.autograd.grad(out, inputs, grad, allow_unused=True, materialize_grads=True))


def assert_forms_agree(conv, x, masks, seed=0):
    g = torch.Generator().manual_seed(seed)
    grad = torch.randn((x.shape[0], conv.conv.out_channels, *x.shape[2:]), generator=g, dtype=torch.float64)
    fast = outputs_and_gradients(conv, conv.forward, x, masks, grad)
    reference = outputs_and_gradients(conv, conv.forward_reference, x, masks, grad)
    for name, a, b in zip(("output", "input gradient", "weight gradient", "bias gradient"), fast, reference):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


SIZES = [(1, 1), (1, 7), (6, 1), (5, 5), (4, 7), (9, 6)]


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("mask_type,colours", [("A", 3), ("B", 3), ("A", 1), ("B", 1)])
def test_the_forward_and_its_gradients_equal_the_unfold_reference(kernel, dilation, mask_type, colours):
    """Raster, S-curve, Hilbert and random orders; sizes from 1x1 to 9x6, 1xN and Nx1; batches of 1 and 3."""
    conv = local_layer(kernel, dilation, mask_type, colours)
    g = torch.Generator().manual_seed(1)
    for height, width in SIZES:
        for batch in (1, 3):
            x = torch.randn(batch, conv.conv.in_channels, height, width, generator=g, dtype=torch.float64) * 3
            for order in layer_orders(height, width):
                masks = tap_masks(order, height, width, kernel, dilation).double()
                assert_forms_agree(conv, x, masks)


@pytest.mark.parametrize("height,width", [(5, 7), (1, 6), (4, 1)])
def test_any_tap_masks_give_the_reference_form_not_only_those_of_orders(height, width):
    """Masks of 0, 1 and other values, the centre tap among them: no tap is kept everywhere, or only some are."""
    conv = local_layer(3, 1, "B", 3)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, height, width, generator=g, dtype=torch.float64) * 3
    values = torch.tensor([0.0, 1.0, 0.5, -2.0], dtype=torch.float64)
    for _ in range(4):
        masks = values[torch.randint(0, 4, (9, height * width), generator=g)]
        masks[torch.randint(0, 9, (3,), generator=g)] = 1.0                 # a few taps kept everywhere
        assert_forms_agree(conv, x, masks)
    assert_forms_agree(conv, x, torch.zeros(9, height * width, dtype=torch.float64))   # the bias alone


def test_s_curve_and_raster_orders_unfold_only_the_row_neighbours():
    """What makes the forward fast: an S-curve unfolds the left and right neighbours alone (the rest is one
    convolution over the row above and the centre); raster order unfolds nothing; a random order everything."""
    height, width = 6, 7
    for dilation in (1, 2):
        s_curve = split_taps(tap_masks(orders.named("s_curve", height, width), height, width, 3, dilation), height,
                             width, 3, dilation)
        assert s_curve.varying == (3, 5) and s_curve.kept.flatten().tolist() == [1, 1, 1, 0, 1, 0, 0, 0, 0]
        assert s_curve.box == (0, 1, 0, 2)
        raster = split_taps(tap_masks(orders.named("raster", height, width), height, width, 3, dilation), height,
                            width, 3, dilation)
        assert raster.varying == () and raster.kept.flatten().tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0]
    shuffled = torch.randperm(height * width, generator=torch.Generator().manual_seed(0))
    assert split_taps(tap_masks(shuffled, height, width, 3, 1), height, width, 3, 1).varying == (0, 1, 2, 3, 5, 6, 7, 8)


def test_the_split_is_remembered_per_masks_tensor_and_the_memo_stays_bounded():
    conv = local_layer(3, 1, "B", 1)
    masks = tap_masks(orders.named("s_curve", 4, 5), 4, 5, 3, 1).double()
    assert conv.split(masks, 4, 5) is conv.split(masks, 4, 5)
    assert conv.split(masks.clone(), 4, 5) is not conv.split(masks, 4, 5)
    kept = [tap_masks(torch.randperm(20, generator=torch.Generator().manual_seed(s)), 4, 5, 3, 1).double()
            for s in range(2 * SPLIT_MEMO)]
    for m in kept:
        conv.split(m, 4, 5)
    assert len(conv._splits) <= SPLIT_MEMO and conv.split(kept[-1], 4, 5) is conv.split(kept[-1], 4, 5)
    del kept
    conv.split(masks, 4, 5)
    assert len(conv._splits) <= 2                                           # dead tensors' splits are dropped


def test_inside_the_compressors_scope_the_layer_computes_the_reference_form_bit_for_bit():
    """Files coded by earlier releases' whole-network stepper hold that form's probabilities (tests/test_coding.py).
    The input is large enough for the split form outside the scope."""
    conv = local_layer(3, 2, "B", 3)
    x = torch.randn(2, 6, 24, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    masks = tap_masks(orders.named("hilbert", 24, 30, 2), 24, 30, 3, 2).double()
    assert conv.takes_split_form(x)
    with torch.no_grad(), released_forms():
        assert not conv.takes_split_form(x)
        assert torch.equal(conv(x, masks), conv.forward_reference(x, masks))
    assert conv.takes_split_form(x)




@pytest.mark.parametrize("shape,hp", [((3, 4, 5), {}), ((1, 6, 5), {"first_kernel": 5, "dilations": (1, 3)}),
                                      ((1, 1, 7), {"layers": 1}), ((3, 7, 1), {})])
def test_the_model_computes_what_its_reference_form_computes_with_the_same_gradients(shape, hp):
    model = lmconv(shape, 4, **hp)
    reference = reference_copy(model)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (3, *shape), generator=g)
    for order in some_orders(shape):
        losses = [m.nll(x, order=order).mean() for m in (model, reference)]
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=1e-10)
        grads = [torch.autograd.grad(loss, list(m.parameters())) for loss, m in zip(losses, (model, reference))]
        for (name, _), a, b in zip(model.named_parameters(), *grads):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


# ----- sampling and completion -------------------------------------------------------------


def sample_counts(model, n, seed=0, **kw):
    samples = model.sample(n, generator=torch.Generator().manual_seed(seed), **kw)
    return torch.bincount(image_index(samples, model.levels), minlength=model.levels ** math.prod(model.image_shape))


@pytest.mark.parametrize("shape,levels,order", [((1, 2, 2), 3, "hilbert:5"), ((3, 1, 2), 2, "s_curve:6"),
                                                ((1, 2, 3), 2, torch.tensor([4, 0, 5, 2, 1, 3])),
                                                ((1, 2, 2), 3, None), ((3, 1, 2), 2, None)])
def test_samples_follow_the_joint_of_their_order_or_the_ensemble(shape, levels, order):
    model = lmconv(shape, levels, seed=1)
    with torch.no_grad():
        probs = model.log_prob(all_images(shape, levels), order=order).exp()
    counts = sample_counts(model, draws_for(len(probs)), order=order)
    assert chi_square_pvalue(counts, probs) > 1e-3


@pytest.mark.parametrize("shape,levels,hole", [((1, 3, 3), 2, [(1, 1), (0, 1), (2, 0)]),
                                               ((3, 2, 2), 2, [(0, 0), (1, 1)]),
                                               ((1, 2, 3), 4, [(0, 0)])])
@pytest.mark.parametrize("auto_order", AUTO_ORDERS)
def test_known_first_completions_are_exact_posterior_samples(shape, levels, hole, auto_order):
    """Known pixels lie after the hole in raster order: the auto order still conditions on all of them."""
    model = lmconv(shape, levels, seed=3, auto_order=auto_order)
    images = all_images(shape, levels)
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, levels, (1, *shape), generator=g)
    known = torch.ones((1, *shape), dtype=torch.bool)
    for h, w in hole:
        known[..., h, w] = False
    auto = model.visiting_order("auto", known)[0]
    with torch.no_grad():
        logp = model.log_prob(images, order=auto)
    consistent = (images == x).logical_or(~known).flatten(1).all(1)
    posterior = torch.where(consistent, logp, torch.full_like(logp, -math.inf))
    posterior = posterior - torch.logsumexp(posterior, 0)
    out = model.complete(x, known, n=draws_for(int(consistent.sum())), generator=torch.Generator().manual_seed(0))[0]
    counts = torch.bincount(image_index(out, levels), minlength=len(images))
    assert counts[~consistent].sum() == 0
    assert chi_square_pvalue(counts[consistent], posterior[consistent].exp()) > 1e-3
    # and the conditional likelihood is that posterior's log-probability of the true hole
    cond = model.conditional_log_prob(x, known)
    torch.testing.assert_close(cond, posterior[image_index(x, levels)].view(1), rtol=1e-9, atol=1e-9)


def test_conditional_log_prob_is_a_difference_of_likelihoods_for_any_order():
    model = lmconv((3, 2, 3), 3, seed=4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (4, 3, 2, 3), generator=g)
    known = torch.rand(4, 1, 2, 3, generator=g) < 0.5
    order = torch.tensor([5, 1, 3, 0, 2, 4])
    with torch.no_grad():
        everything = model.conditional_log_prob(x, torch.zeros_like(known), order=order)
        nothing = model.conditional_log_prob(x, torch.ones_like(known), order=order)
    torch.testing.assert_close(everything, model.log_prob(x, order=order))
    assert torch.equal(nothing, torch.zeros(4, dtype=nothing.dtype))


def test_auto_order_per_image_and_nothing_known_samples_the_ensemble():
    model = lmconv((1, 3, 3), 2)
    known = torch.zeros(3, 1, 3, 3, dtype=torch.bool)
    known[0, :, 0] = True                                     # top row known
    known[1, :, 2] = True                                     # bottom row known
    table = model.visiting_order("auto", known, torch.Generator().manual_seed(0))
    assert set(table[0].indices[:3].tolist()) == {0, 1, 2} and set(table[1].indices[:3].tolist()) == {6, 7, 8}
    assert table[2] in [model.as_order(row) for row in model.orders]  # one of the training orders


# ----- cached == naive ---------------------------------------------------------------------


def drive(model, x, order, labels=None, cond_image=None):
    """Naive and cached steppers side by side in ``order`` on the same values: max |p_naive - p_cached|."""
    cond = model.condition(labels, cond_image, x.shape[0])
    naive, cached = NaiveStepper(model, x, cond, order), model.cached_stepper(x, cond, order=order)
    worst = 0.0
    for h, w in order:
        for c in range(model.image_shape[0]):
            a, b = naive.log_probs(c, h, w).exp(), cached.log_probs(c, h, w).exp()
            worst = max(worst, (a - b).abs().max().item())
            naive.set(c, h, w, x[:, c, h, w])
            cached.set(c, h, w, x[:, c, h, w])
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("shape,extra", [((1, 5, 7), {}), ((3, 4, 5), {"num_classes": 3}),
                                         ((1, 6, 4), {"cond_shape": (1, 3, 2)}), ((3, 1, 1), {}),
                                         ((1, 4, 4), {"output": "bernoulli"})])
def test_cached_probabilities_equal_the_naive_ones_in_any_order(shape, extra):
    levels = 2 if extra.get("output") == "bernoulli" else 5
    model = lmconv(shape, levels, first_kernel=5, dilations=(1, 3), layers=3, **extra)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, levels, (3, *shape), generator=g)
    labels = torch.tensor([0, 2, 1]) if "num_classes" in extra else None
    cond_image = torch.randint(0, levels, (3, *extra["cond_shape"]), generator=g) if "cond_shape" in extra else None
    for order in some_orders(shape):
        assert drive(model, x, model.resolve_order(order), labels, cond_image) < 1e-12, order


@pytest.mark.parametrize("order", ["hilbert:7", "s_curve:2", None, "auto"])
def test_cached_and_naive_sampling_and_completion_give_the_same_images(order):
    model = lmconv((3, 4, 5), 5, seed=2, num_classes=2)
    labels = torch.tensor([0, 1, 1, 0])
    runs = {}
    for method in ("naive", "cached"):
        sample = model.sample(4, labels=labels, generator=torch.Generator().manual_seed(1), method=method,
                              order=None if order == "auto" else order)
        known = torch.rand(4, 1, 4, 5, generator=torch.Generator().manual_seed(2)) < 0.4
        done = model.complete(sample, known, n=2, labels=labels, generator=torch.Generator().manual_seed(3),
                              method=method, order=order)
        runs[method] = (sample, done)
    assert torch.equal(runs["naive"][0], runs["cached"][0]) and torch.equal(runs["naive"][1], runs["cached"][1])


def test_cached_sampling_never_runs_the_whole_network_in_any_order():
    model = lmconv((1, 4, 4), 3)

    def refuse(*args, **kwargs):
        raise AssertionError("the cached path ran the full network")

    model.network = refuse
    assert model.sample(2, order="hilbert:2", generator=torch.Generator().manual_seed(0)).shape == (2, 1, 4, 4)


def test_a_cached_stepper_refuses_pixels_out_of_its_order():
    model = lmconv((1, 3, 3), 2)
    stepper = model.cached_stepper(torch.zeros((1, 1, 3, 3), dtype=torch.long), None, order=model.resolve_order("s_curve:1"))
    with pytest.raises(ValueError, match=r"expected pixel \(0, 2\), got channel 0 of pixel \(0, 0\)"):
        stepper.log_probs(0, 0, 0)


# ----- training ----------------------------------------------------------------------------


def test_each_training_step_uses_one_training_order_chosen_by_seed_and_step():
    model = lmconv((1, 4, 4), 2)
    picks = [model.step_inputs(seed=0, step=s)["order"] for s in range(40)]
    again = [model.step_inputs(seed=0, step=s)["order"] for s in range(40)]
    assert picks == again
    table = {model.as_order(row) for row in model.orders}
    assert set(picks) <= table and len(set(picks)) > 8
    x = torch.randint(0, 2, (3, 1, 4, 4))
    torch.testing.assert_close(model.nll(x, order=picks[0]), -model.log_prob(x, order=picks[0]))


@pytest.mark.parametrize("height,width", [(1, 1), (1, 4), (5, 3), (28, 28)])
def test_random_known_masks_are_holes_sides_and_pixel_subsets_fixed_by_the_generator(height, width):
    draw = lambda seed: orders.random_known(height, width, torch.Generator().manual_seed(seed))
    masks = [draw(seed) for seed in range(60)]
    assert all(m.shape == (height, width) and m.dtype == torch.bool for m in masks)
    assert all(torch.equal(m, draw(seed)) for seed, m in enumerate(masks))
    if height * width < 12:
        return
    kinds = {mask_kind(m) for m in masks}
    assert kinds == {"hole", "side", "pixels"}
    assert len({tuple(m.flatten().tolist()) for m in masks}) > 30


def mask_kind(known):
    """'side' if the known pixels are the top, bottom, left or right part; 'hole' if the unknown
    ones are any other rectangle; else 'pixels'."""
    rows, cols = known.all(1), known.all(0)
    if bool((known == rows[:, None]).all() | (known == cols[None, :]).all()):
        return "side"
    unknown = (~known).nonzero()
    (top, left), (bottom, right) = unknown.min(0).values.tolist(), unknown.max(0).values.tolist()
    return "hole" if int((~known).sum()) == (bottom - top + 1) * (right - left + 1) else "pixels"


@pytest.mark.parametrize("auto_order", AUTO_ORDERS)
def test_completion_orders_visit_a_random_masks_known_pixels_first_chosen_by_seed_and_step(auto_order):
    model = lmconv((1, 5, 6), 2, orders=("s_curve",), completion_orders=0.5, auto_order=auto_order)
    steps = [model.step_order(seed=3, step=s) for s in range(120)]
    again = [model.step_order(seed=3, step=s) for s in range(120)]
    for (order, known), (order2, known2) in zip(steps, again):
        assert order == order2 and (known is None) == (known2 is None)
        assert known is None or torch.equal(known, known2)
        assert model.step_inputs(3, 0)["order"] == steps[0][0]
    masked = [(order, known) for order, known in steps if known is not None]
    assert 35 < len(masked) < 85
    table = {model.as_order(row) for row in model.orders}
    assert all(order in table for order, known in steps if known is None)
    for order, known in masked:
        flat = known.flatten()[order.indices]                                # known, in visiting order
        assert not bool((flat[1:] & ~flat[:-1]).any())                       # no known pixel after an unknown one
        build = orders.onion if auto_order == "onion" else orders.known_first
        assert torch.equal(order.indices, build(known, model.orders))
    assert sum(order not in table for order, _ in masked) > 20
    other = [model.step_order(seed=4, step=s)[0] for s in range(120)]
    assert any(a != b for a, b in zip(other, [o for o, _ in steps]))


def test_without_completion_orders_the_steps_are_the_training_orders_of_before():
    plain, mixed = lmconv((1, 4, 4), 2), lmconv((1, 4, 4), 2, completion_orders=0.5)
    for s in range(40):
        order, known = mixed.step_order(0, s)
        assert known is not None or order == plain.step_inputs(0, s)["order"]
        assert plain.step_order(0, s)[1] is None
    x = torch.randint(0, 2, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mixed.log_prob(x), plain.log_prob(x))      # the ensemble: training orders only
    assert mixed.order_names == plain.order_names


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_completion_orders_must_be_a_probability(bad):
    with pytest.raises(ConfigError, match=r"expected completion_orders to be a finite number in \[0, 1\], got"):
        pixelcnn.create("lmconv", image_shape=(1, 4, 4), levels=2, completion_orders=bad)


def test_a_stream_of_one_off_orders_keeps_the_training_orders_tap_masks_memoised():
    model = lmconv((1, 5, 6), 2, orders=("s_curve",), completion_orders=1.0)
    kept = [model.tap_masks(model.as_order(order)) for order in model.orders]
    for s in range(3 * MEMO_SIZE):
        model.tap_masks(model.step_order(0, s)[0])
        model.tap_masks(model.as_order(torch.randperm(30, generator=torch.Generator().manual_seed(s))))
    assert len(model._masks) <= MEMO_SIZE
    assert all(model.tap_masks(model.as_order(order)) is masks for order, masks in zip(model.orders, kept))


@pytest.mark.slow
@needs_mnist
def test_training_on_completion_orders_resumes_exactly(tmp_path):
    from pixelcnn import training

    hp = dict(hidden=4, layers=1, output_hidden=0, first_kernel=3, order_symmetries=2, completion_orders=0.5)
    cfg = dict(model="lmconv", dataset="mnist", batch_size=4, valid_limit=4, samples=0, log_every=1, ema=0)
    training.train(training.TrainConfig(**cfg, max_steps=6), tmp_path / "straight", **hp)
    training.train(training.TrainConfig(**cfg, max_steps=3), tmp_path / "split", **hp)
    training.resume(tmp_path / "split", max_steps=6)
    a, b = (torch.load(tmp_path / run / "checkpoints" / "last" / "training_state.pt", weights_only=True)["model"]
            for run in ("straight", "split"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


# ----- command line ------------------------------------------------------------------------


@pytest.mark.slow
@needs_mnist
def test_command_line_trains_evaluates_samples_and_completes_in_orders(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "lmconv", "--dataset", "mnist", "--orders", "s_curve,hilbert",
                 "--order-symmetries", "2", "--hidden", "4", "--layers", "1", "--output-hidden", "0",
                 "--first-kernel", "3", "--max-steps", "2", "--batch-size", "4", "--valid-limit", "4",
                 "--samples", "0", "--out", str(run)]) == 0
    model = pixelcnn.load(run)
    assert model.order_names == ["s_curve:0", "s_curve:1", "hilbert:0", "hilbert:1"]
    capsys.readouterr()
    assert main(["eval", str(run), "--limit", "4"]) == 0
    text = capsys.readouterr().out
    assert all(f"order {name}: NLL" in text for name in model.order_names)
    assert "ensemble of 4 orders: NLL" in text
    npy = tmp_path / "s.npy"
    assert main(["sample", str(run), "--n", "2", "--order", "hilbert:1", "--out", str(tmp_path / "s.png"),
                 "--npy", str(npy)]) == 0
    gen = torch.Generator().manual_seed(0)
    assert np.array_equal(np.load(npy), model.sample(2, generator=gen, order="hilbert:1").numpy())
    assert main(["complete", str(run), "--from-dataset", "mnist", "--index", "0", "--n", "1", "--order", "auto",
                 "--out", str(tmp_path / "c.png")]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--order", "spiral", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "expected an order" in err and "got 'spiral'" in err
    assert not (tmp_path / "x.png").exists()


def test_compression_in_a_named_order_stores_it_and_decodes_with_it():
    model = lmconv((1, 4, 5), 4, orders=("s_curve",), order_symmetries=2).float()
    x = torch.randint(0, 4, (3, 1, 4, 5), generator=torch.Generator().manual_seed(1))
    data = pixelcnn.compress(model, x, order="hilbert:6")
    assert pixelcnn.coding.read_header(data).order == "hilbert:6"
    assert torch.equal(pixelcnn.decompress(model, data).images, x)
    default = pixelcnn.compress(model, x)
    assert pixelcnn.coding.read_header(default).order == "" and default != data
    for bad, error in (("auto", "got 'auto'"), ("spiral", "got 'spiral'")):
        with pytest.raises(ValueError, match=error):
            pixelcnn.compress(model, x, order=bad)
    raster_family = pixelcnn.create("gated_pixelcnn", image_shape=(1, 4, 5), levels=4, hidden=4, layers=1)
    assert pixelcnn.coding.read_header(pixelcnn.compress(raster_family, x, order="raster")).order == ""
    header, streams = container.unpack(data)                  # a file naming an order the model cannot follow
    forged = container.pack(dataclasses.replace(header, order="spiral:2"), streams)
    with pytest.raises(pixelcnn.CompressionError, match="pixel order 'spiral:2'.*got 'spiral:2'"):
        pixelcnn.decompress(model, forged)


def test_compression_round_trips_in_the_first_training_order():
    model = lmconv((3, 3, 4), 5, orders=("hilbert:5", "s_curve"), num_classes=2).float()
    g = torch.Generator().manual_seed(0)
    x, labels = torch.randint(0, 5, (3, 3, 3, 4), generator=g), torch.tensor([1, 0, 1])
    for method in ("naive", "cached"):
        images, got = pixelcnn.decompress(model, pixelcnn.compress(model, x, labels, method=method))
        assert torch.equal(images, x) and torch.equal(got, labels)


def test_version_1_files_without_an_order_field_are_still_read():
    """A version-1 file (no order or writer field) of format 2's float32 arithmetic, coded here, decodes here."""
    import struct
    import zlib

    from pixelcnn.coding import codec

    model = lmconv((1, 3, 3), 2).float()
    x = torch.randint(0, 2, (2, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    float_model = codec.FLOAT.model(model)
    with codec.FLOAT.scope(float_model):
        words = codec.encode_chunk(float_model, x, None, 2, "cached", "", codec.FLOAT)
    header = codec.Header("cached", 2, (1, 3, 3), 2, 2, container.model_fingerprint(model),
                          container.content_digest(x, None))
    data = container.pack(header, [words])
    at = container._PREFIX.size + container._FIELDS.size                         # the empty order field, the writer
    assert data[at] == 0 and data[at + 2 : at + 2 + data[at + 1]] == f"pixelcnn {pixelcnn.__version__}".encode()
    body = bytearray(data[:at] + data[at + 2 + data[at + 1] : -4])
    body[4:6] = struct.pack(">H", 1)
    old = bytes(body) + struct.pack(">I", zlib.crc32(bytes(body)))
    header = container.read_header(old)
    assert header.version == 1 and header.order == "" and header.writer == ""
    assert torch.equal(pixelcnn.decompress(model, old).images, x)
"""Every family over its branches: cached == naive, exact normalisation, causality; faithful sampling.

The cases come from each family's branches (``generated.BRANCHES``), pairwise, on images from 1x1 to
6x6, with every weight moved away from its initial value; the default sizes are checked too. Each
test runs for every registered family: a family without a feature it is meant to have fails, it is
not skipped.
"""

import dataclasses

import pytest
import torch

import pixelcnn
from exact import (SAMPLER_ERROR, TEST_LEVEL, all_images, chi_square_pvalue, dependency_violations, draws_for,
                   image_index, randomise, sampling_pvalue, tiny_model, total_log_mass)
from generated import BRANCHES, CACHED_FAMILIES, GROUPED_FAMILIES, build, case_id, cases, known_part
from pixelcnn.models import layers
from pixelcnn.models.lmconv import local_conv
from pixelcnn.distributions import sample_inverse_cdf
from pixelcnn.sampling import NaiveStepper, draw_uniforms, make_stepper

FAMILIES = pixelcnn.available_models()
EXACT_SIZES = ((1, 1), (1, 3), (2, 2), (2, 3), (3, 3), (3, 1))


# The first cases of each family run in the fast tier too (make test-fast), so that every check meets every family
# in the edit loop; the rest are marked slow.
FAST_CASES = 3


def generated(max_images=None, sizes=None):
    kw = {"max_images": max_images} if sizes is None else {"max_images": max_images, "sizes": sizes}
    return [pytest.param(name, case, id=f"{name}-{case_id(case)}", marks=() if i < FAST_CASES else pytest.mark.slow)
            for name in FAMILIES for i, case in enumerate(cases(name, **kw))]


@pytest.fixture(autouse=True)
def sigmoid_form_of_tanh_at_every_size(monkeypatch):
    """Whole maps take tanh in its sigmoid form (``layers.map_tanh``) here even at these tiny sizes, as they do
    at real ones: the whole-map paths then run that form and the cached steppers ``torch.tanh``, and every
    check below holds across the two."""
    monkeypatch.setattr(layers, "SMALL_MAP", 0)


@pytest.fixture(autouse=True)
def split_locally_masked_convolutions_at_every_size(monkeypatch):
    """lmconv's layers take their split form (``local_conv``) at these tiny sizes too, as at real ones."""
    monkeypatch.setattr(local_conv, "SMALL_INPUT", 0)


def side_by_side(model, labels, cond_image, batch: int, seed: int) -> tuple[float, int]:
    """Sample with the naive and the cached stepper from the same uniforms, each path on its own values.

    Returns the largest difference in probability and the number of sub-pixels whose values differ.
    """
    cond = model.condition(labels, cond_image, batch, *known_part(model, batch, seed))   # a completion model: a mask
    x = torch.zeros((batch, *model.image_shape), dtype=torch.long)
    naive, cached = NaiveStepper(model, x, cond, model.default_order()), make_stepper(model, x, cond, "cached")
    assert not isinstance(cached, NaiveStepper)
    u = draw_uniforms(tuple(x.shape), torch.Generator().manual_seed(seed), x.device)
    worst, differ = 0.0, 0
    with torch.no_grad():
        for h, w in cached.order:                                           # the family's own order
            for c in range(model.image_shape[0]):
                p_naive, p_cached = naive.log_probs(c, h, w), cached.log_probs(c, h, w)
                worst = max(worst, (p_naive.exp() - p_cached.exp()).abs().max().item())
                v_naive, v_cached = (sample_inverse_cdf(p, u[:, c, h, w]) for p in (p_naive, p_cached))
                differ += int((v_naive != v_cached).sum())
                naive.set(c, h, w, v_naive)
                cached.set(c, h, w, v_cached)
    return worst, differ


def test_every_family_has_its_branches():
    """Every registered family is generated from, over settings its config has (a misspelt one fails)."""
    assert set(BRANCHES) == set(FAMILIES)
    for name, branches in BRANCHES.items():
        fields = {f.name for f in dataclasses.fields(pixelcnn.models.get(name).config_class)}
        assert set(branches) - fields == {"channels"}, name
        assert all(len(values) >= 2 for values in branches.values()), name


def test_the_families_with_a_cached_path_are_exactly_these():
    """Each family declares whether it has a cached stepper (``cached``); the declaration holds."""
    assert {name for name in FAMILIES if pixelcnn.models.get(name).cached} == CACHED_FAMILIES
    for name in FAMILIES:
        model, *_ = build(name, cases(name)[0], 1)
        x = torch.zeros((1, *model.image_shape), dtype=torch.long)
        if model.cached:
            assert not isinstance(make_stepper(model, x, None, "auto"), NaiveStepper)
        else:
            assert isinstance(make_stepper(model, x, None, "auto"), NaiveStepper)


@pytest.mark.parametrize("name,case", generated())
def test_cached_sampling_equals_naive(name, case):
    model, labels, cond_image = build(name, case, batch=3, seed=1)
    worst, differ = side_by_side(model, labels, cond_image, batch=3, seed=2)
    assert worst < 1e-10 and differ == 0


@pytest.mark.slow
def test_the_families_that_draw_groups_of_pixels_at_once_are_exactly_these():
    """Each model declares whether its stepper offers groups (``draws_groups``); the declaration holds, for each
    value it takes in a family's generated cases."""
    grouped = set()
    for name in FAMILIES:
        seen = {}
        for case in cases(name):
            model, *_ = build(name, case, 1)
            seen.setdefault(model.draws_groups, (case, model))
        grouped |= {name} if True in seen else set()
        for draws, (case, model) in seen.items():
            stepper = make_stepper(model, torch.zeros((1, *model.image_shape), dtype=torch.long), None, "auto")
            assert (stepper.groups is not None) == draws == model.draws_groups, (name, case)
    assert grouped == GROUPED_FAMILIES


@pytest.mark.slow
@pytest.mark.parametrize("name,case", [p for p in generated() if p.values[0] in GROUPED_FAMILIES])
def test_sampling_and_completion_a_group_at_a_time_equal_the_naive_loop(name, case):
    """The same uniforms give the same images whether a group's pixels are drawn at once or one at a time
    by the whole network; a completion keeps its known sub-pixels."""
    model, labels, cond_image = build(name, case, batch=3, seed=9)
    x, known = known_part(model, 3, seed=10) or (torch.randint(0, model.levels, (3, *model.image_shape)),
                                                 torch.rand(3, *model.image_shape) < 0.5)
    known.view(3, -1)[:, 0] = False                                   # something to complete in every image
    a, b = (model.sample(3, labels, generator=torch.Generator().manual_seed(11), cond_image=cond_image, method=m)
            for m in ("cached", "naive"))
    c, d = (model.complete(x, known, 2, labels, generator=torch.Generator().manual_seed(12), cond_image=cond_image,
                           method=m) for m in ("cached", "naive"))
    assert torch.equal(a, b) and torch.equal(c, d)
    assert torch.equal(c[known[:, None].expand_as(c)], x[:, None].expand_as(c)[known[:, None].expand_as(c)])


# The defaults of each family (PixelCNN++: filters=160, resnet_blocks=5, three stages), far from init.
DEFAULT_SHAPES = {"pixelcnn_pp": (1, 4, 4)}


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_cached_sampling_equals_naive_at_the_default_sizes(name):
    shape = DEFAULT_SHAPES.get(name, (3, 3, 3))
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = pixelcnn.create(name, image_shape=shape, levels=2).double()
    randomise(model, seed=3, scale=1.5).eval()
    worst, differ = side_by_side(model, None, None, batch=4, seed=4)
    assert worst < 1e-10 and differ == 0


@pytest.mark.parametrize("name,case", generated(max_images=4096, sizes=EXACT_SIZES))
def test_probabilities_of_every_image_sum_to_one(name, case):
    model, labels, cond_image = build(name, case, batch=1, seed=5)
    label = None if labels is None else int(labels[0])
    image = None if cond_image is None else cond_image[0]
    assert abs(total_log_mass(model, label, cond_image=image)) < 1e-9


@pytest.mark.parametrize("name,case", generated())
def test_parameters_depend_only_on_earlier_subpixels(name, case):
    """A completion model may also read its known sub-pixels wherever they are, and must read later ones."""
    model, labels, cond_image = build(name, case, batch=2, seed=6)
    known, reads = None, []
    if model.config.inpainting:
        known = known_part(model, 1, seed=8)[1].expand(2, *model.image_shape)
    assert dependency_violations(model, labels, batch=2, seed=7, cond_image=cond_image,
                                 order=model.default_order(), known=known, reads_known=reads) == []
    if known is not None and model.image_shape[0] * model.image_shape[1] * model.image_shape[2] > 1:
        assert reads, "the known sub-pixels after an unknown one do not reach it"


@pytest.mark.parametrize("name", FAMILIES)
def test_the_causality_check_catches_a_leak_of_one_pixel(name):
    """The check itself must fail on a model whose parameters at (h, w) see pixel (h, w)."""
    model, *_ = build(name, cases(name)[0] | {"size": (3, 3), "num_classes": None, "cond_shape": None}, batch=2)
    original = model.network
    model.network = lambda x, cond, *order: original(x, cond, *order) + 1e-3 * x[:, :1] ** 2
    assert dependency_violations(model, order=model.default_order()) != []


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("shape,levels", [((1, 2, 2), 3), ((3, 1, 2), 2)])
def test_samples_follow_exp_log_prob(name, shape, levels):
    """A chi-square test of the (cached) sampler against exp(log_prob) over every image."""
    model = tiny_model(name, shape, levels, seed=1)
    assert sampling_pvalue(model, seed=0) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_the_sampling_test_rejects_a_sampler_off_by_the_error_it_is_sized_for(name):
    """The chi-square test above, with its number of draws, fails a sampler whose law lies SAMPLER_ERROR from the
    model's in total variation: here one that draws a fraction of its images from another model."""
    shape, levels = (1, 2, 2), 3
    model, other = tiny_model(name, shape, levels, seed=1), tiny_model(name, shape, levels, seed=2)
    images = all_images(shape, levels)
    with torch.no_grad():
        p, r = model.log_prob(images).exp(), other.log_prob(images).exp()
    fraction = SAMPLER_ERROR / (0.5 * (p - r).abs().sum().item())            # total variation of the mixture
    assert fraction <= 1, "the two models are too close to build the faulty sampler"
    n = draws_for(len(images))
    g = torch.Generator().manual_seed(0)
    wrong = int(round(fraction * n))
    drawn = torch.cat([model.sample(n - wrong, generator=g), other.sample(wrong, generator=g)])
    counts = torch.bincount(image_index(drawn, levels), minlength=len(images))
    assert chi_square_pvalue(counts, p) < TEST_LEVEL

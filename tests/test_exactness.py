"""Every registered model is a normalised, causal distribution whose sampler is faithful."""

import pytest
import torch

import pixelcnn
from exact import dependency_violations, input_gradient, sampling_pvalue, tiny_model, total_log_mass

MODELS = pixelcnn.available_models()
GRAY_SHAPES = [((1, 2, 2), 2), ((1, 3, 3), 2), ((1, 2, 3), 4)]
COLOUR_SHAPES = [((3, 2, 2), 2)]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape,levels", GRAY_SHAPES + COLOUR_SHAPES)
def test_probabilities_of_every_image_sum_to_one(name, shape, levels):
    model = tiny_model(name, shape, levels)
    assert abs(total_log_mass(model)) < 1e-4


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 3, 3), (1, 4, 5), (3, 3, 4)])
def test_parameters_depend_only_on_earlier_subpixels(name, shape):
    model = tiny_model(name, shape, 4)
    assert dependency_violations(model) == []


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape,levels", [((1, 2, 2), 3), ((3, 1, 2), 2)])
def test_samples_follow_exp_log_prob(name, shape, levels):
    model = tiny_model(name, shape, levels, seed=1)
    assert sampling_pvalue(model, n=20000, seed=0) > 1e-3


@pytest.mark.parametrize("name", MODELS)
def test_dependency_check_catches_a_leak(name):
    """The causality check itself must fail on a model that sees the current pixel."""
    model = tiny_model(name, (1, 3, 3), 4)
    original = model.network
    model.network = lambda x, labels: original(x, labels) + x.sum(1, keepdim=True).repeat(1, model.distribution.num_params, 1, 1)
    assert dependency_violations(model) != []


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

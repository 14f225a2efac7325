"""The Order type: what every network, stepper and the sampling loop take as a generation order."""

from __future__ import annotations

import pytest
import torch

import pixelcnn
from exact import tiny_model
from pixelcnn import sampling
from pixelcnn.errors import ConfigError
from pixelcnn.models.order import InvalidOrderError, Order


def test_an_order_is_its_pixels_in_turn_and_its_ranks_invert_it():
    order = Order(torch.tensor([5, 0, 3, 1, 4, 2]), 2, 3)
    assert list(order) == [(1, 2), (0, 0), (1, 0), (0, 1), (1, 1), (0, 2)] and order[2] == (1, 0) and len(order) == 6
    assert order.ranks()[order.indices].tolist() == list(range(6))
    assert list(Order.raster(2, 3)) == [(h, w) for h in range(2) for w in range(3)]


def test_orders_are_equal_when_they_visit_the_same_pixels_of_the_same_shape():
    a, b = Order(torch.tensor([1, 0, 2, 3]), 2, 2), Order(torch.tensor([1, 0, 2, 3], dtype=torch.int32), 2, 2)
    assert a == b and hash(a) == hash(b) and {a: "x"}[b] == "x"
    assert a != Order(torch.tensor([1, 0, 2, 3]), 1, 4) and a != Order.raster(2, 2) and a != a.indices
    assert a.to("cpu") is a


@pytest.mark.parametrize("indices,match", [
    (torch.tensor([0, 1, 1, 3]), "with 1 indices missing"),
    (torch.tensor([0, 1, 2]), "got shape \\(3,\\)"),
    (torch.arange(4.0), "got dtype torch.float32"),
    (torch.arange(4).view(2, 2), "got shape \\(2, 2\\)"),
    ([0, 1, 2, 3], "got list"),
    (torch.tensor([0, 1, 2, 4]), "got values in \\[0, 4\\]"),
])
def test_anything_but_a_permutation_of_the_pixels_is_refused_in_one_line(indices, match):
    with pytest.raises(InvalidOrderError, match="expected an order as a 1-D integer tensor permuting the 4 pixel") as e:
        Order(indices, 2, 2)
    assert "\n" not in str(e.value)
    with pytest.raises(InvalidOrderError, match=match):
        Order(indices, 2, 2)


@pytest.mark.parametrize("name", sorted(pixelcnn.available_models()))
def test_every_family_takes_its_own_order_and_refuses_another(name):
    """A one-order family's network and stepper take its own Order (raster where its default is None) and refuse
    any other in one line; an any-order family takes any Order of its image size."""
    model = tiny_model(name, (1, 2, 3), 2).eval()
    x = torch.zeros(2, 1, 2, 3, dtype=torch.long)
    own = model.default_order() or Order.raster(2, 3)
    other = Order(torch.tensor([5, 4, 3, 2, 1, 0]), 2, 3)
    xf = model.preprocess(x)
    with torch.no_grad():
        torch.testing.assert_close(model.network(xf, None, own), model.network(xf, None))
        assert list(sampling.make_stepper(model, x, None, "auto", own).order) == list(own)
        if model.any_order:
            assert list(sampling.make_stepper(model, x, None, "auto", other).order) == list(other)
            with pytest.raises(InvalidOrderError, match="expected an order of 2x3 pixels, got one of 3x2"):
                model.network(xf, None, Order.raster(3, 2))
            return
        for call in (lambda: model.network(xf, None, other), lambda: model.cached_stepper(x, None, other)):
            with pytest.raises(ConfigError, match=f"model '{name}' generates in .* only: expected no order or its own"):
                call()


def test_completion_with_one_order_per_image_groups_the_images_that_share_one():
    model = tiny_model("lmconv", (1, 2, 3), 2).eval()
    x = torch.zeros(3, 1, 2, 3, dtype=torch.long)
    known = torch.zeros_like(x, dtype=torch.bool)
    a, b = Order.raster(2, 3), Order(torch.tensor([5, 4, 3, 2, 1, 0]), 2, 3)
    g = lambda: torch.Generator().manual_seed(0)
    mixed = sampling.complete(model, x, known, generator=g(), order=[a, b, a])
    assert sampling.images_by_order([a, b, a], 3) == {a: [0, 2], b: [1]}
    same = sampling.complete(model, x, known, generator=g(), order=a)
    assert torch.equal(mixed[[0, 2]], same[[0, 2]])                    # an image's uniforms whatever shares its order
    with pytest.raises(ConfigError, match="expected one Order for the batch or one per image \\(3\\), got 2"):
        sampling.complete(model, x, known, generator=g(), order=[a, b])
    with pytest.raises(ConfigError, match="when streaming pixels"):
        sampling.complete(model, x, known, generator=g(), order=[a, b, a], on_pixel=lambda h, w, v: None)

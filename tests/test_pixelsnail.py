"""PixelSNAIL's own parts: attention that reaches the whole past in one layer, queries that keep the colour order,
the key/value cache, and the exact arithmetic's attention. Everything a family owes (enumeration, sampling,
causality, cached equal to naive, codec) is in the generated tests, which include it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import pixelcnn
from exact import randomise, tiny_model
from pixelcnn.coding import exact
from pixelcnn.models.pixelsnail.network import POSITION_FEATURES, causal_attention, position_features, triangle
from pixelcnn.receptive_field import receptive_field


def test_one_attention_layer_sees_the_whole_past_where_its_convolutions_see_four_pixels():
    shape, hp = (1, 7, 6), {"residual_blocks": 1, "first_kernel": 3, "kernel_size": 1}
    field = receptive_field(tiny_model("pixelsnail", shape, 4, layers=1, **hp), (6, 2))
    assert field.counts()["unseen"] == 0 and field.counts()["seen"] == 6 * 6 + 2
    local = receptive_field(tiny_model("pixelsnail", shape, 4, layers=0, **hp), (6, 2))
    assert local.counts()["seen"] == 4                                       # the 3x3 mask-A window's past only


def test_the_first_pixel_attends_to_the_zero_slot_alone():
    """Shifted keys: position 0 sees one slot, of zeros (no empty softmax), position p the zero slot and 0..p-1."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    out = causal_attention(q, k, v, 0.5)
    assert torch.equal(out[:, :, 0], torch.zeros_like(out[:, :, 0]))
    for p in range(1, 5):
        keys = torch.cat([torch.zeros_like(k[:, :, :1]), k[:, :, :p]], 2)
        values = torch.cat([torch.zeros_like(v[:, :, :1]), v[:, :, :p]], 2)
        weights = torch.softmax(q[:, :, p : p + 1] @ keys.transpose(-1, -2) * 0.5, -1)
        torch.testing.assert_close(out[:, :, p : p + 1], weights @ values, rtol=0, atol=1e-14)


def test_a_queries_colour_group_reads_only_the_features_its_channel_may_see():
    """Moving one colour group's features moves the attention output of that group and later ones only."""
    model = tiny_model("pixelsnail", (3, 2, 2), 4, hidden=6, heads=2, head_channels=2)
    attention = next(m for m in model.layers if hasattr(m, "query"))
    x, image = torch.randn(1, 6, 2, 2, dtype=torch.float64), torch.randn(1, 3, 2, 2, dtype=torch.float64)
    base = attention(x, image)
    for group in range(3):
        moved = x.clone()
        moved[:, 2 * group : 2 * group + 2, 1, 1] += 1.0                     # the last pixel's features of one group
        changed = (attention(moved, image) - base)[0, :, 1, 1].abs().view(3, 2).sum(1) > 0
        assert changed.tolist() == [g >= group for g in range(3)]


def test_position_features_are_triangle_waves_in_ieee_arithmetic():
    features = position_features(3, 5)
    assert features.shape == (1, POSITION_FEATURES, 3, 5) and features.abs().max() <= 1
    assert [triangle(t) for t in (0.0, 0.5, 1.0, 1.5, 2.0, 2.25)] == [1.0, 0.0, -1.0, 0.0, 1.0, 0.5]
    rows, cols = features[0, : POSITION_FEATURES // 2], features[0, POSITION_FEATURES // 2 :]
    assert (rows[:, :, :1] == rows).all() and (cols[:, :1] == cols).all()   # a row's features vary down only
    assert len({tuple(features[0, :, h, w].tolist()) for h in range(3) for w in range(5)}) == 15


@pytest.mark.parametrize("causal", [True, False])
def test_exact_attention_is_close_to_floats_and_deterministic(causal):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = None if causal else torch.rand(6, 6, generator=g) < 0.6
    if mask is not None:
        mask[:, 0] = True
    with exact.ExactArithmetic():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=0.3)
        again = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=0.3)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=0.3)
    assert torch.equal(out, again)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_exact_attention_refuses_a_query_with_nothing_to_attend_to():
    q = torch.randn(1, 1, 2, 4, dtype=torch.float64)
    mask = torch.tensor([[True, False], [False, False]])
    with pytest.raises(exact.UnsupportedOperation, match="no key"), exact.ExactArithmetic():
        F.scaled_dot_product_attention(q, q, q, attn_mask=mask)


def test_the_stepper_holds_the_keys_and_values_of_the_past_in_their_slots():
    model = randomise(pixelcnn.create("pixelsnail", image_shape=(1, 3, 4), levels=4, hidden=4, layers=1,
                                      residual_blocks=0, head_channels=2, output_hidden=0).double(), 0).eval()
    x = torch.randint(0, 4, (2, 1, 3, 4), generator=torch.Generator().manual_seed(0))
    stepper = model.cached_stepper(torch.zeros_like(x), None)
    for p in range(12):
        h, w = divmod(p, 4)
        stepper.log_probs(0, h, w)
        stepper.set(0, h, w, x[:, 0, h, w])
    attention = model.layers[0]
    image = model.preprocess(x)
    features = model.input(image)                                            # the attention layer's input
    keys = attention.split(attention.key(features) + attention.key_image(image) + attention.key_position(attention.positions))
    cache = stepper.layers[0]
    assert torch.equal(cache.keys[:, :, 0], torch.zeros_like(cache.keys[:, :, 0]))
    # slots 1..11: pixels 0..10, whose values the following pixel added; the last pixel's are read by no pixel
    torch.testing.assert_close(cache.keys[:, :, 1:12], keys[:, :, :11], rtol=0, atol=1e-12)

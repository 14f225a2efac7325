"""The primitives with hand-written fast paths compute what their plain definitions compute, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from pixelcnn.models import layers
from pixelcnn.models.replaceable import never, replaced
from pixelcnn.models.layers import SMALL_MAP, Conv1x1, add_shifted_down, conv2d, gate, map_tanh, shift_down

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def plain_gate(x: torch.Tensor, dim: int) -> torch.Tensor:
    a, b = x.chunk(2, dim=dim)
    return torch.tanh(a) * torch.sigmoid(b)


def map_of(shape, layout, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(shape, generator=g, dtype=torch.float64)).contiguous(memory_format=LAYOUTS[layout])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 6, 3, 5), (1, 2, 1, 1), (3, 10, 4, 2)])
@pytest.mark.parametrize("small_map", [0, SMALL_MAP])                    # 0: tanh in its sigmoid form at every size
def test_gate_gradient_matches_finite_differences(layout, shape, small_map, monkeypatch):
    monkeypatch.setattr(layers, "SMALL_MAP", small_map)
    x = map_of(shape, layout).requires_grad_()
    assert torch.autograd.gradcheck(gate, (x,))
    g = map_of((shape[0], shape[1] // 2, *shape[2:]), layout, seed=1)
    (ours,) = torch.autograd.grad(gate(x), x, g)
    (plain,) = torch.autograd.grad(plain_gate(x, 1), x, g)
    torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dim", [1, -1])
@pytest.mark.parametrize("small_map", [0, SMALL_MAP])                    # 0: the sigmoid form at every size
def test_gate_that_overwrites_its_input_gives_the_plain_gate(layout, dim, small_map, monkeypatch):
    monkeypatch.setattr(layers, "SMALL_MAP", small_map)
    x = map_of((2, 8, 3, 8), layout)
    expected = plain_gate(x, dim)
    with torch.no_grad():
        out = gate(x.clone(memory_format=torch.preserve_format), dim, overwrite=True)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_gate_keeps_its_input_unless_told_and_outside_autograd():
    x = map_of((2, 4, 3, 3), "channels_last")
    kept = x.clone()
    gate(x, 1)                                                      # no overwrite asked
    with torch.no_grad():
        gate(x, -1)
    x.requires_grad_()
    gate(x, 1, overwrite=True).sum().backward()                     # autograd: never in place
    assert torch.equal(x.detach(), kept)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 3), (2, 1, 2, 1)])
def test_add_shifted_down_is_the_shifted_sum_with_its_gradient(layout, shape):
    out, y = map_of(shape, layout), map_of(shape, layout, seed=1)
    fill = torch.randn(shape[1], dtype=torch.float64)
    expected = out + shift_down(y)
    expected[:, :, 0] += fill[:, None]
    torch.testing.assert_close(add_shifted_down(out.clone(), y, fill), expected, rtol=1e-12, atol=1e-12)

    def fresh(o, y, f):                                             # it writes into its first argument
        return add_shifted_down(o.clone(), y, f)

    args = (out.requires_grad_(), y.requires_grad_(), fill.requires_grad_())
    assert torch.autograd.gradcheck(fresh, args)


def test_a_one_by_one_convolution_commutes_with_the_shift_as_add_shifted_down_assumes():
    x = map_of((2, 3, 4, 5), "channels_last")
    w, b = torch.randn(6, 3, 1, 1, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    base = map_of((2, 6, 4, 5), "channels_last", seed=2)
    torch.testing.assert_close(add_shifted_down(base.clone(), F.conv2d(x, w, b), b),
                               base + F.conv2d(shift_down(x), w, b), rtol=1e-12, atol=1e-12)


EDGES = [0.0, -0.0, 1e-30, -1e-8, 1e-3, 0.5, -3.0, 9.0, 20.0, -40.0, 1e30, -1e30, float("inf"), float("-inf")]


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-15), (torch.float32, 3e-7)])
def test_map_tanh_is_tanh_to_rounding_at_every_scale(dtype, atol):
    x = torch.cat([torch.tensor(EDGES, dtype=dtype), 6 * torch.randn(SMALL_MAP, dtype=dtype)])   # the fast path
    out = map_tanh(x)
    torch.testing.assert_close(out, torch.tanh(x), rtol=0, atol=atol)
    assert out.abs().max() <= 1 and torch.isnan(map_tanh(torch.tensor([float("nan")], dtype=dtype))).all()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("small_map", [0, SMALL_MAP])                    # 0: the sigmoid form at every size
def test_map_tanh_gradient_is_tanhs(layout, small_map, monkeypatch):
    monkeypatch.setattr(layers, "SMALL_MAP", small_map)
    x = map_of((2, 3, 4, 5), layout).requires_grad_()
    assert torch.autograd.gradcheck(map_tanh, (x,))
    g = map_of(tuple(x.shape), layout, seed=1)
    torch.testing.assert_close(torch.autograd.grad(map_tanh(x), x, g)[0], torch.autograd.grad(torch.tanh(x), x, g)[0],
                               rtol=1e-12, atol=1e-12)


CONV_CASES = [((2, 3, 5, 4), (6, 3, 1, 1), (0, 0), (1, 1)), ((1, 4, 6, 7), (5, 4, 2, 3), (1, 1), (1, 1)),
              ((3, 2, 5, 5), (4, 2, 3, 3), (2, 2), (2, 2)), ((2, 1, 3, 8), (2, 1, 1, 2), (0, 1), (1, 3))]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize("wants", [(True, True, True), (False, True, True), (True, False, False), (False, False, True)])
def test_conv2d_with_its_own_bias_gradient_is_f_conv2d(layout, case, wants):
    xs, ws, padding, dilation = CONV_CASES[case]
    x, w = map_of(xs, layout), map_of(ws, layout, seed=1)
    b = torch.randn(ws[0], dtype=torch.float64)
    for t, wanted in zip((x, w, b), wants):
        t.requires_grad_(wanted)
    ours = conv2d(x, w, b, padding, dilation)
    plain = F.conv2d(x, w, b, padding=padding, dilation=dilation)
    torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)
    g = map_of(tuple(plain.shape), layout, seed=2)
    leaves = [t for t in (x, w, b) if t.requires_grad]
    for a, e in zip(torch.autograd.grad(ours, leaves, g), torch.autograd.grad(plain, leaves, g)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: conv2d(*t, padding, dilation), (x, w, b))


def test_conv1x1_is_a_plain_one_by_one_convolution():
    torch.manual_seed(0)
    conv = Conv1x1(3, 5).double()
    x = map_of((2, 3, 4, 5), "channels_last").requires_grad_()
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias), rtol=1e-12, atol=1e-12)
    conv(x).square().sum().backward()
    ours = [t.grad.clone() for t in (x, conv.weight, conv.bias)]
    for t in (x, conv.weight, conv.bias):
        t.grad = None
    F.conv2d(x, conv.weight, conv.bias).square().sum().backward()
    for a, t in zip(ours, (x, conv.weight, conv.bias)):
        torch.testing.assert_close(a, t.grad, rtol=1e-12, atol=1e-12)


def test_with_the_sigmoid_form_replaced_whole_maps_take_torch_tanh_bit_for_bit_and_outside_the_fast_form():
    x = map_of((4, 8, 32, 16), "channels_last").float()              # large enough for the fast path
    with replaced({layers.tanh_takes_sigmoid_form: never}):
        assert torch.equal(map_tanh(x), torch.tanh(x))
        with torch.no_grad():
            plain = x.clone(memory_format=torch.preserve_format)
            plain[:, :4].tanh_()
            assert torch.equal(gate(x.clone(memory_format=torch.preserve_format), overwrite=True), F.glu(plain, 1))
    assert not torch.equal(map_tanh(x), torch.tanh(x))                # the sigmoid form differs in the last bits
    torch.testing.assert_close(map_tanh(x), torch.tanh(x), rtol=0, atol=3e-7)


def test_a_replacement_holds_inside_its_scope_only_and_only_replaceable_functions_are_taken():
    x = torch.zeros(SMALL_MAP)
    assert layers.tanh_takes_sigmoid_form(x)
    with replaced({layers.tanh_takes_sigmoid_form: never}):
        assert not layers.tanh_takes_sigmoid_form(x)
        with replaced({}):
            assert not layers.tanh_takes_sigmoid_form(x)                 # an inner scope keeps the outer's
    assert layers.tanh_takes_sigmoid_form(x)
    with pytest.raises(TypeError, match="expected @replaceable functions"):
        with replaced({torch.tanh: never}):
            pass

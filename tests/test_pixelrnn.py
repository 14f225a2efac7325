"""PixelRNN (Row LSTM, Diagonal BiLSTM): receptive fields, skewing, configs.

Normalisation, causality and faithful sampling at the defaults are covered for every
registered model by test_generated.py; these tests pin down what is specific to the family.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import pixelcnn
from conftest import TINY_FLAGS
from exact import dependency_violations, input_gradient, randomise, tiny_model
from pixelcnn.cli import main
from pixelcnn.errors import ConfigError
from pixelcnn.models.pixelrnn.cached import PixelRNNStepper
from pixelcnn.models.pixelrnn.recurrent import LSTMGates, skew_columns, unskew_columns

NAMES = ["row_lstm", "diagonal_bilstm"]
RNN_HP = {"hidden": 8, "layers": 2, "output_hidden": 8}


def float_model(name, shape, levels, seed=0, **hp):
    """A small float32 model, the same on every run."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = pixelcnn.create(name, image_shape=shape, levels=levels, **{**RNN_HP, **hp})
    return randomise(model, seed).eval()


# ----- skewing ------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width", [(1, 1), (1, 5), (5, 1), (3, 4), (4, 3), (6, 6)])
def test_skew_moves_row_i_right_by_i_so_diagonals_become_columns_and_unskew_inverts_it(height, width):
    x = torch.arange(height * width * 2 * 3).view(height, width, 2, 3).float() + 1      # batch last, no zeros
    s = skew_columns(x)
    assert s.shape == (height + width - 1, height, 2, 3)
    for d in range(height + width - 1):
        for i in range(height):
            expected = x[i, d - i] if 0 <= d - i < width else torch.zeros(2, 3)
            assert torch.equal(s[d, i], expected), (d, i)
    assert torch.equal(unskew_columns(s, width), x)


# ----- receptive fields ---------------------------------------------------------------------


def earlier(h, w, shape):
    return {(h2, w2) for h2 in range(shape[1]) for w2 in range(shape[2]) if (h2, w2) < (h, w)}


def field(model, h, w):
    grad = input_gradient(model, h, w)[0]
    return {(h2, w2) for h2, w2 in (grad > 0).nonzero().tolist()}


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("pixel", [(0, 4), (3, 0), (4, 6), (2, 3)])
def test_diagonal_bilstm_sees_every_earlier_pixel_and_nothing_else(layers, pixel):
    shape = (1, 5, 7)
    model = tiny_model("diagonal_bilstm", shape, 4, layers=layers, hidden=8, output_hidden=8, first_kernel=3)
    assert field(model, *pixel) == earlier(*pixel, shape)


def test_without_the_pixel_input_the_papers_diagonal_bilstm_misses_the_end_of_the_row_above():
    """Why the first layer's right-to-left gates read the image (models/pixelrnn.py, "One addition")."""
    shape = (1, 5, 7)
    model = tiny_model("diagonal_bilstm", shape, 4, layers=2, hidden=8, output_hidden=8, first_kernel=3)
    with torch.no_grad():
        model.layers[0].pixel_to_state.weight.zero_()
    assert field(model, 3, 0) == earlier(3, 0, shape) - {(2, 6)}
    assert field(model, 3, 5) == earlier(3, 5, shape)         # within first_kernel // 2 of the edge


def row_lstm_field(shape, h, w, first_kernel, row_kernel, layers):
    """The Row LSTM's documented triangular receptive field (module docstring of models/pixelrnn.py)."""
    f, s, n = first_kernel // 2, row_kernel // 2, layers
    out = set()
    for h2 in range(shape[1]):
        for w2 in range(shape[2]):
            d, dw = h - h2, w2 - w
            if d == 0:
                inside = -(n * s + f) <= dw <= -1
            else:
                inside = d > 0 and -(s * d + n * s + f) <= dw <= max(s * (d - 1) + f, s * d - 1)
            if inside:
                out.add((h2, w2))
    return out


@pytest.mark.parametrize("first_kernel,row_kernel,layers", [(3, 3, 1), (3, 3, 2), (5, 3, 1), (3, 5, 1), (7, 3, 2)])
def test_row_lstm_field_is_the_documented_triangle(first_kernel, row_kernel, layers):
    shape = (1, 7, 16)
    model = tiny_model("row_lstm", shape, 4, layers=layers, hidden=8, output_hidden=8,
                       first_kernel=first_kernel, row_kernel=row_kernel)
    for pixel in [(6, 7), (5, 14), (6, 1)]:
        expected = row_lstm_field(shape, *pixel, first_kernel, row_kernel, layers)
        assert expected < earlier(*pixel, shape)              # a triangle, not the whole past
        assert field(model, *pixel) == expected, pixel


@pytest.mark.parametrize("name,hp", [("row_lstm", {"hidden": 14, "row_kernel": 5, "first_kernel": 3}),
                                     ("diagonal_bilstm", {"hidden": 14, "first_kernel": 5})])
def test_colour_groups_stay_causal_when_units_do_not_divide_evenly(name, hp):
    """7 LSTM units over 3 colours (groups of 3, 2, 2): gates, cells and states keep their groups."""
    model = tiny_model(name, (3, 3, 4), 3, layers=2, output_hidden=12, **hp)
    assert dependency_violations(model) == []
    model.layers[1].input_to_state.mask.fill_(1.0)             # let every gate see every group of the pixel
    itself = r"params of channel 0 at (.*) depend on channel 0 at \1"
    assert any(re.fullmatch(itself, v) for v in dependency_violations(model))   # channel 0 now sees itself


# ----- the recurrences step once per row / diagonal -------------------------------------------


@pytest.mark.parametrize("name,steps", [("row_lstm", lambda h, w: h), ("diagonal_bilstm", lambda h, w: h + w - 1)])
def test_recurrence_steps_once_per_row_or_diagonal(name, steps):
    shape = (1, 5, 8)
    model = float_model(name, shape, 2)
    calls = []
    for layer in model.layers:
        layer.state_to_state.register_forward_hook(lambda *_: calls.append(1))
    model.log_prob(torch.zeros(3, *shape, dtype=torch.long))
    assert len(calls) == RNN_HP["layers"] * steps(5, 8)


# ----- the two paths' shared pieces ---------------------------------------------------------


def test_the_lstm_update_in_place_and_into_new_tensors_is_equation_3():
    """The caches' form (a buffer refilled at every step, results into views) and the layers' form."""
    g = torch.Generator().manual_seed(0)
    pre = 3 * torch.randn(8, 3, generator=g, dtype=torch.float64)     # [i, f, o, g] of n = 2 units, B = 3
    c_prev = torch.randn(2, 3, generator=g, dtype=torch.float64)
    i, f, o, cand = pre.chunk(4)
    c_expected = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(cand)
    expected = (torch.sigmoid(o) * torch.tanh(c_expected), c_expected)
    torch.testing.assert_close(LSTMGates(pre.clone()).update(c_prev), expected, rtol=0, atol=1e-15)
    buffer, c_out, h_out = LSTMGates.buffer(pre, 2, 3), torch.empty_like(c_prev), torch.empty_like(c_prev)
    for _ in range(2):
        buffer.value.copy_(pre)
        buffer.update(c_prev, c_out, h_out)
        torch.testing.assert_close((h_out, c_out), expected, rtol=0, atol=1e-15)
    zeros = torch.zeros(2, 3, dtype=torch.float64)
    assert all(torch.equal(t, zeros) for t in LSTMGates(torch.zeros(8, 3, dtype=torch.float64)).update(zeros))


@pytest.mark.parametrize("shape,first_kernel", [((1, 4, 5), 1), ((3, 4, 5), 3), ((3, 3, 2), 5)])
def test_the_steppers_first_layer_in_two_parts_is_the_mask_a_convolution(shape, first_kernel):
    """Its taps on the rows above (once per row) plus those on the pixel's own row (at each step), over
    the stepper's batch-last image cache: the first convolution at every pixel, bias included."""
    model = tiny_model("row_lstm", shape, 4, layers=1, hidden=6, output_hidden=0, first_kernel=first_kernel)
    x = torch.randint(0, 4, (2, *shape), generator=torch.Generator().manual_seed(0))
    first = PixelRNNStepper(model, x, None).first
    with torch.no_grad():
        expected = model.input(model.preprocess(x))                    # (B, 2h, H, W)
        for i in range(shape[1]):
            first.begin_row(i)
            for j in range(shape[2]):
                torch.testing.assert_close(first.step(j), expected[:, :, i, j].t(), rtol=0, atol=1e-12)


# ----- configuration ------------------------------------------------------------------------


def test_defaults_are_the_papers_mnist_model_and_run_on_tiny_colour_images():
    for name in NAMES:
        model = pixelcnn.create(name, image_shape=(3, 2, 2), levels=256)
        assert (model.config.layers, model.config.units) == (7, 16)
        x = torch.randint(0, 256, (2, 3, 2, 2))
        assert torch.isfinite(model.log_prob(x)).all()


@pytest.mark.parametrize("name,kwargs,message", [
    ("row_lstm", {"image_shape": (3, 4, 4), "hidden": 5},
     r"expected hidden \(each LSTM has hidden // 2 units, one per colour at least\) to be an integer >= 6, got 5"),
    ("diagonal_bilstm", {"layers": 0}, "expected layers to be an integer >= 1, got 0"),
    ("row_lstm", {"first_kernel": 4}, "expected first_kernel to be an odd integer >= 1, got 4"),
    ("row_lstm", {"row_kernel": 2}, "expected row_kernel to be an odd integer >= 1, got 2"),
    ("diagonal_bilstm", {"row_kernel": 3}, "has no field"),
    ("row_lstm", {"levels": 4, "output": "bernoulli"}, "needs levels=2"),
    ("diagonal_bilstm", {"output_hidden": -1}, "expected output_hidden to be an integer >= 0, got -1"),
])
def test_bad_configs_raise_config_error(name, kwargs, message):
    kwargs = {"image_shape": (1, 4, 4), "levels": 2, **kwargs}
    with pytest.raises(ConfigError, match=message):
        pixelcnn.create(name, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(name, tmp_path):
    model = float_model(name, (1, 3, 4), 4, num_classes=2, row_kernel=5) if name == "row_lstm" \
        else float_model(name, (1, 3, 4), 4, num_classes=2)
    model.save_pretrained(tmp_path / "m")
    loaded = pixelcnn.load(tmp_path / "m")
    x = torch.randint(0, 4, (3, 1, 3, 4))
    labels = torch.tensor([0, 1, 1])
    assert loaded.config == model.config
    assert torch.equal(loaded.log_prob(x, labels), model.log_prob(x, labels))


# ----- the command line ---------------------------------------------------------------------


BINARIZED = Path(os.environ["PIXELCNN_DATA"]) / "binarized_mnist"


@pytest.mark.slow
@pytest.mark.skipif(not BINARIZED.is_dir(), reason="binarized MNIST not found in $PIXELCNN_DATA")
@pytest.mark.parametrize("name", NAMES)
def test_cli_trains_evaluates_and_samples(name, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", name, "--dataset", "binarized_mnist", "--max-steps", "2", "--batch-size", "4",
                 "--valid-limit", "8", "--samples", "1", "--epochs", "1", *TINY_FLAGS, "--out", str(run)]) == 0
    assert main(["eval", str(run), "--split", "test", "--limit", "8"]) == 0
    assert "nats/image" in capsys.readouterr().out
    npy = tmp_path / "s.npy"
    grid = tmp_path / "g.png"
    assert main(["sample", str(run), "--n", "2", "--seed", "0", "--out", str(grid), "--npy", str(npy)]) == 0
    samples = np.load(npy)
    assert samples.shape == (2, 1, 28, 28) and set(np.unique(samples)) <= {0, 1}
    assert pixelcnn.load(run / "checkpoints" / "best").name == name

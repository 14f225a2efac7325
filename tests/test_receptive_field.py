"""What each pixel depends on (``pixelcnn.receptive_field``, ``pixelcnn receptive-field``): no family sees the
future, a PixelCNN has its blind spot, a Gated PixelCNN a window its depth bounds, a PixelRNN the whole past."""

import numpy as np
import pytest
from PIL import Image

import pixelcnn
from pixelcnn.cli import main
from pixelcnn.receptive_field import FUTURE, TARGET, UNSEEN_PAST, draw, past_of, receptive_field
from exact import tiny_model

FAMILIES = pixelcnn.available_models()


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("shape,pixel,channel", [((1, 5, 6), (3, 2), 0), ((3, 4, 3), (2, 1), 1), ((1, 4, 4), (0, 0), 0)])
def test_no_family_sees_a_later_sub_pixel(name, shape, pixel, channel):
    model = tiny_model(name, shape, 4)
    field = receptive_field(model, pixel, channel)
    counts = field.counts()
    assert counts["future_seen"] == 0 and counts["seen"] > 0 or counts["past"] == 0
    assert field.past.sum() == counts["past"] == counts["seen"] + counts["unseen"]


def test_the_past_follows_the_models_order():
    raster = tiny_model("gated_pixelcnn", (3, 2, 3), 2)
    past = past_of(raster, 1, (1, 0))                       # R, G, B inside a pixel; rows top to bottom
    assert past[:, 0].all() and past[0, 1, 0] and not past[1:, 1, 0].any() and not past[:, 1, 1:].any()
    coarse = tiny_model("multiscale", (1, 4, 4), 2)
    assert past_of(coarse, 0, (1, 1)).sum() == (coarse.default_order().indices == 5).nonzero().item()


def test_a_pixelcnn_has_a_blind_spot_up_and_to_the_right():
    """Past pixels up and to the right that it does not see although it sees others farther away."""
    model = tiny_model("pixelcnn", (1, 8, 10), 4, layers=3, first_kernel=3, kernel_size=3)
    field = receptive_field(model, (5, 3))
    seen, unseen = (field.seen & field.past)[0], (~field.seen & field.past)[0]
    reach = max(max(5 - r, abs(c - 3)) for r, c in seen.nonzero().tolist())       # the farthest pixel it sees
    blind = [(r, c) for r, c in unseen.nonzero().tolist() if max(5 - r, abs(c - 3)) < reach]
    assert blind and all(c > 3 and r < 5 for r, c in blind)


def test_a_gated_pixelcnn_sees_a_window_its_depth_bounds_and_a_pixelrnn_the_whole_past():
    gated = receptive_field(tiny_model("gated_pixelcnn", (1, 9, 9), 4, layers=2, first_kernel=3, kernel_size=3), (8, 4))
    unseen = (~gated.seen & gated.past)[0]
    rows, cols = unseen.nonzero().unbind(1)
    assert len(rows) > 0 and ((8 - rows) > 2).logical_or((cols - 4).abs() > 2).all()    # outside its reach only
    rnn = receptive_field(tiny_model("diagonal_bilstm", (1, 9, 9), 4), (8, 4))
    assert rnn.counts()["unseen"] == 0 and rnn.counts()["seen"] == 8 * 9 + 4


def test_the_picture_marks_the_pixel_the_unseen_past_and_the_future():
    field = receptive_field(tiny_model("pixelcnn", (1, 8, 10), 4, layers=1, first_kernel=3, kernel_size=3), (5, 3))
    pixels = np.asarray(draw(field, scale=5))
    assert pixels.shape == (40, 50, 3)
    at = lambda i, j: tuple(pixels[i * 5 + 2, j * 5 + 2])                 # noqa: E731  a square's centre
    assert at(5, 3) == TARGET and at(7, 9) == FUTURE and at(0, 9) == UNSEEN_PAST
    assert at(4, 3)[0] == at(4, 3)[1] == at(4, 3)[2] >= 80                   # seen: a gray level


def test_command_line_writes_the_picture_for_a_checkpoint_and_for_a_family(tmp_path, capsys):
    run = tiny_model("gated_pixelcnn", (1, 6, 7), 4).float().save_pretrained(tmp_path / "model")
    assert main(["receptive-field", str(run), "--pixel", "4,2", "-o", str(tmp_path / "a.png")]) == 0
    assert "gated_pixelcnn: channel 0 of pixel (4, 2) depends on" in capsys.readouterr().out
    assert Image.open(tmp_path / "a.png").size == (7 * 48, 6 * 48)
    assert main(["receptive-field", "diagonal_bilstm", "--image-shape", "1x5x5", "--hidden", "8", "--layers", "1",
                 "-o", str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert "pixel (2, 2) depends on 12 of the 12 sub-pixels before it; 0 earlier pixels unseen" in out

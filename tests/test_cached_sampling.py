"""The cached (incremental) sampling machinery: its layers, its contract, completion and devices.

That every family's cached path gives the naive path's probabilities and images over its declared
branches is generated (test_generated.py); these tests pin down the pieces and the loop around them.
"""

import gc
import re

import pytest
import torch

import pixelcnn
from exact import randomise, tiny_model
from generated import CACHED_FAMILIES
from pixelcnn.models.layers import concat_elu, horizontal_conv, raster_conv, vertical_conv
from pixelcnn.models.pixelcnn_pp.shifted import (DownRightShiftedConv2d, DownRightShiftedConvTranspose2d, DownShiftedConv2d,
                              DownShiftedConvTranspose2d)
from pixelcnn.models.incremental import CachedConv, ConvTaps, FeatureMap, Pad
from pixelcnn.models.incremental import CachedConvTranspose, TransposedTaps
from pixelcnn.sampling import NaiveStepper, make_stepper

STEPPER_HP = {"hidden": 8, "layers": 3, "output_hidden": 8, "first_kernel": 5, "kernel_size": 3, "filters": 8}
LEVELS = 5


def small_hp(name: str, **extra) -> dict:
    fields = {f.name for f in pixelcnn.models.get(name).config_class.hyperparameters()}
    return {k: v for k, v in {**STEPPER_HP, **extra}.items() if k in fields}


CACHED = sorted(CACHED_FAMILIES)


def make(name, shape, num_classes=None, seed=0, dtype=torch.float64, **extra):
    model = tiny_model(name, shape, LEVELS, seed=seed, num_classes=num_classes, **small_hp(name, **extra))
    return model.to(dtype)


def some_labels(num_classes, n, seed=0):
    if num_classes is None:
        return None
    return torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))


def drive(model, x, labels, seed=0, cond_image=None):
    """Run the naive and cached steppers side by side on the same values: max |p_naive - p_cached|."""
    cond = model.condition(labels, cond_image, x.shape[0])
    naive = NaiveStepper(model, x, cond, model.default_order())
    cached = model.cached_stepper(x, cond)
    assert cached is not None and not isinstance(cached, NaiveStepper)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for h, w in cached.order:                                               # the family's own order
        for c in range(model.image_shape[0]):
            p_naive, p_cached = naive.log_probs(c, h, w).exp(), cached.log_probs(c, h, w).exp()
            worst = max(worst, (p_naive - p_cached).abs().max().item())
            values = torch.multinomial(p_naive.double(), 1, generator=g).squeeze(1)
            naive.set(c, h, w, values)
            cached.set(c, h, w, values)
    return worst


@pytest.mark.parametrize("name", CACHED)
@pytest.mark.parametrize("shape", [(3, 4, 5)])
def test_float32_probabilities_match_naive(name, shape):
    model = make(name, shape, 3, seed=4, dtype=torch.float32)
    x = torch.zeros((3, *shape), dtype=torch.long)
    assert drive(model, x, torch.tensor([0, 1, 2]), seed=5) < 1e-4


@pytest.mark.parametrize("name", CACHED)
@pytest.mark.parametrize("shape,num_classes", [((1, 5, 7), None), ((3, 4, 5), 3)])
def test_complete_keeps_known_pixels_and_equals_naive(name, shape, num_classes):
    model = make(name, shape, num_classes, seed=8)
    g = torch.Generator().manual_seed(9)
    x = torch.randint(0, LEVELS, (2, *shape), generator=g)
    known = torch.rand((2, *shape), generator=g) < 0.5
    labels = some_labels(num_classes, 2, 9)
    out = {method: model.complete(x, known, n=3, labels=labels, method=method,
                                  generator=torch.Generator().manual_seed(10)) for method in ("naive", "cached")}
    assert torch.equal(out["naive"], out["cached"])
    kept = known.unsqueeze(1).expand_as(out["cached"])
    assert torch.equal(out["cached"][kept], x.unsqueeze(1).expand_as(out["cached"])[kept])


@pytest.mark.parametrize("name", CACHED)
def test_cached_sampling_never_runs_the_whole_network(name):
    model = make(name, (3, 4, 5), seed=11)

    def refuse(*args):
        raise AssertionError("the cached path ran the full network")

    model.network = refuse
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 3, 4, 5)
    with pytest.raises(AssertionError, match="full network"):
        model.sample(2, method="naive")


@pytest.mark.parametrize("name", CACHED)
def test_auto_picks_the_cached_stepper(name):
    model = make(name, (1, 3, 3))
    x = torch.zeros((2, 1, 3, 3), dtype=torch.long)
    assert type(make_stepper(model, x, None, "auto")) is type(model.cached_stepper(x, None))
    assert not isinstance(make_stepper(model, x, None, "auto"), NaiveStepper)
    assert isinstance(make_stepper(model, x, None, "naive"), NaiveStepper)


def test_cached_method_without_a_cached_path_says_so():
    """A family that does not override ``cached_stepper`` declares ``cached`` False and samples naively."""
    class Uncached(pixelcnn.models.get("pixelcnn")):
        cached_stepper = pixelcnn.AutoregressiveModel.cached_stepper

    model = Uncached(make("pixelcnn", (1, 3, 3)).config)
    assert not Uncached.cached and pixelcnn.models.get("pixelcnn").cached
    with pytest.raises(ValueError, match="no cached sampling path.*naive"):
        model.sample(1, method="cached")
    assert model.sample(1, method="auto").shape == (1, 1, 3, 3)


@pytest.mark.parametrize("name", CACHED)
@pytest.mark.parametrize("shape", [(1, 4, 5), (3, 3, 4)])
def test_values_set_without_asking_their_probabilities_still_count(name, shape):
    """A caller may set known sub-pixels without asking for their distribution (a coder copying
    known values): later probabilities must still see them."""
    model = make(name, shape, seed=13)
    x = torch.randint(0, LEVELS, (2, *shape), generator=torch.Generator().manual_seed(14))
    naive = NaiveStepper(model, x, None, model.default_order())
    cached = model.cached_stepper(torch.zeros_like(x), None)
    for h, w in cached.order:
        for c in range(shape[0]):
            if (h + w + c) % 3 == 0:
                torch.testing.assert_close(cached.log_probs(c, h, w), naive.log_probs(c, h, w), rtol=0, atol=1e-10)
            naive.set(c, h, w, x[:, c, h, w])
            cached.set(c, h, w, x[:, c, h, w])


@pytest.mark.parametrize("name", CACHED)
def test_cached_stepper_refuses_pixels_out_of_order(name):
    """One contract for every family: the pixels in the stepper's order, each once; anything else is refused."""
    model = make(name, (1, 3, 3))
    stepper = model.cached_stepper(torch.zeros((1, 1, 3, 3), dtype=torch.long), None)
    first, second, third, fourth = stepper.order[:4]
    one = torch.ones(1, dtype=torch.long)
    stepper.log_probs(0, *first)
    with pytest.raises(ValueError, match=re.escape(f"in its order, each once: expected pixel {first}, "
                                                   f"got channel 0 of pixel {second}")):
        stepper.log_probs(0, *second)
    for pixel in (first, second, third):
        stepper.set(0, *pixel, one)
    with pytest.raises(ValueError, match=re.escape(f"expected pixel {fourth}, got channel 0 of pixel {third}")):
        stepper.set(0, *third, torch.zeros(1, dtype=torch.long))   # an earlier value changed: refused, not recomputed
    for pixel in stepper.order[3:]:
        stepper.set(0, *pixel, one)
    with pytest.raises(ValueError, match="expected no more pixels"):
        stepper.log_probs(0, *first)


def masked_convs():
    """Convolutions of every shape the masked families use, with dilation and a strided plain one."""
    g = torch.Generator().manual_seed(0)
    convs = [raster_conv(6, 4, 5, "A", 3), raster_conv(4, 6, 3, "B", 2, dilation=2),
             vertical_conv(4, 6, 3, dilation=3), vertical_conv(4, 6, 5, shaped=False),
             horizontal_conv(3, 6, 5, "A", 3, dilation=2), raster_conv(1, 4, 1, "A", 1),
             torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.nn.Conv2d(4, 6, (2, 3), stride=(2, 1), dilation=2)]
    return [randomise(conv.double(), seed=i) for i, conv in enumerate(convs)], g


def test_cached_conv_equals_the_module_at_every_position_and_row():
    convs, g = masked_convs()
    for conv in convs:
        x = torch.randn(2, conv.in_channels, 7, 9, generator=g, dtype=torch.float64)
        expected = conv(x)                                                       # (B, out, Ho, Wo)
        taps = ConvTaps.of(conv)
        source = FeatureMap(2, 7, 9, conv.in_channels, taps.reach(7, 9), x)
        source.interior().copy_(x.permute(0, 2, 3, 1))
        cached = CachedConv(taps, source)
        assert expected.shape[-2:] == taps.output_size(7, 9)
        for h in range(expected.shape[2]):
            torch.testing.assert_close(cached.row(h), expected[:, :, h].permute(2, 0, 1), rtol=0, atol=1e-12)
            for w in range(expected.shape[3]):
                torch.testing.assert_close(cached.at(h, w), expected[:, :, h, w], rtol=0, atol=1e-12)


def test_conv_taps_keep_only_the_rectangle_the_mask_allows():
    taps = ConvTaps.of(raster_conv(2, 4, 5, "B", 1))         # rows above and the centre row: 3 x 5
    assert (taps.rows, taps.cols, taps.dy, taps.dx) == (3, 5, -2, -2)
    assert taps.reach(6, 6) == Pad(top=2, bottom=0, left=2, right=2)
    first = ConvTaps.of(horizontal_conv(1, 4, 7, "A", 1, dilation=1))   # mask A, one colour: left of centre only
    assert (first.rows, first.cols, first.dx) == (1, 3, -3)
    assert ConvTaps.of(raster_conv(1, 4, 1, "A", 1)).size == 0        # nothing to see: the output is the bias


def test_feature_map_padding_too_small_is_refused():
    taps = ConvTaps.of(raster_conv(2, 4, 3, "B", 1))
    source = FeatureMap(1, 4, 4, 2, Pad(), torch.zeros(1))
    with pytest.raises(ValueError, match="padding"):
        CachedConv(taps, source)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", CACHED)
def test_cached_sampling_on_cuda_equals_naive(name):
    model = make(name, (3, 4, 5), 3, seed=12).cuda()
    labels = torch.tensor([0, 2, 1], device="cuda")
    images = {method: model.sample(3, labels=labels, method=method,
                                   generator=torch.Generator(device="cuda").manual_seed(0))
              for method in ("naive", "cached")}
    assert images["cached"].device.type == "cuda"
    assert torch.equal(images["naive"], images["cached"])


# ----- PixelCNN++: its U-Net's stages, resampling and shortcuts (pixelcnn_pp_cached.py) ---------------

@pytest.mark.slow
def test_pixelcnn_pp_float32_probabilities_match_naive_for_a_wider_model():
    model = make("pixelcnn_pp", (3, 8, 8), 3, seed=26, dtype=torch.float32, stages=3, resnet_blocks=2, filters=16,
                 mixtures=5)
    x = torch.zeros((3, 3, 8, 8), dtype=torch.long)
    assert drive(model, x, torch.tensor([0, 1, 2]), seed=27) < 1e-4


def test_pixelcnn_pp_coarse_maps_update_once_at_the_coarser_rate():
    """Stage s's u row I is computed once, when image row 2^s I starts; its ul position (I, J) once,
    at pixel (2^s I, 2^s J): once the last fine position its window reads is final, not before."""
    height, width = 7, 6
    model = make("pixelcnn_pp", (1, height, width), seed=31, stages=3)
    stepper = model.cached_stepper(torch.zeros((1, 1, height, width), dtype=torch.long), None)
    rows, positions = [], []
    keep = stepper.keep                                  # called once per stage of the up pass evaluated at a pixel

    def spy(s, u, ul, down=False):
        if not down:
            i, j = stepper.stage_position(s)
            if u is not None:                            # the u stream has a value where the stage's row starts
                rows.append((s, i, stepper.position))
            positions.append((s, i, j, stepper.position))
        keep(s, u, ul, down)

    stepper.keep = spy
    for h in range(height):
        for w in range(width):
            stepper.set(0, h, w, torch.zeros(1, dtype=torch.long))
    sizes = [(7, 6), (4, 3), (2, 2)]
    assert rows == [(s, h >> s, h * width) for h in range(height) for s in range(3) if h % (1 << s) == 0]
    assert positions == [(s, h >> s, w >> s, h * width + w) for h in range(height) for w in range(width)
                         for s in range(3) if h % (1 << s) == 0 and w % (1 << s) == 0]
    assert sorted((s, i) for s, i, _ in rows) == [(s, i) for s, (hs, _) in enumerate(sizes) for i in range(hs)]
    assert sorted((s, i, j) for s, i, j, _ in positions) == [(s, i, j) for s, (hs, ws) in enumerate(sizes)
                                                            for i in range(hs) for j in range(ws)]


def test_transposed_conv_gather_equals_the_module_at_every_position_and_row():
    """Upsampling as a gather: PixelCNN++'s cropped layers on odd and even sizes, and plain transposed
    convolutions with padding, output padding, kernels larger than the stride and a 1x1 kernel."""
    g = torch.Generator().manual_seed(0)
    cases = [(DownShiftedConvTranspose2d(4, 6, (2, 3), 2), [(5, 7), (6, 8), (4, 1), (1, 2)]),
             (DownRightShiftedConvTranspose2d(4, 6, (2, 2), 2), [(5, 7), (6, 8)]),
             (DownShiftedConvTranspose2d(4, 6, (3, 5), 2), [(5, 7), (6, 8)]),
             (torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), [None]),
             (torch.nn.ConvTranspose2d(4, 6, (4, 3), stride=(3, 2), padding=(1, 0)), [None]),
             (torch.nn.ConvTranspose2d(4, 6, 1, stride=2), [None])]
    for i, (conv, sizes) in enumerate(cases):
        conv = randomise(conv.double(), seed=i)
        for size in sizes:
            hc, wc = (3, 4) if size is None else ((size[0] + 1) // 2, (size[1] + 1) // 2)
            x = torch.randn(2, 4, hc, wc, generator=g, dtype=torch.float64)
            expected = conv(x) if size is None else conv(x, size)                # (B, out, H, W)
            taps = TransposedTaps.of(conv, (hc, wc), size)
            assert tuple(expected.shape[-2:]) == taps.out_size
            source = FeatureMap(2, hc, wc, 4, taps.reach(hc, wc), x)
            source.interior().copy_(x.permute(0, 2, 3, 1))
            cached = CachedConvTranspose(taps, source)
            for h in range(expected.shape[2]):
                torch.testing.assert_close(cached.row(h), expected[:, :, h].permute(2, 0, 1), rtol=0, atol=1e-12)
                for w in range(expected.shape[3]):
                    torch.testing.assert_close(cached.at(h, w), expected[:, :, h, w], rtol=0, atol=1e-12)


def test_shifted_convs_are_read_with_their_own_padding():
    g = torch.Generator().manual_seed(1)
    convs = [DownShiftedConv2d(4, 6, (2, 3), stride=2), DownRightShiftedConv2d(4, 6, (2, 2), stride=2),
             DownShiftedConv2d(4, 6, (1, 3)), DownRightShiftedConv2d(4, 6, (2, 1))]
    for i, conv in enumerate(convs):
        conv = randomise(conv.double(), seed=i)
        x = torch.randn(2, 4, 7, 5, generator=g, dtype=torch.float64)
        expected = conv(x)
        taps = ConvTaps.of(conv)
        source = FeatureMap(2, 7, 5, 4, taps.reach(7, 5), x)
        source.interior().copy_(x.permute(0, 2, 3, 1))
        cached = CachedConv(taps, source)
        assert tuple(expected.shape[-2:]) == taps.output_size(7, 5)
        for h in range(expected.shape[2]):
            torch.testing.assert_close(cached.row(h), expected[:, :, h].permute(2, 0, 1), rtol=0, atol=1e-12)
            for w in range(expected.shape[3]):
                torch.testing.assert_close(cached.at(h, w), expected[:, :, h, w], rtol=0, atol=1e-12)


def test_a_ring_of_two_rows_gives_every_window_of_the_whole_map():
    """Written row by row, or position by position in raster order, a two-row ring serves each row's windows as
    the whole map does, for the readers whose windows end on the newest row (PixelCNN++'s kernels and strides)."""
    g = torch.Generator().manual_seed(2)
    convs = [DownShiftedConv2d(4, 6, (2, 3)), DownRightShiftedConv2d(4, 6, (2, 2)),
             DownShiftedConv2d(4, 6, (2, 3), stride=2), DownRightShiftedConv2d(4, 6, (2, 2), stride=2)]
    for i, conv in enumerate(convs):
        conv = randomise(conv.double(), seed=i)
        for height, width, by_position in ((7, 5, False), (6, 3, True), (1, 4, True)):
            x = torch.randn(2, 4, height, width, generator=g, dtype=torch.float64)
            expected, (sh, _) = conv(x), conv.stride
            taps = ConvTaps.of(conv)
            ring = FeatureMap(2, height, width, 4, taps.reach(height, width), x, rows=2)
            cached = CachedConv(taps, ring)
            assert ring.buf.shape[1] == 2
            for h in range(height):
                values = x[:, :, h].permute(2, 0, 1)                            # (W, B, C)
                if by_position:
                    for w in range(width):
                        ring.at(h, w).copy_(values[w])
                else:
                    ring.write_row(h, values)
                if h % sh == 0:                                                 # output row h / sh reads rows h - 1, h
                    ho = h // sh
                    torch.testing.assert_close(cached.row(ho), expected[:, :, ho].permute(2, 0, 1), rtol=0, atol=1e-12)
            with pytest.raises(ValueError, match="not kept"):
                ring.row(height - 3)


def test_pixelcnn_pp_blocks_cache_their_values_and_read_them_through_concat_elu():
    """A block's convolution of concat_elu(v) over a ring of v itself (F channels, half of what caching concat_elu
    takes) gives the full convolution of concat_elu(v) at every row and position; a cache of any other width is
    refused; the default stepper's block caches are all F channels wide."""
    from pixelcnn.models.pixelcnn_pp.cached import ConcatEluConv, Scratch

    g = torch.Generator().manual_seed(5)
    scratch = Scratch()
    for i, conv in enumerate([DownShiftedConv2d(8, 6, (2, 3)), DownRightShiftedConv2d(8, 6, (2, 2))]):
        conv = randomise(conv.double(), seed=i)
        height, width = 5, 3
        x = torch.randn(2, 4, height, width, generator=g, dtype=torch.float64)
        expected = conv(concat_elu(x))
        taps = ConvTaps.of(conv)
        ring = FeatureMap(2, height, width, 4, taps.reach(height, width), x, rows=2)
        cached = ConcatEluConv(taps, ring, scratch)
        with pytest.raises(ValueError, match="expected a feature map of 4 channels, got 8"):
            ConcatEluConv(taps, FeatureMap(2, height, width, 8, taps.reach(height, width), x, rows=2), scratch)
        for h in range(height):                          # as the stepper writes: u a row, ul a position at a time
            for w in range(width if i else 0):
                ring.at(h, w).copy_(x[:, :, h, w])
                torch.testing.assert_close(cached.at(h, w), expected[:, :, h, w], rtol=0, atol=1e-12)
            if not i:
                ring.write_row(h, x[:, :, h].permute(2, 0, 1))
            torch.testing.assert_close(cached.row(h), expected[:, :, h].permute(2, 0, 1), rtol=0, atol=1e-12)
    model = pixelcnn.create("pixelcnn_pp", image_shape=(1, 4, 4), levels=256, filters=12, resnet_blocks=1).eval()
    stepper = model.cached_stepper(torch.zeros(2, 1, 4, 4, dtype=torch.long), None)
    blocks = [b for stage in stepper.up + stepper.down for b in stage]
    widths = {m.buf.shape[-1] for b in blocks for r in (b.u, b.ul) for m in (r.x, r.h)}
    assert blocks and widths == {12}


def cyclic_garbage(work) -> list[str]:
    """The types of this package's objects and tensors that only Python's cyclic collector would free after
    ``work()``: what a reference cycle keeps alive until that collector happens to run."""
    gc.collect()
    gc.disable()
    try:
        work()
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found, gc.garbage[:] = list(gc.garbage), []
        gc.set_debug(0)
        gc.enable()
    return sorted({type(o).__qualname__ for o in found
                   if isinstance(o, torch.Tensor) or type(o).__module__.startswith("pixelcnn")})


@pytest.mark.slow
@pytest.mark.parametrize("name", pixelcnn.available_models())
def test_nothing_is_left_for_the_cyclic_collector(name):
    """A stepper is plain data its loop holds: after sample (both methods), complete, log_prob and compress,
    every tensor goes back when the call returns, not when the cyclic collector runs."""
    shape = (3, 2, 3)
    model = tiny_model(name, shape, 4, num_classes=2).float()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (2, *shape), generator=g)
    labels = torch.tensor([0, 1])
    known = torch.rand(x.shape, generator=g) < 0.5
    known.view(2, -1)[:, 0] = False
    for method in ("auto", "naive"):
        assert cyclic_garbage(lambda: model.sample(2, labels, generator=g, method=method)) == [], method
    assert cyclic_garbage(lambda: model.complete(x, known, 2, labels, generator=g)) == []
    assert cyclic_garbage(lambda: model.log_prob(x, labels)) == []
    assert cyclic_garbage(lambda: pixelcnn.compress(model, x, labels)) == []

"""Building blocks shared by every model family.

Autoregressive order: pixels in raster order (row by row, left to right) and, inside a pixel,
colour channels in the order R, G, B. Feature maps of the masked families are split into C
channel groups (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.4):
group g carries information about colour channels <= g of the current pixel. A mask-A
connection lets output group g see input groups < g at the centre pixel, a mask-B connection
input groups <= g. Every earlier pixel is visible to every group.

Masks are applied in ``forward`` (``weight * mask``); weights are never edited in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.models.replaceable import replaceable

MASK_TYPES = ("A", "B")


def channel_groups(channels: int, colours: int) -> Tensor:
    """Colour group of each of ``channels`` feature maps: contiguous blocks, sizes differing by <= 1."""
    if channels < colours:
        raise ValueError(f"need at least {colours} feature maps for {colours} colour groups, got {channels}")
    return torch.arange(channels) * colours // channels


def centre_mask(in_groups: Tensor, out_groups: Tensor, mask_type: str) -> Tensor:
    """(out, in) 0/1 matrix of the connections allowed at the centre pixel."""
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    out_g, in_g = out_groups[:, None], in_groups[None, :]
    allowed = out_g > in_g if mask_type == "A" else out_g >= in_g
    return allowed.float()


def causal_mask(
    kernel: tuple[int, int],
    centre: tuple[int, int],
    in_groups: Tensor,
    out_groups: Tensor,
    mask_type: str,
) -> Tensor:
    """(out, in, kh, kw) mask: 1 before ``centre`` in raster order, the group rule at it, 0 after."""
    kh, kw = kernel
    ch, cw = centre
    mask = torch.zeros(len(out_groups), len(in_groups), kh, kw)
    mask[:, :, :ch, :] = 1.0
    mask[:, :, ch, :cw] = 1.0
    mask[:, :, ch, cw] = centre_mask(in_groups, out_groups, mask_type)
    return mask


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel is multiplied by a fixed 0/1 mask on every call.

    ``mask`` has the weight's shape (out, in, kh, kw). Padding is given explicitly as
    (left, right, top, bottom) so that shifted (one-sided) convolutions are expressible.
    """

    def __init__(self, in_channels: int, out_channels: int, mask: Tensor, padding: tuple[int, int, int, int],
                 dilation: int = 1, bias: bool = True):
        kh, kw = mask.shape[-2:]
        super().__init__(in_channels, out_channels, (kh, kw), padding=0, dilation=dilation, bias=bias)
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(self.weight.shape)}")
        self.register_buffer("mask", mask, persistent=False)
        self.pad = padding
        self.skip_mask = bool(mask.all())

    def masked_weight(self) -> Tensor:
        """weight * mask: the kernel every form of this layer (full or incremental) applies."""
        return self.weight if self.skip_mask else self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        weight = self.masked_weight()
        if weight.device.type == "cpu":
            # A channels-last kernel makes oneDNN compute in NHWC, about twice as fast on CPU for
            # these narrow kernels; the output is then channels-last too, and so the whole network.
            weight = channels_last(weight)
        left, right, top, bottom = self.pad
        if left == right and top == bottom:             # symmetric: the convolution pads, no copy
            return conv2d(x, weight, self.bias, padding=(top, left), dilation=self.dilation)
        return conv2d(F.pad(x, self.pad), weight, self.bias, dilation=self.dilation)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int] = (0, 0),
           dilation: tuple[int, int] = (1, 1)) -> Tensor:
    """``F.conv2d`` (stride 1); on the CPU, under autograd, with the bias gradient summed by PyTorch.

    oneDNN's backward pass reduces the bias gradient of a channels-last map far more slowly than
    a plain sum over (B, H, W) does: for a 64 -> 64 1x1 convolution of a 64 x 64 x 28 x 28 batch
    here, 7.2 ms for its weight and bias gradients against 4.8 ms for the weight gradient alone
    and 0.16 ms for the sum (benchmarks/bench_elementwise.py). The forward pass is the same
    call, bias fused. Under autocast (which casts inside the call) it is ``F.conv2d`` as it is.
    """
    if x.device.type == "cpu" and bias is not None and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu") \
            and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return _Conv2d.apply(x, weight, bias, tuple(padding), tuple(dilation))
    return F.conv2d(x, weight, bias, padding=padding, dilation=dilation)


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, padding: tuple[int, int], dilation: tuple[int, int]):
        ctx.save_for_backward(x, weight)
        ctx.geometry = padding, dilation
        return F.conv2d(x, weight, bias, padding=padding, dilation=dilation)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        padding, dilation = ctx.geometry
        wants_x, wants_w, wants_b = ctx.needs_input_grad[:3]
        grad_x, grad_w = None, None
        if wants_x or wants_w:
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], list(padding), list(dilation), False, [0, 0], 1, [wants_x, wants_w, False])
        grad_b = grad.sum((0, 2, 3)) if wants_b else None                    # (out,)
        return grad_x, grad_w, grad_b, None, None


class Conv1x1(nn.Conv2d):
    """A plain (unmasked) 1x1 convolution, run like :class:`MaskedConv2d`: channels-last on the CPU, through :func:`conv2d`."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        weight = channels_last(self.weight) if self.weight.device.type == "cpu" else self.weight
        return conv2d(x, weight, self.bias)


def channels_last(t: Tensor) -> Tensor:
    """``t`` (N, C, H, W) in channels-last memory, with a channel stride of 1 even where C is 1.

    ``contiguous(memory_format=torch.channels_last)`` leaves a one-channel tensor's strides as
    they are (both layouts describe the same memory), and oneDNN then reads a one-channel kernel
    as NCHW and returns NCHW maps, which every later layer would convert again.
    """
    if t.stride(1) == 1 and t.is_contiguous(memory_format=torch.channels_last):
        return t
    return torch.empty_like(t, memory_format=torch.channels_last).copy_(t)


def raster_conv(in_channels: int, out_channels: int, kernel_size: int, mask_type: str, colours: int,
                in_groups: Tensor | None = None, out_groups: Tensor | None = None, dilation: int = 1) -> MaskedConv2d:
    """A k x k 'same' convolution masked to the raster-scan past (PixelCNN's mask A or B)."""
    in_groups = channel_groups(in_channels, colours) if in_groups is None else in_groups
    out_groups = channel_groups(out_channels, colours) if out_groups is None else out_groups
    c = kernel_size // 2
    mask = causal_mask((kernel_size, kernel_size), (c, c), in_groups, out_groups, mask_type)
    p = dilation * c
    return MaskedConv2d(in_channels, out_channels, mask, (p, p, p, p), dilation)


def vertical_conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                  shaped: bool = True) -> MaskedConv2d:
    """Gated PixelCNN's vertical stack: output row h sees input rows <= h (every column of its window).

    ``shaped=True`` is a (k//2+1) x k convolution over input padded on top only; ``shaped=False``
    is the plain k x k convolution with the rows below the centre masked out. Both compute the
    same function (see :func:`shaped_from_full`); the shaped one does about half the work.
    """
    c = kernel_size // 2
    p = dilation * c
    rows = c + 1 if shaped else kernel_size
    mask = torch.zeros(out_channels, in_channels, rows, kernel_size)
    mask[:, :, : c + 1, :] = 1.0
    return MaskedConv2d(in_channels, out_channels, mask, (p, p, p, 0 if shaped else p), dilation)


def horizontal_conv(in_channels: int, out_channels: int, kernel_size: int, mask_type: str, colours: int,
                    in_groups: Tensor | None = None, out_groups: Tensor | None = None, dilation: int = 1,
                    shaped: bool = True) -> MaskedConv2d:
    """Gated PixelCNN's horizontal stack: output (h, w) sees row h up to column w, colours by mask type.

    ``shaped=True`` is a 1 x (k//2+1) convolution over input padded on the left only;
    ``shaped=False`` is a 1 x k convolution masked on the right.
    """
    in_groups = channel_groups(in_channels, colours) if in_groups is None else in_groups
    out_groups = channel_groups(out_channels, colours) if out_groups is None else out_groups
    c = kernel_size // 2
    p = dilation * c
    cols = c + 1 if shaped else kernel_size
    mask = causal_mask((1, cols), (0, c), in_groups, out_groups, mask_type)
    return MaskedConv2d(in_channels, out_channels, mask, (p, 0 if shaped else p, 0, 0), dilation)


def shaped_from_full(full: Tensor, shaped_shape: torch.Size) -> Tensor:
    """The weights of a shaped (top-left anchored) kernel taken from a masked full kernel."""
    return full[..., : shaped_shape[-2], : shaped_shape[-1]].clone()


class PrePaddedConv2d(nn.Conv2d):
    """An unpadded convolution of its input zero-padded by ``pad`` = (left, right, top, bottom) first: causal by
    padding alone (PixelCNN++'s shifted convolutions). The cached steppers read ``pad`` to place its windows."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int], pad: tuple[int, int, int, int],
                 stride: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride=stride)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.pad))


class CroppedConvTranspose2d(nn.ConvTranspose2d):
    """A transposed convolution whose output is cropped to ``size`` from column ``left`` (row 0): upsampling back
    to the exact size before a strided convolution. The cached steppers read ``left`` to place its phases."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int], stride: int, left: int = 0):
        super().__init__(in_channels, out_channels, kernel, stride=stride)
        self.left = left

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        h, w = size
        return super().forward(x)[:, :, :h, self.left : self.left + w]        # (B, out, H, W)


def shift_down(x: Tensor, rows: int = 1) -> Tensor:
    """Move every row down by ``rows``, filling the top with zeros: row h then holds row h - rows."""
    return F.pad(x, (0, 0, rows, 0))[:, :, : x.shape[2], :]


def shift_right(x: Tensor, cols: int = 1) -> Tensor:
    """Move every column right by ``cols``, filling the left with zeros."""
    return F.pad(x, (cols, 0, 0, 0))[:, :, :, : x.shape[3]]


def add_shifted_down(out: Tensor, y: Tensor, fill: Tensor) -> Tensor:
    """``out + shift_down(y)`` with row 0 given ``fill`` (C,), computed in place in ``out`` without a shifted copy.

    ``out`` (B, C, H, W) must be a fresh result that nothing else reads (e.g. a convolution's).
    For a 1x1 convolution ``f``, ``f(shift_down(x)) = shift_down(f(x))`` with row 0 holding f's
    bias, so ``out + f(shift_down(x))`` is ``add_shifted_down(out, f(x), f.bias)``.
    """
    return _AddShiftedDown.apply(out, y, fill)


class _AddShiftedDown(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out: Tensor, y: Tensor, fill: Tensor) -> Tensor:
        ctx.mark_dirty(out)
        out[:, :, 1:] += y[:, :, :-1]
        out[:, :, 0] += fill[:, None]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        grad_y = torch.empty_like(grad)
        grad_y[:, :, :-1] = grad[:, :, 1:]
        grad_y[:, :, -1] = 0                                # y's last row reaches nothing
        return grad, grad_y, grad[:, :, 0].sum((0, 2))


SMALL_MAP = 2**14      # below this many elements, the three more passes of map_tanh cost more than they save
def map_tanh(x: Tensor) -> Tensor:
    """tanh of a whole feature map, computed as 2 sigmoid(2x) - 1 on the CPU.

    PyTorch's CPU tanh is several times slower than its sigmoid (8.3 ms against 1.0 ms on one
    channel half of a 64 x 128 x 28 x 28 map here; this form takes 2.0 ms,
    benchmarks/bench_elementwise.py). It is within 2e-7 of tanh in float32 (3e-16 in float64),
    absolutely: near 0 the result is rounded to a multiple of 2^-24 rather than to x's own
    precision, which no network output can tell apart. Elsewhere (CUDA), and on maps too small
    for the passes to pay (``SMALL_MAP``), it is ``torch.tanh``. The gradient is tanh's,
    1 - tanh^2, from the value. Whole-map paths use it; the cached steppers, which work on one
    position or row at a time, keep ``torch.tanh`` (where its speed is irrelevant), and so does every path
    where :func:`tanh_takes_sigmoid_form` is replaced (the compressor).
    """
    if not tanh_takes_sigmoid_form(x):
        return torch.tanh(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return _MapTanh.apply(x)
    return _sigmoid_tanh_(torch.mul(x, 2.0))


@replaceable
def tanh_takes_sigmoid_form(x: Tensor) -> bool:
    """Whether tanh of ``x`` takes the sigmoid form (:func:`map_tanh`, :func:`gate`): where it pays, a CPU float map
    of at least ``SMALL_MAP`` elements."""
    return x.device.type == "cpu" and x.is_floating_point() and x.numel() >= SMALL_MAP


def _sigmoid_tanh_(x2: Tensor) -> Tensor:
    """tanh(x) from ``x2`` = 2x, in place: 2 sigmoid(2x) - 1."""
    return x2.sigmoid_().mul_(2.0).sub_(1.0)


class _MapTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        t = _sigmoid_tanh_(torch.mul(x, 2.0))
        ctx.save_for_backward(t)
        return t

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (t,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, t)                            # g (1 - t^2)


def gate(x: Tensor, dim: int = 1, overwrite: bool = False) -> Tensor:
    """Gated activation tanh(a) * sigmoid(b) of the two halves [a, b] of ``dim``: (B, 2n, ...) -> (B, n, ...).

    ``dim=-1`` is the incremental paths' channels-last layout. Whole feature maps (B, 2n, H, W)
    take tanh through :func:`map_tanh`; a position or a row
    (fewer dimensions), ``torch.tanh``.
    ``overwrite=True`` is for a caller done with ``x``: outside autograd, the gate is then
    formed in ``x``'s memory. Where :func:`map_tanh` would take the sigmoid form: the first half
    doubled, one sigmoid over the whole contiguous map, the first half turned into 2 s - 1, one
    product (2.3x faster than a tanh and a sigmoid over the channel halves of a channels-last map,
    which are not contiguous).
    """
    whole_map = x.dim() == 4 and dim in (1, -3)
    if torch.is_grad_enabled() and x.requires_grad:
        if dim == 1:
            return _Gate.apply(x)
    elif overwrite:
        n = x.shape[dim] // 2
        a = x.narrow(dim, 0, n)
        if whole_map and tanh_takes_sigmoid_form(a):
            a.mul_(2.0)
            x.sigmoid_()                                                        # [sigmoid(2a), sigmoid(b)]
            return torch.mul(a.mul_(2.0).sub_(1.0), x.narrow(dim, n, n))       # tanh(a) sigmoid(b)
        a.tanh_()
        return F.glu(x, dim=dim)
    a, b = x.chunk(2, dim=dim)
    return (map_tanh(a) if whole_map else torch.tanh(a)) * torch.sigmoid(b)


class _Gate(torch.autograd.Function):
    """:func:`gate` over the channels whose backward writes both halves of the gradient into one tensor (no concatenation)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        t, s = (map_tanh(a) if x.dim() == 4 else torch.tanh(a)), torch.sigmoid(b)
        ctx.save_for_backward(t, s)
        ctx.shape = x.shape
        ctx.layout = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        return t * s

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        t, s = ctx.saved_tensors
        out = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout)   # (B, 2n, ...)
        grad_a, grad_b = out.chunk(2, dim=1)
        torch.ops.aten.tanh_backward.grad_input(grad * s, t, grad_input=grad_a)       # g s (1 - t^2)
        torch.ops.aten.sigmoid_backward.grad_input(grad * t, s, grad_input=grad_b)    # g t s (1 - s)
        return out


def gated_residual(x: Tensor, ab: Tensor, dim: int = 1) -> Tensor:
    """PixelCNN++'s gated ResNet output x + a * sigmoid(b), for ab = [a, b] along ``dim`` (glu is a * sigmoid(b))."""
    return x + F.glu(ab, dim=dim)


def concat_elu(x: Tensor, dim: int = 1) -> Tensor:
    """ELU of [x, -x] along ``dim``, the channels (PixelCNN++): (B, n, ...) -> (B, 2n, ...)."""
    return F.elu(torch.cat([x, -x], dim=dim))


def signed_identity(features: int, like: Tensor) -> Tensor:
    """(F, 2F) [I, -I]: x @ it is [x, -x], exactly (each output is one input times +-1, plus zeros)."""
    eye = torch.eye(features, dtype=like.dtype, device=like.device)
    return torch.cat([eye, -eye], dim=1)


@dataclass
class Condition:
    """What a model is conditioned on, prepared once per batch by ``AutoregressiveModel.condition``.

    ``labels`` (B,) are class labels; ``features`` (B, F, H, W) are the conditioning network's
    features of a conditioning image (e.g. the low-resolution image of super-resolution),
    already at the output's resolution. ``output`` (B, P, H, W) is added to the distribution
    parameters the network computes: a completion model's term from the known pixels.
    """

    labels: Tensor | None = None
    features: Tensor | None = None
    output: Tensor | None = None

    def repeat_interleave(self, n: int) -> "Condition":
        rep = lambda t: None if t is None else t.repeat_interleave(n, dim=0)   # noqa: E731
        return Condition(rep(self.labels), rep(self.features), rep(self.output))

    def select(self, index: Tensor) -> "Condition":
        """The conditioning of the images at ``index`` (1-D) of the batch."""
        pick = lambda t: None if t is None else t[index]   # noqa: E731
        return Condition(pick(self.labels), pick(self.features), pick(self.output))


class ConditionBias(nn.Module):
    """A layer's bias from the conditioning (van den Oord et al. 2016b, equations 4 and 5).

    A learned vector per class (the conditional gate's V^T h for a one-hot h), and for a
    conditioning image a 1x1 convolution of its features, one bias per position (the
    location-dependent V * s(y)). Returns 0.0 for an unconditional model.
    """

    def __init__(self, config, channels: int):
        super().__init__()
        k = config.num_classes
        self.embedding = nn.Embedding(k, channels) if k else None
        if self.embedding is not None:
            nn.init.normal_(self.embedding.weight, std=0.02)
        self.spatial = nn.Conv2d(config.cond_features, channels, 1) if config.cond_shape else None

    def forward(self, cond: Condition | None, size: tuple[int, int] | None = None) -> Tensor | float:
        """The bias for a batch; ``size`` (h, w) averages the image term down to a coarser feature map."""
        out: Tensor | float = 0.0
        if cond is None:
            return out
        if self.embedding is not None and cond.labels is not None:
            out = out + self.embedding(cond.labels)[:, :, None, None]          # (B, n, 1, 1)
        if self.spatial is not None and cond.features is not None:
            features = cond.features
            if size is not None and tuple(features.shape[-2:]) != tuple(size):
                features = F.adaptive_avg_pool2d(features, size)
            out = out + self.spatial(features)                                 # (B, n, H, W)
        return out


class ConditionNetwork(nn.Module):
    """Maps a conditioning image (B, C', h, w) to features (B, F, H, W) at the output's resolution.

    Nearest-neighbour upsampling to (H, W), then two 3x3 convolutions with ReLU. It never sees
    the image being modelled, so it cannot break the autoregressive order.
    """

    def __init__(self, cond_shape: tuple[int, int, int], out_size: tuple[int, int], features: int):
        super().__init__()
        self.size = out_size
        self.net = nn.Sequential(nn.Conv2d(cond_shape[0], features, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(features, features, 3, padding=1), nn.ReLU())

    def forward(self, y: Tensor) -> Tensor:
        return self.net(F.interpolate(y, size=self.size, mode="nearest"))       # (B, F, H, W)


class KnownPixelsNetwork(nn.Module):
    """A completion model's term from the known pixels: (B, P, H, W), added to the distribution
    parameters of the causal network (the Pixel Constrained CNN of Dupont & Suresha 2019, whose
    logits are the sum of a masked network's and a conditioning network's).

    The input is the image scaled to [-1, 1] with its unknown sub-pixels set to 0, beside the
    0/1 mask of the known ones (B, 2C, H, W): the values of unknown sub-pixels never reach it, so
    it cannot break the autoregressive order over them. A 3x3 convolution to ``features`` maps,
    residual blocks of dilated 3x3 convolutions (dilations 1, 2, 4, 8, ... repeating) whose
    receptive field covers the whole image, so that every unknown sub-pixel sees every known
    one, then ReLU and a 1x1 convolution to the P parameters, zero at initialisation: a new
    completion model adds nothing to its causal network until it learns to.
    """

    def __init__(self, channels: int, size: tuple[int, int], features: int, params: int):
        super().__init__()
        self.stem = nn.Conv2d(2 * channels, features, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(features, features, 3, padding=d, dilation=d)
                                    for d in known_pixels_dilations(size))
        self.out = nn.Conv2d(features, params, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, values: Tensor, known: Tensor) -> Tensor:
        """``values`` (B, C, H, W) in [-1, 1], ``known`` (B, C, H, W) bool -> (B, P, H, W)."""
        h = self.stem(torch.cat([values * known, known.to(values.dtype)], dim=1))
        for conv in self.blocks:
            h = h + conv(torch.relu(h))
        return self.out(torch.relu(h))


def known_pixels_dilations(size: tuple[int, int]) -> list[int]:
    """Dilations 1, 2, 4, 8, 1, 2, ... (at least four) until every pixel of an (H, W) image sees every other."""
    reach, need, out = 1, max(size) - 1, []                # reach: the stem's, then each block adds its dilation
    while reach < need or len(out) < 4:
        d = 2 ** (len(out) % 4)
        out.append(d)
        reach += d
    return out

"""PixelCNN++'s shifted convolutions (Salimans, Karpathy, Chen & Kingma 2017, section 2.3 and figure 2).

Causality without masks: the input is padded only on the top (and, for the down-right variants,
only on the left), so output (i, j) of a "down-shifted" convolution sees input rows <= i, and of a
"down-right-shifted" one rows < i plus row i up to column j. A network built from them, after one
initial ``layers.shift_down`` / ``layers.shift_right``, sees only the pixels strictly before (i, j).
"""

from __future__ import annotations

from pixelcnn.models.layers import CroppedConvTranspose2d, PrePaddedConv2d


class DownShiftedConv2d(PrePaddedConv2d):
    """(kh, kw) convolution, kw odd, padded top and both sides: output row i sees input rows i-kh+1..i.

    With ``stride`` s the output is (ceil(H/s), ceil(W/s)) and coarse row I sees fine rows <= s I.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int] = (2, 3), stride: int = 1):
        kh, kw = kernel
        if kw % 2 == 0:
            raise ValueError(f"a down-shifted convolution needs an odd kernel width, got {kernel}")
        super().__init__(in_channels, out_channels, kernel, ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0), stride)


class DownRightShiftedConv2d(PrePaddedConv2d):
    """(kh, kw) convolution padded top and left: output (i, j) sees rows i-kh+1..i, columns j-kw+1..j."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int] = (2, 2), stride: int = 1):
        kh, kw = kernel
        super().__init__(in_channels, out_channels, kernel, (kw - 1, 0, kh - 1, 0), stride)


class DownShiftedConvTranspose2d(CroppedConvTranspose2d):
    """Upsampling partner of :class:`DownShiftedConv2d`: fine row r comes from coarse rows <= r / stride.

    ``forward(x, size)`` crops the transposed convolution to ``size`` = (H, W), so inputs whose
    size is not a multiple of the stride come back to exactly the size they had before downsampling.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int] = (2, 3), stride: int = 2):
        kh, kw = kernel
        if kw % 2 == 0 or kh < stride or (kw + 1) // 2 < stride:
            # Smaller kernels leave rows or columns of the cropped output that no input reaches.
            raise ValueError(f"expected kh >= stride and an odd kw >= 2 stride - 1, got {kernel} with stride {stride}")
        super().__init__(in_channels, out_channels, kernel, stride, left=(kw - 1) // 2)


class DownRightShiftedConvTranspose2d(CroppedConvTranspose2d):
    """Upsampling partner of :class:`DownRightShiftedConv2d`: fine (r, c) comes from coarse (<= r/s, <= c/s)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int] = (2, 2), stride: int = 2):
        kh, kw = kernel
        if kh < stride or kw < stride:
            raise ValueError(f"expected a kernel at least the stride {stride} on each side, got {kernel}")
        super().__init__(in_channels, out_channels, kernel, stride)

"""emoji: the colour glyphs of Google's Noto Color Emoji font, drawn with Pillow on white, RGB, 32x32 or 64x64.

The font comes from Debian's package fonts-noto-color-emoji (``sudo apt-get install fonts-noto-color-emoji``;
`make test` installs it), at :data:`DEBIAN_FONT`; a ``NotoColorEmoji.ttf`` in ``<root>/emoji/`` under a data
root (``--data-dir``, ``$PIXELCNN_DATA``, the per-user cache) is used before it. Nothing is downloaded or
written: each process draws each size once and keeps it in memory.

One image per code point that the font's cmap maps and whose glyph draws something: 1,446 of the 1,487
in 2.042 (the NUL, CR, space, ZWJ and tag characters draw nothing). Sequences (ZWJ families, skin tones
applied, flags of two regional indicators, keycaps) are not drawn; the regional indicator letters, the
five skin tone swatches, the digits, and the ten flags and eleven keycaps that the font also maps to
private-use code points (U+FE4E5..U+FE837) are. Drawing, exact after Pillow has decoded the glyph:

1. Pillow (FreeType, basic layout) draws the glyph at 109 px, the one size of Noto's CBDT bitmaps
   (136x128), onto transparent black: the canvas holds premultiplied colour ``p = round(c a / 255)``
   and the alpha ``a``.
2. Cropped to its ink (alpha > 0) and put over white: ``p + 255 - a``.
3. Centred on a white 128x128 square (every glyph's ink fits; a larger one would be shrunk by Pillow's
   BOX filter), so glyphs keep the sizes the font gives them.
4. Box-filtered down by f = 4 (32x32) or 2 (64x64): the mean of each f x f block rounded half up,
   ``(sum + f*f/2) // (f*f)``, in integers, so the same bits on every machine. It equals Pillow's
   ``Image.reduce(f)``; Pillow's BOX resize differs by at most 1 through its fixed-point weights.

Splits: the sha256 of the code point's hex (upper case, at least 4 digits, e.g. ``1F600``) read as a
big-endian integer, mod 10: 0 -> test, 1 -> valid, else train. A glyph's split depends on its code
point alone, so a font that adds glyphs moves none of the others. Within a split, code point order;
trainval is train followed by valid. No labels.

Measured with fonts-noto-color-emoji 2.042-0+deb12u1 (Debian 12) and Pillow 13.0.0 (FreeType 2.14.3);
the sha256 is of the loaded uint8 array (N, 3, S, S) in C order, logged on every load and pinned by
tests/test_emoji.py for this package version:

=====  ========  ======  ================================================================
size   split     images  sha256
=====  ========  ======  ================================================================
32     train     1,139   467946f58c1ffd9b11803ccd9afc8f9babc2745f9f76fc240f762e65af3c6eae
32     valid     140     a1e5c811ad2f8d2d9da4edc0e1dcba46fe5519e2a8bc8f114847d9d85cad1a52
32     test      167     1a7b7ca0368f53d58a1b48a707488798dc9f5be3c670291396f46d3fe7371fb8
64     train     1,139   650b18696764382feee06103b1ac184789a8c1d895b3e64902f45339a64e1ec9
64     valid     140     f0bd57dd2122cda0d7b9c06502f3e665a388309b70668e991103eb360789ba15
64     test      167     423007f4508942e252ec64a4ca342b1737543027c88d5d4edf539956f96ad813
=====  ========  ======  ================================================================

Drawing all the glyphs at one size takes 3.5 to 4 s on one core of an AMD EPYC (a shared 2-core machine).

Source: https://github.com/googlefonts/noto-emoji. Licence (Debian's copyright file): the font,
SIL Open Font License 1.1; the rest of the upstream sources, the emoji images among them, Apache 2.0.
Copyright 2013-2017 Google Inc. and Arjen Nienhuis.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pixelcnn.data.dataset import ImageDataset, make_dataset
from pixelcnn.data.downloads import data_root, search_roots
from pixelcnn.errors import DataError

logger = logging.getLogger(__name__)

DEBIAN_PACKAGE = "fonts-noto-color-emoji"
DEBIAN_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
INSTALL_COMMAND = f"sudo apt-get install {DEBIAN_PACKAGE}"
EMOJI_DIR = "emoji"                 # <root>/emoji/NotoColorEmoji.ttf, looked for before DEBIAN_FONT
FONT_FILE = "NotoColorEmoji.ttf"
EMOJI_SIZES = (32, 64)              # the accepted image sizes; the first is the default

# What tests/test_emoji.py pins: images and sha256 of each split, keyed by (size, split), for this package version.
MEASURED_VERSION = "2.042-0+deb12u1"
MEASURED: dict[tuple[int, str], tuple[int, str]] = {
    (32, "train"): (1139, "467946f58c1ffd9b11803ccd9afc8f9babc2745f9f76fc240f762e65af3c6eae"),
    (32, "valid"): (140, "a1e5c811ad2f8d2d9da4edc0e1dcba46fe5519e2a8bc8f114847d9d85cad1a52"),
    (32, "test"): (167, "1a7b7ca0368f53d58a1b48a707488798dc9f5be3c670291396f46d3fe7371fb8"),
    (64, "train"): (1139, "650b18696764382feee06103b1ac184789a8c1d895b3e64902f45339a64e1ec9"),
    (64, "valid"): (140, "f0bd57dd2122cda0d7b9c06502f3e665a388309b70668e991103eb360789ba15"),
    (64, "test"): (167, "423007f4508942e252ec64a4ca342b1737543027c88d5d4edf539956f96ad813"),
}

_DRAW_SIZE = 109      # the pixel size of Noto's CBDT bitmaps; FreeType draws a bitmap font at its own sizes only
_SQUARE = 128         # side of the white square every glyph is centred on; divisible by every EMOJI_SIZES
_MAX_CODEPOINT = 0x10FFFF


# ----- the font and its cmap


def find_font(data_dir: str | os.PathLike | None = None) -> Path:
    """``<root>/emoji/NotoColorEmoji.ttf`` under the first data root that has it, else Debian's font."""
    candidates = [root / EMOJI_DIR / FONT_FILE for root in search_roots(data_dir)] + [DEBIAN_FONT]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(f"emoji needs the Noto Color Emoji font: install it with `{INSTALL_COMMAND}` (`make test` "
                    f"does) or put {FONT_FILE} in {data_root(data_dir) / EMOJI_DIR}/; looked at "
                    f"{', '.join(str(p) for p in candidates)}")


def font_codepoints(path: Path) -> list[int]:
    """The code points the font's cmap maps (its format 12 subtable), ascending; never a surrogate."""
    try:
        groups = _cmap_groups(path.read_bytes())
    except (OSError, struct.error, LookupError) as e:
        raise DataError(f"{path}: expected a TrueType font with a format 12 cmap, got unreadable data "
                        f"({type(e).__name__}: {e})") from e
    mapped = {c for start, end, _ in groups for c in range(start, min(end, _MAX_CODEPOINT) + 1)}
    return sorted(mapped - set(range(0xD800, 0xE000)))


def _table(font: bytes, tag: bytes) -> bytes:
    """The bytes of table ``tag`` of an sfnt file: a header of 12 bytes, then one record of 16 a table."""
    (n_tables,) = struct.unpack_from(">H", font, 4)
    for i in range(n_tables):
        name, _, offset, length = struct.unpack_from(">4sIII", font, 12 + 16 * i)
        if name == tag:
            return font[offset:offset + length]
    raise LookupError(f"no {tag.decode()} table")


def _cmap_groups(font: bytes) -> list[tuple[int, int, int]]:
    """(first code point, last code point, first glyph) of each group of the first format 12 cmap subtable."""
    cmap = _table(font, b"cmap")
    (n_subtables,) = struct.unpack_from(">2xH", cmap, 0)
    for i in range(n_subtables):
        (offset,) = struct.unpack_from(">4xI", cmap, 4 + 8 * i)      # platform, encoding, offset
        fmt, n_groups = struct.unpack_from(">H10xI", cmap, offset)   # format, reserved, length, language, groups
        if fmt == 12:
            return [struct.unpack_from(">III", cmap, offset + 16 + 12 * g) for g in range(n_groups)]
    raise LookupError("no format 12 cmap subtable")


def _open_font(path: Path) -> ImageFont.FreeTypeFont:
    try:
        # The basic layout draws one code point as FreeType maps it; raqm (optional in Pillow) is not needed.
        return ImageFont.truetype(str(path), _DRAW_SIZE, layout_engine=ImageFont.Layout.BASIC)
    except OSError as e:
        raise DataError(f"{path}: expected a colour emoji font Pillow can draw at {_DRAW_SIZE} px, got "
                        f"an error ({e})") from e


# ----- drawing


def _draw(font: ImageFont.FreeTypeFont, codepoint: int) -> np.ndarray | None:
    """The glyph over white, cropped to its ink: uint8 (h, w, 3); None when it draws nothing."""
    text = chr(codepoint)
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("RGBA", (max(right - left, 1), max(bottom - top, 1)), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((-left, -top), text, font=font, embedded_color=True)
    ink = canvas.getchannel("A").getbbox()                                         # where alpha > 0
    if ink is None:
        return None
    rgba = np.asarray(canvas.crop(ink), dtype=np.int16)                            # (h, w, 4)
    # Pillow blended the straight-alpha glyph into transparent black, so the colour is premultiplied
    # (p <= a): over white it is p + (255 - a). The clip only guards that invariant.
    return np.clip(rgba[..., :3] + (255 - rgba[..., 3:]), 0, 255).astype(np.uint8)


def _centre(glyph: np.ndarray) -> np.ndarray:
    """The glyph (h, w, 3) centred on a white (_SQUARE, _SQUARE, 3) square; shrunk first if it is larger."""
    h, w = glyph.shape[:2]
    if max(h, w) > _SQUARE:
        h, w = (max(1, round(s * _SQUARE / max(h, w))) for s in (h, w))
        glyph = np.asarray(Image.fromarray(glyph).resize((w, h), Image.Resampling.BOX))
    square = np.full((_SQUARE, _SQUARE, 3), 255, np.uint8)
    top, left = (_SQUARE - h) // 2, (_SQUARE - w) // 2
    square[top:top + h, left:left + w] = glyph
    return square


def _box_reduce(square: np.ndarray, size: int) -> np.ndarray:
    """(_SQUARE, _SQUARE, 3) -> (3, size, size): the mean of each f x f block (f = _SQUARE / size), rounded half up."""
    f = _SQUARE // size
    rows = square.reshape(size, f, _SQUARE, 3).sum(axis=1, dtype=np.uint16)       # (S, _SQUARE, 3), at most 16 * 255
    sums = rows.reshape(size, size, f, 3).sum(axis=2, dtype=np.uint16)             # (S, S, 3)
    return ((sums + f * f // 2) // (f * f)).astype(np.uint8).transpose(2, 0, 1)


def render_emoji(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Code points (N,) int64 and images (N, 3, size, size) uint8 of every glyph of the font at ``path``
    that draws something, in code point order. Read-only arrays, drawn once per file version and size."""
    stat = path.stat()
    return _render(str(path), stat.st_mtime_ns, stat.st_size, size)


@functools.lru_cache(maxsize=len(EMOJI_SIZES))
def _render(path: str, mtime_ns: int, file_size: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    font = _open_font(Path(path))
    codepoints, images = [], []
    for c in font_codepoints(Path(path)):
        glyph = _draw(font, c)
        if glyph is not None:
            codepoints.append(c)
            images.append(_box_reduce(_centre(glyph), size))
    if not images:
        raise DataError(f"{path}: expected a colour emoji font, got one whose glyphs draw nothing")
    codepoints, images = np.array(codepoints, np.int64), np.stack(images)          # (N,), (N, 3, S, S)
    codepoints.flags.writeable = images.flags.writeable = False
    return codepoints, images


# ----- splits and loading


def split_of(codepoint: int) -> str:
    """train, valid or test, from the code point alone: sha256 of its hex, mod 10 (0 test, 1 valid)."""
    digest = hashlib.sha256(f"{codepoint:04X}".encode("ascii")).digest()
    return {0: "test", 1: "valid"}.get(int.from_bytes(digest, "big") % 10, "train")


def split_rows(codepoints: np.ndarray, split: str) -> np.ndarray:
    """Indices into ``codepoints`` of the glyphs of ``split`` (trainval: train's, then valid's)."""
    if split == "trainval":
        return np.concatenate([split_rows(codepoints, "train"), split_rows(codepoints, "valid")])
    return np.array([i for i, c in enumerate(codepoints.tolist()) if split_of(c) == split], np.int64)


def content_sha256(images: np.ndarray) -> str:
    """sha256 of a uint8 array's bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def load_emoji(name: str, split: str, data_dir: str | os.PathLike | None, size: int) -> ImageDataset:
    """One split of the emoji at ``size`` x ``size`` (checked by the registry to be one of EMOJI_SIZES)."""
    path = find_font(data_dir)
    codepoints, images = render_emoji(path, size)
    chosen = images[split_rows(codepoints, split)]                                # (n, 3, S, S)
    logger.info("emoji %s at %dx%d: %d of the %d glyphs of %s, sha256 %s", split, size, size, len(chosen),
                len(images), path, content_sha256(chosen))
    return make_dataset(name, split, chosen, None, 256, None)

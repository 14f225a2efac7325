"""Tests of the emoji dataset: Noto Color Emoji glyphs drawn with Pillow (pixelcnn.data.emoji).

The glyphs come from Debian's fonts-noto-color-emoji (`make test` installs it); where it is missing the
tests that draw fail, naming the install command, unless $PIXELCNN_SKIP_MISSING_DATA=1. For the package
version the module's table was measured with, the counts and checksums of every split are pinned, so a
changed font or renderer fails here loudly.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch

from conftest import TINY_FLAGS, requires_data
from pixelcnn import checkpoint
from pixelcnn.cli import main
from pixelcnn.data import available_datasets, dataset_info, emoji, load_dataset
from pixelcnn.errors import DataError

needs_emoji = requires_data(emoji.DEBIAN_FONT.is_file(), f"Noto Color Emoji ({emoji.DEBIAN_FONT})",
                            f"{emoji.INSTALL_COMMAND} (`make test` does)")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """The font is looked for in Debian's place only: no $PIXELCNN_DATA, a cache of the test's own."""
    monkeypatch.delenv("PIXELCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def no_debian_font(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(emoji, "DEBIAN_FONT", tmp_path / "no-debian" / emoji.FONT_FILE)


def installed_version() -> str | None:
    """The version of the installed Debian package, or None without dpkg or the package."""
    if shutil.which("dpkg-query") is None:
        return None
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", emoji.DEBIAN_PACKAGE], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def sfnt_with_cmap(subtable: bytes) -> bytes:
    """A minimal font file: one table, a cmap holding ``subtable`` as its only encoding (3, 10)."""
    cmap = struct.pack(">HHHHI", 0, 1, 3, 10, 12) + subtable
    return struct.pack(">IHHHH4sIII", 0x00010000, 1, 0, 0, 0, b"cmap", 0, 28, len(cmap)) + cmap


def format12(groups: list[tuple[int, int, int]]) -> bytes:
    return struct.pack(">HHIII", 12, 0, 16 + 12 * len(groups), 0, len(groups)) + b"".join(
        struct.pack(">III", *g) for g in groups)


# ----------------------------------------------------------------------------------------------------
# Without the font: names, sizes, refusals, the cmap parser, the splits


def test_info_at_both_sizes_without_drawing(monkeypatch, tmp_path):
    no_debian_font(monkeypatch, tmp_path)
    assert "emoji" in available_datasets()
    for size, expected in ((None, 32), (32, 32), (64, 64)):
        info = dataset_info("emoji", size)
        assert (info.image_shape, info.levels, info.num_classes, info.class_names) == ((3, expected, expected), 256,
                                                                                        None, None)


@pytest.mark.parametrize("size", [48, 16, 128, 0, -32, 32.0, True])
def test_other_sizes_are_refused_in_one_line_before_the_font_is_looked_for(monkeypatch, tmp_path, size):
    no_debian_font(monkeypatch, tmp_path)
    for call in (lambda: load_dataset("emoji", "train", image_size=size), lambda: dataset_info("emoji", size)):
        with pytest.raises(DataError) as err:
            call()
        message = str(err.value)
        assert "\n" not in message
        assert message == f"emoji images are drawn at 32 or 64 pixels square: expected image_size 32 or 64 " \
                          f"(None: 32), got {size!r}"


def test_missing_font_names_the_install_command_in_one_line(monkeypatch, tmp_path):
    no_debian_font(monkeypatch, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_dataset("emoji", "test", data_dir=tmp_path / "empty")
    message = str(err.value)
    assert "\n" not in message
    assert "apt-get install fonts-noto-color-emoji" in message
    assert f"put NotoColorEmoji.ttf in {tmp_path / 'empty' / 'emoji'}/" in message
    assert str(tmp_path / "no-debian" / emoji.FONT_FILE) in message
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_font_under_a_data_root_comes_first_and_a_broken_one_is_refused_in_one_line(tmp_path):
    broken = tmp_path / "root" / "emoji" / emoji.FONT_FILE
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a font")
    assert emoji.find_font(tmp_path / "root") == broken
    with pytest.raises(DataError) as err:
        load_dataset("emoji", "valid", data_dir=tmp_path / "root")
    assert "\n" not in str(err.value) and str(broken) in str(err.value)


def test_cmap_parser_reads_format_12_groups_and_refuses_other_formats(tmp_path):
    font = tmp_path / "f.ttf"
    font.write_bytes(sfnt_with_cmap(format12([(0x41, 0x43, 1), (0xDFFF, 0xE000, 4), (0x1F600, 0x1F600, 6),
                                              (0x10FFFE, 0xFFFFFFFF, 7)])))
    assert emoji.font_codepoints(font) == [0x41, 0x42, 0x43, 0xE000, 0x1F600, 0x10FFFE, 0x10FFFF]
    font.write_bytes(sfnt_with_cmap(struct.pack(">HHH", 4, 6, 0)))
    with pytest.raises(DataError, match="expected a TrueType font with a format 12 cmap"):
        emoji.font_codepoints(font)


def test_glyphs_are_centred_on_white_and_box_filtered_in_integers():
    square = emoji._centre(np.zeros((100, 61, 3), np.uint8))       # black ink: rows 14..113, columns 33..93
    assert square.shape == (128, 128, 3) and (square[14:114, 33:94] == 0).all()
    assert int(square.sum()) == 255 * 3 * (128 * 128 - 100 * 61)
    small = emoji._box_reduce(square, 32)                          # 4x4 blocks
    assert small.shape == (3, 32, 32) and small.dtype == np.uint8
    # 16 white pixels -> 255; 4 -> (4 * 255 + 8) // 16 = 64; none -> 0; 8 -> 127.5 rounded up to 128
    assert small[:, 4, [0, 8, 9, 23]].tolist() == [[255, 64, 0, 128]] * 3
    assert emoji._box_reduce(square, 64)[:, 7, 16:18].tolist() == [[128, 0]] * 3     # 2 of 4 white: 127.5 -> 128
    large = emoji._centre(np.zeros((256, 128, 3), np.uint8))      # larger than the square: shrunk to 128 x 64
    assert large[:, 32:96].max() == 0 and large[:, :32].min() == 255 and large[:, 96:].min() == 255


def test_a_split_depends_on_the_code_point_alone():
    pinned = {0x23: "train", 0x1F600: "train", 0x1F604: "valid", 0x1F608: "test", 0x1F9A4: "test"}
    assert {c: emoji.split_of(c) for c in pinned} == pinned
    fewer = np.array([0x1F600, 0x1F608], np.int64)
    more = np.array([0x23, 0x1F600, 0x1F604, 0x1F608, 0x1F9A4], np.int64)
    for split in ("train", "valid", "test", "trainval"):       # adding glyphs moves none of the others
        assert set(fewer[emoji.split_rows(fewer, split)]) <= set(more[emoji.split_rows(more, split)])


# ----------------------------------------------------------------------------------------------------
# With Debian's font


@pytest.mark.slow
@needs_emoji
def test_splits_are_disjoint_and_cover_every_glyph():
    codepoints, images = emoji.render_emoji(emoji.DEBIAN_FONT, 32)
    rows = {s: emoji.split_rows(codepoints, s) for s in ("train", "valid", "test", "trainval")}
    parts = [set(rows[s].tolist()) for s in ("train", "valid", "test")]
    assert sum(map(len, parts)) == len(set().union(*parts)) == len(codepoints)
    assert rows["trainval"].tolist() == rows["train"].tolist() + rows["valid"].tolist()
    for split, r in rows.items():
        d = load_dataset("emoji", split)
        assert torch.equal(d.images, torch.from_numpy(images[r]))
        assert (d.name, d.split, d.labels, d.num_classes) == ("emoji", split, None, None)


@pytest.mark.slow
@needs_emoji
@pytest.mark.parametrize("size", [32, 64])
def test_images_are_rgb_uint8_on_white(size):
    d = load_dataset("emoji", "test", image_size=size)
    assert d.images.dtype == torch.uint8 and d.images.shape[1:] == (3, size, size) and d.levels == 256
    assert d.image_shape == dataset_info("emoji", size).image_shape
    assert bool((d.images < 255).flatten(1).any(1).all())          # every image draws something
    corners = d.images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 255).float().mean() > 0.9                  # on white
    x = d.batch(torch.arange(4))[0]
    assert x.dtype == torch.int64 and int(x.min()) >= 0 and int(x.max()) <= 255


@pytest.mark.slow
@needs_emoji
def test_counts_and_checksums_of_the_measured_package_version(caplog):
    version = installed_version()
    if version != emoji.MEASURED_VERSION:
        pytest.skip(f"the pinned checksums are of {emoji.DEBIAN_PACKAGE} {emoji.MEASURED_VERSION}, installed is "
                    f"{version}: measure this one and update emoji.MEASURED and the module's table")
    assert emoji.find_font() == emoji.DEBIAN_FONT
    assert len(emoji.font_codepoints(emoji.DEBIAN_FONT)) == 1487
    caplog.set_level("INFO", logger="pixelcnn.data.emoji")
    for (size, split), (count, sha256) in emoji.MEASURED.items():
        d = load_dataset("emoji", split, image_size=size)
        assert (len(d), emoji.content_sha256(d.images.numpy())) == (count, sha256), (size, split)
    assert f"sha256 {emoji.MEASURED[64, 'test'][1]}" in caplog.text


@needs_emoji
def test_a_torch_dataloader_batches_the_images():
    d = load_dataset("emoji", "valid")
    batches = list(torch.utils.data.DataLoader(d, batch_size=64, shuffle=False))
    assert [len(b) for b in batches] == [64, 64, len(d) - 128]
    assert torch.equal(torch.cat(batches), d.images.long())


@needs_emoji
@pytest.mark.slow
def test_cli_trains_and_evaluates_at_both_sizes(tmp_path, capsys):
    for size in (64, 32):
        out = tmp_path / f"run{size}"
        assert main(["train", "--model", "gated_pixelcnn", "--dataset", "emoji", "--image-size", str(size),
                     "--max-steps", "2", "--batch-size", "8", "--valid-limit", "8", "--samples", "0", *TINY_FLAGS,
                     "--out", str(out)]) == 0
        config = checkpoint.read_config(checkpoint.resolve(out))
        assert tuple(config["config"]["image_shape"]) == (3, size, size)
    for size in (64, 32):                                  # each at the size it was trained at
        assert main(["eval", str(tmp_path / f"run{size}"), "--limit", "8"]) == 0
        assert "emoji test (8 images)" in capsys.readouterr().out

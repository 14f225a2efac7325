"""What careless users type, refused: every command and the API entry points.

Each row of the table runs one command in process. It must exit with status 2, print exactly one
line on stderr that says what was expected (no traceback), and leave the working folder as it
was: nothing written on a refusal. Then the run folder's lock: a second training into the same
folder is refused while the first finishes whole, and a lock left by a killed process does not
block a resume. A full disk while checkpointing stops training in one line, keeping the last
good checkpoint whole.
"""

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixelcnn
from pixelcnn import evaluation, training
from pixelcnn.coding import codec
from pixelcnn.cli import main
from pixelcnn.errors import PixelCNNError
from conftest import ROOT, TINY_FLAGS, needs_mnist

pytestmark = needs_mnist

HP = dict(hidden=8, layers=2, output_hidden=0)


def png_with_header_size(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height but holds one pixel: decoding it would fail, so a
    refusal naming the size proves the size was read from the header alone."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)                       # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))       # IHDR CRC
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Models and input files, outside the folder each row watches."""
    d = tmp_path_factory.mktemp("inputs")
    models = {
        "plain": pixelcnn.create("gated_pixelcnn", image_shape=(1, 28, 28), levels=256, **HP),
        "cond": pixelcnn.create("gated_pixelcnn", image_shape=(1, 28, 28), levels=2, num_classes=10, **HP),
        "sr": pixelcnn.create("gated_pixelcnn", image_shape=(1, 28, 28), levels=256, cond_shape=(1, 14, 14), **HP),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = model.save_pretrained(d / name, metadata={"dataset": "mnist"})
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(d / "digit.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(d / "small.png")
    Image.fromarray(np.full((28, 28), 60000, np.uint16)).save(d / "deep.png")      # 16-bit grayscale
    png_with_header_size(d / "huge.png", 10000, 10000)
    (d / "garbage.pxc").write_bytes(b"not a compressed file")
    (d / "a_file").write_text("x")
    run = d / "truncated_run"
    run.mkdir()
    (run / "run.json").write_text('{"train": {"model": "gated_pix')
    return {**{k: str(v) for k, v in paths.items()}, **{p.stem: str(p) for p in d.iterdir() if p.is_file()},
            "truncated_run": str(run), "inputs": str(d)}


T = ["--out", "{work}/run", "--dataset", "binarized_mnist", *TINY_FLAGS]     # a train command that would write

ROWS = [
    # train: every setting, refused before the run folder exists
    (["train", *T, "--batch-size", "-1"], "argument --batch-size: expected an integer >= 1, got -1"),
    (["train", *T, "--batch-size", "1000000000"], "expected a batch size of at most the 50000 training images"),
    (["train", *T, "--valid-limit", "-1"], "argument --valid-limit: expected an integer >= 1"),
    (["train", *T, "--valid-limit", "0"], "argument --valid-limit: expected an integer >= 1, got 0"),
    (["train", *T, "--grad-clip", "-1"], "argument --grad-clip: expected a finite number > 0, got -1.0"),
    (["train", *T, "--lr", "inf"], "argument --lr: expected a finite number > 0, got inf"),
    (["train", *T, "--lr", "nan"], "argument --lr: expected a finite number > 0, got nan"),
    (["train", *T, "--lr", "0"], "argument --lr: expected a finite number > 0"),
    (["train", *T, "--lr", "fast"], "argument --lr: expected a finite number > 0, got 'fast'"),
    (["train", *T, "--max-steps", "-3"], "argument --max-steps: expected an integer >= 1, got -3"),
    (["train", *T, "--time-budget", "-1"], "argument --time-budget: expected a finite number > 0"),
    (["train", *T, "--weight-decay", "-1"], "argument --weight-decay: expected a finite number >= 0"),
    (["train", *T, "--epochs", "0"], "argument --epochs: expected an integer >= 1"),
    (["train", *T, "--gamma", "1.5"], "argument --gamma: expected a finite number in (0, 1]"),
    (["train", *T, "--ema", "1"], "argument --ema: expected a finite number in [0, 1)"),
    (["train", *T, "--samples", "-1"], "argument --samples: expected an integer >= 0"),
    (["train", *T, "--sample-temperature", "0"], "argument --sample-temperature: expected a finite number > 0"),
    (["train", *T, "--checkpoint-every", "0"], "argument --checkpoint-every: expected an integer >= 1"),
    (["train", *T, "--eval-batch-size", "0"], "argument --eval-batch-size: expected an integer >= 1"),
    (["train", *T, "--log-every", "0"], "argument --log-every: expected an integer >= 1"),
    (["train", *T, "--seed", "-1"], "argument --seed: expected an integer in [0, 4294967295]"),
    (["train", *T, "--scale", "1"], "argument --scale: expected an integer >= 2"),
    (["train", *T, "--task", "superres", "--scale", "3"], "expected a scale >= 2 that divides the image's 28x28"),
    (["train", *T, "--task", "inpaint"], "argument --task: expected one of density, superres, inpainting"),
    (["train", *T, "--freeze-init"], "expected --freeze-init with --init-from CHECKPOINT, got no --init-from"),
    (["train", *T, "--checkpoint-activations=yes"], "argument --checkpoint-activations: ignored explicit argument 'yes'"),
    (["train", *T, "--task", "inpainting", "--cond-features", "0"], "--cond-features: expected an integer >= 1, got 0"),
    (["train", *T, "--precision", "fp8"], "argument --precision: expected one of auto, fp32, bf16, fp16, got 'fp8'"),
    (["train", *T, "--task", "denoise"], "argument --task: expected one of density, superres"),
    (["train", *T, "--image-size", "0"], "argument --image-size: expected an integer >= 1"),
    (["train", *T, "--in-channels", "0"], "argument --in-channels: expected an integer >= 1"),
    (["train", *T, "--device", "gpu"], "expected a device: auto, cpu, cuda or cuda:N, got 'gpu'"),
    (["train", *T, "--hidden", "0"], "expected hidden to be an integer >= 1, got 0"),
    (["train", *T, "--model", "lmconv", "--completion-orders", "1.5"],
     "argument --completion-orders: expected a finite number in [0, 1], got 1.5"),
    (["train", *T, "--dilations", "1,,2"], "argument --dilations: expected one or more integers >= 1 separated by commas (like 1,2,4), got '1,,2'"),
    (["train", *T, "--dilations", "x"], "argument --dilations: expected one or more integers >= 1 separated by commas (like 1,2,4), got 'x'"),
    (["train", *T, "--conditional"], "--conditional needs class labels"),
    (["train", *T, "--model", "pixelgan"], "unknown model 'pixelgan'"),
    (["train", *T[:2], "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["train", *T, "--image-size", "32"], "binarized_mnist images are 28x28: expected image_size None or 28, got 32"),
    (["train", *T[:2], "--dataset", "emoji", "--image-size", "48"],
     "emoji images are drawn at 32 or 64 pixels square: expected image_size 32 or 64 (None: 32), got 48"),
    (["train", *T[:2], "--dataset", "emoji", "--conditional"], "--conditional needs class labels"),
    (["train", "--out", "{a_file}", "--dataset", "binarized_mnist"], "expected --out to be a folder"),
    (["train", "--resume", "{work}/nothing"], "expected a run folder with run.json"),
    (["train", "--resume", "{truncated_run}"], "expected run.json in JSON, got an unreadable file"),
    # eval
    (["eval", "{plain}", "--batch-size", "-1"], "argument --batch-size: expected an integer >= 1, got -1"),
    (["eval", "{plain}", "--limit", "0"], "argument --limit: expected an integer >= 1, got 0"),
    (["eval", "{plain}", "--json", "{work}/missing/r.json"], "expected a file in an existing folder"),
    (["eval", "{plain}", "--json", "{work}"], "expected a file name to write, not an existing folder"),
    (["eval", "{plain}", "--split", "dev", "--limit", "2"], "unknown split 'dev'"),
    (["eval", "{plain}", "--dataset", "binarized_mnist", "--limit", "2"], "expected a dataset of (1, 28, 28) images with 256 levels"),
    (["eval", "{cond}", "--dataset", "binarized_mnist", "--limit", "2"], "class-conditional: expected a dataset with class labels"),
    (["eval", "{plain}", "--device", "gpu"], "expected a device"),
    (["eval", "{work}/no/such/run"], "does not exist"),
    (["eval", "{plain}", "--baseline", "{work}/no/such/run"], "does not exist"),
    # sample
    (["sample", "{plain}", "--n", "0"], "argument --n: expected an integer >= 1, got 0"),
    (["sample", "{plain}", "--n", "-2"], "argument --n: expected an integer >= 1, got -2"),
    (["sample", "{plain}", "--temperature", "0"], "argument --temperature: expected a finite number > 0, got 0.0"),
    (["sample", "{plain}", "--temperature", "inf"], "argument --temperature: expected a finite number > 0, got inf"),
    (["sample", "{cond}", "--labels", "1,,2"], "argument --labels: expected class labels"),
    (["sample", "{cond}", "--labels", "x"], "argument --labels: expected class labels"),
    (["sample", "{cond}", "--labels", "-1"], "argument --labels: expected class labels"),
    (["sample", "{cond}", "--labels", "3,10", "--n", "1"], "expected --labels in [0, 10) for this model, got [3, 10]"),
    (["sample", "{plain}", "--label", "3"], "expected no --label for this unconditional model"),
    (["sample", "{cond}", "--label", "1", "--labels", "2"], "not allowed with argument"),
    (["sample", "{plain}", "--method", "fast"], "argument --method: expected one of auto, naive, cached, got 'fast'"),
    (["sample", "{plain}", "--out", "{work}/missing-dir/s.png"], "expected a file in an existing folder"),
    (["sample", "{plain}", "--out", "{work}"], "expected a file name to write, not an existing folder"),
    (["sample", "{plain}", "--npy", "{work}/missing/s.npy"], "expected a file in an existing folder"),
    (["sample", "", "--n", "1"], "expected a checkpoint folder, a run folder or pretrained:NAME, got ''"),
    (["sample", "{plain}", "--out", "{work}/s.jpg"], "expected a .png file name (the file is written in that format), got"),
    (["sample", "{plain}", "--npy", "{work}/s"], "expected a .npy file name"),
    (["complete", "{plain}", "--image", "{digit}", "--out", "{work}/c"], "expected a .png file name"),
    (["sample", "{plain}", "--seed", "-1"], "argument --seed: expected an integer in [0, 4294967295]"),
    (["sample", "{plain}", "--n", "1000000000"], "out of memory: expected a smaller --n or --batch-size"),
    # complete
    (["complete", "{plain}", "--image", "{deep}", "--out", "{work}/c.png"], "expected an 8-bit image, got mode I;16"),
    (["complete", "{plain}", "--image", "{huge}", "--out", "{work}/c.png"], "expected a 28x28 image, got 10000x10000"),
    (["complete", "{plain}", "--image", "{small}", "--out", "{work}/c.png"], "expected a 28x28 image, got 5x5"),
    (["complete", "{plain}", "--image", "{work}/none.png", "--out", "{work}/c.png"], "cannot read image"),
    (["complete", "{plain}", "--image", "{digit}", "--mask", "{small}", "--out", "{work}/c.png"], "expected a 28x28 mask, got 5x5"),
    (["complete", "{plain}", "--image", "{digit}", "--keep-rows", "29", "--out", "{work}/c.png"], "expected --keep-rows in [0, 28], got 29"),
    (["complete", "{plain}", "--image", "{digit}", "--keep-rows", "-1"], "argument --keep-rows: expected an integer >= 0"),
    (["complete", "{plain}", "--image", "{digit}", "--keep-rows", "28"], "expected at least one unknown sub-pixel (known False) to complete"),
    (["complete", "{plain}", "--image", "{digit}", "--mask", "middle"], "expected --mask to be a PNG file or one of centre"),
    (["complete", "{plain}", "--from-dataset", "mnist", "--index", "7..0"], "expected a range first..last with first <= last (like 0..7), got '7..0'"),
    (["complete", "{plain}", "--from-dataset", "mnist", "--index", "1,,2"], "argument --index: expected indices >= 0"),
    (["complete", "{plain}", "--from-dataset", "mnist", "--index", "99999", "--out", "{work}/c.png"], "expected --index within [0, 10000)"),
    (["complete", "{plain}", "--image", "{digit}", "--n", "0"], "argument --n: expected an integer >= 1"),
    (["complete", "{plain}", "--image", "{digit}", "--index", "3"], "expected --index with --from-dataset only"),
    (["upscale", "{sr}", "--image", "{digit}", "--index", "3"], "expected --index with --from-dataset only"),
    (["complete", "{plain}", "--image", "{digit}", "--temperature", "-1"], "argument --temperature: expected a finite number > 0"),
    (["complete", "{plain}", "--image", "{digit}", "--label", "3", "--out", "{work}/c.png"], "expected no --label for this unconditional model"),
    (["complete", "{plain}", "--image", "{digit}", "--from-dataset", "mnist"], "not allowed with argument"),
    (["complete", "{plain}", "--image", "{digit}", "--out", "{work}/missing/c.png"], "expected a file in an existing folder"),
    # upscale
    (["upscale", "{plain}", "--from-dataset", "mnist", "--out", "{work}/u.png"], "not a super-resolution model"),
    (["upscale", "{sr}", "--image", "{digit}", "--out", "{work}/u.png"], "expected a 14x14 low-resolution image, got 28x28"),
    (["upscale", "{sr}", "--from-dataset", "mnist", "--n", "0"], "argument --n: expected an integer >= 1"),
    (["upscale", "{sr}", "--from-dataset", "mnist", "--index", "3..1"], "first <= last"),
    # compress
    (["compress", "{plain}", "{digit}", "-o", "{work}/x.pxc", "--limit", "0"], "argument --limit: expected an integer >= 1"),
    (["compress", "{plain}", "{digit}", "-o", "{work}/x.pxc", "--chunk-size", "0"], "argument --chunk-size: expected an integer in [1, 4096]"),
    (["compress", "{plain}", "{digit}", "-o", "{work}/x.pxc", "--chunk-size", "5000"], "expected an integer in [1, 4096], got 5000"),
    (["compress", "{plain}", "{digit}", "-o", "{work}"], "expected a file name to write, not an existing folder"),
    (["compress", "{plain}", "{digit}", "-o", "{work}/missing/x.pxc"], "expected a file in an existing folder"),
    (["compress", "{plain}", "{digit}", "-o", "{work}/x.pxc", "--labels", "1,,2"], "argument --labels: expected class labels"),
    (["compress", "{plain}", "{digit}", "-o", "{work}/x.pxc", "--labels", "3"], "expected no --labels for this unconditional model"),
    (["compress", "{cond}", "{digit}", "{digit}", "-o", "{work}/x.pxc", "--labels", "1,2,3"], "expected --labels with one value or 2"),
    (["compress", "{cond}", "{digit}", "-o", "{work}/x.pxc", "--labels", "12"], "expected --labels in [0, 10) for this model"),
    (["compress", "{plain}", "--from-dataset", "mnist", "--labels", "1", "-o", "{work}/x.pxc"], "expected --labels with PNG files only"),
    (["compress", "{plain}", "-o", "{work}/x.pxc"], "no images to compress"),
    (["compress", "{plain}", "{deep}", "-o", "{work}/x.pxc"], "expected an 8-bit image, got mode I;16"),
    (["compress", "{plain}", "{huge}", "-o", "{work}/x.pxc"], "expected a 28x28 image, got 10000x10000"),
    (["compress", "{plain}", "{digit}", "-o", "{work}/x.pxc", "--method", "fast"], "argument --method: expected one of auto"),
    (["compress", "{sr}", "{digit}", "-o", "{work}/x.pxc"], "cannot compress on their own"),
    # decompress
    (["decompress", "{plain}", "{work}/none.pxc", "-o", "{work}/d"], "cannot read compressed file"),
    (["decompress", "{plain}", "{garbage}", "-o", "{work}/d"], "not a pixelcnn compressed file"),
    (["decompress", "{plain}", "{garbage}", "-o", "{a_file}"], "expected a folder to write into, not an existing file"),
    # the rest
    (["pretrained", "--reproduce", "--subset", "0"], "argument --subset: expected an integer >= 1"),
    (["pretrained", "--subset", "3"], "expected --subset with --reproduce only"),
    (["pretrained", "--reproduce", "--limit", "500"], "expected --subset N with --reproduce"),
    (["sample", "{sr}"], "got a super-resolution model (given 14x14): use pixelcnn upscale"),
    (["complete", "{sr}", "--image", "{digit}"], "got a super-resolution model"),
    (["models", "--hidden", "3"], "pixelcnn models: error: unrecognized arguments: --hidden 3"),
    # warm starts and pixel orders
    (["train", *T, "--init-from", "{work}/nothing"], "does not exist: expected a checkpoint folder or a run folder"),
    (["train", *T, "--init-from", "{plain}"], "expected tensors of this model's shapes, got"),
    (["train", *T, "--model", "lmconv", "--orders", "zigzag"], "expected an order NAME or NAME:S"),
    (["train", *T, "--model", "lmconv", "--orders", "s_curve,,hilbert"], "got ''"),
    (["train", *T, "--model", "lmconv", "--order-symmetries", "9"], "argument --order-symmetries: expected an integer in [1, 8], got 9"),
    (["train", *T, "--model", "lmconv", "--auto-order", "ring"],
     "argument --auto-order: expected one of split, onion, got 'ring'"),
    (["train", *T, "--conv-impl", "fast"], "argument --conv-impl: expected one of shaped, masked, got 'fast'"),
    (["train", *T, "--model", "multiscale", "--scales", "0"], "--scales: expected an integer >= 1, got 0"),
    (["train", *T, "--model", "multiscale", "--scales", "2.5"], "argument --scales: expected an integer >= 1, got '2.5'"),
    (["train", *T, "--model", "multiscale", "--within-group", "diagonal"],
     "argument --within-group: expected one of independent, raster, got 'diagonal'"),
    (["train", *T, "--model", "multiscale", "--base", "lmconv"],
     "argument --base: expected one of gated_pixelcnn, pixelcnn, row_lstm, diagonal_bilstm, got 'lmconv'"),
    (["sample", "{plain}", "--order", "hilbert"], "generates in raster order only: expected order None or 'raster'"),
    (["complete", "{plain}", "--image", "{digit}", "--keep-rows", "3", "--order", "s_curve"], "raster order only"),
    (["compress", "{plain}", "{digit}", "--index", "0", "-o", "{work}/x.pxc"], "expected --index with --from-dataset only"),
    (["compress", "{plain}", "--from-dataset", "mnist", "--index", "10000", "-o", "{work}/x.pxc"],
     "expected --index within [0, 10000) for mnist test, got indices up to 10000"),
    (["compress", "{plain}", "{digit}", "--order", "auto", "-o", "{work}/x.pxc"], "expected a pixel order NAME[:S], got 'auto'"),
    (["serve", "{plain}", "--port", "70000"], "argument --port: expected an integer in [0, 65535], got 70000"),
    (["serve", "{plain}", "--port", "http"], "argument --port: expected an integer in [0, 65535], got 'http'"),
    (["serve", "{plain}", "--workers", "0"], "argument --workers: expected an integer >= 1, got 0"),
    (["serve", "{work}/no-such-run"], "no-such-run"),
    (["serve", "pretrained:no-such-model"], "no-such-model"),
    (["receptive-field", "{plain}", "--pixel", "28,0", "-o", "{work}/rf.png"],
     "expected a pixel H,W inside the model's 28x28 images, got 28,0"),
    (["receptive-field", "{plain}", "--pixel", "3", "-o", "{work}/rf.png"], "expected a pixel as H,W (two integers >= 0"),
    (["receptive-field", "{plain}", "--pixel", "1,-2", "-o", "{work}/rf.png"], "expected a pixel as H,W"),
    (["receptive-field", "{plain}", "--channel", "1", "-o", "{work}/rf.png"],
     "expected a channel in [0, 1) for this model's images, got 1"),
    (["receptive-field", "{plain}", "--image-shape", "1x8x8", "-o", "{work}/rf.png"],
     "--image-shape apply to a family given by name"),
    (["receptive-field", "{plain}", "--hidden", "8", "-o", "{work}/rf.png"], "--hidden apply to a family given by name"),
    (["receptive-field", "gated_pixelcnn", "--image-shape", "1x0x8", "-o", "{work}/rf.png"],
     "expected an image shape CxHxW (three integers >= 1"),
    (["receptive-field", "gated_pixelcnn", "--levels", "1", "-o", "{work}/rf.png"], "expected an integer in [2, 256]"),
    (["receptive-field", "pixelcnn_pp", "--layers", "2", "-o", "{work}/rf.png"], "has no field(s) layers"),
    (["receptive-field", "{plain}", "-o", "{work}/rf.jpg"], "expected a .png file name"),
    (["receptive-field", "{plain}", "-o", "{work}/no-such-folder/rf.png"], "no-such-folder"),
    (["receptive-field", "{work}/no-such-run"], "no-such-run"),
    (["receptive-field", "{plain}", "--images", "0", "-o", "{work}/rf.png"], "expected an integer >= 1, got 0"),
    (["receptive-field", "{plain}", "--seed", "-1", "-o", "{work}/rf.png"], "argument --seed: expected an integer in [0, "),
    (["receptive-field", "{plain}", "--channel", "red", "-o", "{work}/rf.png"], "argument --channel: expected an integer >= 0"),
    (["paint"], "argument COMMAND: invalid choice: 'paint'"),
]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:                     # argparse refuses by exiting
        code = e.code
    return code, capsys.readouterr().err


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_one_line(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("argv,fragment", ROWS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_is_refused_in_one_line_and_writes_nothing(argv, fragment, files, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)                     # default outputs (samples.png, ...) would land here
    before = tree(tmp_path)
    code, err = run_cli([a.format(work=work, **files) for a in argv], capsys)
    assert code == 2, err
    assert_one_line(err, fragment)
    assert tree(tmp_path) == before


def test_every_command_has_rows():
    from pixelcnn.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert commands <= {row[0][0] for row in ROWS}


@pytest.mark.parametrize("argv,fragment", [
    (["sample", "{plain}", "--n", "0"], "expected an integer >= 1, got 0"),
    (["eval", "{plain}", "--limit", "0"], "expected an integer >= 1, got 0"),
])
@pytest.mark.slow
def test_the_real_program_exits_2_with_one_line(argv, fragment, files, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pixelcnn", *[a.format(**files) for a in argv]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, fragment)
    assert list(tmp_path.iterdir()) == []


# ----- the Python API -----------------------------------------------------------------------


def tiny(**kw):
    return pixelcnn.create("gated_pixelcnn", image_shape=(1, 3, 3), levels=4, **{**HP, **kw})


def binary_valid():
    from pixelcnn.data import load_dataset

    return load_dataset("binarized_mnist", "valid")


API_ROWS = [
    (lambda: tiny().sample(0), "expected n to be an integer >= 1, got 0"),
    (lambda: tiny().sample(2.5), "expected n to be an integer >= 1, got 2.5"),
    (lambda: tiny().sample(1, temperature=0), "expected temperature to be a finite number > 0, got 0"),
    (lambda: tiny().sample(1, temperature=float("inf")), "expected temperature to be a finite number > 0, got inf"),
    (lambda: tiny().sample(1, temperature=float("nan")), "got nan"),
    (lambda: tiny().sample(1, method="fast"), "expected method to be one of auto, naive, cached, got 'fast'"),
    (lambda: tiny().complete(torch.zeros(1, 1, 3, 3, dtype=torch.long), torch.ones(1, 1, 3, 3, dtype=torch.bool), n=0),
     "expected n to be an integer >= 1, got 0"),
    (lambda: pixelcnn.compress(tiny(), torch.zeros(2, 1, 3, 3, dtype=torch.long), chunk_size=0),
     "expected chunk_size to be an integer in [1, 4096], got 0"),
    (lambda: pixelcnn.compress(tiny(), torch.zeros(2, 1, 3, 3, dtype=torch.long), method="fast"),
     "expected method to be one of auto, naive, cached"),
    (lambda: pixelcnn.compress(tiny(), torch.zeros(2, 1, 3, 3, dtype=torch.long), length=0.0),
     "expected length to be None or a codec.CodeLength, got float"),
    (lambda: codec.decode(tiny(), b"", length=[]), "expected length to be None or a codec.CodeLength, got list"),
    (lambda: evaluation.evaluate(tiny(), binary_valid(), batch_size=0), "expected batch_size to be an integer >= 1, got 0"),
    (lambda: evaluation.evaluate(pixelcnn.create("gated_pixelcnn", image_shape=(1, 28, 28), levels=2, **HP),
                               binary_valid(), limit=0), "expected limit to be an integer >= 1, got 0"),
    (lambda: evaluation.evaluate(tiny(), binary_valid()), "expected a dataset of (1, 3, 3) images with 4 levels"),
    (lambda: training.TrainConfig(lr=float("inf")), "expected lr to be a finite number > 0, got inf"),
    (lambda: training.TrainConfig(grad_clip=-1.0), "expected grad_clip to be a finite number > 0, got -1.0"),
    (lambda: training.TrainConfig(max_steps=-3), "expected max_steps to be an integer >= 1, got -3"),
    (lambda: training.TrainConfig(epochs=True), "expected epochs to be an integer >= 1, got True"),
]


@pytest.mark.parametrize("call,fragment", API_ROWS, ids=[r[1][:40] for r in API_ROWS])
def test_api_refuses_bad_arguments_with_a_pixelcnn_error(call, fragment):
    with pytest.raises(PixelCNNError) as info:
        call()
    assert fragment in str(info.value)


def test_callers_that_caught_value_error_still_do():
    for call in (lambda: tiny().sample(0), lambda: tiny().sample(1, temperature=0), lambda: tiny().sample(1, method="x")):
        with pytest.raises(ValueError):
            call()


def test_api_refuses_a_batch_larger_than_the_data_before_creating_the_run_folder(tmp_path):
    cfg = training.TrainConfig(model="gated_pixelcnn", dataset="binarized_mnist", batch_size=10**9)
    with pytest.raises(pixelcnn.ConfigError, match="expected a batch size of at most"):
        training.train(cfg, tmp_path / "run", **HP)
    assert list(tmp_path.iterdir()) == []


# ----- one writer per run folder -------------------------------------------------------------


def train_argv(out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "binarized_mnist", "--batch-size", "8", "--valid-limit", "8", "--samples", "0",
            "--log-every", "1000", *TINY_FLAGS, "--out", str(out), *extra]


def start_training(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pixelcnn", *train_argv(out, *extra)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_training_into_the_same_folder_is_refused_and_the_first_finishes_whole(tmp_path, capsys):
    out = tmp_path / "run"
    first = start_training(out, "--time-budget", "0.1")      # trains for 6 s, then evaluates and saves
    try:
        wait_for(out / "run.lock", first)
        code, err = run_cli(train_argv(out, "--max-steps", "1"), capsys)
        assert code == 2
        assert_one_line(err, "is in use by another training process")
        code, err = run_cli(["train", "--resume", str(out), "--max-steps", "1"], capsys)
        assert code == 2
        assert_one_line(err, "is in use by another training process")
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    summary = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert summary["event"] == "end" and summary["step"] > 0
    state = torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=True)
    assert state["step"] == summary["step"]
    pixelcnn.load(out / "checkpoints" / "last")
    assert not list((out / "checkpoints").glob(".*tmp*"))


@pytest.mark.slow
def test_a_lock_left_by_a_killed_process_does_not_block_a_resume(tmp_path, capsys):
    out = tmp_path / "run"
    proc = start_training(out, "--time-budget", "10")
    try:
        wait_for(out / "checkpoints" / "last" / "training_state.pt", proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert (out / "run.lock").is_file()                     # the file stays; nobody holds it
    step = json.loads((out / "checkpoints" / "last" / "config.json").read_text())["metadata"]["step"]
    code, err = run_cli(["train", "--resume", str(out), "--max-steps", str(step + 2)], capsys)
    assert code == 0, err
    assert torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=True)["step"] == step + 2


def test_weights_that_are_not_finite_are_never_saved(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_step = training.Trainer._train_step

    def step(self, indices):
        bpd = real_step(self, indices)
        if self.step == 2:                      # as an overflowing update would leave them
            next(self.model.parameters()).data.fill_(float("inf"))
        return bpd

    monkeypatch.setattr(training.Trainer, "_train_step", step)
    code, err = run_cli(train_argv(out, "--max-steps", "3", "--checkpoint-every", "1", "--ema", "0"), capsys)
    assert code == 2
    assert_one_line(err, "the weights became NaN or infinite by step 2; training stopped without saving them")
    assert f"The last good checkpoint is {out / 'checkpoints' / 'last'} (step 1)" in err
    state = torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=True)
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


# ----- a full disk ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_stops_in_one_line_keeping_the_last_good_checkpoint(tmp_path, capsys,
                                                                                           monkeypatch):
    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) > 1:                   # the step-0 checkpoint is written; the next finds the disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    code, err = run_cli(train_argv(out, "--max-steps", "2"), capsys)
    monkeypatch.undo()
    assert code == 2
    assert_one_line(err, "No space left on device")
    assert f"The last good checkpoint is {out / 'checkpoints' / 'last'} (step 0)" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last"]     # no partial checkpoint
    assert pixelcnn.load(out / "checkpoints" / "last").levels == 2
    assert torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=True)["step"] == 0


@pytest.mark.parametrize("argv,fragment", [
    (["--hidden", "0"], "expected hidden to be an integer >= 3, got 0"),                     # CIFAR-10: 3 colour groups
    (["--layers", "-1"], "--layers: expected an integer >= 0, got -1"),
    # the flag takes the loosest of the families' checks (a PixelCNN has no block), each family's config its own
    (["--model", "gated_pixelcnn", "--layers", "0"], "expected layers to be an integer >= 1, got 0"),
    (["--model", "diagonal_bilstm", "--layers", "0"], "expected layers to be an integer >= 1, got 0"),
    (["--dilations", "0"], "--dilations: expected one or more integers >= 1 separated by commas (like 1,2,4), got '0'"),
    (["--model", "pixelcnn_pp", "--mixtures", "0"], "mixtures"),
    (["--model", "lmconv", "--orders", "zigzag"], "expected an order NAME or NAME:S"),
    (["--model", "pixelsnail", "--heads", "0"], "--heads: expected an integer >= 1, got 0"),
    (["--model", "pixelsnail", "--head-channels", "two"], "--head-channels: expected an integer >= 1, got 'two'"),
    (["--model", "pixelsnail", "--residual-blocks", "-2"], "--residual-blocks: expected an integer >= 0, got -2"),
    (["--model", "row_lstm", "--output-hidden", "2", "--dataset", "cifar10"], "expected output_hidden to be 0 or at least the 3 colour channels, got 2"),
])
def test_model_hyperparameters_are_refused_before_any_data_loads(argv, fragment, tmp_path, capsys, monkeypatch):
    import pixelcnn.data

    def no_data(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the model's hyperparameters were checked")

    monkeypatch.setattr(pixelcnn.data, "load_dataset", no_data)
    dataset = [] if "--dataset" in argv else ["--dataset", "cifar10"]      # not on disk: a load would download
    code, err = run_cli(["train", "--out", str(tmp_path / "run"), *dataset, *argv], capsys)
    assert code == 2, err
    assert_one_line(err, fragment)
    assert not (tmp_path / "run").exists()


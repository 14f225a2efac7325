"""The command line end to end: train a few steps, resume, eval, sample; errors as one line."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import pixelcnn
from pixelcnn.cli import main
from pixelcnn.data import load_dataset
from pixelcnn.evaluation import evaluate
from conftest import ROOT, TINY_FLAGS, needs_mnist

pytestmark = needs_mnist


def run(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = run("train", "--model", "gated_pixelcnn", "--dataset", "mnist", "--max-steps", 3, "--batch_size", 8,
               "--valid-limit", 16, "--samples", 2, "--epochs", 1, "--lr", 1e-3, "--gamma", 0.99, "--in_channels", 1,
               *TINY_FLAGS, "--out", out)
    assert code == 0
    return out


def test_train_writes_a_run(trained, capsys):
    assert (trained / "checkpoints" / "best" / "config.json").is_file()
    assert (trained / "metrics.jsonl").is_file()


def test_resume_continues_the_run(trained, capsys):
    assert run("train", "--resume", trained, "--max-steps", 5) == 0
    assert "step 5," in capsys.readouterr().out


def test_eval_prints_nats_and_bits_per_dim_and_writes_json(trained, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert run("eval", trained, "--split", "test", "--limit", 32, "--json", out) == 0
    text = capsys.readouterr().out
    assert "mnist test (32 images)" in text and "nats/image" in text and "bits/dim" in text
    result = json.loads(out.read_text())
    library = evaluate(pixelcnn.load(trained), load_dataset("mnist", "test"), limit=32)
    assert result["images"] == 32 and result["bits_per_dim"] == pytest.approx(library["bits_per_dim"], rel=1e-9)
    assert result["nll_nats"] == pytest.approx(result["bits_per_dim"] * 784 * np.log(2))


def test_sample_writes_a_png_grid_and_raw_integers(trained, tmp_path):
    png, npy = tmp_path / "grid.png", tmp_path / "s.npy"
    assert run("sample", trained, "--n", 4, "--seed", 1, "--out", png, "--npy", npy) == 0
    raw = np.load(npy)
    assert raw.shape == (4, 1, 28, 28) and raw.min() >= 0 and raw.max() < 256
    assert Image.open(png).size == (2 * 30 + 2, 2 * 30 + 2)
    again = tmp_path / "again.npy"
    run("sample", trained, "--n", 4, "--seed", 1, "--out", tmp_path / "g2.png", "--npy", again)
    assert np.array_equal(np.load(again), raw)


@pytest.mark.parametrize("args,fragment", [
    (["train", "--model", "pixelgan", "--dataset", "mnist"], "unknown model 'pixelgan'"),
    (["train", "--dataset", "imagenet"], "imagenet"),
    (["train", "--model", "pixelcnn", "--dilations", "1,2"], "--dilations do(es) not apply to model 'pixelcnn'"),
    (["train", "--in_channels", "3"], "--in-channels 3 does not match dataset 'mnist'"),
    (["eval", "no/such/run"], "does not exist"),
    (["sample", "no/such/run"], "does not exist"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(args, fragment, capsys, tmp_path):
    code = run(*args, *([] if args[0] != "train" else ["--out", tmp_path / "r", "--max-steps", 1]))
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_main_py_trains_with_the_small_repositories_flags(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--epochs", "1", "--lr", "0.001", "--batch_size", "8", "--gamma", "0.9",
         "--inner_dim", "8", "--layers", "2", "--output_hidden", "0", "--max-steps", "1", "--valid-limit", "8",
         "--samples", "0", "--dataset", "binarized_mnist", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout and (tmp_path / "run" / "checkpoints" / "last").is_dir()


@pytest.mark.slow
def test_help_of_every_command(capsys):
    proc = subprocess.run([sys.executable, "-m", "pixelcnn", "--help"], capture_output=True, text=True)   # the real program
    assert proc.returncode == 0 and "usage: pixelcnn" in proc.stdout
    commands = re.findall(r"^    ([a-z-]+) ", proc.stdout, flags=re.M)
    assert {"train", "eval", "sample", "compress", "serve"} <= set(commands)
    for cmd in commands:                                    # the same parser, in this process
        with pytest.raises(SystemExit) as done:
            main([cmd, "--help"])
        assert done.value.code == 0 and f"usage: pixelcnn {cmd}" in capsys.readouterr().out, cmd

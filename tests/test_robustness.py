"""Training survives: SIGKILL at any moment, then resume; torchrun/DDP equals one process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pixelcnn
from conftest import TINY_FLAGS, needs_mnist

pytestmark = needs_mnist

# fp32 whatever the CPU (auto would be bf16 where it is native): one process and two split the batch differently,
# and bf16 rounds what each kernel computes to 8 bits, beyond the tolerance of the DDP comparison.
ARGS = ["--model", "gated_pixelcnn", "--dataset", "binarized_mnist", "--batch-size", "16", "--valid-limit", "16",
        "--samples", "0", "--lr", "3e-3", "--log-every", "1", "--device", "cpu", "--precision", "fp32", *TINY_FLAGS]


def cli(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pixelcnn", "train", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last" / "training_state.pt", weights_only=True)["model"]


def assert_same(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0 if atol == 0 else 1e-4, atol=atol, msg=k)


def steps_logged(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return max([json.loads(l)["step"] for l in lines if '"train"' in l] or [0])


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    ref = cli(*ARGS, "--max-steps", 14, "--out", straight)
    victim = cli(*ARGS, "--max-steps", 14, "--checkpoint-every", 1, "--out", killed)
    deadline = time.time() + 240
    while steps_logged(killed) < 6 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = steps_logged(killed)
    # Whatever moment the kill hit, the last checkpoint is whole and loadable.
    assert pixelcnn.load(killed / "checkpoints" / "last").image_shape == (1, 28, 28)
    resumed = cli("--resume", killed)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    assert killed_at < 14 and steps_logged(killed) == 14
    assert not list((killed / "checkpoints").glob(".*tmp-*"))
    assert_same(final_weights(straight), final_weights(killed))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
@pytest.mark.parametrize("extra", [[], ["--dataset", "mnist", "--conditional"]], ids=["plain", "class-conditional"])
def test_torchrun_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path, extra):
    """Class-conditional too: its last layer has class biases that never reach the loss, which DDP must allow."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = [*ARGS, *extra]
    single = cli(*args, "--max-steps", 4, "--ema", "0", "--out", one)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "pixelcnn", "train", *args,
                          "--max-steps", "4", "--ema", "0", "--out", str(two)],
                         env=env, capture_output=True, text=True, timeout=400)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert single.wait(timeout=300) == 0, single.stderr.read()
    assert_same(final_weights(one), final_weights(two), atol=1e-5)
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert len([l for l in lines if '"train"' in l]) == 4, "only rank 0 logs"


@pytest.mark.slow
def test_tensorboard_event_files(tmp_path):
    proc = cli(*ARGS, "--max-steps", 2, "--tensorboard", "--samples", 2, "--out", tmp_path / "run")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/bits_per_dim" in acc.Tags()["scalars"] and "samples" in acc.Tags()["images"]

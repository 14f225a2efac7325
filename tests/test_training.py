"""Training: checkpoints, exact resume, NaN safety, the run folder."""

import json

import pytest
import torch
from safetensors.torch import load_file

import pixelcnn
from pixelcnn import evaluation, training
from pixelcnn.training import TrainConfig
from conftest import needs_mnist

pytestmark = needs_mnist

TRAIN_HP = dict(hidden=8, layers=2, output_hidden=0)


def cfg(**kw) -> TrainConfig:
    base = dict(model="gated_pixelcnn", dataset="binarized_mnist", epochs=1, batch_size=16, max_steps=4,
                valid_limit=32, samples=0, log_every=1, lr=3e-3)
    return TrainConfig(**{**base, **kw})


def weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last" / "training_state.pt", weights_only=True)["model"]


def test_a_run_folder_has_config_metrics_checkpoints_and_samples(tmp_path):
    out = tmp_path / "run"
    summary = training.train(cfg(samples=2), out, **TRAIN_HP)
    assert summary["step"] == 4
    run = json.loads((out / "run.json").read_text())
    assert run["train"]["batch_size"] == 16 and run["model_config"]["hidden"] == 8
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines if l["event"] == "train"] == [1, 2, 3, 4]
    assert lines[-1]["event"] == "end" and lines[-1]["valid_bits_per_dim"] > 0
    for name in ("last", "best"):
        model = pixelcnn.load(out / "checkpoints" / name)
        assert model.levels == 2 and model.image_shape == (1, 28, 28)
    assert (out / "checkpoints" / "last" / "training_state.pt").is_file()
    assert not (out / "checkpoints" / "best" / "training_state.pt").exists()
    assert list((out / "samples").glob("*.png"))


@pytest.mark.slow
def test_resume_follows_the_uninterrupted_trajectory(tmp_path):
    straight = tmp_path / "straight"
    training.train(cfg(max_steps=6), straight, **TRAIN_HP)
    split = tmp_path / "split"
    training.train(cfg(max_steps=3), split, **TRAIN_HP)
    training.resume(split, max_steps=6)
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    la = [l for l in map(json.loads, (straight / "metrics.jsonl").read_text().splitlines()) if l["event"] == "train"]
    lb = [l for l in map(json.loads, (split / "metrics.jsonl").read_text().splitlines()) if l["event"] == "train"]
    assert [l["bits_per_dim"] for l in la] == [l["bits_per_dim"] for l in lb]


def test_saved_weights_are_the_ema_weights(tmp_path):
    out = tmp_path / "run"
    training.train(cfg(ema=0.9), out, **TRAIN_HP)
    state = torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=True)
    saved = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    shadow = state["ema"]["shadow"]
    some = next(k for k in saved if k.endswith("weight"))
    torch.testing.assert_close(saved[some], shadow[some])
    assert not torch.equal(saved[some], state["model"][some])


def test_a_nan_loss_stops_with_a_clear_error_and_keeps_a_loadable_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = pixelcnn.AutoregressiveModel.nll_from_params
    calls = {"n": 0}

    def poisoned(self, params, x, *known):
        calls["n"] += 1
        nll = original(self, params, x, *known)
        return nll * float("nan") if calls["n"] >= 3 else nll

    monkeypatch.setattr(pixelcnn.AutoregressiveModel, "nll_from_params", poisoned)
    with pytest.raises(pixelcnn.TrainingError, match="the loss became nan at step 2"):
        training.train(cfg(checkpoint_every=1), out, **TRAIN_HP)
    monkeypatch.undo()
    model = pixelcnn.load(out / "checkpoints" / "last")
    assert torch.isfinite(model.log_prob(torch.zeros(1, 1, 28, 28, dtype=torch.long))).all()


def test_an_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    training.train(cfg(max_steps=1), out, **TRAIN_HP)
    with pytest.raises(pixelcnn.TrainingError, match="already holds a training run"):
        training.train(cfg(max_steps=1), out, **TRAIN_HP)


def test_resume_refuses_to_change_what_would_break_the_trajectory(tmp_path):
    out = tmp_path / "run"
    training.train(cfg(max_steps=1), out, **TRAIN_HP)
    with pytest.raises(pixelcnn.ConfigError, match="cannot change \\['batch_size'\\]"):
        training.resume(out, batch_size=8)


@pytest.mark.slow
def test_bf16_autocast_trains_on_cpu_along_the_fp32_trajectory(tmp_path):
    """bf16 rounds the steps (the weights differ) but follows fp32's losses; its reported validation
    score is the exact fp32 likelihood of the weights it saved."""
    runs = {p: tmp_path / p for p in ("bf16", "fp32")}
    summaries = {p: training.train(cfg(precision=p, max_steps=3), out, **TRAIN_HP) for p, out in runs.items()}
    losses = {p: [l["bits_per_dim"] for l in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                  if l["event"] == "train"] for p, out in runs.items()}
    assert len(losses["bf16"]) == 3 and losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    assert not all(torch.equal(a, b) for a, b in zip(weights(runs["bf16"]).values(), weights(runs["fp32"]).values()))
    model = pixelcnn.load(runs["bf16"] / "checkpoints" / "last")
    valid = evaluation.evaluate(model, pixelcnn.data.load_dataset("binarized_mnist", "valid"), limit=32)
    assert summaries["bf16"]["valid_bits_per_dim"] == pytest.approx(valid["bits_per_dim"], rel=1e-9)


def test_conditional_training_needs_labels(tmp_path):
    with pytest.raises(pixelcnn.ConfigError, match="needs class labels"):
        training.train(cfg(conditional=True), tmp_path / "run", **TRAIN_HP)


def test_evaluate_gives_the_mean_and_spread_of_per_image_nll():
    from pixelcnn.data import load_dataset

    data = load_dataset("binarized_mnist", "valid")
    model = pixelcnn.create("gated_pixelcnn", image_shape=(1, 28, 28), levels=2, **TRAIN_HP)
    result = evaluation.evaluate(model, data, batch_size=7, limit=20)
    x, _ = data.batch(torch.arange(20))
    nll = -model.log_prob(x).double()
    assert result["images"] == 20
    # Per-image values are float32 sums of ~800 terms near 500 nats, computed here in other batch
    # sizes, so each may differ by ~1e-4 nats; the spread (~5 nats) is checked to that precision.
    assert result["nll_nats"] == pytest.approx(nll.mean().item(), abs=1e-3)
    assert result["nll_std_nats"] == pytest.approx(nll.std().item(), abs=1e-3)


def test_a_warm_started_conditional_model_starts_as_the_unconditional_one(tmp_path):
    torch.manual_seed(0)
    source = pixelcnn.create("gated_pixelcnn", image_shape=(1, 4, 5), levels=4, **TRAIN_HP)
    source.save_pretrained(tmp_path / "source")
    target = pixelcnn.create("gated_pixelcnn", image_shape=(1, 4, 5), levels=4, num_classes=3, **TRAIN_HP)
    training.warm_start(target, tmp_path / "source")
    x = torch.randint(0, 4, (6, 1, 4, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = source.log_prob(x)
        for label in range(3):
            torch.testing.assert_close(target.log_prob(x, torch.full((6,), label)), expected, rtol=0, atol=0)


def test_warm_start_refuses_tensors_of_another_shape_before_writing_anything(tmp_path):
    pixelcnn.create("gated_pixelcnn", image_shape=(1, 28, 28), levels=2, hidden=16, layers=2,
                    output_hidden=0).save_pretrained(tmp_path / "source")
    with pytest.raises(pixelcnn.ConfigError, match=r"layers.0.vertical.weight: expected \(16, 1, 4, 7\), got \(32, 1, 4, 7\)"):
        training.train(cfg(init_from=str(tmp_path / "source")), tmp_path / "run", **TRAIN_HP)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_exactly_where_the_cpu_has_native_bf16(native, monkeypatch):
    from pixelcnn import runtime

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert runtime.resolve_precision("fp32", cpu) == "fp32" and runtime.resolve_precision("bf16", cpu) == "bf16"
    with runtime.autocast(runtime.Runtime(cpu), "auto"):
        assert torch.is_autocast_enabled("cpu") == native
    assert TrainConfig().precision == "auto"

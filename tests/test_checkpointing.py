"""Activation checkpointing: the same losses and gradients with less kept for backward, in every family.

Checkpointing repeats a unit's operations on the same inputs during backward, on the same machine
and with the forward's random state, so losses and gradients are compared bit for bit (torch.equal).
"""

import copy
import dataclasses
import json
from unittest import mock

import pytest
import torch

import pixelcnn
from pixelcnn import training
from pixelcnn.cli import main
from pixelcnn.models import activation_checkpointing as checkpointing
from pixelcnn.training import TrainConfig
from conftest import TINY_FLAGS, needs_mnist
from exact import tiny_model

FAMILIES = sorted(pixelcnn.models.REGISTRY)

# (image shape, levels, conditioning): odd and non-square, colour and grey, labels with a conditioning
# image or with known pixels (a completion model's known-pixels network holds units of its own)
CASES = {
    "colour": ((3, 5, 7), 4, {}),
    "grey": ((1, 7, 5), 2, {}),
    "superres": ((3, 5, 7), 4, {"num_classes": 2, "cond_shape": (3, 3, 4)}),
    "inpainting": ((1, 5, 7), 4, {"num_classes": 2, "inpainting": True}),
}


def batch(model, n: int = 3):
    """Images, labels, conditioning images and known masks for ``model``, the same on every call."""
    g = torch.Generator().manual_seed(1)
    cfg = model.config
    x = torch.randint(0, cfg.levels, (n, *cfg.image_shape), generator=g)
    labels = torch.randint(0, cfg.num_classes, (n,), generator=g) if cfg.num_classes else None
    cond = torch.randint(0, cfg.levels, (n, *cfg.cond_shape), generator=g) if cfg.cond_shape else None
    known = torch.rand(x.shape, generator=g) < 0.3 if cfg.inpainting else None
    return x, labels, cond, known


def loss_of(model, data) -> torch.Tensor:
    x, labels, cond, known = data
    return model.nll_from_params(model(x, labels, cond, known=known), x, known).mean()


def saved_bytes(model, data) -> tuple[torch.Tensor, int]:
    """The loss, and the bytes of the tensors (not parameters) the forward keeps for backward."""
    with checkpointing.saved_bytes(model) as kept:
        loss = loss_of(model, data)
    return loss, kept()


def train_pass(model, data, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of one training-mode pass (dropout drawn from ``seed``)."""
    model.train().zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = loss_of(model, data)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def make(name: str, case: str, **hp):
    shape, levels, conditioning = CASES[case]
    return tiny_model(name, shape, levels, seed=3, **conditioning, **hp).float()


def default_widths(name: str) -> dict:
    """The family's default hidden and output widths (the tiny models narrow some families): at those, the units
    hold most of what a forward keeps."""
    defaults = {f.name: f.default for f in dataclasses.fields(pixelcnn.models.get(name).config_class)}
    return {k: defaults[k] for k in ("hidden", "output_hidden") if k in defaults}


class Calls:
    """Counts the modules whose forward went through ``checkpoint``."""

    def __init__(self):
        self.modules: list[torch.nn.Module] = []
        self.real = checkpointing.checkpoint

    def __call__(self, fn, *args, **kwargs):
        self.modules.append(fn.__self__)
        return self.real(fn, *args, **kwargs)

    def __enter__(self):
        self.patch = mock.patch.object(checkpointing, "checkpoint", self)
        self.patch.__enter__()
        return self

    def __exit__(self, *exc):
        self.patch.__exit__(*exc)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", FAMILIES)
def test_loss_and_every_gradient_are_those_without_checkpointing(name, case):
    model = make(name, case)
    data = batch(model)
    loss, grads = train_pass(model, data)
    loss_c, grads_c = train_pass(model.checkpoint_activations(), data)
    assert torch.equal(loss, loss_c)
    assert grads and grads.keys() == grads_c.keys()
    for key in grads:
        assert torch.equal(grads[key], grads_c[key]), key


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", FAMILIES)
def test_every_unit_is_checkpointed_and_less_is_kept_for_backward(name, case):
    model = make(name, case, **default_widths(name)).train()
    data = batch(model)
    torch.manual_seed(0)
    _, plain = saved_bytes(model, data)
    units = model.checkpoint_activations().checkpoint_units()
    with Calls() as calls:
        torch.manual_seed(0)
        _, kept = saved_bytes(model, data)
    assert units, f"{name} has no unit to checkpoint"
    called = {id(m) for m in calls.modules}
    assert [type(u).__name__ for u in units if id(u) not in called] == []
    assert kept < 0.6 * plain


@pytest.mark.parametrize("name", FAMILIES)
def test_evaluation_and_no_grad_run_without_checkpointing(name):
    model = make(name, "colour")
    data = batch(model)
    expected = model.log_prob(data[0])
    model.checkpoint_activations()
    with Calls() as calls:
        assert torch.equal(model.log_prob(data[0]), expected)              # eval mode, grad enabled
        with torch.no_grad():
            model.train()(data[0])                                          # training mode, no grad
        model.sample(1, generator=torch.Generator().manual_seed(0))
    assert calls.modules == []


def test_turning_it_off_restores_each_units_own_forward_and_keeps_the_weights():
    model = make("pixelcnn_pp", "colour")
    keys = list(model.state_dict())
    units = model.checkpoint_activations().checkpoint_units()
    assert all(checkpointing.is_checkpointed(u) for u in units)
    assert list(model.state_dict()) == keys
    model.checkpoint_activations(False)
    assert not any(checkpointing.is_checkpointed(m) for m in model.modules())
    assert all("forward" not in u.__dict__ for u in units)


def test_a_copy_checkpoints_its_own_units():
    model = make("gated_pixelcnn", "colour").checkpoint_activations()
    twin = copy.deepcopy(model)
    data = batch(model)
    with Calls() as calls:
        train_pass(twin, data)
    own = {id(m) for m in twin.modules()}
    assert calls.modules and all(id(m) in own for m in calls.modules)
    assert not any(p.grad is not None for p in model.parameters())


def test_units_are_the_elements_of_the_outermost_module_lists():
    inner = torch.nn.Sequential(torch.nn.Linear(2, 2))
    net = torch.nn.Module()
    net.stages = torch.nn.ModuleList([torch.nn.ModuleList([inner, torch.nn.ReLU()]), torch.nn.Tanh()])
    net.wrapped = torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Identity()]))
    net.whole = torch.nn.Module()
    net.whole.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
    names = {id(m): n for n, m in net.named_modules()}
    assert [names[id(u)] for u in checkpointing.units(net, ["whole"])] == [
        "whole", "stages.0.0", "stages.0.1", "stages.1", "wrapped.0.0"]


# ----- training ------------------------------------------------------------------------------


def weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last" / "training_state.pt", weights_only=True)["model"]


@pytest.mark.slow
@needs_mnist
def test_pixelcnn_train_checkpoint_activations_follows_the_same_trajectory(tmp_path):
    args = dict(model="gated_pixelcnn", dataset="binarized_mnist", epochs=1, batch_size=8, max_steps=3,
                valid_limit=16, samples=0, log_every=1, lr=3e-3)
    plain = tmp_path / "plain"
    training.train(TrainConfig(**args), plain, hidden=8, layers=2, output_hidden=0)
    run = tmp_path / "checkpointed"
    with Calls() as calls:
        code = main(["train", "--model", "gated_pixelcnn", "--dataset", "binarized_mnist", "--epochs", "1",
                     "--batch-size", "8", "--max-steps", "3", "--valid-limit", "16", "--samples", "0",
                     "--log-every", "1", "--lr", "3e-3", *TINY_FLAGS, "--checkpoint-activations", "--out", str(run)])
    assert code == 0 and len(calls.modules) == 3 * 2                      # two layers in each of three steps
    assert json.loads((run / "run.json").read_text())["train"]["checkpoint_activations"] is True
    a, b = weights(plain), weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@needs_mnist
def test_a_run_resumes_with_checkpointing_turned_on(tmp_path):
    args = dict(model="pixelcnn_pp", dataset="binarized_mnist", epochs=1, batch_size=4, valid_limit=8,
                samples=0, log_every=1, lr=3e-3)
    small = dict(filters=4, resnet_blocks=1, stages=2, mixtures=1)
    straight, split = tmp_path / "straight", tmp_path / "split"
    training.train(TrainConfig(**args, max_steps=4), straight, **small)
    training.train(TrainConfig(**args, max_steps=2), split, **small)
    with Calls() as calls:
        training.resume(split, max_steps=4, checkpoint_activations=True)
    assert calls.modules
    a, b = weights(straight), weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)

"""Activation checkpointing: keep a unit's inputs for backward, not the feature maps inside it.

(Activations only; the checkpoint *folders* a run saves are ``pixelcnn/checkpoint.py``'s.)

A model's units are the elements of its outermost ``nn.ModuleList``s (a list of lists, PixelCNN++'s
stages, is read through), found by walking the module tree and stopping at each unit: the
residual blocks, gated layers and LSTM layers of every family, the resampling layers of PixelCNN++,
the blocks of the conditioning networks. A family names in ``checkpoint_whole`` the submodules it
checkpoints whole instead (Multiscale's group network, whose blocks are weights its ``features``
reads rather than modules it calls). With checkpointing on, a unit's forward runs through
``torch.utils.checkpoint.checkpoint`` (non-reentrant) while the unit is in training mode and grad
is enabled: its inner tensors are dropped after the forward and recomputed during backward, with
the random state (dropout) and autocast of the forward. The recomputation repeats the same
operations on the same inputs, so losses and gradients are those without checkpointing; in eval
mode or under ``torch.no_grad`` (evaluation, sampling, the codec) a unit runs as it always does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class CheckpointedForward:
    """A module's own forward, through ``checkpoint`` while the module trains with grad enabled.

    Installed as the module's instance attribute ``forward``, which ``nn.Module.__call__`` calls
    after the module's hooks; it holds the module itself, so a deep copy of a model copies it along.
    """

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, *args, **kwargs):
        forward = type(self.module).forward.__get__(self.module)
        if self.module.training and torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)


def units(model: nn.Module, whole: Iterable[str] = ()) -> list[nn.Module]:
    """The modules of ``model`` checkpointed one by one: its submodules named in ``whole``, then the
    elements of its outermost ModuleLists; the walk does not enter a unit."""
    named = dict(model.named_modules())
    chosen = [named[name] for name in whole]
    return chosen + list(_list_elements(model, set(map(id, chosen))))


def _list_elements(module: nn.Module, skip: set[int]) -> Iterator[nn.Module]:
    """Elements of the outermost ModuleLists under ``module``, skipping the modules whose ids are in ``skip``."""
    for child in module.children():
        if id(child) in skip:
            continue
        if isinstance(child, nn.ModuleList):
            yield from _elements(child, skip)
        else:
            yield from _list_elements(child, skip)


def _elements(modules: nn.ModuleList, skip: set[int]) -> Iterator[nn.Module]:
    """A ModuleList's elements; those of a list inside it (a stage of blocks) in its place."""
    for module in modules:
        if isinstance(module, nn.ModuleList):
            yield from _elements(module, skip)
        elif id(module) not in skip:
            yield module


def is_checkpointed(module: nn.Module) -> bool:
    return isinstance(module.__dict__.get("forward"), CheckpointedForward)


def set_checkpointing(modules: Iterable[nn.Module], enabled: bool) -> None:
    """Route each module's forward through ``checkpoint`` (``enabled``) or back to its own."""
    for module in modules:
        if enabled and not is_checkpointed(module):
            module.forward = CheckpointedForward(module)
        elif not enabled and is_checkpointed(module):
            del module.forward


@contextlib.contextmanager
def saved_bytes(model: nn.Module) -> Iterator[Callable[[], int]]:
    """Count what autograd keeps for backward inside the block: the bytes of the distinct storages
    (the model's parameters left out) that the forward saves; the function it yields returns the count."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield lambda: sum(kept.values())

"""The model registry: name -> model class (whose ``config_class`` is its configuration)."""

from __future__ import annotations

from pixelcnn.errors import ConfigError
from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.models.gated_pixelcnn import GatedPixelCNN
from pixelcnn.models.lmconv import LMConv
from pixelcnn.models.multiscale import Multiscale
from pixelcnn.models.pixelcnn import PixelCNN
from pixelcnn.models.pixelcnn_pp import PixelCNNPP
from pixelcnn.models.pixelrnn import DiagonalBiLSTM, RowLSTM
from pixelcnn.models.pixelsnail import PixelSNAIL

REGISTRY: dict[str, type[AutoregressiveModel]] = {}


def register(cls: type[AutoregressiveModel]) -> type[AutoregressiveModel]:
    REGISTRY[cls.name] = cls
    return cls


for _cls in (PixelCNN, GatedPixelCNN, PixelCNNPP, RowLSTM, DiagonalBiLSTM, LMConv, Multiscale, PixelSNAIL):
    register(_cls)


def get(name: str) -> type[AutoregressiveModel]:
    if name not in REGISTRY:
        raise ConfigError(f"unknown model {name!r}; expected one of {sorted(REGISTRY)}")
    return REGISTRY[name]

"""Typed, frozen model configurations with JSON round trips.

Every model family has a frozen dataclass deriving from :class:`ModelConfig`. Its fields are
everything needed to rebuild the model, and ``to_dict`` / ``from_dict`` give a JSON form that a
checkpoint folder stores in ``config.json``. The command line builds its hyperparameter flags
from the same fields, so flags and configs cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from pixelcnn.errors import ConfigError
from pixelcnn.validation import Boolean, Integer, Integers, check_fields

MAX_LEVELS = 256


@dataclass(frozen=True)
class ModelConfig:
    """Fields shared by every model: the data it models and its optional class conditioning."""

    image_shape: tuple[int, int, int]
    levels: int = 256
    num_classes: int | None = None
    cond_shape: tuple[int, int, int] | None = None
    cond_features: int = 32
    inpainting: bool = False

    # Help text for each field, used by the command line.
    help: ClassVar[dict[str, str]] = {
        "levels": "number of values a sub-pixel takes (2 for binary images, 256 for 8-bit)",
        "num_classes": "condition on a class label in [0, num_classes)",
        "cond_shape": "condition on an integer image of this shape (C, h, w), e.g. the low-resolution image",
        "cond_features": "feature maps of the network over the conditioning image or the known pixels",
        "inpainting": "condition on the known part of the image (its known values and where they are): a completion "
                      "model, in which every unknown sub-pixel sees every known one",
    }

    # The check of each field (pixelcnn.validation), applied when a config is made; a family adds
    # its fields' checks to its parent's and keeps only rules across fields in ``__post_init__``.
    limits: ClassVar[dict[str, Any]] = {
        "image_shape": Integers(1, length=3, what=" (C, H, W)"), "levels": Integer(2, MAX_LEVELS),
        "num_classes": Integer(1), "cond_shape": Integers(1, length=3, what=" (C, h, w)"), "cond_features": Integer(1),
        "inpainting": Boolean(),
    }

    def __post_init__(self) -> None:
        check_fields(self, self.limits)
        if self.inpainting and self.cond_shape is not None:
            raise ConfigError("expected one conditioning image: inpainting or cond_shape, got both")

    @property
    def channels(self) -> int:
        return self.image_shape[0]
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field(s) {', '.join(unknown)}; expected some of {sorted(names)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _from_json(v, hints[k]) for k, v in data.items()})

    @classmethod
    def hyperparameters(cls) -> list[dataclasses.Field]:
        """The family's own fields and the conditioning networks' width (not the data description or
        what the model is conditioned on, which come from the dataset and the task)."""
        base = {f.name for f in dataclasses.fields(ModelConfig)} - {"cond_features"}
        return [f for f in dataclasses.fields(cls) if f.name not in base]


def _to_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _from_json(value: Any, hint: Any) -> Any:
    """Turn JSON lists back into the tuples that frozen configs hold."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return value if value is None else _from_json(value, options[0])
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value

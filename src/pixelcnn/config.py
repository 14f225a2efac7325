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

    # The values of each setting that takes the code down a different branch: the generated tests
    # (tests/test_generated.py) run over their product, pairwise. ``channels`` is the image's first
    # side; a cond_shape of "half" stands for a conditioning image of half the image's size.
    branches: ClassVar[dict[str, tuple]] = {
        "channels": (1, 3),
        "levels": (2, 5, 256),
        "num_classes": (None, 3),
        "cond_shape": (None, "half"),
        "inpainting": (False, True),
    }

    def __post_init__(self) -> None:
        shape = tuple(self.image_shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
            raise ConfigError(f"image_shape must be three positive integers (C, H, W), got {self.image_shape!r}")
        object.__setattr__(self, "image_shape", shape)
        if not isinstance(self.levels, int) or not 2 <= self.levels <= MAX_LEVELS:
            raise ConfigError(f"levels must be an integer in [2, {MAX_LEVELS}], got {self.levels!r}")
        if self.num_classes is not None and (not isinstance(self.num_classes, int) or self.num_classes < 1):
            raise ConfigError(f"num_classes must be a positive integer or None, got {self.num_classes!r}")
        if self.cond_shape is not None:
            cond = tuple(self.cond_shape)
            if len(cond) != 3 or not all(isinstance(s, int) and s >= 1 for s in cond):
                raise ConfigError(f"cond_shape must be None or three positive integers (C, h, w), got {self.cond_shape!r}")
            object.__setattr__(self, "cond_shape", cond)
        if not isinstance(self.cond_features, int) or self.cond_features < 1:
            raise ConfigError(f"cond_features must be a positive integer, got {self.cond_features!r}")
        if not isinstance(self.inpainting, bool):
            raise ConfigError(f"inpainting must be true or false, got {self.inpainting!r}")
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

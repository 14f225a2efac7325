"""Command-line flags generated from configuration dataclasses, so flags and configs never drift apart.

One flag per field, typed from its annotation and checked by the field's entry in the class's
``limits`` (see :mod:`pixelcnn.validation`). Flags accept both spellings (``--batch-size`` and
``--batch_size``), and the names users of the small PixelCNN repositories type (``--inner_dim``
for ``--hidden``) are accepted as aliases.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

import pixelcnn
from pixelcnn.validation import fail, flag, loosest

ALIASES = {"hidden": ["--inner-dim", "--inner_dim"], "batch_size": ["-b"], "epochs": ["-e"]}


def flag_names(field: str) -> list[str]:
    dashed = "--" + field.replace("_", "-")
    names = [dashed] + (["--" + field] if "_" in field else [])
    return names + ALIASES.get(field, [])


def _parser_for(hint: Any):
    """An argparse ``type`` for a dataclass field annotation."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return _parser_for(args[0])
    if origin is tuple:
        return flag(comma_list(args[0]))
    return hint


def comma_list(inner: type):
    """'1,2,4' -> (1, 2, 4): every item of type ``inner``, none empty."""
    def parse(text: str) -> tuple:
        try:
            return tuple(inner(v) for v in text.split(","))
        except ValueError:
            fail(None, f"values of type {inner.__name__} separated by commas (like 1,2,4)", text)
    return parse


def add_dataclass_flags(parser, cls: type, fields=None, show_defaults: bool = True, limits: dict | None = None) -> None:
    """One flag per field of dataclass ``cls`` (or of ``fields``), typed from its annotation and checked by
    ``limits`` (by default the class's own).

    Every flag defaults to None, so that the caller sees which ones the user gave; the
    dataclass fills in the rest.
    """
    hints = typing.get_type_hints(cls)
    limits = getattr(cls, "limits", {}) if limits is None else limits
    for f in fields if fields is not None else dataclasses.fields(cls):
        kind = hints[f.name]
        shown = f" (default: {f.default})" if show_defaults and f.default is not None else ""
        help_text = cls.help.get(f.name, "") + shown
        if kind is bool:
            parser.add_argument(*flag_names(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
            continue
        kind_type = flag(limits[f.name].parse) if f.name in limits else _parser_for(kind)
        parser.add_argument(*flag_names(f.name), dest=f.name, type=kind_type, default=None,
                            help=help_text, metavar=f.name.upper())


def model_hyperparameter_fields() -> dict[str, tuple[type, dataclasses.Field]]:
    """Union of every family's hyperparameter fields: name -> (config class, field) of the first family that has it."""
    out: dict[str, tuple[type, dataclasses.Field]] = {}
    for name in pixelcnn.available_models():
        cls = pixelcnn.models.get(name).config_class
        for f in cls.hyperparameters():
            out.setdefault(f.name, (cls, f))
    return out


def given_model_hyperparameters(args) -> dict[str, Any]:
    """The model hyperparameters the user gave on the command line (flags of :func:`add_model_flags`), by field."""
    return {k: getattr(args, k) for k in model_hyperparameter_fields() if getattr(args, k, None) is not None}


def add_model_flags(parser) -> None:
    """One flag per hyperparameter of any family, its check the loosest of the families' that have the field
    (``--layers 0`` suits a PixelCNN): the chosen family's config then applies its own, stricter one."""
    configs = [pixelcnn.models.get(name).config_class for name in pixelcnn.available_models()]
    fields = [(c, {g.name for g in c.hyperparameters()}) for c in configs]          # each family's, once
    for name, (cls, f) in model_hyperparameter_fields().items():
        checks = [c.limits[name] for c, own in fields if name in own and name in c.limits]
        add_dataclass_flags(parser, cls, [f], show_defaults=False, limits={name: loosest(checks)} if checks else {})

"""Checks of the values users give, written once for the command line and the Python API.

A check is a small object: ``check(value, name)`` returns the value or raises a
:class:`~pixelcnn.errors.ConfigError` that says what was expected and what came, and
``check.parse(text)`` does the same for command-line text. Configuration dataclasses list the
check of each field in ``limits``; the command line turns the same checks into argparse types
(:func:`flag`), so a flag and the field it fills refuse the same values in the same words, and
they are refused while the arguments are parsed, before anything is loaded or written.

Text formats that several commands share (class labels, dataset indices, output paths) are
parsed here too, once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable

from pixelcnn.errors import ConfigError, InvalidLabelError, PixelCNNError

METHODS = ("auto", "naive", "cached")
# The model argument of every command (its metavar is MODEL everywhere).
MODEL_HELP = "run folder, checkpoint folder or pretrained:NAME"


def fail(name: str | None, expected: str, got: Any, error: type[PixelCNNError] = ConfigError):
    subject = f"{name} to be " if name else ""
    raise error(f"expected {subject}{expected}, got {got!r}")


def _bounds(lo, hi, open_lo: bool = False, open_hi: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"
    if lo is not None:
        return f"{'>' if open_lo else '>='} {lo}"
    return f"{'<' if open_hi else '<='} {hi}" if hi is not None else ""


def converted(kind: Callable[[str], Any], text: str, expected: str) -> Any:
    """``kind(text)`` (int, float), or the one-line error that names what was ``expected``."""
    try:
        return kind(text)
    except ValueError:
        fail(None, expected, text)


@dataclasses.dataclass(frozen=True)
class Integer:
    """An int (not a bool) in [minimum, maximum]; with ``odd``, an odd one (a kernel size)."""

    minimum: int | None = None
    maximum: int | None = None
    odd: bool = False

    @property
    def expected(self) -> str:
        return f"{'an odd' if self.odd else 'an'} integer {_bounds(self.minimum, self.maximum)}".rstrip()

    def __call__(self, value: Any, name: str | None = None) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool) and (not self.odd or value % 2 == 1)
        if not ok or (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum):
            fail(name, self.expected, value)
        return value

    def parse(self, text: str) -> int:
        return self(converted(int, text, self.expected))


def loosest(checks: list):
    """A check that accepts what any of ``checks`` accepts, for a flag that several families share: the one
    check where they agree, or the widest range of Integers (odd only where every one is)."""
    first = checks[0]
    if all(c == first for c in checks):
        return first
    if not all(isinstance(c, Integer) for c in checks):
        raise TypeError(f"no loosest check of {checks}: give the families' field one check, or an Integer each")
    lows, highs = [c.minimum for c in checks], [c.maximum for c in checks]
    return Integer(None if None in lows else min(lows), None if None in highs else max(highs),
                   odd=all(c.odd for c in checks))


@dataclasses.dataclass(frozen=True)
class Real:
    """A finite number (int or float, not a bool) between the bounds, each open or closed."""

    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False

    @property
    def expected(self) -> str:
        return f"a finite number {_bounds(self.minimum, self.maximum, self.open_min, self.open_max)}".rstrip()

    def __call__(self, value: Any, name: str | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(name, self.expected, value)
        lo, hi = self.minimum, self.maximum
        if lo is not None and (value <= lo if self.open_min else value < lo):
            fail(name, self.expected, value)
        if hi is not None and (value >= hi if self.open_max else value > hi):
            fail(name, self.expected, value)
        return value

    def parse(self, text: str) -> float:
        return self(converted(float, text, self.expected))


@dataclasses.dataclass(frozen=True)
class OneOf:
    """One of a few strings."""

    options: tuple[str, ...]

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(self.options)

    def __call__(self, value: Any, name: str | None = None) -> str:
        if value not in self.options:
            fail(name, self.expected, value)
        return value

    def parse(self, text: str) -> str:
        return self(text)


@dataclasses.dataclass(frozen=True)
class Integers:
    """``length`` integers in [minimum, ...] (any number, at least one, without a length), as a tuple;
    a single int stands for a tuple of one where no length is set."""

    minimum: int = 1
    length: int | None = None
    what: str = ""

    @property
    def expected(self) -> str:
        count = f"{self.length}" if self.length else "one or more"
        return f"{count} integers {_bounds(self.minimum, None)}{self.what}"

    def __call__(self, value: Any, name: str | None = None) -> tuple[int, ...]:
        single = self.length is None and isinstance(value, int)
        items = (value,) if single else tuple(value) if isinstance(value, (list, tuple)) else None
        if not items or (self.length and len(items) != self.length) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= self.minimum for v in items):
            fail(name, self.expected, value)
        return items

    def parse(self, text: str) -> tuple[int, ...]:
        """'1,2,4' -> (1, 2, 4); the message quotes the text as typed."""
        try:
            return self(tuple(int(v) for v in text.split(",")))
        except (ValueError, ConfigError):
            fail(None, self.expected + " separated by commas (like 1,2,4)", text)


@dataclasses.dataclass(frozen=True)
class Boolean:
    """True or False (not 0 or 1, not a string)."""

    expected: str = "true or false"

    def __call__(self, value: Any, name: str | None = None) -> bool:
        if not isinstance(value, bool):
            fail(name, self.expected, value)
        return value


COUNT = Integer(1)                          # images, steps, batch sizes: at least one
SEED = Integer(0, 2**32 - 1)
TEMPERATURE = Real(0, open_min=True)
METHOD = OneOf(METHODS)


def check_fields(config, limits: dict[str, Callable[[Any, str], Any]]) -> None:
    """Apply each field's check to a configuration dataclass, keeping the value it returns (a list
    becomes the tuple a frozen config holds); None passes where it is the default."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name, check in limits.items():
        value = getattr(config, name)
        if value is None and defaults.get(name) is None:
            continue
        object.__setattr__(config, name, check(value, name))


def flag(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a text parser that raises PixelCNNError: the message becomes argparse's."""
    def parse_flag(text: str) -> Any:
        try:
            return parse(text)
        except PixelCNNError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse_flag.__name__ = getattr(parse, "__name__", "value")
    return parse_flag


# ----- text formats shared by several commands ---------------------------------------------


def labels(text: str) -> list[int]:
    """'3' -> [3]; '0,3,9' -> [0, 3, 9]. Every item an integer >= 0; no empty items."""
    expected = "class labels: one integer >= 0, or several separated by commas (like 0,3,9)"
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        fail(None, expected, text, InvalidLabelError)
    if any(v < 0 for v in values):
        fail(None, expected, text, InvalidLabelError)
    return values


def indices(text: str) -> list[int]:
    """'5' -> [5]; '0,3,9' -> [0, 3, 9]; '0..7' -> [0, ..., 7] (inclusive, first <= last)."""
    expected = "indices >= 0 like 5, 0,3,9 or 0..7"
    try:
        values = [int(v) for v in text.split("..")] if ".." in text else [int(v) for v in text.split(",")]
    except ValueError:
        fail(None, expected, text)
    if min(values) < 0 or (".." in text and len(values) != 2):
        fail(None, expected, text)
    if ".." not in text:
        return values
    lo, hi = values
    if lo > hi:
        fail(None, f"a range first..last with first <= last (like {hi}..{lo})", text)
    return list(range(lo, hi + 1))


def indices_fit(values: list[int], count: int, source: str) -> None:
    """Refuse --index values past the end of a dataset split of ``count`` images (``source``: its name)."""
    if max(values) >= count:
        raise ConfigError(f"expected --index within [0, {count}) for {source}, got indices up to {max(values)}")


def labels_fit(model, values: list[int] | None, flag_name: str = "--labels") -> None:
    """Refuse labels given to an unconditional model, and classes the model does not have."""
    k = model.config.num_classes
    if values is None:
        return
    if k is None:
        raise InvalidLabelError(f"expected no {flag_name} for this unconditional model, got {values}")
    if max(values) >= k:
        raise InvalidLabelError(f"expected {flag_name} in [0, {k}) for this model, got {values}")


def output_file(text: str) -> str:
    """A file to write: its folder must exist, and it must not be a folder itself."""
    path = Path(text)
    if path.is_dir():
        fail(None, "a file name to write, not an existing folder", text)
    parent = path.parent
    if not parent.is_dir():
        fail(None, f"a file in an existing folder ({parent} does not exist)", text)
    if not os.access(parent, os.W_OK):
        fail(None, f"a file in a folder you can write to ({parent} is not writable)", text)
    return text


def output_file_ending(suffix: str) -> Callable[[str], str]:
    """:func:`output_file` whose name must end in ``suffix`` (any case): what is written is that format."""
    def parse(text: str) -> str:
        output_file(text)
        if not text.lower().endswith(suffix):
            fail(None, f"a {suffix} file name (the file is written in that format)", text)
        return text
    parse.__name__ = f"{suffix[1:]}_file"
    return parse


PNG_FILE = output_file_ending(".png")
NPY_FILE = output_file_ending(".npy")


def output_folder(text: str) -> str:
    """A folder to write into (created if missing); it must not be an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        fail(None, "a folder to write into, not an existing file", text)
    return text

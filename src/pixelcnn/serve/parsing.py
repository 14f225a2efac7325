"""Reading the app's requests: every field checked, each refusal one line naming what was expected."""

from __future__ import annotations

import json
import random
from typing import Any

import torch
from starlette.requests import Request

from pixelcnn.serve import work

MAX_JSON_BYTES = 1 << 20             # 1 MiB: a 3x64x64 image as JSON is about 50 KB
MAX_UPLOAD_BYTES = 8 << 20
MAX_COMPLETIONS = 64
TEMPERATURE_RANGE = (0.01, 10.0)


class ApiError(Exception):
    """A bad request: answered as {"error": message} with ``status``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(f"expected a request body of at most {limit:,} bytes, got {int(declared):,}", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(f"expected a request body of at most {limit:,} bytes, got more", 413)
    return bytes(body)


async def read_json(request: Request) -> dict:
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(f"expected a JSON object as the request body, got {body[:40]!r}") from None
    if not isinstance(data, dict):
        raise ApiError(f"expected a JSON object as the request body, got {type(data).__name__}")
    return data



def integer(data: dict, key: str, low: int, high: int, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(f"expected {key} an integer in {low}..{high}, got {value!r}")
    return value


def read_pixel(data: dict, info: dict) -> tuple[int, int]:
    """``pixel``: [h, w] inside the model's images."""
    h, w = info["height"], info["width"]
    value = data.get("pixel")
    ok = isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok or not (0 <= value[0] < h and 0 <= value[1] < w):
        raise ApiError(f"expected pixel [h, w] with h in 0..{h - 1} and w in 0..{w - 1}, got {value!r}")
    return value[0], value[1]


def read_image(data: dict, info: dict) -> torch.Tensor:
    """``image``: a flat list of C*H*W integer levels -> (C, H, W) int64."""
    c, h, w, levels = info["channels"], info["height"], info["width"], info["levels"]
    value = data.get("image")
    expected = f"expected image a list of {c * h * w} integers ({c}x{h}x{w}, channel-major) in [0, {levels})"
    if not isinstance(value, list):
        raise ApiError(f"{expected}, got {_kind(value)}")
    if len(value) != c * h * w:
        raise ApiError(f"{expected}, got {len(value)} values")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < levels for v in value):
        bad = next(v for v in value if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < levels))
        raise ApiError(f"{expected}, got {bad!r}")
    return torch.tensor(value, dtype=torch.long).view(c, h, w)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def read_known(data: dict, info: dict) -> torch.Tensor:
    """``known``: a flat list of H*W booleans (or 0/1) -> (H, W) bool."""
    h, w = info["height"], info["width"]
    value = data.get("known")
    expected = f"expected known a list of {h * w} booleans ({h}x{w}, row-major; false = erased)"
    if not isinstance(value, list) or len(value) != h * w or not all(v in (0, 1) for v in value):
        got = f"{len(value)} values" if isinstance(value, list) else _kind(value)
        raise ApiError(f"{expected}, got {got}")
    return torch.tensor([bool(v) for v in value]).view(h, w)


def read_job(data: dict, info: dict) -> work.Job:
    """``label`` (conditional models only), ``temperature`` and ``seed`` (random when absent)."""
    k = info["num_classes"]
    if k is None:
        if data.get("label") is not None:
            raise ApiError(f"model {info['name']!r} is unconditional: expected no label, got {data['label']!r}")
        label = None
    else:
        label = integer(data, "label", 0, k - 1)
    temperature = data.get("temperature", 1.0)
    low, high = TEMPERATURE_RANGE
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not low <= temperature <= high:
        raise ApiError(f"expected temperature a number in [{low}, {high}], got {temperature!r}")
    seed = integer(data, "seed", 0, 2**63 - 1, default=random.randrange(2**31))
    return work.Job(label=label, temperature=float(temperature), seed=seed)

"""The HTTP API and the page, as a Starlette app.

    GET  /                         the page (static/index.html, app.js, style.css)
    GET  /api/models               the models served and what the page needs to know of each
    POST /api/complete             {model, image, known, n, temperature?, label?, seed?} -> {completions}
    POST /api/sample               {model, temperature?, label?, seed?} -> NDJSON stream, one line a pixel
    POST /api/likelihood           {model, image, label?} -> {bits_per_dim, nll_nats, bits (H*W), map_bits}
    POST /api/compress             {model, image, label?} -> {model_bytes, png_bytes, ...}
    POST /api/receptive_field      {model, image, pixel: [h, w], channel?, label?} -> {grad, past, seen (H*W), counts}
    POST /api/png                  {model, image} -> image/png
    POST /api/upload?model=NAME    any image file as the body -> {image, note}
    GET  /api/status               jobs running and streams started / finished / stopped

Images are flat lists of C*H*W integer levels in channel, row, column order; ``known`` is a flat
list of H*W booleans (0/1); :mod:`pixelcnn.serve.parsing` reads and checks every request. Model
work runs in worker threads, at most ``workers`` jobs per model at once, so the event loop keeps
answering while models compute. Nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pixelcnn.errors import PixelCNNError
from pixelcnn.serve import work
from pixelcnn.serve.parsing import (MAX_COMPLETIONS, MAX_UPLOAD_BYTES, ApiError, integer, read_body, read_image,
                                    read_job, read_json, read_known, read_pixel)

log = logging.getLogger(__name__)

# Compression is the heaviest job (a float64 model in exact arithmetic, chunk by chunk): one at a time.
COMPRESS_LOCK = threading.Lock()


@dataclass
class Served:
    """A model and the limiter that bounds how many of its jobs run at once."""

    name: str
    model: Any
    limiter: anyio.CapacityLimiter
    info: dict = field(init=False)

    def __post_init__(self):
        self.info = work.describe(self.name, self.model)

    async def run(self, fn, *args):
        """``fn(model, *args)`` in a worker thread; library errors become 400s."""
        try:
            return await anyio.to_thread.run_sync(fn, self.model, *args, limiter=self.limiter)
        except PixelCNNError as e:
            raise ApiError(str(e)) from None


@dataclass
class Stats:
    """Counters for /api/status (and the tests that cut streams off)."""

    jobs_running: int = 0
    streams_started: int = 0
    streams_finished: int = 0
    streams_stopped: int = 0
    last_stopped_pixels: int | None = None


def served(request: Request, name: Any) -> Served:
    models: dict[str, Served] = request.app.state.models
    if name not in models:
        raise ApiError(f"unknown model {name!r}; expected one of {sorted(models)}", 404)
    return models[name]


# ----- endpoints -----------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return FileResponse(static_dir() / "index.html")


async def list_models(request: Request) -> Response:
    return JSONResponse({"models": [s.info for s in request.app.state.models.values()]})


async def status(request: Request) -> Response:
    return JSONResponse(vars(request.app.state.stats))


async def complete_images(request: Request) -> Response:
    data = await read_json(request)
    s = served(request, data.get("model"))
    image, known, job = read_image(data, s.info), read_known(data, s.info), read_job(data, s.info)
    n = integer(data, "n", 1, MAX_COMPLETIONS, default=8)
    out = await counted(request, s.run(work.complete, image, known, n, job))
    return JSONResponse({"completions": out.flatten(1).tolist(), "seed": job.seed, "any_order": s.info["any_order"],
                         "note": s.info["completion_note"]})


async def likelihood(request: Request) -> Response:
    data = await read_json(request)
    s = served(request, data.get("model"))
    result = await counted(request, s.run(work.likelihood, read_image(data, s.info), read_job(data, s.info)))
    return JSONResponse(result)


async def receptive_field(request: Request) -> Response:
    data = await read_json(request)
    s = served(request, data.get("model"))
    image, job = read_image(data, s.info), read_job(data, s.info)
    pixel, channel = read_pixel(data, s.info), integer(data, "channel", 0, s.info["channels"] - 1, default=0)
    return JSONResponse(await counted(request, s.run(work.depends_on, image, pixel, channel, job)))


async def compress(request: Request) -> Response:
    data = await read_json(request)
    s = served(request, data.get("model"))
    if s.model.config.cond_shape is not None:
        raise ApiError(f"model {s.name!r} is conditioned on an image and cannot compress on its own")
    image, job = read_image(data, s.info), read_job(data, s.info)

    def locked(model, image, job):
        with COMPRESS_LOCK:
            return work.compressed_size(model, image, job)

    return JSONResponse(await counted(request, s.run(locked, image, job)))


async def png(request: Request) -> Response:
    data = await read_json(request)
    s = served(request, data.get("model"))
    body = work.png_bytes(read_image(data, s.info), s.info["levels"])
    return Response(body, media_type="image/png", headers={"Content-Disposition": 'attachment; filename="image.png"'})


async def upload(request: Request) -> Response:
    s = served(request, request.query_params.get("model"))
    body = await read_body(request, MAX_UPLOAD_BYTES)
    if not body:
        raise ApiError("expected an image file as the request body, got nothing")
    try:
        image, note = await anyio.to_thread.run_sync(work.convert_upload, body, tuple(s.model.image_shape), s.info["levels"])
    except PixelCNNError as e:
        raise ApiError(str(e)) from None
    return JSONResponse({"image": image.flatten().tolist(), "note": note})


async def sample(request: Request) -> Response:
    data = await read_json(request)
    s = served(request, data.get("model"))
    if s.model.config.cond_shape is not None:
        raise ApiError(f"model {s.name!r} is conditioned on an image: the page cannot sample it")
    return SampleStream(request, s, read_job(data, s.info))


async def counted(request: Request, job):
    stats: Stats = request.app.state.stats
    stats.jobs_running += 1
    try:
        return await job
    finally:
        stats.jobs_running -= 1


class SampleStream(StreamingResponse):
    """NDJSON: a start line, one line per pixel as the model sets it, then the whole image.

    The sampling loop runs in a worker thread and hands pixels to the event loop; when the
    response ends for any reason (the client went away included) ``stop`` is set, and the loop
    raises :class:`work.Stopped` within one image width of pixels.
    """

    def __init__(self, request: Request, s: Served, job: work.Job):
        self.stop = threading.Event()
        self.served, self.job, self.stats = s, job, request.app.state.stats
        self.pixels = 0                 # set by the sampling loop so far
        super().__init__(self.lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"})

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stop.set()

    async def lines(self):
        c, h, w = self.served.model.image_shape
        yield _line({"event": "start", "shape": [c, h, w], "levels": self.served.info["levels"], "seed": self.job.seed})
        pixels = Handover(asyncio.get_running_loop())
        task = asyncio.ensure_future(counted_stream(self, pixels))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())      # retrieved even if nobody awaits it
        try:
            finished = False
            while not finished:
                items = await pixels.take()
                finished = items[-1] is None
                yield b"".join(_line({"h": h, "w": w, "v": v}) for h, w, v in items[: len(items) - finished])
            image = await task
            yield _line({"event": "done", "image": image.flatten().tolist()})
        except ApiError as e:
            yield _line({"event": "error", "error": str(e)})
        except work.Stopped:
            return
        finally:
            self.stop.set()


class Handover:
    """Items from a worker thread to the event loop, waking the loop once per batch, not per item:
    the loop takes everything that arrived while it was busy sending the last batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.ready, self.lock = loop, asyncio.Event(), threading.Lock()
        self.items: list = []

    def put(self, item) -> None:                     # in the worker thread
        with self.lock:
            self.items.append(item)
            wake = len(self.items) == 1
        if wake:
            self.loop.call_soon_threadsafe(self.ready.set)

    async def take(self) -> list:                    # in the event loop
        await self.ready.wait()
        with self.lock:
            self.ready.clear()
            items, self.items = self.items, []
        return items


async def counted_stream(stream: SampleStream, pixels: Handover):
    """Run the sampling loop in a worker thread; pixels go to ``pixels``, then None."""
    stats = stream.stats
    stats.streams_started += 1
    stats.jobs_running += 1

    def emit(h: int, w: int, values: list[int]) -> None:
        stream.pixels += 1
        pixels.put((h, w, values))

    try:
        image = await stream.served.run(work.sample_stream, stream.job, emit, stream.stop.is_set)
        stats.streams_finished += 1
        return image
    except work.Stopped:
        stats.streams_stopped += 1
        stats.last_stopped_pixels = stream.pixels
        log.info("sampling stream stopped: the client went away after %d pixels", stream.pixels)
        raise
    finally:
        stats.jobs_running -= 1
        pixels.put(None)


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


# ----- the app -------------------------------------------------------------------------------------


def static_dir():
    return resources.files("pixelcnn.serve") / "static"


async def api_error(request: Request, exc: ApiError) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


def create_app(models: dict[str, Any], workers: int = 4) -> Starlette:
    """The app serving ``models`` (display name -> loaded model), ``workers`` jobs per model at once."""
    if not models:
        raise ValueError("expected at least one model to serve, got none")
    routes = [
        Route("/", index),
        Route("/api/models", list_models),
        Route("/api/status", status),
        Route("/api/complete", complete_images, methods=["POST"]),
        Route("/api/sample", sample, methods=["POST"]),
        Route("/api/likelihood", likelihood, methods=["POST"]),
        Route("/api/compress", compress, methods=["POST"]),
        Route("/api/receptive_field", receptive_field, methods=["POST"]),
        Route("/api/png", png, methods=["POST"]),
        Route("/api/upload", upload, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(static_dir())), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={ApiError: api_error})
    app.state.models = {name: Served(name, model.eval(), anyio.CapacityLimiter(workers)) for name, model in models.items()}
    app.state.stats = Stats()
    return app

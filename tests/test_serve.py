"""The web app's HTTP API, in process (Starlette's TestClient), and a stream cut off on a real server.

Every endpoint is checked against the library call it stands for (same seed -> same images as
``model.sample`` / ``model.complete``; bits equal ``log_prob``; sizes equal ``pixelcnn.compress``);
bad requests are a table, each answered by one JSON error naming what was expected.
"""

import io
import json
import math
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")

import pixelcnn  # noqa: E402
from pixelcnn.images import to_uint8  # noqa: E402
from pixelcnn.receptive_field import receptive_field  # noqa: E402
from pixelcnn.serve import parsing  # noqa: E402
from pixelcnn.serve.app import create_app  # noqa: E402
from pixelcnn.serve.commands import is_loopback, load_models  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")                 # starlette's notice about httpx2
    from starlette.testclient import TestClient

# Odd, non-square sizes; a categorical, a Bernoulli class-conditional, a colour mixture, an
# any-order model, a completion model, a coarse-to-fine colour model and an attention colour model.
SPECS = {
    "gray": dict(name="gated_pixelcnn", image_shape=(1, 6, 5), levels=4, hidden=8, layers=2, output_hidden=0),
    "cond": dict(name="gated_pixelcnn", image_shape=(1, 4, 5), levels=2, hidden=8, layers=2, output_hidden=0,
                 num_classes=3),
    "rgb": dict(name="pixelcnn_pp", image_shape=(3, 4, 3), levels=8, filters=8, resnet_blocks=1, mixtures=2),
    "any": dict(name="lmconv", image_shape=(1, 5, 6), levels=4, hidden=8, layers=1, output_hidden=0,
                orders=("s_curve",), order_symmetries=4),
    "inpaint": dict(name="gated_pixelcnn", image_shape=(1, 5, 4), levels=4, hidden=8, layers=2, output_hidden=0,
                    inpainting=True),
    "multi": dict(name="multiscale", image_shape=(3, 7, 6), levels=4, hidden=6, layers=1, output_hidden=0, scales=1),
    "snail": dict(name="pixelsnail", image_shape=(3, 5, 4), levels=4, hidden=6, layers=1, residual_blocks=1,
                  head_channels=4, output_hidden=0),
}


def make(spec):
    torch.manual_seed(0)
    model = pixelcnn.create(**spec).eval()
    if model.config.inpainting:                     # a completion term that is not zero, as after training
        torch.nn.init.normal_(model.known_net.out.weight, std=0.5)
    return model


@pytest.fixture(scope="module")
def models():
    return {name: make(spec) for name, spec in SPECS.items()}


@pytest.fixture(scope="module")
def client(models):
    return TestClient(create_app(models))


def extra(name):
    return {"label": 1} if name == "cond" else {}


def random_image(model, seed=0):
    return torch.randint(0, model.levels, model.image_shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", SPECS)
def test_models_lists_shapes_and_completion_order(client, name):
    info = {m["name"]: m for m in client.get("/api/models").json()["models"]}[name]
    c, h, w = SPECS[name]["image_shape"]
    assert (info["channels"], info["height"], info["width"], info["levels"]) == (c, h, w, SPECS[name]["levels"])
    assert info["num_classes"] == SPECS[name].get("num_classes")
    any_order = name == "any"
    assert info["any_order"] is any_order and info["inpainting"] is (name == "inpaint")
    note = {"any": "everything you kept", "inpaint": "sees every pixel you kept",
            "multi": "coarse to fine"}.get(name, "before it")
    assert note in info["completion_note"]


def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="canvas"' in page.text and "/static/app.js" in page.text
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200


@pytest.mark.parametrize("name", SPECS)
def test_complete_keeps_known_pixels_and_matches_the_library(client, models, name):
    model = models[name]
    _, h, w = model.image_shape
    image = random_image(model)
    known = torch.ones(h, w, dtype=torch.bool)
    known[1:3, 1:4] = False
    body = {"model": name, "image": image.flatten().tolist(), "known": known.flatten().int().tolist(),
            "n": 5, "seed": 7, "temperature": 0.8, **extra(name)}
    r = client.post("/api/complete", json=body)
    assert r.status_code == 200, r.text
    out = torch.tensor(r.json()["completions"]).view(5, *model.image_shape)
    assert torch.equal(out[:, :, known], image[:, known].expand(5, -1, -1))
    labels = None if name != "cond" else torch.tensor([1])
    expected = model.complete(image[None], known[None, None], n=5, labels=labels, temperature=0.8,
                              generator=torch.Generator().manual_seed(7))[0]
    assert torch.equal(out, expected)


@pytest.mark.parametrize("name", SPECS)
def test_sample_streams_every_pixel_in_the_models_order_and_matches_model_sample(client, models, name):
    model = models[name]
    c, h, w = model.image_shape
    r = client.post("/api/sample", json={"model": name, "seed": 3, **extra(name)})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[0] == {"event": "start", "shape": [c, h, w], "levels": model.levels, "seed": 3}
    pixels, done = lines[1:-1], lines[-1]
    order = model.visiting_order(None, torch.zeros(1, c, h, w, dtype=torch.bool), torch.Generator().manual_seed(3))
    if order is None:                                               # the model's own: raster, or coarse to fine
        order = range(h * w) if model.default_order() is None else model.default_order().indices.tolist()
    else:
        order = order[0].indices.tolist()                           # an any-order model draws a training order
    assert (name in ("any", "multi")) == (list(order) != list(range(h * w)))
    assert [(p["h"], p["w"]) for p in pixels] == [divmod(i, w) for i in order]
    image = torch.tensor(done["image"]).view(c, h, w)
    assert [p["v"] for p in pixels] == image.permute(1, 2, 0).reshape(-1, c)[list(order)].tolist()
    labels = None if name != "cond" else 1
    assert torch.equal(image, model.sample(1, labels=labels, generator=torch.Generator().manual_seed(3))[0])


def post_random_image(client, models, name, path, seed):
    """POST a random image of model ``name`` to ``path``: (model, image, labels, the reply, -log2 p of the image)."""
    model = models[name]
    image = random_image(model, seed)
    r = client.post(path, json={"model": name, "image": image.flatten().tolist(), **extra(name)})
    assert r.status_code == 200, r.text
    labels = None if name != "cond" else torch.tensor([1])
    nll_bits = -float(model.log_prob(image[None], labels).detach()) / math.log(2)
    return model, image, labels, r.json(), nll_bits


@pytest.mark.parametrize("name", SPECS)
def test_likelihood_bits_sum_to_log_prob(client, models, name):
    model, image, _, data, nll_bits = post_random_image(client, models, name, "/api/likelihood", 1)
    assert len(data["bits"]) == image[0].numel() and min(data["bits"]) >= 0
    assert data["bits_per_dim"] == pytest.approx(nll_bits / image.numel(), rel=1e-5)
    map_bits = nll_bits
    if name == "any":                         # the map is in the first training order, the total the mixture's
        map_bits = -float(model.log_prob(image[None], order=model.default_order()).detach()) / math.log(2)
        assert map_bits != pytest.approx(nll_bits, rel=1e-3)
    assert sum(data["bits"]) == pytest.approx(map_bits, rel=1e-5) == data["map_bits"]


@pytest.mark.parametrize("name", SPECS)
def test_receptive_field_is_the_librarys_for_the_image_and_sees_nothing_later(client, models, name):
    model = models[name]
    image = random_image(model, 3)
    c, h, w = model.image_shape
    pixel = [h - 2, w // 2]
    r = client.post("/api/receptive_field", json={"model": name, "image": image.flatten().tolist(), "pixel": pixel,
                                                  "channel": c - 1, **extra(name)})
    assert r.status_code == 200, r.text
    data = r.json()
    labels = None if name != "cond" else torch.tensor([1])
    field = receptive_field(model, tuple(pixel), c - 1, x=image[None], labels=labels)
    assert data["grad"] == pytest.approx(field.grad.sum(0).flatten().tolist(), rel=1e-6, abs=0)
    assert data["counts"] == field.counts() and data["counts"]["future_seen"] == 0 and data["counts"]["seen"] > 0
    assert data["past"] == field.past.any(0).flatten().int().tolist()


@pytest.mark.parametrize("name", SPECS)
def test_compress_reports_the_codec_file_and_png_sizes(client, models, name):
    model, image, labels, data, nll_bits = post_random_image(client, models, name, "/api/compress", 2)
    assert data["model_bytes"] == len(pixelcnn.compress(model, image[None], labels))
    png = client.post("/api/png", json={"model": name, "image": image.flatten().tolist()})
    assert data["png_bytes"] == len(png.content)
    assert data["ideal_bytes"] == pytest.approx(nll_bits / 8, rel=1e-5)


@pytest.mark.parametrize("name", ["gray", "rgb"])
def test_png_download_is_the_image_stretched_to_8_bits(client, models, name):
    model = models[name]
    image = random_image(model, 3)
    r = client.post("/api/png", json={"model": name, "image": image.flatten().tolist()})
    assert r.headers["content-type"] == "image/png"
    arr = np.asarray(Image.open(io.BytesIO(r.content)))
    assert np.array_equal(arr.reshape(to_uint8(image[None], model.levels)[0].shape), to_uint8(image[None], model.levels)[0])


def png_file(array, mode):
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name, array, mode, note", [
    ("gray", np.full((6, 5), 255, np.uint8), "L", "quantised to 4 levels"),
    ("gray", np.full((60, 50, 3), 255, np.uint8), "RGB", "resized from 50x60 to 5x6"),
    ("rgb", np.zeros((4, 3, 4), np.uint8), "RGBA", "converted from RGBA to RGB"),
])
def test_upload_converts_to_the_model_size_and_levels(client, models, name, array, mode, note):
    r = client.post(f"/api/upload?model={name}", content=png_file(array, mode))
    assert r.status_code == 200, r.text
    model = models[name]
    image = torch.tensor(r.json()["image"]).view(model.image_shape)
    assert note in r.json()["note"]
    expected = 0 if mode == "RGBA" else model.levels - 1        # transparent -> black; white -> the top level
    assert torch.equal(image, torch.full(model.image_shape, expected))


def image_of(name, size=None):
    c, h, w = SPECS[name]["image_shape"]
    return [0] * (size if size is not None else c * h * w)


def known_of(name, size=None):
    _, h, w = SPECS[name]["image_shape"]
    return [1] * (size if size is not None else h * w)


def complete_body(**changes):
    return {"model": "gray", "image": image_of("gray"), "known": known_of("gray"), "n": 2, **changes}


def huge_png() -> bytes:
    """A few kilobytes of PNG that decode to 64 million pixels."""
    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, format="PNG")
    return buf.getvalue()


BAD = [  # (path, JSON body or raw bytes, status, what the error must say)
    ("/api/complete", complete_body(image=image_of("gray", 29)), 400, "expected image a list of 30 integers (1x6x5"),
    ("/api/complete", complete_body(image=[4] * 30), 400, "in [0, 4), got 4"),
    ("/api/complete", complete_body(image=[0.5] * 30), 400, "got 0.5"),
    ("/api/complete", complete_body(image="0,0,0"), 400, "got str"),
    ("/api/complete", complete_body(known=known_of("gray", 29)), 400, "expected known a list of 30 booleans"),
    ("/api/complete", complete_body(known=[1] * 30), 400, "expected at least one unknown sub-pixel"),
    ("/api/complete", complete_body(n=0), 400, "expected n an integer in 1..64, got 0"),
    ("/api/complete", complete_body(n=65), 400, "expected n an integer in 1..64, got 65"),
    ("/api/complete", complete_body(n="8"), 400, "expected n an integer in 1..64, got '8'"),
    ("/api/complete", complete_body(model="mnist"), 404, "unknown model 'mnist'; expected one of ['any', 'cond', 'gray', 'inpaint', 'multi', 'rgb', 'snail']"),
    ("/api/complete", complete_body(temperature=0), 400, "expected temperature a number in [0.01, 10.0], got 0"),
    ("/api/complete", complete_body(temperature=-1), 400, "got -1"),
    ("/api/complete", complete_body(temperature=1e9), 400, "got 1000000000.0"),
    ("/api/complete", complete_body(temperature="hot"), 400, "got 'hot'"),
    ("/api/complete", complete_body(label=1), 400, "model 'gray' is unconditional: expected no label, got 1"),
    ("/api/complete", complete_body(seed=-1), 400, "expected seed an integer"),
    ("/api/sample", {"model": "cond"}, 400, "expected label an integer in 0..2, got None"),
    ("/api/sample", {"model": "cond", "label": 3}, 400, "expected label an integer in 0..2, got 3"),
    ("/api/sample", {"model": "nope"}, 404, "unknown model 'nope'"),
    ("/api/sample", {"model": "gray", "temperature": None}, 400, "expected temperature a number"),
    ("/api/likelihood", {"model": "rgb", "image": image_of("gray")}, 400, "expected image a list of 36 integers (3x4x3"),
    ("/api/compress", {"model": "gray"}, 400, "expected image a list of 30 integers (1x6x5, channel-major) in [0, 4), got nothing"),
    ("/api/png", {"model": "gray", "image": image_of("gray", 31)}, 400, "got 31 values"),
    ("/api/likelihood", b"{not json", 400, "expected a JSON object as the request body"),
    ("/api/likelihood", b"[1, 2]", 400, "expected a JSON object as the request body, got list"),
    ("/api/likelihood", b"x" * (parsing.MAX_JSON_BYTES + 1), 413, "expected a request body of at most 1,048,576 bytes"),
    ("/api/receptive_field", {"model": "gray", "image": image_of("gray"), "pixel": [6, 0]}, 400,
     "expected pixel [h, w] with h in 0..5 and w in 0..4, got [6, 0]"),
    ("/api/receptive_field", {"model": "gray", "image": image_of("gray"), "pixel": "2,2"}, 400, "expected pixel [h, w]"),
    ("/api/receptive_field", {"model": "gray", "image": image_of("gray")}, 400, "expected pixel [h, w]"),
    ("/api/receptive_field", {"model": "gray", "image": image_of("gray"), "pixel": [1, 1], "channel": 1}, 400,
     "expected channel an integer in 0..0, got 1"),
    ("/api/receptive_field", {"model": "gray", "pixel": [1, 1]}, 400, "expected image a list of 30 integers"),
    ("/api/upload?model=gray", b"not an image", 400, "expected an image file"),
    ("/api/upload?model=gray", huge_png(), 400, "expected an image of at most 50,000,000 pixels, got 8000x8000"),
    ("/api/upload?model=gray", b"", 400, "expected an image file as the request body, got nothing"),
    ("/api/upload?model=zzz", b"", 404, "unknown model 'zzz'"),
    ("/api/upload?model=gray", b"\0" * (parsing.MAX_UPLOAD_BYTES + 1), 413, "at most 8,388,608 bytes"),
]


@pytest.mark.parametrize("path, body, status, message", BAD, ids=[f"{p}:{m[:30]}" for p, _, _, m in BAD])
def test_bad_requests_get_one_json_error_naming_what_was_expected(client, path, body, status, message):
    r = client.post(path, content=body) if isinstance(body, bytes) else client.post(path, json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert "\n" not in r.json()["error"]


def test_nothing_is_written_to_disk(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client.post("/api/upload?model=gray", content=png_file(np.zeros((6, 5), np.uint8), "L"))
    client.post("/api/compress", json={"model": "gray", "image": image_of("gray")})
    client.post("/api/sample", json={"model": "gray", "seed": 0})
    client.post("/api/png", json={"model": "gray", "image": image_of("gray")})
    assert list(tmp_path.iterdir()) == []


def test_a_stream_cut_off_mid_image_stops_the_sampling_loop():
    """On a real server: read a few pixels, hang up, and the loop ends at the end of a row."""
    import httpx

    from serve_server import running

    torch.manual_seed(0)
    model = pixelcnn.create("gated_pixelcnn", image_shape=(1, 48, 48), levels=256, hidden=16, layers=3).eval()
    app = create_app({"big": model})
    with running(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        with http.stream("POST", "/api/sample", json={"model": "big", "seed": 0}) as r:
            lines = r.iter_lines()
            assert json.loads(next(lines))["event"] == "start"
            first = [json.loads(next(lines)) for _ in range(3)]
        assert [(p["h"], p["w"]) for p in first] == [(0, 0), (0, 1), (0, 2)]
        deadline = time.monotonic() + 30
        while (status := http.get("/api/status").json())["jobs_running"] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert status["streams_stopped"] == 1 and status["streams_finished"] == 0 and status["jobs_running"] == 0
    assert 48 <= status["last_stopped_pixels"] < 48 * 48 and status["last_stopped_pixels"] % 48 == 0


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("127.0.0.2", True), ("0.0.0.0", False), ("192.168.1.5", False),
                                            ("example.org", False)])
def test_only_loopback_addresses_count_as_local(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host, warns", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_serve_warns_once_on_stderr_for_addresses_beyond_loopback(host, warns, monkeypatch, capsys, tmp_path):
    import uvicorn

    from pixelcnn.cli import main

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: ran.update(host=host, port=port))
    make(SPECS["gray"]).save_pretrained(tmp_path / "ckpt")
    assert main(["serve", str(tmp_path / "ckpt"), "--host", host, "--port", "8123"]) == 0
    out, err = capsys.readouterr()
    assert ran == {"host": host, "port": 8123}
    assert f"http://{host}:8123/" in out
    assert err.count("\n") == int(warns) and ("warning: listening on 0.0.0.0" in err) is warns


def test_serve_refuses_a_missing_model_in_one_line(capsys):   # the rest: tests/test_bad_input.py
    from pixelcnn.cli import main

    assert main(["serve", "/no/such/run"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_shipped_completion_model_is_the_one_the_page_opens_on():
    names = list(load_models([]))
    assert names[0] == "pretrained:mnist-inpainting"
    assert sorted(names) == [f"pretrained:{n}" for n in pixelcnn.pretrained.available()]
    assert list(load_models(["pretrained:mnist", "pretrained:mnist-inpainting"])) == ["pretrained:mnist",
                                                                                     "pretrained:mnist-inpainting"]

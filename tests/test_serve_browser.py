"""The page in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

Draws a stroke, erases a region, completes it, checks that every completion equals the input on
every known pixel; streams a sample and sees its pixels arrive over time; scores and compresses;
saves a screenshot (to $PIXELCNN_SCREENSHOT if set, e.g. docs/serve.png, else a temporary folder).

Without Chromium or Playwright this test fails with a message saying what to install, unless
PIXELCNN_NO_BROWSER=1 says to skip it.
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from serve_server import running

CHROMIUM = os.environ.get("PIXELCNN_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SCALE = 16                          # the page draws a 28x28 image 448 px wide

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]    # one browser and one server per run


def browser_or_fail():
    missing = [f"the serve extra's {m} (pip install 'pixelcnn[serve]')" for m in ("starlette", "uvicorn")
               if importlib.util.find_spec(m) is None]
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("Playwright's Python package (pip install playwright; never `playwright install`)")
        sync_playwright = None
    if missing:
        if os.environ.get("PIXELCNN_NO_BROWSER") == "1":
            pytest.skip("PIXELCNN_NO_BROWSER=1: " + "; ".join(missing))
        pytest.fail("the browser test needs " + " and ".join(missing) + "; set PIXELCNN_NO_BROWSER=1 to skip it")
    return sync_playwright


@pytest.fixture(scope="module")
def url():
    browser_or_fail()
    import pixelcnn
    from pixelcnn.serve.app import create_app

    names = ["pretrained:mnist", "pretrained:mnist-conditional"]
    with running(create_app({name: pixelcnn.load(name) for name in names})) as base:
        yield base


@pytest.fixture(scope="module")
def page(url):
    sync_playwright = browser_or_fail()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_selector("#model option", state="attached")
        yield page
        browser.close()


def drag(page, points):
    """Press at the first canvas pixel (x, y), move through the others, release."""
    box = page.locator("#canvas").bounding_box()
    at = lambda x, y: (box["x"] + (x + 0.5) * SCALE, box["y"] + (y + 0.5) * SCALE)   # noqa: E731
    page.mouse.move(*at(*points[0]))
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(*at(x, y), steps=8)
    page.mouse.up()


def canvas_levels(page, selector):
    """Red channel of every pixel of each canvas matching ``selector`` (levels for a 256-level gray model)."""
    return page.evaluate("""(sel) => [...document.querySelectorAll(sel)].map((c) => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return Array.from({length: c.width * c.height}, (_, i) => [d[4*i], d[4*i+1], d[4*i+2], d[4*i+3]]);
    })""", selector)


def test_draw_erase_complete(page):
    drag(page, [(14, 5), (14, 22)])                     # a "1"
    drag(page, [(10, 8), (14, 5)])
    page.check("input[name=tool][value=erase]")
    page.select_option("#brush", "3")
    drag(page, [(8, 14), (20, 14)])                     # a band across the middle
    page.fill("#n", "8")
    with page.expect_request("**/api/complete") as request:
        page.click("#complete")
    sent = json.loads(request.value.post_data)
    page.wait_for_selector("#completions[data-count='8']", timeout=60_000)

    image, known = sent["image"], sent["known"]
    assert sum(image) > 0 and image[5 * 28 + 14] == 255            # the stroke reached the server
    assert known[14 * 28 + 14] == 0 and known[0] == 1 and known[22 * 28 + 14] == 1
    shown = canvas_levels(page, "#canvas")[0]
    assert [tuple(p[:3]) == (224, 48, 154) for p in shown] == [k == 0 for k in known]   # erased shown in pink
    completions = canvas_levels(page, "canvas.completion")
    assert len(completions) == 8
    for pixels in completions:
        values = [p[0] for p in pixels]
        assert all(p[0] == p[1] == p[2] and p[3] == 255 for p in pixels)
        assert [v for v, k in zip(values, known) if k] == [v for v, k in zip(image, known) if k]
    filled = {tuple(v for (v, *_), k in zip(pixels, known) if not k) for pixels in completions}
    assert len(filled) > 1, "8 completions of the erased band were all the same"


def test_sample_streams_pixels(page):
    page.evaluate("""() => {
        window.seen = [];
        const c = document.getElementById('sample-canvas');
        new MutationObserver(() => window.seen.push(Number(c.dataset.pixels)))
            .observe(c, {attributes: true, attributeFilter: ['data-pixels']});
    }""")
    page.click("#sample")
    page.wait_for_selector("#sample-canvas[data-done='true']", timeout=60_000)
    seen = page.evaluate("window.seen")
    partial = sorted({n for n in seen if 0 < n < 784})
    assert len(partial) >= 3, f"expected pixels to arrive a few at a time, saw counts {seen[:20]}"
    assert max(seen) == 784
    (pixels,) = canvas_levels(page, "#sample-canvas")
    assert all(p[3] == 255 for p in pixels)
    assert page.evaluate("window.pixelcnn.sample.length") == 784


def test_clicking_a_pixel_shows_what_it_depends_on(page):
    page.check("input[name=tool][value=inspect]")
    drawn = canvas_levels(page, "#canvas")[0]
    box = page.locator("#canvas").bounding_box()
    with page.expect_request("**/api/receptive_field") as request:
        page.mouse.click(box["x"] + 20.5 * SCALE, box["y"] + 14.5 * SCALE)       # pixel (14, 20)
    assert json.loads(request.value.post_data)["pixel"] == [14, 20]
    page.wait_for_selector("#depends[data-pixel='14,20']", timeout=60_000)
    (pixels,) = canvas_levels(page, "#depends")
    assert tuple(pixels[14 * 28 + 20][:3]) == (220, 40, 40)                    # the pixel itself
    assert tuple(pixels[27 * 28 + 27][:3]) == (24, 24, 30)                     # a later one
    assert any(p[0] == p[1] == p[2] >= 80 for p in pixels[: 14 * 28])          # earlier ones it sees, in gray
    assert canvas_levels(page, "#canvas")[0] == drawn                          # inspecting draws nothing
    assert "depends on" in page.text_content("#depends-note")
    page.check("input[name=tool][value=draw]")


def test_likelihood_compress_and_screenshot(page, tmp_path):
    page.click("#likelihood")
    page.wait_for_function("document.getElementById('bpd').textContent.includes('bits/dim')")
    page.click("#compress")
    page.wait_for_function("document.getElementById('compress-result').textContent.includes('PNG')")
    assert "bytes" in page.text_content("#compress-result")
    assert "error" not in (page.get_attribute("#message", "class") or "")     # nothing went wrong on the way
    out = Path(os.environ.get("PIXELCNN_SCREENSHOT", tmp_path / "serve.png"))
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 10_000


def test_a_class_conditional_model_samples_the_chosen_class(page):
    page.select_option("#model", "pretrained:mnist-conditional")
    assert page.is_visible("#label") and page.locator("#label option").count() == 10
    page.select_option("#label", "3")
    with page.expect_request("**/api/sample") as request:
        page.click("#sample")
    assert json.loads(request.value.post_data)["label"] == 3
    page.wait_for_selector("#sample-canvas[data-done='true']", timeout=60_000)
    assert page.evaluate("window.pixelcnn.sample.length") == 784
    page.select_option("#model", "pretrained:mnist")
    assert not page.is_visible("#label")

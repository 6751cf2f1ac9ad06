"""The ``p2p serve`` page in a real headless browser: Debian's Chromium driven by Playwright.

Load the page, upload an image and translate it, draw strokes on the sketch canvas and translate
them; each time a translated image must come back, at the input's size. Skipped with a reason
where Playwright, Chromium or the serve extra is missing, and failed instead when CI=true (CI
installs them: see .ci/run).
"""

import io
import shutil
import time

import pytest
from conftest import skip_or_fail
from PIL import Image

CHROMIUM = [shutil.which(name) for name in ("chromium", "chromium-browser")]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed: pip install -e '.[browser]'", "CI")
    executable = next((path for path in CHROMIUM if path), None)
    if executable is None:
        skip_or_fail("no chromium on PATH: apt-get install chromium", "CI")
    with sync_playwright() as playwright:
        # Debian's chromium, never a browser downloaded by `playwright install`.
        browser = playwright.chromium.launch(executable_path=executable,
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    try:
        import gradio  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        skip_or_fail("the serve extra is not installed: pip install -e '.[serve]'", "CI")
    from p2p_testing import make_dataset, make_serve_checkpoint, running

    from p2p import serve
    from p2p.inference import translate

    root = tmp_path_factory.mktemp("browser")
    checkpoint = make_serve_checkpoint(root / "tiny.pt", make_dataset(root / "data"))
    translator = serve.Translator(translate.load(checkpoint, device="cpu"))
    inputs: list[bytes] = []
    original = translator.translate

    async def recording(data, *args, **kwargs):  # what the page sent, to check the drawing
        inputs.append(data)
        return await original(data, *args, **kwargs)

    translator.translate = recording
    with running(serve.create_app(translator, root / "assets")) as url:
        yield url, inputs
    translator.close()


def output_size(page, previous_src: str | None) -> tuple[int, int]:
    """Wait for a new translated image in the output and return its decoded size."""
    page.wait_for_function(
        """(previous) => { const img = document.querySelector('#output img');
                           return img && img.src && img.src !== previous && img.complete
                                  && img.naturalWidth > 0; }""",
        arg=previous_src, timeout=120_000)
    return tuple(page.evaluate(
        "() => { const i = document.querySelector('#output img');"
        " return [i.naturalWidth, i.naturalHeight]; }"))


@pytest.mark.slow
def test_upload_and_draw_in_a_real_browser(browser, page_server, tmp_path):
    url, inputs = page_server
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    started = time.perf_counter()
    page.goto(url + "/")
    page.wait_for_selector("#translate-upload", state="visible", timeout=120_000)
    print(f"page load: {time.perf_counter() - started:.2f} s")  # pytest -s shows it
    assert page.locator("img[src*='example_']").count() >= 1  # examples from the val split

    image = tmp_path / "upload.png"
    Image.new("RGB", (50, 30), (200, 40, 40)).save(image)
    page.set_input_files("#upload input[type=file]", str(image))
    page.wait_for_selector("#upload img", timeout=60_000)
    page.click("#translate-upload")
    assert output_size(page, None) == (50, 30)  # the input's size
    first_src = page.get_attribute("#output img", "src")

    page.get_by_role("tab", name="Draw").click()
    canvas = page.wait_for_selector("#sketch canvas", state="visible", timeout=60_000)
    box = canvas.bounding_box()
    centre_x, centre_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for step in range(5):  # the pointer enters the canvas first, as a hand's does: the
        # editor drops a stroke that starts without it
        page.mouse.move(box["x"] + 20 + 15 * step, box["y"] + 20 + 10 * step)
        page.wait_for_timeout(30)
    for offset in (-50, 50):  # two strokes, one pointer event at a time, as a hand draws
        page.mouse.move(centre_x - 80, centre_y + offset)
        page.mouse.down()
        for step in range(1, 5):
            page.mouse.move(centre_x - 80 + 40 * step, centre_y + offset + 10 * step)
            page.wait_for_timeout(15)
        page.mouse.up()
    page.wait_for_timeout(500)
    page.click("#translate-sketch")
    assert output_size(page, first_src) == (32, 32)  # the canvas is the model's size
    with Image.open(io.BytesIO(inputs[-1])) as drawn:
        colours = {colour for _, colour in drawn.convert("RGB").getcolors(1 << 16)}
    assert len(colours) > 1, "the strokes did not reach the server"  # more than the background
    page.close()

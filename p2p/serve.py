"""``p2p serve``: a web page to upload or draw an image and see it translated, and an HTTP API.

One FastAPI app: ``POST /api/translate`` (the image's bytes as the body, or a multipart field
``image``; answers ``image/png`` at the input's size), ``GET /healthz``, and a Gradio page mounted
at ``/``. Both go through :class:`Translator`, which owns the one model. No model code lives here:
a request is one ``translate.Job`` run by ``translate.translate``, exactly as ``p2p translate -``
runs an image from stdin.

Concurrency: the generator runs on one worker thread, off the event loop, one request at a time
(torch already uses every core for one image). Up to ``Limits.queue`` requests may be waiting or
running; one more is refused at once with 503 and ``Retry-After`` rather than queued without
bound, so a flood costs memory for at most ``queue`` uploads.
"""

import asyncio
import contextlib
import socket
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p.errors import ImageTooLarge, P2PError

MB = 1 << 20
MODES = ("paper", "eval")

# The CMP facade labels as the pix2pix facades images draw them (a jet colour map over the 12
# classes, in the CMP order), read off the label halves of ../shared/data/facades: the centres of
# the 12 flat colours of the 400 training images, rounded to the JPEG-free values.
FACADES_PALETTE = [
    ("background", "#0000dc"), ("facade", "#0034fc"), ("window", "#0084fc"),
    ("door", "#00ccfc"), ("cornice", "#24fce4"), ("sill", "#74fc8c"), ("balcony", "#c4fc3c"),
    ("blind", "#fcf400"), ("deco", "#fc9c00"), ("molding", "#fc5400"), ("pillar", "#fc0000"),
    ("shop", "#ac0000"),
]
PALETTES = {"facades": FACADES_PALETTE}


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * MB  # an upload's encoded size (413 above)
    max_pixels: int = 4096 * 4096  # width x height declared by its header (413 above)
    queue: int = 32  # requests waiting or running at once (503 above)


class RequestError(Exception):
    """An upload the server refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Translator:
    """The one model behind the page and the API: a single inference thread, a bounded queue."""

    def __init__(self, model, limits: Limits = Limits()):
        if model.in_channels not in (1, 3) or not model.png_holds_output:
            raise P2PError(f"p2p serve shows images of 1 or 3 channels that PNG holds; this "
                           f"model reads {model.in_channels} channel(s) and writes "
                           f"{model.out_channels} of {model.output_dtype}",
                           "translate its files with p2p translate")
        self.model = model
        self.limits = limits
        self.pending = 0  # only touched on the event loop's thread: no lock needed
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="p2p-generator")

    def check(self, data: bytes, name: str) -> None:
        """Refuse what must not reach the decoder: empty, too many bytes or pixels."""
        from p2p.images import declared_size

        if not data:
            raise RequestError(400, f"{name}: empty upload, not an image")
        if len(data) > self.limits.max_bytes:
            raise RequestError(413, f"{name}: {len(data)} bytes, over the limit of "
                                    f"{self.limits.max_bytes}")
        try:
            width, height = declared_size(data, name)
        except ImageTooLarge as exc:  # a header declaring more than images.MAX_PIXELS
            raise RequestError(413, str(exc)) from None
        except P2PError as exc:
            raise RequestError(400, str(exc)) from None
        if width * height > self.limits.max_pixels:
            raise RequestError(413, f"{name}: {width}x{height} pixels, over the limit of "
                                    f"{self.limits.max_pixels}")

    async def translate(self, data: bytes, name: str, mode: str = "paper",
                        seed: int | None = None) -> bytes:
        """The PNG of ``data`` translated, at its size; RequestError for a bad upload."""
        if mode not in MODES:
            raise RequestError(400, f"unknown mode {mode!r}; use paper or eval")
        self.check(data, name)
        if self.pending >= self.limits.queue:
            raise RequestError(503, f"busy: {self.pending} requests in the queue; try again")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.worker, self._run, data, name, mode, seed)
        except P2PError as exc:  # e.g. a truncated image: the decoder found out
            raise RequestError(400, str(exc)) from None
        finally:
            self.pending -= 1

    def _run(self, data: bytes, name: str, mode: str, seed: int | None) -> bytes:
        from p2p import translate

        options = translate.TranslateOptions(paper_mode=mode == "paper", seed=seed)
        report = translate.translate(self.model, [translate.Job(data, name, None)], options)
        return report.output_bytes

    def close(self) -> None:
        self.worker.shutdown(wait=True, cancel_futures=True)


# ---- the HTTP app ----------------------------------------------------------------------------

def create_app(translator: Translator, assets: Path, title: str = "p2p"):
    """The FastAPI app: the API routes, then the Gradio page mounted at ``/``.

    ``assets`` is a folder this app may write and serve (sketch backgrounds, example inputs).
    """
    import gradio as gr
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    model = translator.model

    @app.exception_handler(RequestValidationError)
    async def invalid_query(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 400)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "direction": model.direction,
                "image_size": list(model.image_size),  # [height, width]
                "in_channels": model.in_channels, "out_channels": model.out_channels,
                "device": str(model.device), "pending": translator.pending,
                "queue": translator.limits.queue}

    @app.post("/api/translate")
    async def api_translate(request: Request, mode: str = "paper", seed: int | None = None):
        try:
            data = await _upload(request, translator.limits.max_bytes)
            png = await translator.translate(data, "upload", mode, seed)
        except RequestError as exc:
            headers = {"Retry-After": "1"} if exc.status == 503 else None
            return JSONResponse({"error": str(exc)}, exc.status, headers=headers)
        return Response(png, media_type="image/png")

    page = build_page(translator, assets, title)
    return gr.mount_gradio_app(app, page, path="", allowed_paths=[str(assets)],
                               max_file_size=translator.limits.max_bytes, ssr_mode=False,
                               footer_links=[])


async def _upload(request, limit: int) -> bytes:
    """The image bytes of a request: its body, or its multipart field ``image``; at most
    ``limit`` bytes are read, whatever Content-Length says."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise RequestError(413, f"upload of {declared} bytes, over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + 64 * 1024:  # room for multipart headers around the image
            raise RequestError(413, f"upload over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def replay():
        yield body

    try:
        form = await MultiPartParser(request.headers, replay()).parse()
    except MultiPartException as exc:
        raise RequestError(400, f"bad multipart upload ({exc.message})") from None
    field = form.get("image")
    if field is None or isinstance(field, str):
        raise RequestError(400, "multipart upload without a file field named 'image'")
    return await field.read()


# ---- the page --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Canvas:
    """How the sketch canvas fits the model's input: background, brushes, a legend."""

    kind: str  # "edges", "labels" or "free"
    background: str  # hex colour
    colors: list[str]
    legend: list[tuple[str, str]]  # (name, colour) of label classes
    brush_size: int


def canvas_for(dataset: str | None, direction: str, size: int) -> Canvas:
    """Edges: black strokes on white. A label map with a known palette: its classes' colours on
    the main class. Anything else: a few colours on white."""
    from p2p.data.catalog import DATASETS

    name = Path(dataset).name if dataset else None
    known = DATASETS.get(name) if name else None
    source_side = (known.a if direction == "AtoB" else known.b) if known else ""
    thin = max(1, size // 128)
    if "edges" in source_side:
        return Canvas("edges", "#ffffff", ["#000000"], [], thin)
    if "label" in source_side and name in PALETTES:
        palette = PALETTES[name]
        colors = [colour for _, colour in palette]
        return Canvas("labels", colors[1], colors, palette, max(2, size // 32))
    return Canvas("free", "#ffffff", ["#000000", "#cc3232", "#32cc70", "#3270cc", "#adcc32"],
                  [], max(2, size // 64))


def example_inputs(dataset: str | None, direction: str, channels: int, folder: Path,
                   count: int = 6) -> list[Path]:
    """The input sides of the first ``count`` pairs of the dataset's val split (A|B images or
    A/ and B/ folders), when it is here (a folder, or a dataset name under P2P_HOME); written
    into ``folder``."""
    from p2p.data.catalog import DATASETS, dataset_dir
    from p2p.data.paired import find_pairs
    from p2p.images import open_image, save_image, split_halves

    if not dataset:
        return []
    root = Path(dataset).expanduser()
    if not root.is_dir() and dataset in DATASETS:
        root = dataset_dir(dataset)
    try:
        pairs = find_pairs(root, "val")[:count]
    except P2PError:
        return []  # no dataset or no val split here: a page without examples
    examples = []
    for a_file, b_file in pairs:
        try:
            if b_file is not None:
                image = open_image(a_file if direction == "AtoB" else b_file, channels)
            else:  # A|B side by side: the input half
                image = split_halves(open_image(a_file, channels))[direction != "AtoB"]
        except P2PError:
            continue  # a bad file in someone's dataset is no reason to refuse to serve
        target = folder / f"example_{len(examples)}.png"
        save_image(image, target)
        examples.append(target)
    return examples


def build_page(translator: Translator, assets: Path, title: str):
    """The Gradio page: upload or draw, translate, see the output; mode and seed controls."""
    import gradio as gr
    from PIL import Image

    from p2p.images import open_image, save_image

    model = translator.model
    height, width = model.image_size
    canvas = canvas_for(model.dataset, model.direction, min(height, width))
    background = assets / "canvas.png"
    save_image(Image.new("RGB", (width, height), canvas.background), background)
    examples = example_inputs(model.dataset, model.direction, model.in_channels, assets)

    async def run(data: bytes, mode: str, seed: float | None):
        try:
            png = await translator.translate(data, "image", mode,
                                             None if seed is None else int(seed))
        except RequestError as exc:
            raise gr.Error(str(exc)) from None
        return open_image(png, model.out_channels)

    async def from_upload(path: str | None, mode: str, seed: float | None):
        if not path:
            raise gr.Error("upload an image first")
        return await run(Path(path).read_bytes(), mode, seed)

    async def from_sketch(value: dict | None, mode: str, seed: float | None):
        composite = (value or {}).get("composite")
        if not composite:
            raise gr.Error("draw something first")
        return await run(Path(composite).read_bytes(), mode, seed)

    trained_on = f" trained on {Path(model.dataset).name}" if model.dataset else ""
    # Uploads and outputs Gradio keeps on disk are deleted after an hour, checked hourly: a
    # server that runs for weeks must not fill its temporary folder.
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"## {title}\npix2pix generator{trained_on}, {model.direction}, "
                    f"{width}x{height}. Upload an image or draw one, then translate it. The output "
                    "has the input's size.")
        with gr.Row():
            with gr.Column():
                with gr.Tab("Upload"):
                    upload = gr.Image(type="filepath", label="input", sources=["upload",
                                      "clipboard"], elem_id="upload", format="png")
                    upload_button = gr.Button("Translate", variant="primary",
                                              elem_id="translate-upload")
                    if examples:
                        gr.Examples([[str(p)] for p in examples], inputs=[upload],
                                    label="from the dataset's val split")
                with gr.Tab("Draw"):
                    sketch = gr.ImageEditor(
                        value={"background": str(background), "layers": [], "composite": None},
                        type="filepath", image_mode="RGB", label="sketch", elem_id="sketch",
                        canvas_size=(width, height), fixed_canvas=True, format="png",
                        sources=(), transforms=(),
                        brush=gr.Brush(default_size=canvas.brush_size, colors=canvas.colors,
                                       default_color=canvas.colors[min(2, len(canvas.colors) - 1)],
                                       color_mode="fixed" if canvas.kind != "free"
                                       else "defaults"))
                    if canvas.legend:
                        gr.HTML(" ".join(
                            f'<span style="display:inline-block;margin:2px 6px">'
                            f'<span style="display:inline-block;width:12px;height:12px;'
                            f'background:{colour}"></span> {name}</span>'
                            for name, colour in canvas.legend))
                    sketch_button = gr.Button("Translate drawing", variant="primary",
                                              elem_id="translate-sketch")
                with gr.Row():
                    mode = gr.Radio(list(MODES), value="paper", label="test-time mode",
                                    info="paper: dropout on, each image's own batch-norm "
                                    "statistics; eval: deterministic")
                    seed = gr.Number(value=0, precision=0, label="seed",
                                     info="repeats paper mode's dropout")
            output = gr.Image(type="pil", label="output", format="png", elem_id="output",
                              interactive=False)
        upload_button.click(from_upload, [upload, mode, seed], output, api_name="translate")
        sketch_button.click(from_sketch, [sketch, mode, seed], output,
                            api_name="translate_drawing")
    return page


# ---- running it ------------------------------------------------------------------------------

def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise P2PError(f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                       "choose another --port, or stop what uses it") from None
    sock.listen(128)
    return sock


@contextlib.contextmanager
def assets_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="p2p-serve-") as folder:
        yield Path(folder)


def run(app, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully (uvicorn finishes open requests)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=10))
    server.run(sockets=[sock])

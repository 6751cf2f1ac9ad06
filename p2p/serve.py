"""``p2p serve``: a web page to upload or draw an image and see it translated, and an HTTP API.

One FastAPI app: ``POST /api/translate`` (the image's bytes as the body, or a multipart field
``image``; answers ``image/png`` at the input's size), ``GET /healthz``, and a Gradio page mounted
at ``/``. Both go through :class:`Translator`, which owns the one model. No model code lives here:
a request is one ``translate.Job`` run by ``translate.translate``, exactly as ``p2p translate -``
runs an image from stdin.

Concurrency: the generator runs on one worker thread, off the event loop, one request at a time
(torch already uses every core for one image). Up to ``Limits.queue`` requests may be reading
their upload, waiting or running; one more is refused at once with 503 and ``Retry-After``, before
its body is read, so a flood costs memory for at most ``queue`` uploads of ``max_bytes``.

What a client can make the server hold is bounded (``Limits``): open connections, the time to
send headers and a body (``serve_http``), uploads in memory (the queue) and on disk (the page's
upload folder, private to this server: ``max_upload_storage`` in all, each kept
``upload_lifetime`` seconds). The page reads only files uploaded to that folder, and serves only
those and its own assets.
"""

import asyncio
import contextlib
import functools
import json
import math
import os
import socket
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p.errors import ImageTooLarge, P2PError
from p2p.limits import MAX_SEED

MB = 1 << 20
MULTIPART_SLACK = 64 * 1024  # allowed beyond an upload's limit for the multipart headers
SEEDS = range(MAX_SEED + 1)
BAD_SEED = f"the seed must be a whole number from 0 to {SEEDS.stop - 1}"

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
    queue: int = 32  # requests reading, waiting or running at once (503 above)
    max_connections: int = 128  # open HTTP connections (503 and closed above)
    header_timeout: float = 10.0  # seconds to send a request's line and headers
    body_timeout: float = 60.0  # seconds to send its body once the headers are in
    max_upload_storage: int = 512 * MB  # the page's uploads and outputs on disk, in all
    upload_lifetime: int = 600  # seconds the page keeps an upload or output on disk


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
        from p2p.images.eight_bit import declared_size

        if not data:
            raise RequestError(400, f"{name}: empty upload, not an image")
        if len(data) > self.limits.max_bytes:
            raise RequestError(413, f"{name}: {len(data)} bytes, over the limit of "
                                    f"{self.limits.max_bytes}")
        try:
            height, width = declared_size(data, name)
        except ImageTooLarge as exc:  # a header declaring more than limits.MAX_PIXELS
            raise RequestError(413, str(exc)) from None
        except P2PError as exc:
            raise RequestError(400, str(exc)) from None
        if width * height > self.limits.max_pixels:
            raise RequestError(413, f"{name}: {width}x{height} pixels, over the limit of "
                                    f"{self.limits.max_pixels}")

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """A place in the queue for one request, taken before its upload is read."""
        if self.pending >= self.limits.queue:
            raise RequestError(503, f"busy: {self.pending} requests in the queue; try again")
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    async def translate(self, data: bytes, name: str, mode: str = "paper",
                        seed: int | None = None) -> bytes:
        """The PNG of ``data`` translated, at its size; RequestError for a bad upload. The
        caller holds a ``slot``."""
        check_options(mode, seed)
        self.check(data, name)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.worker, self._run, data, name, mode, seed)
        except P2PError as exc:  # e.g. a truncated image: the decoder found out
            raise RequestError(400, str(exc)) from None

    def _run(self, data: bytes, name: str, mode: str, seed: int | None) -> bytes:
        from p2p.inference import translate

        options = translate.TranslateOptions(paper_mode=mode == "paper", seed=seed)
        report = translate.translate(self.model, [translate.Job(data, name, None)], options)
        return report.output_bytes

    def close(self) -> None:
        self.worker.shutdown(wait=True, cancel_futures=True)


def check_options(mode: str, seed: int | None) -> None:
    """Refuse a test-time mode or seed the generator cannot take (400)."""
    from p2p.models import TEST_MODES  # here: serve.py stays light to import

    if mode not in TEST_MODES:
        raise RequestError(400, f"unknown mode {mode!r}; use {' or '.join(TEST_MODES)}")
    if seed is not None and seed not in SEEDS:
        raise RequestError(400, BAD_SEED)


# ---- the HTTP app ----------------------------------------------------------------------------

def create_app(translator: Translator, assets: Path, title: str = "p2p"):
    """The ASGI app: the API routes and the Gradio page mounted at ``/``, behind ``PageGuard``.

    ``assets`` is a folder private to this app: it writes and serves the page's assets there
    (sketch background, examples) and keeps the page's uploads in ``assets/uploads``.
    """
    import gradio as gr
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    model = translator.model
    limits = translator.limits

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
                "queue": limits.queue}

    @app.post("/api/translate")
    async def api_translate(request: Request, mode: str = "paper", seed: int | None = None):
        try:
            check_options(mode, seed)
            with translator.slot():  # before the body: a full queue costs no upload memory
                data = await _upload(request, limits.max_bytes)
                png = await translator.translate(data, "upload", mode, seed)
        except RequestError as exc:
            headers = {"Retry-After": "1"} if exc.status == 503 else None
            return JSONResponse({"error": str(exc)}, exc.status, headers=headers)
        return Response(png, media_type="image/png")

    uploads = upload_folder(assets)
    page = build_page(translator, assets, title)
    # Gradio's own queue: as many events as ours, one run at a time (there is one generator).
    page.queue(max_size=limits.queue, default_concurrency_limit=1)
    app = gr.mount_gradio_app(app, page, path="", allowed_paths=[str(assets)],
                              max_file_size=limits.max_bytes, ssr_mode=False, footer_links=[])
    # Gradio checks that a file named in an input was uploaded only on a page it launched, and
    # mount_gradio_app never marks it so: without this, a request naming any server path as an
    # image input had that file copied into the upload folder, where /gradio_api/file= served it.
    page.has_launched = True
    return PageGuard(app, limits, uploads, assets)


def upload_folder(assets: Path) -> Path:
    """The page's upload folder: private to this server rather than the machine's shared
    /tmp/gradio (other apps', other users' files). Gradio reads it from GRADIO_TEMP_DIR for the
    whole process, so a process serves one page at a time."""
    folder = assets / "uploads"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


class PageGuard:
    """ASGI middleware in front of the app, for what Gradio's routes do not bound.

    - Files: ``/gradio_api/file=PATH`` serves only files under ``assets`` (the page's own and its
      uploads), never another server path, and fetches no URL for a client (Gradio would).
    - Inputs: a JSON call of the page (its queue, ``/gradio_api/call/...``) may name files only
      in the upload folder. Gradio checks that too (``create_app``), but answers with the path
      named and a traceback in the log; this refuses first, in one line naming nothing.
    - Uploads to the page: each must declare its length (at most ``max_bytes``); it is let in
      only when the upload folder has room for it under ``max_upload_storage``, after the
      oldest uploads and outputs are deleted. What the page holds from the start (its canvas
      and examples) stays.
    """

    FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
    MAX_JSON = 64 * 1024  # a call's JSON names a few inputs: far below this

    def __init__(self, app, limits: Limits, uploads: Path, assets: Path):
        self.app = app
        self.limits = limits
        self.uploads = uploads.resolve()
        self.assets = assets.resolve()
        self.keep = {path for path in self.uploads.rglob("*") if path.is_file()}
        self.arriving = 0  # bytes of uploads being received: room already promised

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path.startswith(self.FILE_ROUTES) or path.startswith("/gradio_api/proxy="):
            if not self.servable(path.removeprefix(self.FILE_ROUTES[0])
                                 .removeprefix(self.FILE_ROUTES[1])):
                return await _send_json(send, 403, "not a file of this page")
        elif path == "/gradio_api/upload" and scope["method"] == "POST":
            return await self.upload(scope, receive, send)
        elif path.startswith("/gradio_api/") and scope["method"] == "POST":
            return await self.call(scope, receive, send)
        return await self.app(scope, receive, send)

    async def call(self, scope, receive, send) -> None:
        """Read a call's JSON (bounded), refuse files from outside the upload folder, then
        hand the same bytes on."""
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.MAX_JSON:
                return await _send_json(send, 413, f"request over {self.MAX_JSON} bytes")
            if not message.get("more_body", False):
                break
        try:
            outside = any(not self.uploaded(path)
                          for path in file_paths(json.loads(body) if body else None))
        except (ValueError, RecursionError):  # the page sends JSON, never nested this deep
            return await _send_json(send, 400, "not a JSON call of this page")
        if outside:
            return await _send_json(send, 400, "only images uploaded to this page can be "
                                               "translated; upload the image first")
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # http.disconnect, when the client goes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def uploaded(self, path) -> bool:
        return isinstance(path, str) and inside(path, self.uploads)

    def servable(self, name: str) -> bool:
        return name.startswith("/") and inside(name, self.assets) and Path(name).is_file()

    async def upload(self, scope, receive, send) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if not declared.isdigit():
            return await _send_json(send, 411, "an upload must declare its Content-Length")
        size = int(declared)
        if size > self.limits.max_bytes + MULTIPART_SLACK:
            return await _send_json(send, 413, f"upload of {size} bytes, over the limit of "
                                               f"{self.limits.max_bytes}")
        if size > self.limits.max_upload_storage:
            return await _send_json(send, 413, f"upload of {size} bytes, over the upload "
                                               f"storage of {self.limits.max_upload_storage}")
        if not self.make_room(size):
            return await _send_json(send, 503, "busy: the upload folder is full; try again",
                                    retry_after=True)
        self.arriving += size
        try:
            await self.app(scope, receive, send)
        finally:
            self.arriving -= size

    def make_room(self, size: int) -> bool:
        """Delete the oldest uploads and outputs until ``size`` more bytes fit."""
        files = []
        for path in self.uploads.rglob("*"):
            with contextlib.suppress(OSError):  # deleted meanwhile by Gradio's own cleanup
                if path.is_file() and path not in self.keep:
                    stat = path.stat()
                    files.append((stat.st_mtime, stat.st_size, path))
        used = self.arriving + sum(size for _, size, _ in files)
        for _, file_size, path in sorted(files):
            if used + size <= self.limits.max_upload_storage:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                used -= file_size
        return used + size <= self.limits.max_upload_storage


def file_paths(value) -> Iterator:
    """The ``path`` of every file object (a dict with one) in a JSON value."""
    if isinstance(value, dict):
        if "path" in value:
            yield value["path"]
        for item in value.values():
            yield from file_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from file_paths(item)


def inside(name: str, folder: Path) -> bool:
    """Whether the file ``name`` names lies in ``folder`` (resolved), links followed: a link
    out of the folder is not in it, nor is a URL."""
    if "://" in name or name.startswith(("http:", "https:", "//")):
        return False
    return Path(name).resolve().is_relative_to(folder)


async def _send_json(send, status: int, message: str, retry_after: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _upload(request, limit: int) -> bytes:
    """The image bytes of a request: its body, or its multipart field ``image``; at most
    ``limit`` bytes are read, whatever Content-Length says."""
    from starlette.formparsers import MultiPartException, MultiPartParser
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise RequestError(413, f"upload of {declared} bytes, over the limit of {limit}")

    async def body():
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit + MULTIPART_SLACK:
                raise RequestError(413, f"upload over the limit of {limit} bytes")
            yield chunk

    try:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return b"".join([chunk async for chunk in body()])
        # Streamed into the parser, which spools file fields to disk past 1 MB.
        form = await MultiPartParser(request.headers, body(), max_files=1, max_fields=8).parse()
        try:
            field = form.get("image")
            if field is None or isinstance(field, str):
                raise RequestError(400, "multipart upload without a file field named 'image'")
            return await field.read()
        finally:
            await form.close()
    except MultiPartException as exc:
        raise RequestError(400, f"bad multipart upload ({exc.message})") from None
    except ClientDisconnect:  # gone, or cut off by the body timeout: nobody reads the answer
        raise RequestError(400, "upload interrupted") from None


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
    from p2p.images.eight_bit import open_image, save_image
    from p2p.images.raster import split_halves

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

    from p2p.images.eight_bit import open_image, save_image
    from p2p.models import TEST_MODES

    model = translator.model
    height, width = model.image_size
    canvas = canvas_for(model.dataset, model.direction, min(height, width))
    background = assets / "canvas.png"
    save_image(Image.new("RGB", (width, height), canvas.background), background)
    examples = example_inputs(model.dataset, model.direction, model.in_channels, assets)

    uploads = (assets / "uploads").resolve()

    def page_error(message: str) -> Exception:
        # Shown on the page; a user's mistake, so no traceback in the server's log.
        return gr.Error(message, print_exception=False)

    def read_upload(path: str) -> bytes:
        # Gradio hands over only files uploaded to this page (create_app); a path outside the
        # upload folder is refused here too, and the message names no server path.
        if not inside(path, uploads) or not Path(path).is_file():
            raise page_error("not an upload of this page; upload the image again")
        if Path(path).stat().st_size > translator.limits.max_bytes:
            raise page_error(f"upload over the limit of {translator.limits.max_bytes} bytes")
        return Path(path).read_bytes()

    async def run(data: bytes, mode: str, seed: float | None):
        try:
            if seed is not None and not math.isfinite(seed):  # the page's number field
                raise RequestError(400, BAD_SEED)
            with translator.slot():
                png = await translator.translate(data, "image", mode,
                                                 None if seed is None else int(seed))
        except RequestError as exc:
            raise page_error(str(exc)) from None
        return open_image(png, model.out_channels)

    async def from_upload(path: str | None, mode: str, seed: float | None):
        if not path:
            raise page_error("upload an image first")
        return await run(read_upload(path), mode, seed)

    async def from_sketch(value: dict | None, mode: str, seed: float | None):
        composite = (value or {}).get("composite")
        if not composite:
            raise page_error("draw something first")
        return await run(read_upload(composite), mode, seed)

    trained_on = f" trained on {Path(model.dataset).name}" if model.dataset else ""
    # Uploads and outputs Gradio keeps on disk are deleted once older than upload_lifetime,
    # checked every minute (PageGuard also caps their total).
    lifetime = translator.limits.upload_lifetime
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(60, lifetime)) as page:
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
                    mode = gr.Radio(list(TEST_MODES), value="paper", label="test-time mode",
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


# File descriptors the process needs besides its connections: the model, uploads, logs.
RESERVED_FILES = 64


def check_open_files(limits: Limits) -> None:
    """Refuse a connection limit the process's open-file limit cannot hold."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and limits.max_connections + RESERVED_FILES > soft:
        raise P2PError(f"--max-connections {limits.max_connections} needs "
                       f"{limits.max_connections + RESERVED_FILES} open files, over this "
                       f"process's limit of {soft}",
                       f"lower --max-connections to {max(1, soft - RESERVED_FILES)} or raise "
                       "the limit (ulimit -n)")


def server(app, limits: Limits, log_level: str = "warning"):
    """A uvicorn server for ``app`` whose connections keep ``limits`` (``serve_http``)."""
    import uvicorn

    from p2p.serve_http import GuardedH11Protocol

    protocol = functools.partial(GuardedH11Protocol, max_connections=limits.max_connections,
                                 header_timeout=limits.header_timeout,
                                 body_timeout=limits.body_timeout)
    return uvicorn.Server(uvicorn.Config(app, http=protocol, log_level=log_level,
                                         timeout_graceful_shutdown=10))


def run(app, limits: Limits, sock: socket.socket) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully (uvicorn finishes open requests)."""
    server(app, limits).run(sockets=[sock])

"""``p2p serve``: load the model, bind the address, serve the page and the API until stopped."""

import contextlib
import signal
from typing import Annotated

import typer

import p2p
from p2p.cli import console
from p2p.cli.translate import CheckpointOption, TaskOption
from p2p.errors import P2PError, install_extra
from p2p.limits import MAX_PIXELS


def serve(
    checkpoint: CheckpointOption = None,
    task: TaskOption = None,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on. 0.0.0.0 makes the model reachable from other "
        "machines.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="Port (0: any free one).")] = 7860,
    max_upload_mb: Annotated[float, typer.Option(
        "--max-upload-mb", min=0.001, help="Largest upload accepted (413 above).")] = 20,
    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", min=1, max=MAX_PIXELS, show_default="4096x4096 = 16777216",
        help="Largest width x height accepted (413 above).")] = 4096 * 4096,
    queue: Annotated[int, typer.Option(
        "--queue", min=1, max=10_000,
        help="Requests reading their upload, waiting or running at once; more get 503 before "
        "their upload is read.")] = 32,
    max_connections: Annotated[int, typer.Option(
        "--max-connections", min=1, max=100_000,
        help="Open connections at once; more are answered 503 and closed.")] = 128,
    header_timeout: Annotated[float, typer.Option(
        "--header-timeout", min=0.1, max=3600,
        help="Seconds a client has to send a request's headers.")] = 10,
    body_timeout: Annotated[float, typer.Option(
        "--body-timeout", min=0.1, max=3600,
        help="Seconds a client has to send a request's body.")] = 60,
    max_upload_storage_mb: Annotated[float, typer.Option(
        "--max-upload-storage-mb", min=1,
        help="The page's uploads and outputs on disk in all; the oldest go first, and each is "
        "deleted after 10 minutes.")] = 512,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Serve a model: a web page to upload or draw an image, and POST /api/translate."""
    if (checkpoint is None) == (task is None):
        raise P2PError("give --checkpoint PATH or --task NAME, exactly one")
    try:
        import fastapi  # noqa: F401
        import gradio  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise P2PError(f"p2p serve needs the serve extra ({exc.name} is missing)",
                       install_extra("serve")) from None
    from p2p import serve as core

    with contextlib.ExitStack() as bars:
        download = console.lazy_bar(bars, f"downloading {task}", "bytes")
        model = p2p.load(checkpoint or task, device=device, download_progress=download)
    limits = core.Limits(int(max_upload_mb * core.MB), max_pixels, queue, max_connections,
                         header_timeout, body_timeout, int(max_upload_storage_mb * core.MB))
    core.check_open_files(limits)
    translator = core.Translator(model, limits)
    with core.assets_folder() as assets, contextlib.closing(translator):
        app = core.create_app(translator, assets, title=f"p2p: {task or checkpoint}")
        sock = core.bind(host, port)
        address, bound_port = sock.getsockname()[:2]
        shown = f"[{address}]" if ":" in address else address
        console.info(f"serving http://{shown}:{bound_port}/ (API: POST /api/translate; "
                     "Ctrl-C stops)")
        # uvicorn stops gracefully on SIGINT and SIGTERM, then raises the signal again: make
        # SIGTERM end like Ctrl-C (exit 130) instead of killing the process.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            core.run(app, limits, sock)
        except KeyboardInterrupt:
            console.info("stopped")
            raise typer.Exit(130) from None


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt

"""``p2p zoo list|pull|import|export``: published pix2pix weights as p2p checkpoints."""

import contextlib
import dataclasses
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from p2p.cli import console
from p2p.errors import human_bytes, install_extra
from p2p.limits import MAX_SIDE

app = typer.Typer(rich_markup_mode=None,  # plain help, as the root's (app.py)
                  help="Published pix2pix weights (mmagic and official), converted and verified.",
                  no_args_is_help=True)


# Spelled here so that --help skips torch: zoo.LAYOUTS, data.paired.DIRECTIONS and
# export.EXPORT_FORMATS (tests/test_zoo.py checks they agree).
class Layout(str, Enum):
    official = "official"  # e.g. a junyanz latest_net_G.pth
    mmagic = "mmagic"


class Direction(str, Enum):
    AtoB = "AtoB"
    BtoA = "BtoA"


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"
    hf = "hf"  # a Hugging Face model folder


def _size(n: int | None) -> str:
    return "unknown" if n is None else human_bytes(n)


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False
          ) -> None:
    """List the zoo: name, task, direction, source, channel order, size, whether it is present.

    The channel order is the published generator's; p2p converts BGR ones to RGB.
    """
    from p2p.weights import zoo  # here, so `p2p --help` skips torch

    rows = zoo.listing()
    if json_out:
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    table = Table("name", "task", "direction", "source", "channels", "size", "present")
    for r in rows:
        # Every zoo model runs RGB in p2p: "BGR -> RGB" says the published one was flipped.
        channels = "BGR -> RGB" if r.channels == "BGR" else r.channels
        table.add_row(r.name, r.task, r.direction, r.source, channels, _size(r.size),
                      f"yes ({_size(r.local_size)})" if r.present else
                      "unreadable" if r.problem else "no")
    # Not a terminal: no width limit, so names are never cut in pipes and logs.
    Console(width=None if sys.stdout.isatty() else 1000).print(table)
    for r in rows:
        if r.problem:
            console.info(f"{r.name} is unreadable: {r.problem} (import it again with "
                         f"'p2p zoo import FILE --name {r.name}', or delete its folder)")


@app.command("pull")
def pull(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Zoo name (see 'p2p zoo list').")],
    url: Annotated[str | None, typer.Option(
        "--url", help="Download from this mirror instead (same checksum).")] = None,
    source_file: Annotated[Path | None, typer.Option(
        "--from", help="Use this already downloaded file (same checks); it is left in place.")
    ] = None,
) -> None:
    """Download, verify and convert a published model; prints the checkpoint path on stdout."""
    from p2p.weights import zoo

    with contextlib.ExitStack() as stack:
        pulled = zoo.pull(name, url=url, source_file=source_file,
                          progress=console.lazy_bar(stack, f"downloading {name}", "bytes"))
    if pulled.verified:
        console.info(f"sha256 verified: {pulled.sha256}")
    else:
        console.info(f"no published checksum for {name}; recorded sha256 {pulled.sha256}")
    print(pulled.path)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(
        metavar="FILE", help="A generator checkpoint in a published layout.")],
    layout: Annotated[Layout, typer.Option(
        "--format", help="The key layout: official (e.g. a junyanz latest_net_G.pth) or "
        "mmagic.")],
    name: Annotated[str, typer.Option("--name", help="Zoo name to store it under.")],
    direction: Annotated[Direction, typer.Option(
        "--direction", help="Its direction on its dataset.")] = Direction.AtoB,
    image_size: Annotated[int, typer.Option(
        "--image-size", min=1, max=MAX_SIDE, help="Image size it was trained at.")] = 256,
    bgr: Annotated[bool, typer.Option(
        "--bgr", help="It reads and writes BGR (as mmagic's pix2pix runs do): make it RGB.")
    ] = False,
    dropout: Annotated[bool, typer.Option(
        "--dropout/--no-dropout",
        help="It was trained with dropout (the pix2pix default; a U-Net's weights cannot tell, "
        "a ResNet's layout does and is followed).")] = True,
) -> None:
    """Convert a checkpoint of a published layout into the zoo; prints the checkpoint path."""
    from p2p.weights import zoo

    print(zoo.import_file(file, layout.value, name, direction=direction.value,
                          image_size=image_size, bgr=bgr, dropout=dropout))


@app.command("export")
def export(
    source: Annotated[str, typer.Argument(
        metavar="NAME|CHECKPOINT", help="Zoo name, checkpoint file, run directory "
        "(RUN_DIR@best, @latest, @ITERATION select one), model folder or hf:OWNER/NAME.")],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Output file (a folder for hf).")],
    fmt: Annotated[ExportFormat, typer.Option(
        "--format", help="onnx, torchscript, or hf (a Hugging Face model folder: "
        "safetensors, config, model card).")],
) -> None:
    """Export a generator, checked against ours: ONNX or TorchScript (eval mode, dynamic batch
    axis), or a Hugging Face model folder (upload it with: hf upload OWNER/NAME OUT)."""
    from p2p.export import export as write_export

    with contextlib.ExitStack() as stack:
        result = write_export(source, fmt.value, out,
                              progress=console.lazy_bar(stack, f"downloading {source}", "bytes"))
    if result.checked_with is None:
        console.info(f"not checked: onnxruntime is not installed ({install_extra('onnx')})")
    elif result.max_abs_diff is None:
        console.info(f"checked with {result.checked_with}")
    else:
        console.info(f"checked with {result.checked_with}: max difference to ours "
                     f"{result.max_abs_diff:.2g} on a batch of 2")
    print(result.path)

"""``p2p translate``: parse, plan the outputs, load the model, translate, report."""

import contextlib
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

import p2p
from p2p.cli import console
from p2p.errors import P2PError
from p2p.limits import MAX_COUNT, MAX_SEED, MAX_SIDE
from p2p.paths import write_stdout

SHOWN = 10  # names listed before "... and N more"


class Ext(str, Enum):
    png = "png"
    jpg = "jpg"
    tif = "tif"
    npy = "npy"


class Precision(str, Enum):  # p2p.device.PRECISIONS, spelled here so --help skips torch
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


# The model to run, shared with `p2p serve`.
CheckpointOption = Annotated[Path | None, typer.Option(
    "--checkpoint", "-c", help="A checkpoint file, a training run directory (its latest "
    "checkpoint; RUN_DIR@best, RUN_DIR@ITERATION pick another) or a model folder (p2p zoo "
    "export --format hf).")]
TaskOption = Annotated[str | None, typer.Option(
    "--task", help="A zoo model, e.g. facades (downloaded on first use), or "
    "hf:OWNER/NAME[@REVISION].")]


def translate(
    input: Annotated[str, typer.Argument(
        metavar="INPUT", help="An image, a folder of images (recursive), or - for one image "
        "on stdin.")],
    output: Annotated[str, typer.Argument(
        metavar="OUTPUT", help="A folder (same relative names), an image file, or - for PNG "
        "bytes on stdout (TIFF when PNG cannot hold the output).")],
    checkpoint: CheckpointOption = None,
    task: TaskOption = None,
    paired: Annotated[bool, typer.Option(
        "--paired", help="Inputs are A|B pairs side by side; the model's direction picks the "
        "input half.")] = False,
    side_by_side: Annotated[bool, typer.Option(
        "--side-by-side", help="Write input|output|target (input|output without "
        "--paired).")] = False,
    keep_size: Annotated[bool, typer.Option(
        "--keep-size", help="Pad (reflect) to a multiple of 2^num_downs instead of resizing to "
        "the model's size.")] = False,
    tile: Annotated[int | None, typer.Option(
        "--tile", min=1, max=MAX_SIDE, help="Translate each image at its own size in tiles of "
        "SIZE pixels (a multiple of the generator's stride) blended over their overlap; memory "
        "follows the tile, not the image. Batch-norm generators need --eval-mode.")] = None,
    overlap: Annotated[int | None, typer.Option(
        "--overlap", min=0, max=MAX_SIDE, help="Pixels neighbouring tiles share and blend "
        "over (default: a quarter of the tile).")] = None,
    eval_mode: Annotated[bool, typer.Option(
        "--eval-mode", help="Running batch-norm statistics, no dropout. Default: the paper's "
        "test-time mode (dropout on, each image's own statistics).")] = False,
    seed: Annotated[int | None, typer.Option(
        "--seed", min=0, max=MAX_SEED, help="Make the paper mode's dropout repeatable.")
    ] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", "-b", min=1, max=MAX_COUNT, help="Images per forward pass.")] = 4,
    ext: Annotated[Ext | None, typer.Option(
        "--ext", help="Output format when OUTPUT is a folder. Default: tif for TIFF inputs, npy "
        "for .npy inputs, else png (tif when PNG cannot hold the output). Outputs keep the "
        "model's depth and channel count (PNG: 1 or 3 channels, 8 or 16 bits; tif, npy: any).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace existing outputs.")] = False,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="Report bad inputs and go on (exit 1) instead of stopping at the "
        "first (exit 2).")] = False,
    device: Annotated[str, typer.Option(
        "--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[Precision, typer.Option(
        "--precision", help="bf16 autocast or fp32; auto: bf16 on CUDA and on CPUs with native "
        "bf16 (avx512_bf16, AMX), else fp32.")] = Precision.auto,
) -> None:
    """Translate images with a trained generator: a file, a folder, or stdin to stdout."""
    if (checkpoint is None) == (task is None):
        raise P2PError("give --checkpoint PATH or --task NAME, exactly one")
    if overlap is not None and tile is None:
        raise P2PError("--overlap needs --tile SIZE")
    stdin = None
    if input == "-":
        if sys.stdin.isatty():
            raise P2PError("input '-' reads an image from stdin, but stdin is a terminal",
                           "cat x.png | p2p translate ... - out.png")
        stdin = sys.stdin.buffer.read()
    from p2p.inference import translate as core  # here, so `p2p --help` skips torch

    model = None
    if ext is None and checkpoint is not None:  # the default format follows what the model writes
        model = p2p.load(checkpoint, device=device, precision=precision.value)
    plan = core.plan_jobs(input, output, ext.value if ext else None, overwrite, stdin,
                          png_holds_output=model is None or model.png_holds_output)

    report = core.Report()
    if plan.jobs:
        if model is None:
            with contextlib.ExitStack() as bars:
                download = console.lazy_bar(bars, f"downloading {task}", "bytes")
                model = p2p.load(checkpoint or task, device=device, precision=precision.value,
                                 download_progress=download)
        options = core.TranslateOptions(paired=paired, side_by_side=side_by_side,
                                        keep_size=keep_size, paper_mode=not eval_mode,
                                        batch_size=batch_size, seed=seed, skip_bad=skip_bad,
                                        tile=tile, overlap=overlap,
                                        precision=precision.value)
        with contextlib.ExitStack() as bars:
            progress = console.lazy_bar(bars, "translating") if len(plan.jobs) > 1 else None
            report = core.translate(model, plan.jobs, options, progress)

    if report.output_bytes is not None:
        write_stdout(report.output_bytes)
    _list("not overwritten (exists; --overwrite replaces)", [str(p) for p in plan.existing])
    _list("skipped", report.bad)
    where = "stdout" if output == "-" else output
    console.info(f"translated {report.translated} image(s) -> {where}")
    if report.bad or plan.existing:
        console.info(f"{len(report.bad)} bad input(s) skipped, {len(plan.existing)} existing "
                     "output(s) kept")
        raise typer.Exit(1)


def _list(label: str, lines: list[str]) -> None:
    console.info_lines([f"{label}: {line}" for line in lines], SHOWN, f"{label}: ")

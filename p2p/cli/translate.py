"""``p2p translate``: parse, plan the outputs, load the model, translate, report."""

import contextlib
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from p2p.cli import console, processes
from p2p.errors import P2PError
from p2p.limits import MAX_COUNT, MAX_SEED, MAX_SIDE, MAX_WORKERS
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
    ctx: typer.Context,
    input: Annotated[str, typer.Argument(
        metavar="INPUT", help="An image, a folder of images (recursive), - for one image on "
        "stdin, or with --list a file listing images.")],
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
        "--seed", min=0, max=MAX_SEED, help="Make the paper mode's dropout repeatable: each "
        "image's masks follow the seed and its path relative to INPUT, whatever --batch-size, "
        "--nproc or --engine. Default: a new seed each run.")] = None,
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
    listed: Annotated[bool, typer.Option(
        "--list", help="INPUT is a list of images: one path per line, or a .csv with a 'path' "
        "column (relative paths from its folder). Outputs keep their paths relative to the "
        "images' common root; missing files are refused, or skipped with --skip-bad.")] = False,
    nproc: Annotated[int, typer.Option(
        "--nproc", min=1, max=MAX_WORKERS, help="Translate in N processes on this machine (one "
        "per GPU), launched with torchrun; under torchrun, each process takes its share "
        "without this option.")] = 1,
    engine: processes.EngineOption = processes.Engine.torch,
    ray_address: processes.RayAddressOption = None,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, max=MAX_WORKERS, help="--engine ray: model workers (actors).")] = 1,
    gpus_per_worker: processes.GpusPerWorkerOption = 0,
) -> None:
    """Translate images with a trained generator: a file, a folder, a list, or stdin to
    stdout; in one process, several (--nproc, torchrun) or on Ray (--engine ray)."""
    if (checkpoint is None) == (task is None):
        raise P2PError("give --checkpoint PATH or --task NAME, exactly one")
    if overlap is not None and tile is None:
        raise P2PError("--overlap needs --tile SIZE")
    on_ray = engine is processes.Engine.ray
    _check_engine(on_ray, nproc, device, ray_address, workers, gpus_per_worker, input)
    processes.refuse_nested(nproc)
    if nproc > 1:  # the launcher: refuses what every process would, then starts them
        from p2p.inference import translate as core

        core.plan_jobs(input, output, ext.value if ext else None, overwrite, manifest=listed,
                       skip_missing=skip_bad)
        raise typer.Exit(processes.relaunch(ctx, nproc, "translation"))
    stdin = None
    if input == "-":
        if sys.stdin.isatty():
            raise P2PError("input '-' reads an image from stdin, but stdin is a terminal",
                           "cat x.png | p2p translate ... - out.png")
        stdin = sys.stdin.buffer.read()
    # The core is imported here, so `p2p --help` skips torch.
    from p2p.distributed import world_from_env
    from p2p.inference import sharded
    from p2p.inference import translate as core

    world = world_from_env()  # under torchrun: this process's share of the jobs
    if on_ray and world.size > 1:
        raise P2PError("--engine ray runs one driver, but this process runs under torchrun",
                       "start it once, outside torchrun")
    with sharded.joined(world, "cpu" if on_ray else device) as device:
        model = None
        if ext is None and checkpoint is not None:  # the default format follows the model
            model = sharded.load_in_turn(checkpoint, world, device=device,
                                         precision=precision.value)
        plan = sharded.planned(world, input, output, ext.value if ext else None, overwrite, stdin,
                               png_holds_output=model is None or model.png_holds_output,
                               manifest=listed, skip_missing=skip_bad)
        report = core.Report()
        if plan.jobs:
            if model is None:
                with contextlib.ExitStack() as bars:
                    download = (console.lazy_bar(bars, f"downloading {task}", "bytes")
                                if world.is_main else None)
                    model = sharded.load_in_turn(checkpoint or task, world, device=device,
                                                 precision=precision.value,
                                                 download_progress=download)
            options = core.TranslateOptions(paired=paired, side_by_side=side_by_side,
                                            keep_size=keep_size, paper_mode=not eval_mode,
                                            batch_size=batch_size, seed=seed, skip_bad=skip_bad,
                                            tile=tile, overlap=overlap,
                                            precision=precision.value)
            if world.is_main and core.looks_like_unsplit_pairs(model, plan.jobs, options):
                console.info(f"warning: {plan.jobs[0].name} is twice as wide as tall, like an "
                             "A|B pair, and the model was trained on square images; add "
                             "--paired to translate one half of each pair")
            with contextlib.ExitStack() as bars:
                progress = (console.lazy_bar(bars, "translating")
                            if len(plan.jobs) > 1 and world.is_main else None)
                if on_ray:
                    from p2p.cluster import address_from
                    from p2p.inference.ray_pipeline import translate_on_ray

                    report = translate_on_ray(model, plan.jobs, options,
                                              address=address_from(ray_address), workers=workers,
                                              gpus_per_worker=gpus_per_worker, progress=progress)
                else:
                    report = sharded.translate_share(model, plan.jobs, options, world, progress)

    finished = 1 if report.bad or plan.existing else 0
    if not world.is_main:  # rank 0 reports for all; every rank ends with its exit code
        raise typer.Exit(finished)
    if report.output_bytes is not None:
        write_stdout(report.output_bytes)
    _list("not overwritten (exists; --overwrite replaces)", [str(p) for p in plan.existing])
    _list("skipped", report.bad)
    where = "stdout" if output == "-" else output
    ranks = f" in {world.size} processes" if world.size > 1 else ""
    console.info(f"translated {report.translated} image(s){ranks} -> {where}")
    if finished:
        console.info(f"{len(report.bad)} bad input(s) skipped, {len(plan.existing)} existing "
                     "output(s) kept")
        raise typer.Exit(1)


def _check_engine(on_ray: bool, nproc: int, device: str, ray_address: str | None, workers: int,
                  gpus_per_worker: float, input: str) -> None:
    """Refuse options that do not go together, before any work."""
    if on_ray and nproc > 1:
        raise P2PError("--nproc starts torchrun processes; --engine ray runs on Ray's workers",
                       "choose one: --workers N sets Ray's")
    if on_ray and device != "auto":
        raise P2PError("--engine ray runs where Ray places its workers",
                       "leave out --device; --gpus-per-worker 1 puts each worker on a GPU")
    ray_only = [name for name, given in (("--ray-address", ray_address is not None),
                                         ("--workers", workers != 1),
                                         ("--gpus-per-worker", gpus_per_worker != 0)) if given]
    if ray_only and not on_ray:
        raise P2PError(f"{ray_only[0]} is an option of --engine ray", "add --engine ray")
    if input == "-" and (on_ray or nproc > 1):
        raise P2PError("one image from stdin runs in one process",
                       "leave out --nproc and --engine ray")


def _list(label: str, lines: list[str]) -> None:
    console.info_lines([f"{label}: {line}" for line in lines], SHOWN, f"{label}: ")

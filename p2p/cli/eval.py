"""``p2p eval``: FID and Inception Score with the published table's protocol; L1, PSNR, SSIM and
LPIPS of image pairs."""

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from p2p import metrics
from p2p.cli import console, processes
from p2p.errors import P2PError, install_extra
from p2p.limits import MAX_COUNT, MAX_SEED, MAX_WORKERS
from p2p.metrics import GENERATOR_BATCH, INCEPTION_BATCH, SPLITS, THREADS

# The networks (p2p.metrics.frechet, ...) are imported inside the commands, so `p2p --help` and
# completion skip torch.
if TYPE_CHECKING:
    from p2p import published

app = typer.Typer(rich_markup_mode=None,  # plain help, as the root's (app.py)
                  help="Evaluate translations: FID and Inception Score as in the published "
                  "table; L1, PSNR, SSIM and LPIPS against the targets.",
                  no_args_is_help=True)
stdout = Console(highlight=False)
SHOWN = 20  # unmatched names listed before "... and N more"

WeightsOption = Annotated[Path | None, typer.Option(
    "--weights", help="The Inception weights file, or a folder holding it. Default: "
    "$P2P_HOME/weights/, downloaded there (sha256-verified) when missing.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
BatchOption = Annotated[int, typer.Option(
    "--batch-size", "-b", min=1, max=MAX_COUNT, help="Images per Inception forward pass "
    "(results do not depend on it).")]
WorkersOption = Annotated[int, typer.Option(
    "--workers", min=1, max=MAX_WORKERS, help="Decoding threads.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
NprocOption = Annotated[int, typer.Option(
    "--nproc", min=1, max=MAX_WORKERS, help="Run in N processes on this machine (one per GPU), "
    "launched with torchrun, each on a share of the images (the same numbers); under "
    "torchrun, each process takes its share without this option.")]


@contextlib.contextmanager
def _bars(work: str, weights: str) -> Iterator[dict]:
    """The progress callbacks of a command: its images, and the download of its weights
    (none in the processes other than rank 0 of a multi-process run)."""
    if not _is_main():
        yield {"progress": None, "download_progress": None}
        return
    with contextlib.ExitStack() as bars:
        yield {"progress": console.lazy_bar(bars, work, "items"),
               "download_progress": console.lazy_bar(bars, f"downloading {weights}", "bytes")}


def _is_main() -> bool:
    """Whether this process reports: one process, or rank 0 under torchrun."""
    from p2p.distributed import world_from_env

    return world_from_env().is_main


def _in_processes(ctx: typer.Context, nproc: int) -> None:
    """With ``--nproc N``, run this command in N processes and exit with their code."""
    processes.refuse_nested(nproc)
    if nproc > 1:
        raise typer.Exit(processes.relaunch(ctx, nproc, "evaluation"))


def _print(values: dict, as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(values), flush=True)
        return
    table = Table(title=title)
    for key in values:
        table.add_column(key, justify="right")
    table.add_row(*(_cell(v) for v in values.values()))
    stdout.print(table)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


@app.command("fid")
def fid_command(
    ctx: typer.Context,
    real: Annotated[Path, typer.Argument(help="Real images: a folder, or a statistics file "
                                         "(.npz). A folder's statistics are cached.")],
    fake: Annotated[Path, typer.Argument(help="Generated images: a folder or a .npz.")],
    weights: WeightsOption = None,
    batch_size: BatchOption = INCEPTION_BATCH,
    workers: WorkersOption = THREADS,
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
    nproc: NprocOption = 1,
) -> None:
    """Fréchet Inception Distance between two image sets (pytorch-fid's FID Inception)."""
    _in_processes(ctx, nproc)
    with _bars("Inception features", "FID Inception weights") as bars:
        result = metrics.fid(real, fake, weights=weights, device=device, batch_size=batch_size,
                             workers=workers, **bars)
    if _is_main():
            _print({"fid": result.fid, "n_real": result.n_real, "n_fake": result.n_fake}, as_json,
               "FID")


@app.command("is")
def is_command(
    ctx: typer.Context,
    fake: Annotated[Path, typer.Argument(help="A folder of generated images.")],
    splits: Annotated[int, typer.Option(
        "--splits", min=1, max=MAX_COUNT, help="Groups the images are split into (N // splits "
        "images each).")] = SPLITS,
    weights: WeightsOption = None,
    batch_size: BatchOption = INCEPTION_BATCH,
    workers: WorkersOption = THREADS,
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
    nproc: NprocOption = 1,
) -> None:
    """Inception Score of a set of images (torchvision's ImageNet Inception v3)."""
    _in_processes(ctx, nproc)
    with _bars("Inception classes", "IS Inception weights") as bars:
        result = metrics.inception_score(fake, splits=splits, weights=weights, device=device,
                                         batch_size=batch_size, workers=workers, **bars)
    if _is_main():
        _print({"is": result.inception_score, "is_std": result.std, "n": result.n}, as_json,
               "IS")



@app.command("stats")
def stats_command(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A folder of (real) images.")],
    out: Annotated[Path, typer.Argument(help="The statistics file to write (.npz).")],
    weights: WeightsOption = None,
    batch_size: BatchOption = INCEPTION_BATCH,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, max=MAX_WORKERS, help="Decoding threads; with --engine ray, "
        "Inception workers (Ray actors).")] = THREADS,
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
    nproc: NprocOption = 1,
    engine: processes.EngineOption = processes.Engine.torch,
    ray_address: processes.RayAddressOption = None,
    gpus_per_worker: processes.GpusPerWorkerOption = 0,
) -> None:
    """Save a folder's FID statistics (mean and covariance of its features) for reuse."""
    on_ray = engine is processes.Engine.ray
    if on_ray and (nproc > 1 or device != "auto"):
        raise P2PError(f"{'--nproc' if nproc > 1 else '--device'} does not go with --engine ray, "
                       "which runs where Ray places its workers",
                       "--workers N and --gpus-per-worker G size them")
    if not on_ray and (ray_address is not None or gpus_per_worker):
        raise P2PError(f"{'--ray-address' if ray_address else '--gpus-per-worker'} is an option "
                       "of --engine ray", "add --engine ray")
    _in_processes(ctx, nproc)
    with _bars("Inception features", "FID Inception weights") as bars:
        if on_ray:
            from p2p.cluster import address_from
            from p2p.metrics.ray_statistics import statistics_on_ray

            stats = statistics_on_ray(folder, out, weights=weights, batch_size=batch_size,
                                      address=address_from(ray_address), workers=workers,
                                      gpus_per_worker=gpus_per_worker, **bars)
        else:
            stats = metrics.fid_statistics(folder, out, weights=weights, device=device,
                                           batch_size=batch_size, workers=workers, **bars)
    if not _is_main():
        return
    if as_json:
        print(json.dumps({"n": stats.n, "out": str(out)}), flush=True)
    else:
        console.info(f"statistics of {stats.n} images -> {out}")


@app.command("pairs")
def pairs_command(
    real: Annotated[Path, typer.Argument(help="A folder of real (target) images.")],
    fake: Annotated[Path, typer.Argument(help="A folder of translated images with the same "
                                         "names (relative path without extension).")],
    lpips: Annotated[bool, typer.Option(
        "--lpips", help="Also LPIPS v0.1 with AlexNet (lower is more similar; needs "
        f"{install_extra('lpips')} and torchvision's AlexNet weights).")] = False,
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="With --lpips: torchvision's AlexNet weights file "
        "(alexnet-owt-7be5be79.pth), or a folder holding it. Default: $P2P_HOME/weights/, "
        "downloaded there (sha256-verified) when missing.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help='Print {"l1", "psnr", "ssim", "n"} on stdout ("lpips" too with '
        '--lpips).')] = False,
) -> None:
    """L1 ([0, 1] scale), PSNR (dB, the files' data range) and SSIM (Wang et al. 2004) of each
    translated image against its real image, and with --lpips LPIPS (Zhang et al. 2018),
    averaged over the pairs. Names without a partner are listed and make the exit code 1."""
    if weights is not None and not lpips:
        raise P2PError("--weights names the AlexNet weights of --lpips", "add --lpips")
    with contextlib.ExitStack() as bars:
        result = metrics.pairs(
            real, fake, lpips=lpips, weights=weights,
            progress=console.lazy_bar(bars, "scoring pairs", "pairs"),
            download_progress=console.lazy_bar(bars, "downloading AlexNet weights", "bytes"))
    values = {"l1": result.l1, "psnr": result.psnr, "ssim": result.ssim,
              **({"lpips": result.lpips} if lpips else {}), "n": result.n}
    if as_json:  # JSON has no infinity: identical images (infinite PSNR) give null
        print(json.dumps({k: v if v != float("inf") else None for k, v in values.items()}),
              flush=True)
    else:
        _print(values, False, "pairs")
    unmatched = ([f"only in {real}: {name}" for name in result.only_real]
                 + [f"only in {fake}: {name}" for name in result.only_fake])
    console.info_lines(unmatched, SHOWN)
    if unmatched:
        console.info(f"{len(unmatched)} unmatched name(s) left out; {result.n} pair(s) scored")
        raise typer.Exit(1)


@app.command("run")
def run_command(
    recipe: Annotated[Path | None, typer.Option(
        "--recipe", help="Evaluate on this recipe's dataset and direction, at its crop size.")
    ] = None,
    task: Annotated[str | None, typer.Option(
        "--task", help="A row of the published table: facades, aerial2maps, maps2aerial or "
        "edges2shoes.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="A checkpoint file or a training run directory (RUN_DIR@best, "
        "@latest, @ITERATION select one). Default with --task: the published (zoo) model of "
        "that task.")] = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="Dataset name or folder (overrides the task's or recipe's).")] = None,
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="A folder holding both Inception weights files. Default: "
        "$P2P_HOME/weights/, downloaded there (sha256-verified) when missing.")] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", "-b", min=1, max=MAX_COUNT, help="Generator batch; training-mode "
        "batch norm uses each batch's statistics, so this changes the outputs (the table: 4).")
    ] = GENERATOR_BATCH,
    seed: Annotated[int, typer.Option(
        "--seed", min=0, max=MAX_SEED, help="Seed of the dropout noise.")] = 0,
    splits: Annotated[int, typer.Option(
        "--splits", min=1, max=MAX_COUNT, help="IS groups.")] = SPLITS,
    workers: WorkersOption = THREADS,
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
) -> None:
    """Translate a test split with the published table's protocol; print FID and IS next to the
    published mmagic and official numbers."""
    from p2p import published

    if (recipe is None) == (task is None):
        raise P2PError("give --recipe PATH or --task NAME, exactly one")
    target = (published.target_for_task(task, data) if task is not None
              else published.target_for_recipe(recipe, data))
    with contextlib.ExitStack() as bars:
        result = published.run(
            target, checkpoint, metrics.settings(device, INCEPTION_BATCH, workers), weights,
            batch_size=batch_size, seed=seed, splits=splits,
            progress=console.lazy_bar(bars, "translating and scoring", "items"),
            data_progress=console.lazy_bar(bars, "loading data", "items"),
            download_progress=lambda what: console.lazy_bar(bars, f"downloading {what}", "bytes"))
    if as_json:
        print(json.dumps({"fid": result.fid, "n_real": result.n_real, "n_fake": result.n_fake,
                          "is": result.inception_score, "is_std": result.is_std,
                          "n": result.n_fake}), flush=True)
        return
    _print_comparison(result, target)


def _print_comparison(result: "published.RunResult", target: "published.Target") -> None:
    row = target.row
    title = (f"{row.task if row else target.data}: {result.split} split, {result.n_fake} images, "
             f"{target.direction}")
    table = Table(title=title)
    for column in ("", "FID", "IS"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("this run", f"{result.fid:.4f}",
                  f"{result.inception_score:.3f} ± {result.is_std:.3f}")
    if row is not None:
        table.add_row("mmagic (published)", f"{row.mmagic_fid:.4f}", f"{row.mmagic_is:.3f}")
        table.add_row("official (published)", f"{row.official_fid:.3f}", f"{row.official_is:.3f}")
    stdout.print(table)
    if row is not None and result.n_fake != row.images:
        console.info(f"note: the table's {row.task} {row.split} split has {row.images} images, "
                     f"this one {result.n_fake}; the numbers are not comparable")

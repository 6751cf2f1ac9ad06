"""``p2p eval``: FID and Inception Score with the published table's protocol."""

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from p2p.cli import console
from p2p.cli.translate import _lazy_bar as lazy_bar
from p2p.metrics import fid, inception_score
from p2p.metrics.features import THREADS, Settings
from p2p.translate import pick_device

app = typer.Typer(help="Evaluate translations: FID and Inception Score as in the published table.",
                  no_args_is_help=True)
stdout = Console(highlight=False)

WeightsOption = Annotated[Path | None, typer.Option(
    "--weights", help="The Inception weights file, or a folder holding it. Default: "
    "$P2P_HOME/weights/, downloaded there (sha256-verified) when missing.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
BatchOption = Annotated[int, typer.Option(
    "--batch-size", "-b", min=1, help="Images per Inception forward pass (results do not "
    "depend on it).")]
WorkersOption = Annotated[int, typer.Option(
    "--workers", min=1, help="Decoding threads.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]


def _settings(device: str, batch_size: int, workers: int) -> Settings:
    return Settings(pick_device(device), batch_size, workers)


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
    real: Annotated[Path, typer.Argument(help="Real images: a folder, or a statistics file "
                                         "(.npz). A folder's statistics are cached.")],
    fake: Annotated[Path, typer.Argument(help="Generated images: a folder or a .npz.")],
    weights: WeightsOption = None,
    batch_size: BatchOption = 50,
    workers: WorkersOption = THREADS,
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
) -> None:
    """Fréchet Inception Distance between two image sets (pytorch-fid's FID Inception)."""
    with contextlib.ExitStack() as bars:
        result = fid.compute_fid(
            real, fake, _settings(device, batch_size, workers), weights,
            progress=lazy_bar(bars, "Inception features", "items"),
            download_progress=lazy_bar(bars, "downloading FID Inception weights", "bytes"))
    _print({"fid": result.fid, "n_real": result.n_real, "n_fake": result.n_fake}, as_json, "FID")


@app.command("is")
def is_command(
    fake: Annotated[Path, typer.Argument(help="A folder of generated images.")],
    splits: Annotated[int, typer.Option("--splits", min=1, help="Groups the images are split "
                                        "into (N // splits images each).")] = 10,
    weights: WeightsOption = None,
    batch_size: BatchOption = 50,
    workers: WorkersOption = THREADS,
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
) -> None:
    """Inception Score of a set of images (torchvision's ImageNet Inception v3)."""
    with contextlib.ExitStack() as bars:
        result = inception_score.compute_is(
            fake, _settings(device, batch_size, workers), splits, weights,
            progress=lazy_bar(bars, "Inception classes", "items"),
            download_progress=lazy_bar(bars, "downloading IS Inception weights", "bytes"))
    _print({"is": result.inception_score, "is_std": result.std, "n": result.n}, as_json, "IS")


@app.command("stats")
def stats_command(
    folder: Annotated[Path, typer.Argument(help="A folder of (real) images.")],
    out: Annotated[Path, typer.Argument(help="The statistics file to write (.npz).")],
    weights: WeightsOption = None,
    batch_size: BatchOption = 50,
    workers: WorkersOption = THREADS,
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
) -> None:
    """Save a folder's FID statistics (mean and covariance of its features) for reuse."""
    with contextlib.ExitStack() as bars:
        stats = fid.compute_statistics(
            folder, out, _settings(device, batch_size, workers), weights,
            progress=lazy_bar(bars, "Inception features", "items"),
            download_progress=lazy_bar(bars, "downloading FID Inception weights", "bytes"))
    if as_json:
        print(json.dumps({"n": stats.n, "out": str(out)}), flush=True)
    else:
        console.info(f"statistics of {stats.n} images -> {out}")

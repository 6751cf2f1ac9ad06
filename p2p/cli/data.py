"""``p2p data``: list and fetch the known datasets; pair, unpair and split your own images."""

import json
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from p2p.cli import console
from p2p.errors import human_bytes
from p2p.limits import MAX_SIDE

# The core (p2p.data.*) is imported inside the commands, so `p2p --help` and completion skip torch.
if TYPE_CHECKING:
    from p2p.data import prepare

app = typer.Typer(rich_markup_mode=None,  # plain help, as the root's (app.py)
                  help="Datasets: list, fetch, and prepare your own (pair, unpair, split).",
                  no_args_is_help=True)

SHOWN = 10  # skipped names listed before "... and N more"

RootOption = Annotated[Path | None, typer.Option(
    "--root", help="Folder holding the datasets (default: $P2P_HOME/datasets).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


class Ext(str, Enum):
    png = "png"
    jpg = "jpg"


class Mode(str, Enum):
    copy = "copy"
    link = "link"
    move = "move"


def _stage_bars(bars: console.BarsInTurn, unit: str = "items"):
    """A ``progress(stage, done, total)`` callback: one bar per stage, in turn."""
    return lambda stage, done, total: bars.bar(stage, unit=unit)(done, total)


@app.command("list")
def list_datasets(root: RootOption = None, as_json: JsonOption = False) -> None:
    """Show the known datasets: halves, splits and image counts, download size, local status."""
    from p2p.data import catalog

    rows = []
    for dataset in catalog.DATASETS.values():
        folder = catalog.dataset_dir(dataset.name, root)
        rows.append({"name": dataset.name, "a": dataset.a, "b": dataset.b,
                     "splits": dataset.splits, "download_bytes": dataset.approx_bytes,
                     "status": catalog.status(dataset, folder), "path": str(folder),
                     "note": dataset.note})
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    table = [("NAME", "A | B", "SPLITS", "DOWNLOAD", "LOCAL")]
    for row in rows:
        splits = " ".join(f"{split} {n}" for split, n in row["splits"].items())
        size = row["download_bytes"]  # the server's listing, rounded: hence "~"
        download = "-" if size is None else f"~{human_bytes(size)}"
        table.append((row["name"], f"{row['a']} | {row['b']}", splits, download, row["status"]))
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    for cells in table:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        print("  ".join(padded).rstrip())
    for row in rows:
        if row["note"]:
            console.info(f"{row['name']}: {row['note']}")


@app.command()
def fetch(
    name: Annotated[str, typer.Argument(help="A dataset from `p2p data list`.")],
    root: RootOption = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="Download the archive from this URL instead (another mirror).")] = None,
    from_archive: Annotated[Path | None, typer.Option(
        "--from", metavar="ARCHIVE", help="Use this local .tar.gz/.zip instead of downloading; "
        "its contents are checked the same way.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Fetch again even if the dataset is already complete.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Download, check and unpack a dataset into $P2P_HOME/datasets/NAME; print its folder.

    $P2P_DATA_MIRROR sets another base URL for all archives. An interrupted download resumes
    on the next run.
    """
    from p2p.data.fetch import fetch as fetch_dataset

    with console.BarsInTurn() as bars:
        result = fetch_dataset(name, root=root, url=url, archive=from_archive, force=force,
                               progress=_stage_bars(bars, "bytes"))
    counts = ", ".join(f"{n} {split}" for split, n in result.splits.items())
    if result.already_present:
        console.info(f"{name} is already complete ({counts} images); --force fetches it again")
    else:
        console.info(f"{name}: {counts} images from {result.source}")
    if as_json:
        print(json.dumps({**asdict(result), "path": str(result.path)}, indent=1))
    else:
        print(result.path)


def _finish(verb: str, report: "prepare.Report", as_json: bool) -> None:
    """Print what was written and skipped; exit 1 if anything was skipped."""
    if as_json:
        print(json.dumps({"written": report.written,
                          "skipped": [asdict(s) for s in report.skipped]}, indent=1))
    console.info_lines([f"skipped {s.name}: {s.reason}" for s in report.skipped], SHOWN,
                       "skipped ")
    where = ", ".join(f"{n} -> {folder}" for folder, n in report.written.items())
    console.info(f"{verb} {report.total} file(s): {where}; {len(report.skipped)} skipped")
    if report.skipped:
        raise typer.Exit(1)


@app.command()
def pair(
    a_dir: Annotated[Path, typer.Argument(metavar="A_DIR", help="Folder of A images.")],
    b_dir: Annotated[Path, typer.Argument(metavar="B_DIR", help="Folder of B images, "
                                          "same names (any extension).")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="Where the A|B images go.")],
    height: Annotated[int | None, typer.Option(
        "--height", min=1, max=MAX_SIDE,
        help="Resize both halves to this height (keeping aspect).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Fail if any name has no partner, instead of skipping it.")] = False,
    ext: Annotated[Ext, typer.Option(
        "--ext", help="Output format. PNG keeps label maps exact; JPEG adds colours that are "
        "not labels.")] = Ext.png,
    as_json: JsonOption = False,
) -> None:
    """Join A_DIR/x and B_DIR/x side by side into OUT_DIR/x, the A|B layout training reads."""
    from p2p.data import prepare

    with console.BarsInTurn() as bars:
        progress = _stage_bars(bars)
        report = prepare.pair(a_dir, b_dir, out_dir, height=height, strict=strict,
                              ext=ext.value,
                              progress=lambda d, t: progress("pairing", d, t))
    # The first-hour mistake: training translates A to B unless the recipe says otherwise.
    console.info(f"A (left) is {a_dir}, B (right) is {b_dir}: a recipe translates A to B; "
                 f"data.direction: BtoA translates {b_dir} to {a_dir}")
    _finish("paired", report, as_json)


@app.command()
def unpair(
    ab_dir: Annotated[Path, typer.Argument(metavar="AB_DIR", help="Folder of A|B images.")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="Gets A/ and B/ folders.")],
    ext: Annotated[Ext | None, typer.Option(
        "--ext", help="Output format (default: that of the input file).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Cut A|B images in half into OUT_DIR/A/x and OUT_DIR/B/x (the reverse of pair)."""
    from p2p.data import prepare

    with console.BarsInTurn() as bars:
        progress = _stage_bars(bars)
        report = prepare.unpair(ab_dir, out_dir, ext=ext.value if ext else None,
                                progress=lambda d, t: progress("unpairing", d, t))
    _finish("wrote", report, as_json)


@app.command()
def split(
    pairs_dir: Annotated[Path, typer.Argument(metavar="PAIRS_DIR", help="Folder of images.")],
    out_dir: Annotated[Path, typer.Argument(
        metavar="OUT_DIR", help="Gets train/ val/ test/ (may be PAIRS_DIR itself).")],
    val: Annotated[float, typer.Option("--val", min=0, max=1,
                                       help="Fraction for val/.")] = 0.1,
    test: Annotated[float, typer.Option("--test", min=0, max=1,
                                        help="Fraction for test/.")] = 0.1,
    seed: Annotated[int, typer.Option(
        "--seed", help="Same files and seed, same split.")] = 0,
    mode: Annotated[Mode, typer.Option(
        "--mode", help="copy the files, hard-link them (same file system), or move them.")
    ] = Mode.copy,
    as_json: JsonOption = False,
) -> None:
    """Split a folder of images into train/ val/ test/ by fraction, reproducibly."""
    from p2p.data import prepare

    with console.BarsInTurn() as bars:
        progress = _stage_bars(bars)
        report = prepare.split(pairs_dir, out_dir, val=val, test=test, seed=seed,
                               mode=mode.value, progress=progress)
    _finish({"copy": "copied", "link": "linked", "move": "moved"}[mode.value], report, as_json)

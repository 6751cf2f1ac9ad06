"""``p2p report``: one self-contained HTML page of a training run."""

from pathlib import Path

import typer

from p2p.cli import console
from p2p.errors import install_extra
from p2p.limits import MAX_COUNT


def report(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run directory written by "
                                   "p2p train (still running, finished or interrupted)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="The HTML file to write "
                                    "(default: RUN_DIR/report.html)."),
    max_samples: int | None = typer.Option(None, "--max-samples", min=1, max=MAX_COUNT,
                                           show_default=False,
                                           help="Sample grids shown over time, evenly spaced "
                                           "(default: 12)."),
) -> None:
    """Write an HTML report of a run (loss curves, samples, recipe, metrics, throughput);
    prints its path on stdout."""
    from p2p.training import report as core  # here, so `p2p --help` skips torch

    thinning = {} if max_samples is None else {"max_samples": max_samples}
    result = core.write_report(run_dir, out, **thinning)
    if not result.curves and result.iteration:
        console.info('loss curves left out: matplotlib is not installed '
                     f'({install_extra("report")}); the page has the table of values')
    for line in result.unreadable:
        console.info(f"left out: {line}")
    console.info(f"{result.iteration:,} of {result.total:,} iterations logged; "
                 f"{result.samples_shown} of {result.samples_found} sample grids shown")
    print(result.path)

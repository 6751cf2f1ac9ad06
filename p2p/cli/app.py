"""The root ``p2p`` app and the one place that turns a P2PError into ``error: ...`` + exit 2."""

import sys

import typer

from p2p import __version__
from p2p.cli import console
from p2p.errors import P2PError

app = typer.Typer(
    name="p2p",
    help="pix2pix for paired image-to-image translation: data, train, translate, eval, zoo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"p2p {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """pix2pix for paired image-to-image translation."""


# Command groups register here, one line each.
from p2p.cli import train as _train  # noqa: E402

app.command("train")(_train.train)
from p2p.cli import translate as _translate  # noqa: E402

app.command("translate")(_translate.translate)
from p2p.cli import eval as _eval  # noqa: E402

app.add_typer(_eval.app, name="eval")
from p2p.cli import zoo as _zoo  # noqa: E402

app.add_typer(_zoo.app, name="zoo")
from p2p.cli import data as _data  # noqa: E402

app.add_typer(_data.app, name="data")
from p2p.cli import report as _report  # noqa: E402

app.command("report")(_report.report)
from p2p.cli import serve as _serve  # noqa: E402

app.command("serve")(_serve.serve)


def main(argv: list[str] | None = None) -> None:
    """The console script. Exit codes: 0 ok, 1 finished with skipped items, 2 user error."""
    try:
        app(args=argv, prog_name="p2p")
    except P2PError as exc:
        console.error(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        console.error("interrupted")
        sys.exit(130)

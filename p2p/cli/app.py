"""The root ``p2p`` app and the one place that turns a P2PError into ``error: ...`` + exit 2."""

import sys

import typer

from p2p.cli import console
from p2p.errors import P2PError
from p2p.paths import StdoutClosed, stdout_write_errors
from p2p.version import __version__

# Plain help (click's): rich markup would read "[hf]" in a help text as a style and drop it.
app = typer.Typer(
    rich_markup_mode=None,
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


def click_command():
    """The click command tree of ``app``, as ``p2p`` runs it and its help shows it: arguments
    are named in capitals (``REAL``, as ``A_DIR``), flags without a type."""
    command = typer.main.get_command(app)
    for sub in _commands(command):
        for param in sub.params:
            if param.param_type_name == "argument" and param.metavar is None:
                param.metavar = param.name.upper()
            elif getattr(param, "is_flag", False):
                param.metavar = ""
    return command


def _commands(command) -> list:
    subs = getattr(command, "commands", {}).values()
    return [command, *[c for sub in subs for c in _commands(sub)]]


# The usage error of the click that Typer runs on (its own copy in recent Typer, the click
# package in older ones): Typer exports BadParameter, a direct subclass of it.
UsageError = typer.BadParameter.__base__


def main(argv: list[str] | None = None) -> None:
    """The console script. Exit codes: 0 ok, 1 finished with skipped items, 2 user error,
    130 interrupted, 141 stdout's reader stopped early (`| head`)."""
    try:
        # Not standalone: usage errors come here instead of Typer's boxed panel; typer.Exit
        # (--help, --version, a command's own code, Ctrl-C inside Typer: 130) is returned.
        # Results that stdout cannot take (a full device) are an error too.
        with stdout_write_errors():
            code = click_command().main(args=argv, prog_name="p2p", standalone_mode=False)
    except P2PError as exc:
        console.error(str(exc))
        sys.exit(2)
    except UsageError as exc:
        if type(exc).__name__ != "NoArgsIsHelpError":
            console.error(usage_error_line(exc))
        elif exc.format_message().strip():  # a group without a command: its help, which
            exc.show()  # recent Typer has printed already (older: it is the message)
        sys.exit(2)
    except StdoutClosed:  # the reader of stdout stopped early: quiet, as a shell's tools
        sys.exit(141)  # 128 + SIGPIPE
    except (KeyboardInterrupt, typer.Abort):  # older click turns Ctrl-C into Abort
        console.error("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def usage_error_line(exc: Exception) -> str:
    """Click's message as one line in our style, with where to find the usage."""
    possibilities = getattr(exc, "possibilities", None)  # an unknown option's close names
    message = exc.message if possibilities else exc.format_message()
    # Recent Typer words a bad choice as pydantic does: "...: Value error, 'x' is not one of".
    message = " ".join(message.split()).rstrip(".").replace(": Value error, ", ": ")
    if message[:2].istitle():  # "No such option" -> "no such option", but "CUDA" stays
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    see = f"see '{ctx.command_path if ctx is not None else 'p2p'} --help'"
    if possibilities:
        return f"{message} (did you mean {' or '.join(sorted(possibilities))}? {see})"
    return f"{message} ({see})"

"""The exception for failures a user can cause and fix, and the one for a stop before training;
``shown`` quotes a value in such a message, ``human_bytes`` gives a byte count, ``install_extra``
the command that adds an optional feature."""

import reprlib
from typing import Any


class P2PError(Exception):
    """A user-caused failure: one line that names the thing, and optionally the fix.

    The CLI prints it as ``error: <message> (<hint>)`` and exits with code 2; the core never
    prints or exits itself.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        line = self.message if not self.hint else f"{self.message} ({self.hint})"
        # One line, always: messages may embed paths or server replies with newlines.
        return " ".join(line.split())


class ImageTooLarge(P2PError):
    """An image declaring more pixels than p2p decodes (a server answers it with 413)."""


class StoppedBeforeStart(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived before the training loop began: nothing was trained or saved.

    ``str()`` is the signal's name. The CLI says so and exits with 130.
    """


# The name on the package index: ``p2p`` there is an unrelated project. The command and the
# import stay ``p2p``.
DISTRIBUTION = "p2p-pix2pix"


def install_extra(extra: str) -> str:
    """The pip command that installs the optional feature ``extra`` (a pyproject extra)."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'


SHOWN_CHARS = 60  # of a value quoted in a message: messages stay one short line
_reprs = reprlib.Repr()
_reprs.maxlevel, _reprs.maxstring, _reprs.maxother = 2, SHOWN_CHARS, SHOWN_CHARS


def shown(value: Any) -> str:
    """``repr(value)`` for a message, cut to about SHOWN_CHARS characters (reprlib stops early,
    so a huge value costs little)."""
    try:
        text = _reprs.repr(value)
    except ValueError:  # an int too long for str() (Python's 4300-digit limit)
        text = f"<a {value.bit_length()}-bit number>" if isinstance(value, int) else "<value>"
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


def human_bytes(n: int) -> str:
    """A byte count for people, in binary units (memory, p2p's limits and the dataset server's
    listing count in powers of two), with a decimal below 10 as ``du -h``: 1.2 TiB, 3.4 GiB,
    56 MiB, 7 KiB."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n / 1024:.0f} KiB"

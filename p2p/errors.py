"""The exception for failures a user can cause and fix, and the one for a stop before training."""


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

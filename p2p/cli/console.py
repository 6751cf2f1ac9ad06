"""stderr for people (messages, progress), stdout for results."""

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

stderr = Console(stderr=True, highlight=False)


def error(message: str) -> None:
    # Plain write, not rich: the line must stay one line and keep brackets in paths intact.
    print(f"error: {message}", file=sys.stderr, flush=True)


def info(message: str) -> None:
    stderr.print(message, markup=False, soft_wrap=True)


def info_lines(lines: list[str], shown: int, overflow_prefix: str = "") -> None:
    """The first ``shown`` of ``lines``, then one "... and N more" line for the rest."""
    for line in lines[:shown]:
        info(line)
    if len(lines) > shown:
        info(f"{overflow_prefix}... and {len(lines) - shown} more")


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None,
                 unit: str = "items") -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``update(completed, total=None, description=None)``.

    ``unit="bytes"`` shows sizes and transfer speed. When stderr is not a terminal the bar is
    not animated (rich prints it once when it finishes), so logs stay readable.
    """
    if unit == "bytes":
        columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn()]
    else:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn()]
    with Progress(*columns, console=stderr, transient=False) as progress:
        task = progress.add_task(description, total=total)

        def update(completed: int, total: int | None = None,
                   description: str | None = None) -> None:
            if total is not None:
                progress.update(task, total=total)
            if description is not None:
                progress.update(task, description=description)
            progress.update(task, completed=completed)

        yield update


def lazy_bar(stack: contextlib.ExitStack, description: str,
             unit: str = "items") -> Callable[[int, int | None], None]:
    """A progress callback that opens its bar in ``stack`` on first use, so nothing is shown
    when nothing happens (e.g. no download because the file is already here)."""
    update = None

    def progress(done: int, total: int | None) -> None:
        nonlocal update
        if update is None:
            update = stack.enter_context(progress_bar(description, total, unit=unit))
        update(done, total)

    return progress


class BarsInTurn(contextlib.ExitStack):
    """Progress bars shown one after another (rich shows one live display at a time): the first
    update of another bar closes the one before. ``bar(key, ...)`` gives a callback
    ``update(completed, total=None, description=None)`` that opens its bar on first use."""

    def __init__(self):
        super().__init__()
        self._shown: str | None = None
        self._update: Callable[..., None] | None = None

    def bar(self, key: str, total: int | None = None, unit: str = "items") -> Callable[..., None]:
        first_total = total

        def update(completed: int, total: int | None = None,
                   description: str | None = None) -> None:
            if self._shown != key:
                self.close()
                self._update = self.enter_context(progress_bar(
                    description or key, total or first_total, unit=unit))
                self._shown = key
            self._update(completed, total, description)

        return update

    def close(self) -> None:
        super().close()
        self._shown = self._update = None

"""A logger that talks to a server (MLflow, W&B) on a thread of its own.

The training loop only puts the logger's events in a queue, so an upload that is slow, retries
or hangs never slows a step. A failure (a server down, a quota) warns once, and the run goes
on; ``close`` waits a bounded time for what is still queued.
"""

import logging
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from p2p.paths import link_atomic
from p2p.training.tracking import Logger, Start

MAX_QUEUED = 1000  # events; a tracker this far behind has newer ones dropped, with the warning
CLOSE_WAIT_S = 60.0  # at the end of a run, how long close waits for the queued events

log = logging.getLogger(__name__)


class Background(Logger):
    """``logger``'s events, called in order on a thread of its own. Checkpoint files are pinned
    first (hard links in ``pending``), so that what is uploaded is the checkpoint of that moment
    even when the run replaces or deletes the file before the upload."""

    def __init__(self, logger: Logger, pending: Path):
        self.logger = logger
        self.name = logger.name
        self.wants_report = logger.wants_report
        self.pending = pending
        self.queue: queue.Queue = queue.Queue(MAX_QUEUED)
        self.warned = False
        self.abandoned = threading.Event()  # close stopped waiting: the thread stops too
        self.thread = threading.Thread(target=self._work, name=f"p2p {self.name} logger",
                                       daemon=True)
        self.thread.start()

    def start(self, run: Start) -> None:
        shutil.rmtree(self.pending, ignore_errors=True)  # pinned by a session that was killed
        self._put(self.logger.start, run)

    def log(self, record: dict) -> None:
        self._put(self.logger.log, dict(record))

    def sample(self, iteration: int, grid: torch.Tensor) -> None:
        self._put(self.logger.sample, iteration, grid)

    def best(self, best: dict) -> None:
        self._put(self.logger.best, best)

    def checkpoint(self, path: Path, name: str) -> None:
        try:
            self.pending.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(dir=self.pending))
            link_atomic(path, folder / name)
        except OSError as exc:
            self._warn(f"cannot keep {path} for upload ({exc})")
            return
        if not self._put(self._checkpoint, folder / name):
            shutil.rmtree(folder, ignore_errors=True)

    def _checkpoint(self, pinned: Path) -> None:
        try:
            self.logger.checkpoint(pinned, pinned.name)
        finally:
            shutil.rmtree(pinned.parent, ignore_errors=True)

    def end(self, status: str, report: Path | None) -> None:
        self._put(self.logger.end, status, report)

    def close(self) -> None:
        """Wait up to CLOSE_WAIT_S for the queued events to be sent, then let the thread go."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        try:
            self.queue.put((self.logger.close, ()), timeout=CLOSE_WAIT_S)
            self.queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():
            self.abandoned.set()
            self._warn(f"{self.name} did not send everything within {CLOSE_WAIT_S:g} s of the "
                       "run's end; the rest is not sent")

    def _put(self, call, *args) -> bool:
        try:
            self.queue.put_nowait((call, args))
            return True
        except queue.Full:
            self._warn(f"{self.name} is {MAX_QUEUED} events behind; newer ones are dropped")
            return False

    def _work(self) -> None:
        while (item := self.queue.get()) is not None and not self.abandoned.is_set():
            call, args = item
            try:
                call(*args)
            except Exception as exc:  # whatever the tracker's client raises: the run goes on
                reason = (str(exc).strip().splitlines() or [""])[0][:200]
                self._warn(f"{self.name} logging failed ({type(exc).__name__}: {reason})")

    def _warn(self, problem: str) -> None:
        if not self.warned:
            self.warned = True
            log.warning("%s; training goes on, and later %s problems are not reported",
                        problem, self.name)

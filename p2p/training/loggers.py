"""Where a training run logs besides ``log.jsonl``: the loop calls one ``Loggers`` once per
event (tracking.py: start, a log record, a sample grid, a new best, a checkpoint, the end), and
it passes the event to each logger the recipe turns on (``train.loggers``). Loggers run on the
main process only.

TensorBoard: the same scalars and the sample grids, as event files in ``RUN_DIR/tensorboard/``
(``tensorboard --logdir runs`` finds every run). MLflow (mlflow_logger.py) and Weights & Biases
(wandb_logger.py) also get the recipe, tags, best.pt's metrics, report.html at the end and, with
``train.log_checkpoints``, the checkpoints; they run on threads of their own (background.py).

Event files are an append-only stream that TensorBoard reads while they grow, like ``log.jsonl``,
so they are not written atomically; each record is flushed as it is logged.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from p2p.images.eight_bit import to_uint8
from p2p.recipe import Recipe
from p2p.training import mlflow_logger, report, tracking, wandb_logger
from p2p.training.background import Background
from p2p.training.tracking import FAILED, KILLED, SAMPLE_TAG, Logger, import_extra
from p2p.weights import checkpoint as ckpt

FOLDER = "tensorboard"
PENDING = "pending"  # in a tracker's folder: checkpoints held until they are uploaded

log = logging.getLogger(__name__)


@dataclass
class TensorBoardLog(Logger):
    """Receives ``p2p.training.loop.train``'s ``on_log`` records and ``on_sample`` grids."""

    folder: Path
    summary_writer: type
    writer: Any = None  # opened at the first event, which tells where the run (re)starts

    name = "TensorBoard"

    def _writer(self, iteration: int) -> Any:
        if self.writer is None:
            # purge_step hides the events a crashed earlier session wrote past the checkpoint
            # this session resumed from, so its curves do not double back.
            self.writer = self.summary_writer(str(self.folder), purge_step=iteration)
        return self.writer

    def log(self, record: dict) -> None:
        if "iteration" not in record:  # an event (e.g. the fine-tuning source), not scalars
            return
        writer = self._writer(record["iteration"])
        for tag, value in tracking.scalars(record).items():
            writer.add_scalar(tag, value, record["iteration"])
        writer.flush()

    def sample(self, iteration: int, grid: torch.Tensor) -> None:
        writer = self._writer(iteration)
        writer.add_image(SAMPLE_TAG, to_uint8(grid), iteration, dataformats="CHW")
        writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def open_tensorboard(run_dir: Path) -> TensorBoardLog:
    """A logger for ``run_dir``; fails now, before training starts, when tensorboard is missing."""
    return TensorBoardLog(Path(run_dir) / FOLDER, _summary_writer())


def _summary_writer() -> type:
    return import_extra("torch.utils.tensorboard", "TensorBoard", "tensorboard").SummaryWriter


@dataclass
class Loggers:
    """The loggers of a run, called once per event; each passes it to every logger. As a
    context manager it ends the run FAILED on an error, KILLED on KeyboardInterrupt (the loop
    ends it itself otherwise: ``end``), then closes the loggers."""

    each: list[Logger] = field(default_factory=list)
    recipe: Recipe | None = None
    run_dir: Path | None = None
    started: bool = False
    ended: bool = False

    def start(self, iteration: int, resumed: bool, init_from: dict | None) -> None:
        """The run directory is ready (a new run's recipe.yaml written, or a checkpoint
        restored); ``init_from``: what the run records about model.init_from's weights."""
        if not self.each:
            return
        run = tracking.Start(self.recipe, self.run_dir, iteration, resumed,
                             tracking.flat_params(self.recipe), tracking.run_tags(init_from))
        self.started = True
        for logger in self.each:
            logger.start(run)

    def log(self, record: dict) -> None:
        for logger in self.each:
            logger.log(record)

    def sample(self, iteration: int, grid: torch.Tensor) -> None:
        for logger in self.each:
            logger.sample(iteration, grid)

    def best(self, best: dict) -> None:
        """checkpoints/best.pt was written; ``best``: what it records."""
        for logger in self.each:
            logger.best(best)
        self._checkpoint(ckpt.BEST, ckpt.BEST)

    def checkpoint(self, iteration: int) -> None:
        """checkpoints/latest.pt was written at ``iteration``."""
        self._checkpoint(ckpt.LATEST, ckpt.history_path(Path(), iteration).name)

    def _checkpoint(self, file: str, name: str) -> None:
        """With train.log_checkpoints, the loggers keep checkpoints/``file`` as ``name``."""
        if self.each and self.recipe.train.log_checkpoints:
            for logger in self.each:
                logger.checkpoint(self.run_dir / "checkpoints" / file, name)

    def end(self, status: str) -> None:
        """The run ended: tracking.FINISHED, KILLED or FAILED. Only once, and only a run that
        started."""
        if not self.started or self.ended:
            return
        self.ended = True
        page = self._report() if any(logger.wants_report for logger in self.each) else None
        for logger in self.each:
            logger.end(status, page)

    def _report(self) -> Path | None:
        try:
            return report.write_report(self.run_dir).path
        except Exception as exc:  # the report is for the trackers: it never fails a run
            log.warning("report.html not written (%s: %s); the trackers get the rest",
                        type(exc).__name__, exc)
            return None

    def close(self) -> None:
        for logger in self.each:
            logger.close()

    def __enter__(self) -> "Loggers":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is not None:
                self.end(KILLED if issubclass(kind, KeyboardInterrupt) else FAILED)
        finally:
            self.close()


# train.loggers entry -> a function that fails, before training, when its package is missing
REQUIRED = {"tensorboard": _summary_writer,
            "mlflow": mlflow_logger.client_class,
            "wandb": wandb_logger.module}


def check(recipe: Recipe) -> None:
    """Refuse, before any data is decoded, a logger whose package is missing."""
    for name in recipe.train.logger_names():
        REQUIRED[name]()


def open_loggers(recipe: Recipe, run_dir: Path) -> Loggers:
    """The loggers ``recipe`` turns on (``train.loggers``, and train.tensorboard), for
    ``run_dir``; MLflow and W&B on threads of their own."""
    run_dir = Path(run_dir)
    each = []
    for name in recipe.train.logger_names():
        if name == "tensorboard":
            each.append(open_tensorboard(run_dir))
        elif name == "mlflow":
            folder = run_dir / mlflow_logger.FOLDER
            each.append(Background(mlflow_logger.MLflowLog(folder, mlflow_logger.client_class()),
                                   folder / PENDING))
        else:
            folder = run_dir / wandb_logger.FOLDER
            each.append(Background(wandb_logger.WandbLog(folder, wandb_logger.module()),
                                   folder / PENDING))
    return Loggers(each, recipe, run_dir)

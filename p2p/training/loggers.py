"""Where a training run logs besides ``log.jsonl``: the loop calls one ``Loggers`` once per
event (a log record, a sample grid, the end), and it passes the event to each logger the recipe
turns on. Loggers run on the main process only.

TensorBoard: the same scalars and the sample grids, as event files in ``RUN_DIR/tensorboard/``
(``tensorboard --logdir runs`` finds every run).

Event files are an append-only stream that TensorBoard reads while they grow, like ``log.jsonl``,
so they are not written atomically; each record is flushed as it is logged.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from p2p.errors import P2PError
from p2p.images.eight_bit import to_uint8
from p2p.recipe import Recipe

# log.jsonl key -> TensorBoard tag; losses share a section so they are plotted together.
SCALAR_TAGS = {
    "g_gan": "loss/G_GAN",
    "g_l1": "loss/G_L1",
    "d_real": "loss/D_real",
    "d_fake": "loss/D_fake",
    "lr": "train/lr",
    "it_per_s": "train/it_per_s",
    # validation (train.val_every): the generator on held-out pairs
    "val_l1": "val/L1",
    "val_psnr": "val/PSNR",
    "val_ssim": "val/SSIM",
    "val_fid": "val/FID",
}
SAMPLE_TAG = "samples"  # rows of input | output | target
FOLDER = "tensorboard"


@dataclass
class TensorBoardLog:
    """Receives ``p2p.training.loop.train``'s ``on_log`` records and ``on_sample`` grids."""

    folder: Path
    summary_writer: type
    writer: Any = None  # opened at the first event, which tells where the run (re)starts

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
        for key, tag in SCALAR_TAGS.items():
            if record.get(key) is not None:
                writer.add_scalar(tag, record[key], record["iteration"])
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
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise P2PError("TensorBoard logging needs the tensorboard package",
                       'pip install "p2p[tensorboard]"') from None
    return SummaryWriter


@dataclass
class Loggers:
    """The loggers of a run, called once per event; each passes it to every logger."""

    each: list = field(default_factory=list)

    def log(self, record: dict) -> None:
        for logger in self.each:
            logger.log(record)

    def sample(self, iteration: int, grid: torch.Tensor) -> None:
        for logger in self.each:
            logger.sample(iteration, grid)

    def close(self) -> None:
        for logger in self.each:
            logger.close()


def check(recipe: Recipe) -> None:
    """Refuse, before any data is decoded, a logger whose package is missing."""
    if recipe.train.tensorboard:
        _summary_writer()


def open_loggers(recipe: Recipe, run_dir: Path) -> Loggers:
    """The loggers ``recipe`` turns on, for ``run_dir``."""
    return Loggers([open_tensorboard(run_dir)] if recipe.train.tensorboard else [])

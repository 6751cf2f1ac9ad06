"""Weights & Biases (``train.loggers: [wandb]``): what MLflow gets (mlflow_logger.py), as a W&B
run.

The project is ``WANDB_PROJECT``, else ``train.experiment``, else the recipe's name; the rest
of W&B's settings come from its own variables (``WANDB_MODE=offline``, ``WANDB_ENTITY``,
``WANDB_API_KEY``). The recipe is the run's config (with the p2p tags), the losses and
validation metrics its history with the iteration as the step, best.pt's metrics its summary,
sample grids images, and checkpoints (train.log_checkpoints) versions of one model artifact.
W&B's files go to ``RUN_DIR/wandb/``, and ``RUN_DIR/wandb/run.json`` records the run id, so
that a resumed run continues the same W&B run.

It runs on a thread of its own (background.py); the training loop never waits for it.
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from p2p.images.eight_bit import to_uint8
from p2p.paths import write_bytes_atomic
from p2p.training.tracking import (
    FAILED,
    FINISHED,
    KILLED,
    SAMPLE_TAG,
    Logger,
    Start,
    finite_best,
    import_extra,
    scalars,
)

FOLDER = "wandb"  # in the run directory; W&B's own files are there too
RUN_FILE = "run.json"  # {"run_id": ...}
EXIT_CODES = {FINISHED: 0, KILLED: 130, FAILED: 1}  # W&B tells how a run ended by its code


def module() -> ModuleType:
    """The wandb package; fails before training starts when the extra is missing."""
    return import_extra("wandb", "Weights & Biases", "wandb")


@dataclass
class WandbLog(Logger):
    folder: Path  # RUN_DIR/wandb
    wandb: ModuleType
    run: Any = None

    name = "W&B"
    wants_report = True

    def start(self, run: Start) -> None:
        saved = _read(self.folder / RUN_FILE) if run.resumed else None
        recipe = run.recipe
        self.folder.mkdir(parents=True, exist_ok=True)
        # Quiet: the core never prints (W&B would print its banner and take over the console,
        # and suggest its LLM tracer whenever huggingface_hub is imported, as p2p's hf: does).
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT") or recipe.train.experiment or recipe.name,
            id=saved, resume="allow", name=run.run_dir.name,
            dir=str(run.run_dir), settings=self.wandb.Settings(console="off", silent=True))
        # A resumed run may have changed train.iters or the loggers.
        self.run.config.update({**run.params, **run.tags}, allow_val_change=True)
        write_bytes_atomic(self.folder / RUN_FILE, json.dumps({"run_id": self.run.id}).encode())

    def log(self, record: dict) -> None:
        values = scalars(record)
        if "iteration" in record and values:  # not an event (the fine-tuning source)
            self.run.log(values, step=record["iteration"])

    def sample(self, iteration: int, grid: torch.Tensor) -> None:
        image = self.wandb.Image(to_uint8(grid).permute(1, 2, 0).numpy(),
                                 caption=f"input | output | target, iteration {iteration}")
        self.run.log({SAMPLE_TAG: image}, step=iteration)

    def best(self, best: dict) -> None:
        best = finite_best(best)
        self.run.summary.update({"best/iteration": best["iteration"],
                                 "best/metric": best["metric"],
                                 **{f"best/{key}": v for key, v in best["metrics"].items()}})

    def checkpoint(self, path: Path, name: str) -> None:
        # One artifact per run, a version per checkpoint, named by its alias (iter_N, best).
        artifact = self.wandb.Artifact(f"checkpoints-{self.run.id}", type="model")
        artifact.add_file(str(path), name=name)  # copied now: the file may go once this returns
        self.run.log_artifact(artifact, aliases=[Path(name).stem])

    def end(self, status: str, report: Path | None) -> None:
        if report is not None:  # a copy in W&B's folder of the run: saved without a warning
            copy = Path(self.run.dir) / report.name
            shutil.copyfile(report, copy)
            self.run.save(str(copy), base_path=self.run.dir, policy="now")
        self.run.summary["status"] = status
        self.run.finish(exit_code=EXIT_CODES[status])


def _read(path: Path) -> str | None:
    """The run id that ``path`` records, or None."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    run_id = saved.get("run_id") if isinstance(saved, dict) else None
    return run_id if isinstance(run_id, str) else None

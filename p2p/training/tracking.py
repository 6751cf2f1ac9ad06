"""What every logger of a run receives (loggers.py): the events, in the order the training loop
sends them, and the terms the loggers share: the scalars of a ``log.jsonl`` record under their
tags, the recipe as flat params, the tags that name the code and the weights a run started
from, and how a run ended.
"""

import importlib
import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from p2p.errors import P2PError, install_extra
from p2p.recipe import Recipe
from p2p.version import __version__

# log.jsonl key -> tag; losses share a section so they are plotted together.
SCALAR_TAGS = {
    "g_gan": "loss/G_GAN",
    "g_l1": "loss/G_L1",
    "g_feat": "loss/G_feat",  # train.lambda_feat, when on
    "g_vgg": "loss/G_VGG",  # train.lambda_vgg, when on
    "d_real": "loss/D_real",
    "d_fake": "loss/D_fake",
    "lr": "train/lr",
    "it_per_s": "train/it_per_s",
    # validation (train.val_every): the generator on held-out pairs
    "val_l1": "val/L1",
    "val_psnr": "val/PSNR",
    "val_ssim": "val/SSIM",
    "val_fid": "val/FID",
    "val_lpips": "val/LPIPS",
}
SAMPLE_TAG = "samples"  # rows of input | output | target

# How a run ended, in MLflow's words: trained to the end, stopped by a signal, or an error.
FINISHED, KILLED, FAILED = "FINISHED", "KILLED", "FAILED"


@dataclass(frozen=True)
class Start:
    """A run starting, or a resumed run continuing (``resumed``) from ``iteration``."""

    recipe: Recipe
    run_dir: Path
    iteration: int
    resumed: bool
    params: dict[str, Any]  # the recipe, flattened: {"data.path": ..., "model.ngf": ...}
    tags: dict[str, str]  # p2p.version, p2p.git_commit, p2p.init_from(_sha256) when known


class Logger:
    """One place a run logs to. The loop's events: ``start``, then ``log``, ``sample``, ``best``
    and ``checkpoint`` as they happen, ``end``, and ``close`` last (also after a failure
    before ``start``). A logger takes the events it has a use for; the others do nothing."""

    name = "logger"  # for messages: "MLflow", "W&B"
    wants_report = False  # whether ``end`` should be handed RUN_DIR/report.html

    def start(self, run: Start) -> None:
        """The run starts, or a resumed run continues."""

    def log(self, record: dict) -> None:
        """A record of log.jsonl: training losses, or validation metrics (``scalars``)."""

    def sample(self, iteration: int, grid: torch.Tensor) -> None:
        """A sample grid: (3, H, W), floats in [-1, 1]."""

    def best(self, best: dict) -> None:
        """What checkpoints/best.pt now records: iteration, metric and metrics."""

    def checkpoint(self, path: Path, name: str) -> None:
        """A checkpoint to keep with the run as ``name`` (iter_N.pt or best.pt); only with
        train.log_checkpoints. ``path`` stays as it is until this returns."""

    def end(self, status: str, report: Path | None) -> None:
        """The run ended (FINISHED, KILLED or FAILED); ``report``: its HTML page, if asked for
        (``wants_report``) and written."""

    def close(self) -> None:
        """Release what the logger holds."""


def scalars(record: dict) -> dict[str, float]:
    """The tagged values of a log record; None (an undefined value, or it/s not measured yet)
    is left out."""
    return {tag: record[key] for key, tag in SCALAR_TAGS.items() if record.get(key) is not None}


def finite_best(best: dict) -> dict:
    """``best`` (iteration, metric, metrics) with a metric that is no number (FID of too few
    images) as None, which JSON and every tracker take."""
    metrics = {key: value if math.isfinite(value) else None
               for key, value in best["metrics"].items()}
    return {**best, "metrics": metrics}


def flat_params(recipe: Recipe) -> dict[str, Any]:
    """The recipe as one level of keys, ``name`` and ``section.key``, with its values."""
    params = {}
    for key, value in recipe.to_dict().items():
        if isinstance(value, dict):  # a section
            params.update({f"{key}.{field}": inner for field, inner in value.items()})
        else:
            params[key] = value
    return params


def as_text(value: Any) -> str:
    """A param for a tracker that keeps text only, spelled as in YAML (true, null, [36, 32])."""
    return value if isinstance(value, str) else json.dumps(value)


def run_tags(init_from: dict | None) -> dict[str, str]:
    """The p2p version, the git commit of the directory training runs in (the code and recipes
    that launched it) when it is a git checkout, and the weights ``model.init_from`` loaded."""
    tags = {"p2p.version": __version__}
    commit = git_commit()
    if commit:
        tags["p2p.git_commit"] = commit
    if init_from:
        tags["p2p.init_from"] = init_from["init_from"]
        if init_from.get("sha256"):
            tags["p2p.init_from_sha256"] = init_from["sha256"]
    return tags


def git_commit() -> str | None:
    """HEAD of the git checkout around the working directory, or None (no git, no checkout)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def import_extra(module: str, what: str, extra: str) -> Any:
    """``module``, a logger's optional package, imported when the recipe turns the logger on:
    before training starts, a missing one is one line naming the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise P2PError(f"{what} logging needs the {extra} package",
                       install_extra(extra)) from None

"""Inception Score, as mmagic's TransIS computes it with inception_style='PyTorch'.

An image is taken as uint8 RGB (generator outputs are truncated, not rounded, as when they are
saved), resized to 299x299 by Pillow's bicubic filter, scaled by (x - 127.5) / 127.5 and given
to torchvision's ImageNet Inception v3, whose 1000-class softmax is p(y|x). The N images are cut
into ``splits`` consecutive groups of N // splits (the rest is left out, as mmagic does: 106
images -> 10 groups of 10); per group, IS = exp(mean over its images of KL(p(y|x) || p(y))) with
p(y) the group's mean; the result is the mean and the standard deviation (ddof 0) over groups.

Several processes (torchrun): each computes the class probabilities of its share of the images
(features.py: the batches one process forms, so the same numbers bit for bit), and they are
gathered back in order, so the groups, and the scores, are one process's.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.special import rel_entr
from torch import nn

from p2p.distributed import gather, in_order
from p2p.errors import P2PError
from p2p.images.eight_bit import pil_to_tensor, tensor_to_pil
from p2p.images.files import list_images
from p2p.images.raster import read_8bit_image
from p2p.metrics.defaults import SPLITS
from p2p.metrics.features import (
    Progress,
    Settings,
    Tally,
    network_outputs,
    preprocessed_batches,
)
from p2p.metrics.inception import INPUT_SIZE, DownloadProgress, is_inception


@dataclass(frozen=True)
class IsResult:
    inception_score: float
    std: float
    n: int


def inception_score(probabilities: np.ndarray, splits: int = SPLITS) -> tuple[float, float]:
    """(mean, std) over ``splits`` groups of the score of class probabilities (N, classes)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    size = len(probabilities) // splits if splits > 0 else 0
    if size < 1:
        raise P2PError(f"the Inception Score with {splits} splits needs at least {max(splits, 1)} "
                       f"images, got {len(probabilities)}", "use fewer --splits")
    scores = []
    for k in range(splits):
        group = probabilities[k * size:(k + 1) * size]
        marginal = group.mean(axis=0)
        # Both distributions normalised to sum 1 first, as scipy.stats.entropy does in mmagic.
        p = group / group.sum(axis=1, keepdims=True)
        q = marginal / marginal.sum()
        scores.append(np.exp(rel_entr(p, q[None]).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def is_input(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, 299, 299): Pillow bicubic resize, then (x - 127.5) / 127.5."""
    resized = tensor_to_pil(image).resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC)
    return (pil_to_tensor(resized).float() - 127.5) / 127.5


def class_probabilities(network: nn.Module) -> nn.Module:
    """The IS Inception followed by its softmax (in float32, as the protocol)."""
    return nn.Sequential(network, nn.Softmax(dim=1))


def compute_is(folder: Path, settings: Settings = Settings(), splits: int = SPLITS,
               weights: str | os.PathLike | None = None, progress: Progress | None = None,
               download_progress: DownloadProgress | None = None) -> IsResult:
    """The Inception Score of the images in ``folder`` (sorted by relative path)."""
    files = list_images(folder)
    if len(files) < max(splits, 1):
        raise P2PError(f"{folder}: {len(files)} image(s); the Inception Score with {splits} "
                       f"splits needs at least {max(splits, 1)}", "use fewer --splits")
    read_8bit_image(files[0])  # refuse 16-bit or N-channel folders before the weights
    network = class_probabilities(is_inception(weights, download_progress)).to(settings.device)
    mine = settings.share(files)
    batches = preprocessed_batches(mine, _file_input, settings)
    probabilities = (network_outputs(network, batches, settings, Tally(len(mine), progress))
                     if mine else np.empty((0, 0)))  # more processes than batches
    if settings.world.size > 1:
        shares = gather(list(probabilities), settings.world)
        probabilities = np.stack(in_order(shares, settings.batch_size))
    score, std = inception_score(probabilities, splits)
    return IsResult(score, std, len(files))


def _file_input(path: Path) -> torch.Tensor:
    return is_input(read_8bit_image(path))

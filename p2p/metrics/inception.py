"""The two Inception v3 networks of the published protocol, and where their weights come from.

FID uses pytorch-fid's port of the TensorFlow FID Inception (2015-12-05): torchvision's Inception
v3 layout with 1008 classes and no auxiliary head, whose weights only reproduce TensorFlow's
features if three pool branches behave as TensorFlow's did: the average pools of the Mixed 5/6
blocks and of Mixed_7b leave the zero padding out of the average (``count_include_pad=False``),
and Mixed_7c pools with a max instead of an average. The feature is the 2048-d global average
of Mixed_7c's output, for an image scaled to [-1, 1] and bilinearly resized to 299x299.

IS uses torchvision's ImageNet Inception v3 as published (``transform_input=False``, 1000-class
softmax), fed images already resized to 299x299 and scaled to [-1, 1].

Weights are looked up in ``--weights PATH`` (the file, or a folder holding it), then in
``$P2P_HOME/weights/``, and downloaded there (sha256-verified) when missing.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception as tv

from p2p.download import download
from p2p.errors import P2PError
from p2p.paths import weights_dir
from p2p.weights.checkpoint import load_weights_only

INPUT_SIZE = 299
FEATURE_DIM = 2048

DownloadProgress = Callable[[int, int | None], None]  # (bytes done, total)


@dataclass(frozen=True)
class WeightsFile:
    what: str  # for messages
    filename: str
    url: str
    sha256: str  # the published prefix of the file's sha256


FID_WEIGHTS = WeightsFile(
    "FID Inception weights", "pt_inception-2015-12-05-6726825d.pth",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth", "6726825d")
IS_WEIGHTS = WeightsFile(
    "IS Inception weights (torchvision ImageNet)", "inception_v3_google-0cc3c7bd.pth",
    "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth", "0cc3c7bd")


# ---- the FID network -------------------------------------------------------------------------

def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 'SAME' average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _tf_max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def _mixed_5(block: tv.InceptionA, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([
        block.branch1x1(x),
        block.branch5x5_2(block.branch5x5_1(x)),
        block.branch3x3dbl_3(block.branch3x3dbl_2(block.branch3x3dbl_1(x))),
        block.branch_pool(_tf_avg_pool(x)),
    ], 1)


def _mixed_6(block: tv.InceptionC, x: torch.Tensor) -> torch.Tensor:
    b7 = block.branch7x7_3(block.branch7x7_2(block.branch7x7_1(x)))
    d7 = x
    for layer in (block.branch7x7dbl_1, block.branch7x7dbl_2, block.branch7x7dbl_3,
                  block.branch7x7dbl_4, block.branch7x7dbl_5):
        d7 = layer(d7)
    return torch.cat([block.branch1x1(x), b7, d7, block.branch_pool(_tf_avg_pool(x))], 1)


def _mixed_7(block: tv.InceptionE, x: torch.Tensor,
             pool: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    b3 = block.branch3x3_1(x)
    d3 = block.branch3x3dbl_2(block.branch3x3dbl_1(x))
    return torch.cat([
        block.branch1x1(x),
        block.branch3x3_2a(b3), block.branch3x3_2b(b3),
        block.branch3x3dbl_3a(d3), block.branch3x3dbl_3b(d3),
        block.branch_pool(pool(x)),
    ], 1)


class FIDInception(nn.Module):
    """(N, 3, H, W) float in [-1, 1] -> (N, 2048) features.

    The attribute names are the weights file's keys."""

    def __init__(self):
        super().__init__()
        conv = tv.BasicConv2d  # conv without bias + batch norm (eps 0.001) + ReLU
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.Mixed_5b = tv.InceptionA(192, pool_features=32)
        self.Mixed_5c = tv.InceptionA(256, pool_features=64)
        self.Mixed_5d = tv.InceptionA(288, pool_features=64)
        self.Mixed_6a = tv.InceptionB(288)
        self.Mixed_6b = tv.InceptionC(768, channels_7x7=128)
        self.Mixed_6c = tv.InceptionC(768, channels_7x7=160)
        self.Mixed_6d = tv.InceptionC(768, channels_7x7=160)
        self.Mixed_6e = tv.InceptionC(768, channels_7x7=192)
        self.Mixed_7a = tv.InceptionD(768)
        self.Mixed_7b = tv.InceptionE(1280)
        self.Mixed_7c = tv.InceptionE(2048)
        # Part of the weights file (strict loading needs it); FID reads the features before it.
        self.fc = nn.Linear(FEATURE_DIM, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resize_bilinear(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d):
            x = _mixed_5(block, x)
        x = self.Mixed_6a(x)
        for block in (self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
            x = _mixed_6(block, x)
        x = self.Mixed_7a(x)
        x = _mixed_7(self.Mixed_7b, x, _tf_avg_pool)
        x = _mixed_7(self.Mixed_7c, x, _tf_max_pool)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def resize_bilinear(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 299, 299), bilinear, align_corners=False, no antialiasing."""
    if x.shape[-2:] == (INPUT_SIZE, INPUT_SIZE):
        return x
    return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                         antialias=False)


# ---- the IS network --------------------------------------------------------------------------

def is_network() -> nn.Module:
    """torchvision's Inception v3 layout (with its auxiliary head, which the weights include)."""
    return tv.Inception3(num_classes=1000, aux_logits=True, transform_input=False,
                         init_weights=False)


# ---- weights ---------------------------------------------------------------------------------

def locate_weights(spec: WeightsFile, given: str | os.PathLike | None = None,
                   progress: DownloadProgress | None = None,
                   instead: str = "pass --weights PATH") -> Path:
    """``given`` (a file, or a folder holding ``spec.filename``), else the cached or downloaded
    copy in ``$P2P_HOME/weights/``. ``instead``: how else the user can name the file."""
    if given is not None:
        path = Path(given)
        if path.is_dir():
            path = path / spec.filename
        if not path.is_file():
            raise P2PError(f"{path}: no such file ({spec.what})",
                           f"download {spec.url} (sha256 begins with {spec.sha256})")
        return path
    dest = weights_dir() / spec.filename
    if dest.is_file():
        return dest
    try:
        return download(spec.url, dest, sha256=spec.sha256, progress=progress)
    except P2PError as exc:
        raise P2PError(
            f"{spec.what} are not in {dest.parent} and downloading them failed: {exc.message}",
            f"download {spec.url} (sha256 begins with {spec.sha256}) and save it as {dest}, "
            f"or {instead}") from None


def load_weights(network: nn.Module, path: Path, spec: WeightsFile) -> nn.Module:
    """Load ``path`` into ``network`` strictly, as data (weights_only), ready for inference."""
    state = load_weights_only(path)
    if not isinstance(state, dict):
        raise P2PError(f"{path}: not a state dict", f"expected the {spec.what}")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # names the missing, unexpected and wrongly shaped keys
        detail = " ".join(str(exc).split())
        raise P2PError(f"{path}: not the {spec.what}: {detail[:300]}",
                       f"download {spec.url}") from None
    # channels_last: oneDNN's convolutions and pools run Inception's many small layers 1.4x
    # faster in it than in NCHW on CPU (benchmarks/README.md); the numbers change by rounding.
    return network.eval().requires_grad_(False).to(memory_format=torch.channels_last)


def fid_inception(weights: str | os.PathLike | None = None,
                  progress: DownloadProgress | None = None) -> FIDInception:
    return load_weights(FIDInception(), locate_weights(FID_WEIGHTS, weights, progress),
                        FID_WEIGHTS)


def is_inception(weights: str | os.PathLike | None = None,
                 progress: DownloadProgress | None = None) -> nn.Module:
    return load_weights(is_network(), locate_weights(IS_WEIGHTS, weights, progress), IS_WEIGHTS)

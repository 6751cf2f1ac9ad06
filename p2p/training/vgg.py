"""The VGG19 network of ``train.lambda_vgg`` (pix2pixHD's perceptual loss; the formula is
``losses.perceptual_loss``).

torchvision's VGG19 convolutions up to relu5_1, frozen, read the generator's output and the
target scaled from [-1, 1] to [0, 1] and normalized with ImageNet's mean and standard deviation
(what the weights were trained on); a 1-channel image is repeated to three. The weights are
torchvision's ``vgg19-dcbb9e9d.pth``: ``train.vgg_weights``, else found in, or downloaded to,
``$P2P_HOME/weights/`` (metrics/backbones.py).
"""

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import vgg19

from p2p.metrics.backbones import VGG19_WEIGHTS, feature_tensors, load_features
from p2p.metrics.inception import DownloadProgress, locate_weights

# relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 in torchvision's vgg19().features.
LAYERS = (1, 6, 11, 20, 29)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGFeatures(nn.Module):
    """(N, 1 or 3, H, W) in [-1, 1] -> the features at ``LAYERS``, a list of five."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features[:LAYERS[-1] + 1]
        # Buffers, so that they follow the module to its device; not part of any state dict.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std  # a gray channel broadcasts to three
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in LAYERS:
                outputs.append(x)
        return outputs


def locate(given: str | os.PathLike | None,
           progress: DownloadProgress | None = None) -> Path:
    """The VGG19 weights file: ``given`` (train.vgg_weights), else found or downloaded."""
    return locate_weights(VGG19_WEIGHTS, given, progress,
                          instead="set train.vgg_weights: PATH")


def vgg_features(path: Path) -> VGGFeatures:
    """The frozen network, with the weights of ``path`` (only the layers it uses are read)."""
    with torch.device("meta"):  # no memory or init for the layers the file's tensors replace
        features = vgg19().features[:LAYERS[-1] + 1]
    features = features.to_empty(device="cpu")
    load_features(features, feature_tensors(path, VGG19_WEIGHTS), path, VGG19_WEIGHTS)
    return VGGFeatures(features).eval().requires_grad_(False)

"""LPIPS (Zhang et al., CVPR 2018), version 0.1 with the AlexNet backbone: the learned perceptual
distance that ``p2p eval pairs --lpips`` and ``train.val_lpips`` report (lower is more similar).

The network is the ``lpips`` package's own ``LPIPS(net='alex', version='0.1')``: its input
scaling, its unit-normalized features and its linear heads with the v0.1 weights that ship inside
its wheel, so the numbers are that package's. Only the backbone comes from elsewhere: the package
would download torchvision's AlexNet weights on its own, so p2p builds it with a random backbone
and loads torchvision's file, found or downloaded and verified as the other weights are
(backbones.py).

Images are compared as the package expects them: RGB scaled to [-1, 1], a gray image repeated to
three channels; one distance per image.
"""

import os
import warnings

import torch
from torch import nn

from p2p.errors import P2PError, install_extra
from p2p.metrics.backbones import ALEXNET_WEIGHTS, feature_tensors, load_features
from p2p.metrics.inception import DownloadProgress, locate_weights

INSTALL_HINT = install_extra("lpips")
# AlexNet's layers up to relu5 (stride-4 convolution, two 3x3 stride-2 max pools) need this many
# pixels a side to leave one.
MIN_SIDE = 31


def lpips_package():
    """The ``lpips`` module; a P2PError naming the extra when it is not installed."""
    try:
        import lpips
    except ImportError:
        raise P2PError("LPIPS needs the lpips package", INSTALL_HINT) from None
    return lpips


def lpips_network(weights: str | os.PathLike | None = None,
                  progress: DownloadProgress | None = None) -> nn.Module:
    """LPIPS v0.1 (AlexNet) in eval mode, on the CPU. ``weights``: torchvision's AlexNet file,
    or a folder holding it; by default ``$P2P_HOME/weights/``, downloaded there when missing."""
    lpips = lpips_package()
    path = locate_weights(ALEXNET_WEIGHTS, weights, progress)
    tensors = feature_tensors(path, ALEXNET_WEIGHTS)
    with warnings.catch_warnings():
        # The package builds its random backbone with torchvision's deprecated pretrained=False.
        warnings.simplefilter("ignore")
        network = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True,
                              verbose=False)
    # Its backbone is slices of torchvision's alexnet().features whose layers keep their index
    # as their name: "slice2.3.weight" is the file's "features.3.weight".
    names = {key: key.split(".", 1)[1] for key in network.net.state_dict()}
    load_features(network.net, tensors, path, ALEXNET_WEIGHTS, names)
    return network.eval().requires_grad_(False)


def distance(network: nn.Module, x: torch.Tensor, y: torch.Tensor,
             value_range: tuple[float, float]) -> torch.Tensor:
    """The LPIPS of each pair of two batches (N, C, H, W) of the same shape, with values on the
    scale ``value_range`` (the files' [0, 255] for 8-bit); C is 1 or 3. (N,) float64 on the
    CPU."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two (N, C, H, W) batches of the same shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    channels, height, width = x.shape[1:]
    if channels not in (1, 3):
        raise P2PError(f"LPIPS compares RGB or gray images, not {channels}-channel ones")
    if min(height, width) < MIN_SIDE:
        raise P2PError(f"LPIPS needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got "
                       f"{width}x{height}")
    device = next(network.parameters()).device
    low, high = value_range

    def scaled(batch: torch.Tensor) -> torch.Tensor:
        # uint16 tensors support few operations; int32 holds them exactly on the way to float.
        batch = batch.to(torch.int32) if batch.dtype == torch.uint16 else batch
        batch = (batch.to(device, torch.float32) - low) / (high - low) * 2 - 1
        return batch.expand(-1, 3, -1, -1)

    with torch.inference_mode():
        return network(scaled(x), scaled(y)).flatten().double().cpu()

"""How much memory training a recipe takes at least, and the refusal when that cannot fit.

Counted before anything is allocated, from the recipe alone: the convolution weights of both
networks with their gradients and Adam state, and the feature maps one batch keeps for the
backward pass. Every term is a lower bound (biases, norm layers, temporaries and the allocator's
slack are left out; autograd keeps 1.4x to 10x the feature-map bytes counted here, measured with
saved-tensor hooks over U-Nets of 5 to 9 levels and every discriminator depth), so a recipe is
refused only when it cannot fit, never because the estimate was generous.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from p2p.data.preprocess import as_size
from p2p.errors import P2PError, human_bytes

if TYPE_CHECKING:  # the estimate itself needs no torch
    import torch

    from p2p.recipe import Recipe

STATE_COPIES = 4  # fp32 weights, their gradients, Adam's exp_avg and exp_avg_sq


def _unet_widths(num_downs: int, ngf: int) -> list[int]:
    from p2p.models import unet_widths  # here: a Recipe's holder has loaded it; data list has not

    return unet_widths(num_downs, ngf)


def _resnet_blocks(recipe: Recipe) -> int:
    """Residual blocks of a ResNet generator, 0 for the U-Net."""
    config = recipe.generator_config()
    return config.blocks if config.architecture == "resnet" else 0


def generator_weights(recipe: Recipe) -> int:
    """Convolution weights of the U-Net (4x4 kernels; the decoder's are 3x3 with resize
    upsampling), encoder and decoder; or of the ResNet (7x7 ends, 3x3 inside)."""
    if blocks := _resnet_blocks(recipe):
        f, d = recipe.model.ngf, recipe.data
        return (49 * f * (d.in_channels + d.out_channels) + 9 * 2 * (2 * f * f + 8 * f * f)
                + 9 * 2 * blocks * 16 * f * f)
    w = _unet_widths(recipe.model.num_downs, recipe.model.ngf)
    n, d = len(w), recipe.data
    down = d.in_channels * w[0] + sum(w[i - 1] * w[i] for i in range(1, n))
    up = 2 * w[0] * d.out_channels + sum(
        (w[i] if i == n - 1 else 2 * w[i]) * w[i - 1] for i in range(1, n))
    return 16 * down + (9 if recipe.model.upsample == "resize" else 16) * up


def discriminator_weights(recipe: Recipe) -> int:
    """Convolution weights of the PatchGAN (1x1 kernels for the pixel GAN, else 4x4), one per
    scale (model.d_scales)."""
    m, channels = recipe.model, recipe.data.in_channels + recipe.data.out_channels
    if m.d_layers == 0:
        return m.d_scales * (channels * m.ndf + m.ndf * 2 * m.ndf + 2 * m.ndf)
    weights, width = channels * m.ndf, m.ndf
    for n in range(1, m.d_layers + 1):
        next_width = m.ndf * min(2**n, 8)
        weights, width = weights + width * next_width, next_width
    return m.d_scales * 16 * (weights + width)


def feature_map_elements(recipe: Recipe) -> int:
    """Per image: the U-Net's encoder outputs (kept as skips) and the decoder outputs of the
    same shapes, and the outputs of one discriminator pass, at the crop size."""
    m = recipe.model
    height, width_px = as_size(recipe.data.crop_size)
    if blocks := _resnet_blocks(recipe):  # conv outputs: full, 1/2 and 1/4 size (both ways)
        pixels = height * width_px
        generator = 2 * (m.ngf * pixels + 2 * m.ngf * pixels // 4) + \
            (2 + 2 * blocks) * 4 * m.ngf * pixels // 16
    else:
        w = _unet_widths(m.num_downs, m.ngf)
        generator = 2 * sum(width * (height >> (i + 1)) * (width_px >> (i + 1))
                            for i, width in enumerate(w))
    if m.d_layers == 0:
        return generator + 3 * m.ndf * height * width_px
    rows, cols, width = height // 2, width_px // 2, m.ndf
    discriminator = m.ndf * rows * cols
    for n in range(1, m.d_layers + 1):
        width = m.ndf * min(2**n, 8)
        if n < m.d_layers:
            rows, cols = rows // 2, cols // 2
        else:  # the last hidden conv has stride 1
            rows, cols = rows - 1, cols - 1
        discriminator += width * max(rows, 0) * max(cols, 0)
    return generator + discriminator


def training_bytes(recipe: Recipe, batch: int, half_precision: bool) -> int:
    """At least this much memory: both networks' training state and one batch of ``batch``
    images (bf16 feature maps with ``half_precision``)."""
    d = recipe.data
    state = 4 * STATE_COPIES * (generator_weights(recipe) + discriminator_weights(recipe))
    per_image = ((2 if half_precision else 4) * feature_map_elements(recipe)
                 + (d.in_channels + d.out_channels) * math.prod(as_size(d.load_size)))  # the batch
    return state + batch * per_image


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a new allocation on ``device``; None where it cannot be told."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:  # Linux: free memory plus what the kernel can reclaim (page cache)
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # elsewhere: the physical memory, an upper bound, so nothing that fits is refused
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(recipe: Recipe, device: torch.device, processes: int = 1,
               half_precision: bool = False) -> None:
    """Refuse a recipe whose networks and one batch cannot fit in ``device``'s free memory
    (each of ``processes`` trains on its share of the batch; bf16 feature maps with
    ``half_precision``)."""
    available = available_bytes(device)
    if available is None:
        return
    d, m = recipe.data, recipe.model
    batch = -(-d.batch_size // processes)
    needed = training_bytes(recipe, batch, half_precision)
    if needed > available:
        crop = "x".join(map(str, as_size(d.crop_size)))
        raise P2PError(
            f"recipe needs at least {human_bytes(needed)} of {device.type} memory to train (ngf "
            f"{m.ngf}, ndf {m.ndf}, {batch} image(s) of {crop} per "
            f"process), but {human_bytes(available)} is free",
            "lower model.ngf / model.ndf, data.batch_size or data.crop_size, or free memory")

"""The adversarial losses of pix2pix and its variants; the L1 term is plain ``F.l1_loss``."""

import torch
import torch.nn.functional as F

GAN_LOSSES = ("vanilla", "lsgan", "hinge")


def discriminator_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor):
    """Returns (loss_real, loss_fake); the discriminator minimises 0.5 * (real + fake)."""
    if kind == "vanilla":
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    elif kind == "lsgan":
        real = F.mse_loss(real_logits, torch.ones_like(real_logits))
        fake = F.mse_loss(fake_logits, torch.zeros_like(fake_logits))
    elif kind == "hinge":
        real = F.relu(1.0 - real_logits).mean()
        fake = F.relu(1.0 + fake_logits).mean()
    else:
        raise ValueError(f"unknown GAN loss {kind!r}; expected one of {GAN_LOSSES}")
    return real, fake


def generator_gan_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial loss: make the discriminator call the fakes real."""
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "lsgan":
        return F.mse_loss(fake_logits, torch.ones_like(fake_logits))
    if kind == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown GAN loss {kind!r}; expected one of {GAN_LOSSES}")

"""The adversarial losses of pix2pix and its variants (the L1 term is plain ``F.l1_loss``), and
pix2pixHD's (Wang et al., CVPR 2018) discriminator feature matching and VGG loss, as formulas on
the networks' outputs."""

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


def mean_over_scales(values: list[torch.Tensor]) -> torch.Tensor:
    """The average of one loss over the discriminator's scales (with one scale: that loss, bit
    for bit)."""
    return sum(values) / len(values)


def feature_matching_loss(fake: list[list[torch.Tensor]],
                          real: list[list[torch.Tensor]]) -> torch.Tensor:
    """Discriminator feature matching (pix2pixHD): for each scale, the hidden features of the
    generated and of the real pair (each scale's list ends with its logits, left out here), the
    L1 distance of each, weighted 4 / (the hidden layers: n_layers + 1 in a PatchGAN) per layer
    and 1 / (the scales) per scale. ``real`` is a target: no gradient flows into it."""
    return sum(4 / (len(fake_scale) - 1) / len(fake) * F.l1_loss(f.float(), r.detach().float())
               for fake_scale, real_scale in zip(fake, real, strict=True)
               for f, r in zip(fake_scale[:-1], real_scale[:-1], strict=True))


# pix2pixHD's weights of the VGG19 features at relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1.
VGG_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def perceptual_loss(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """The VGG loss: the L1 distances of the features of output and target at the five layers,
    weighted by ``VGG_LAYER_WEIGHTS``. ``real`` is a target: no gradient flows into it."""
    return sum(w * F.l1_loss(f.float(), r.detach().float())
               for w, f, r in zip(VGG_LAYER_WEIGHTS, fake, real, strict=True))

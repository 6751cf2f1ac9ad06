import math

import pytest
import torch

from p2p.losses import discriminator_loss, generator_gan_loss
from p2p.recipe import recipe_from_dict
from p2p.training.loop import lr_factor


def test_vanilla_is_binary_cross_entropy_on_logits():
    zero = torch.zeros(1, 1, 30, 30)
    real, fake = discriminator_loss("vanilla", zero, zero)
    assert real.item() == pytest.approx(math.log(2)) and fake.item() == pytest.approx(math.log(2))
    assert generator_gan_loss("vanilla", torch.full((2, 1, 4, 4), 50.0)).item() < 1e-6


def test_lsgan_and_hinge():
    real, fake = discriminator_loss("lsgan", torch.ones(4), torch.zeros(4))
    assert real.item() == 0 and fake.item() == 0
    assert generator_gan_loss("lsgan", torch.zeros(4)).item() == 1
    real, fake = discriminator_loss("hinge", torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5]))
    assert real.item() == pytest.approx(0.5) and fake.item() == pytest.approx(0.75)
    assert generator_gan_loss("hinge", torch.tensor([1.0, 3.0])).item() == -2
    with pytest.raises(ValueError):
        generator_gan_loss("wgan", torch.zeros(1))


def test_linear_schedule_decays_to_zero_over_the_last_iterations():
    factor = lr_factor(recipe_from_dict({"train": {"iters": 200, "schedule": "linear",
                                                   "decay_iters": 100}}))
    assert factor(0) == 1 and factor(100) == 1
    assert factor(150) == pytest.approx(1 - 50 / 101) and factor(200) == pytest.approx(1 / 101)
    constant = lr_factor(recipe_from_dict({"train": {"iters": 200}}))
    assert constant(199) == 1

"""The memory estimate before training: a lower bound of what training really holds, and the
one-line refusal when even that cannot fit."""

import pytest
import torch

from p2p.errors import P2PError
from p2p.models import count_parameters
from p2p.recipe import recipe_from_dict
from p2p.training import footprint
from p2p.training.loop import build_models


def small_recipe(num_downs, ngf, norm, d_layers, in_channels=3, batch=2):
    size = 2**num_downs
    return recipe_from_dict({
        "data": {"load_size": size, "crop_size": size, "in_channels": in_channels,
                 "batch_size": batch},
        "model": {"num_downs": num_downs, "ngf": ngf, "ndf": ngf, "norm": norm, "d_norm": norm,
                  "d_layers": d_layers, "dropout": norm == "batch"}})


def saved_tensor_bytes(forward) -> tuple[int, torch.Tensor]:
    """Bytes of the distinct storages autograd keeps for the backward pass of ``forward()``."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = forward()
    return sum(storages.values()), out


@pytest.mark.parametrize("num_downs, ngf, norm, d_layers, in_channels", [
    (5, 4, "batch", 3, 3), (6, 8, "instance", 3, 1), (7, 8, "none", 0, 3), (7, 4, "none", 5, 3),
])
def test_estimate_is_a_lower_bound_of_real_training_state(num_downs, ngf, norm, d_layers,
                                                          in_channels):
    recipe = small_recipe(num_downs, ngf, norm, d_layers, in_channels)
    models = build_models(recipe, torch.device("cpu"))
    assert footprint.generator_weights(recipe) <= count_parameters(models.generator)
    assert footprint.discriminator_weights(recipe) <= count_parameters(models.discriminator)
    # Within 2% of the parameter count: the bound is tight where it matters most (wide nets).
    assert footprint.generator_weights(recipe) > 0.98 * count_parameters(models.generator)

    size, batch = recipe.data.crop_size, recipe.data.batch_size
    source = torch.randn(batch, in_channels, size, size)
    g_bytes, fake = saved_tensor_bytes(lambda: models.generator(source))
    d_bytes, _ = saved_tensor_bytes(lambda: models.discriminator(torch.cat([source, fake], 1)))
    assert 4 * batch * footprint.feature_map_elements(recipe) <= g_bytes + d_bytes


def test_check_refuses_what_cannot_fit_in_one_line(monkeypatch):
    recipe = small_recipe(8, 512, "batch", 3, batch=1)  # ~3.5 billion generator weights
    needed = footprint.training_bytes(recipe, 1, half_precision=False)
    assert needed > 16 * 3.4e9
    monkeypatch.setattr(footprint, "available_bytes", lambda device: needed - 1)
    with pytest.raises(P2PError) as info:
        footprint.check_fits(recipe, torch.device("cpu"))
    message = str(info.value)
    assert "\n" not in message and footprint.human_bytes(needed) in message
    assert footprint.human_bytes(needed - 1) + " is free" in message
    assert "lower model.ngf" in message
    monkeypatch.setattr(footprint, "available_bytes", lambda device: needed)
    footprint.check_fits(recipe, torch.device("cpu"))  # exactly enough: allowed
    # Two processes: each holds the networks and half the batch.
    recipe.data.batch_size = 64
    halves = footprint.training_bytes(recipe, 32, half_precision=False)
    monkeypatch.setattr(footprint, "available_bytes", lambda device: halves)
    footprint.check_fits(recipe, torch.device("cpu"), processes=2)
    with pytest.raises(P2PError):
        footprint.check_fits(recipe, torch.device("cpu"), processes=1)


def test_available_memory_on_this_machine():
    available = footprint.available_bytes(torch.device("cpu"))
    assert available is not None and available > 0
    assert footprint.available_bytes(torch.device("meta")) is None  # cannot be told: no check
    footprint.check_fits(small_recipe(5, 4, "batch", 3), torch.device("meta"))

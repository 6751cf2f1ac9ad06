"""Tiled inference: blending, sizes, refusals, and ``p2p translate --tile`` end to end."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from p2p.errors import P2PError
from p2p.inference.tiling import check_tiling, ramp, tile_starts, translate_tiled
from p2p.models import GeneratorConfig, UnetGenerator, init_weights
from p2p.weights.checkpoint import generator_state, save_checkpoint


def float_tiled(model: nn.Module, image: torch.Tensor, **kw) -> torch.Tensor:
    """Tiles of a float image, blended in float (no rounding), with ``model`` in eval mode."""

    def forward(batch):
        with torch.no_grad():
            return model(batch)

    kw = {"multiple": 4, "out_channels": 3, **kw}
    return translate_tiled(forward, image, to_input=lambda x: x, to_output=lambda x: x,
                           out_dtype=torch.float32, **kw)


def conv_model(kernel: int) -> nn.Module:
    """Two convolutions with zero padding: outputs within kernel // 2 * 2 pixels of an edge
    differ from what the same pixels get inside a larger image."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, kernel, padding=kernel // 2), nn.Tanh(),
                         nn.Conv2d(8, 3, kernel, padding=kernel // 2), nn.Tanh()).eval()


def smooth_image(height: int, width: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width),
                          indexing="ij")
    return torch.stack([torch.sin(3 * x + y), torch.cos(4 * y), x * y]) * 0.9


@settings(deadline=None)
@given(length=st.integers(1, 500), tile=st.integers(1, 128), data=st.data())
def test_tiles_cover_the_side_with_at_least_the_overlap(length, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and min(starts[-1] + tile, length) == length
    for a, b in zip(starts, starts[1:], strict=False):
        assert 0 < b - a <= tile - overlap
    window = ramp(tile, overlap)
    assert window.min() > 0 and window.max() <= 1
    if 2 * overlap <= tile:  # two tiles overlapping by exactly `overlap` cross-fade to 1
        across = window[tile - overlap:] + window[:overlap]
        torch.testing.assert_close(across, torch.ones(overlap))


@pytest.mark.parametrize("size", [(70, 100), (20, 30), (64, 64), (33, 130)])
def test_a_pointwise_model_gives_the_untiled_output_at_any_size(size):
    # 1x1 convolutions see no neighbours, so every tile computes the same values and blending
    # must give them back exactly: sides not a multiple of the tile, and smaller than the tile.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 5, 1), nn.Tanh(), nn.Conv2d(5, 3, 1)).eval()
    image = torch.rand(3, *size) * 2 - 1
    with torch.no_grad():
        expected = model(image[None])[0]
    for batch_size in (1, 3):
        out = float_tiled(model, image, tile=32, overlap=8, batch_size=batch_size)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_feathering_hides_the_tile_borders():
    # A 3x3 model is wrong within 2 pixels of a tile's edge. Hard tile borders show that as a
    # step; blended over 12 pixels, each wrong pixel is outweighed by its neighbour's correct one.
    model, image = conv_model(3), smooth_image(90, 110)
    with torch.no_grad():
        untiled = model(image[None])[0]
    hard = (float_tiled(model, image, tile=32, overlap=0) - untiled).abs()
    soft = (float_tiled(model, image, tile=32, overlap=12) - untiled).abs()
    assert hard.max() > 0.05  # the model does have edge effects to hide
    assert soft.max() < 0.25 * hard.max()
    # The largest step from one row to the next stays close to the untiled output's.

    def steps(x):
        return (x[:, 1:] - x[:, :-1]).abs().amax(dim=(0, 2))

    hard_steps = steps(float_tiled(model, image, tile=32, overlap=0))
    soft_steps = steps(float_tiled(model, image, tile=32, overlap=12))
    assert (soft_steps - steps(untiled)).abs().max() < 0.25 * (
        hard_steps - steps(untiled)).abs().max()


def test_memory_is_one_row_of_tiles_whatever_the_height():
    # Rows leave the float strip as soon as no later tile covers them, in order, once.
    written = []

    def to_output(rows):
        written.append(rows.shape[1])
        return rows

    image = torch.rand(3, 200, 40) * 2 - 1
    out = translate_tiled(lambda b: b, image, tile=32, overlap=8, multiple=4, out_channels=3,
                          to_input=lambda x: x, to_output=to_output, out_dtype=torch.float32)
    torch.testing.assert_close(out, image)
    assert sum(written) == 200 and max(written) <= 32


@pytest.mark.parametrize("tile,overlap,message", [
    (32, 32, "smaller than the tile"), (32, 40, "smaller than the tile"),
    (32, -1, "at least 0"), (30, 4, "not a multiple of 4"), (0, 0, "not a multiple"),
])
def test_bad_tiles_are_refused(tile, overlap, message):
    with pytest.raises(P2PError, match=message):
        check_tiling(tile, overlap, 4)


# ---- p2p translate --tile ----------------------------------------------------------------------

@pytest.fixture
def unet(tmp_path) -> Path:
    torch.manual_seed(0)
    generator = init_weights(UnetGenerator(GeneratorConfig(num_downs=5, ngf=8)))
    path = tmp_path / "unet.pt"
    save_checkpoint(path, generator_state(generator, "AtoB", 32))
    return path


def write_image(path: Path, height: int, width: int, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    shape = (height, width) if mode == "L" else (height, width, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


def test_translate_tile_keeps_the_size_and_matches_untiled_within_one_tile(cli, unet, tmp_path):
    big = write_image(tmp_path / "big.png", 100, 150)
    r = cli("translate", "-c", unet, big, tmp_path / "tiled.png", "--tile", "64", "--overlap",
            "16", "--eval-mode", "-b", "2")
    assert r.exit_code == 0, r.stderr
    with Image.open(tmp_path / "tiled.png") as out:
        assert out.size == (150, 100) and out.mode == "RGB"
    # An image that fits one tile is translated exactly as --keep-size does.
    small = write_image(tmp_path / "small.png", 40, 50)
    for args in (["--tile", "64"], ["--keep-size"]):
        r = cli("translate", "-c", unet, small, tmp_path / f"{args[0][2:]}.png", "--eval-mode",
                *args)
        assert r.exit_code == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "tile.png")),
                          np.asarray(Image.open(tmp_path / "keep-size.png")))


def test_translate_tile_refusals(cli, unet, tmp_path):
    image = write_image(tmp_path / "in.png", 40, 40)
    r = cli("translate", "-c", unet, image, tmp_path / "o.png", "--tile", "64")
    assert r.exit_code == 2 and "--eval-mode" in r.stderr and "tone" in r.stderr
    r = cli("translate", "-c", unet, image, tmp_path / "o.png", "--tile", "48", "--eval-mode")
    assert r.exit_code == 2 and "not a multiple of 32" in r.stderr and "--tile 32" in r.stderr
    r = cli("translate", "-c", unet, image, tmp_path / "o.png", "--tile", "64", "--overlap",
            "64", "--eval-mode")
    assert r.exit_code == 2 and "smaller than the tile" in r.stderr
    r = cli("translate", "-c", unet, image, tmp_path / "o.png", "--overlap", "8")
    assert r.exit_code == 2 and "--overlap needs --tile" in r.stderr
    assert not (tmp_path / "o.png").exists()


def test_instance_norm_models_tile_in_paper_mode(cli, tmp_path):
    torch.manual_seed(0)
    generator = init_weights(UnetGenerator(GeneratorConfig(num_downs=5, ngf=8, norm="instance",
                                                           in_channels=1)))
    save_checkpoint(tmp_path / "g.pt", generator_state(generator, "AtoB", 32))
    image = write_image(tmp_path / "gray.png", 70, 45, mode="L")
    r = cli("translate", "-c", tmp_path / "g.pt", image, tmp_path / "o.png", "--tile", "32",
            "--seed", "1")
    assert r.exit_code == 0, r.stderr
    with Image.open(tmp_path / "o.png") as out:
        assert out.size == (45, 70)


def test_sixteen_bit_four_channel_data_tiles_at_its_depth(cli, tmp_path):
    # Inputs of other depths arrive normalized as floats and leave as the model's depth: a tiled
    # image that fits one tile is the --keep-size output, in 16 bits.
    from p2p.images.raster import read_raster, save_raster

    torch.manual_seed(0)
    generator = init_weights(UnetGenerator(GeneratorConfig(num_downs=5, ngf=8, in_channels=4,
                                                           out_channels=1)))
    sixteen = {"dtype": "uint16", "range": [0.0, 65535.0], "explicit": False}
    save_checkpoint(tmp_path / "g.pt", generator_state(
        generator, "AtoB", 32, normalization={"source": sixteen, "target": sixteen}))
    rng = np.random.default_rng(0)
    save_raster(rng.integers(0, 65536, (40, 50, 4), dtype=np.uint16), tmp_path / "in.tif")
    outputs = {}
    for args in (["--tile", "64"], ["--keep-size"]):
        out = tmp_path / f"{args[0][2:]}.png"
        r = cli("translate", "-c", tmp_path / "g.pt", tmp_path / "in.tif", out, "--eval-mode",
                *args)
        assert r.exit_code == 0, r.stderr
        outputs[args[0]] = read_raster(out).pixels
    tiled = outputs["--tile"]
    assert tiled.dtype == np.uint16 and tiled.shape[:2] == (40, 50)
    assert np.array_equal(tiled, outputs["--keep-size"])
    r = cli("translate", "-c", tmp_path / "g.pt", tmp_path / "in.tif", tmp_path / "4.png",
            "--eval-mode", "--tile", "32", "--overlap", "8")  # 2 x 2 tiles, blended in float
    assert r.exit_code == 0, r.stderr
    blended = read_raster(tmp_path / "4.png").pixels
    assert blended.dtype == np.uint16 and blended.shape[:2] == (40, 50)

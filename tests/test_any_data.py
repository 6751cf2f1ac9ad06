"""Any data through the real entry points: rectangular sizes, the preprocessing modes, 16-bit and
N-channel files (PNG, TIFF, .npy), and the metrics' refusal of what they cannot score."""

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from p2p.data.paired import PairedImages, augment, to_float
from p2p.data.preprocess import MODES, Preprocess
from p2p.errors import P2PError
from p2p.images.raster import encode_raster, read_raster, save_raster
from p2p.inference.translate import load
from p2p.models import GeneratorConfig, UnetGenerator
from p2p.recipe import recipe_from_dict
from p2p.weights import load_checkpoint
from p2p.weights.checkpoint import generator_state, save_checkpoint

TINY_MODEL = {"num_downs": 5, "ngf": 4, "ndf": 4}
SMALL_GENERATOR = {"num_downs": 5, "ngf": 4}
STRIDE = 32


def train(cli, tmp_path: Path, data: dict, iters: int = 2) -> Path:
    recipe = {"name": "any", "data": {"batch_size": 2, **data}, "model": TINY_MODEL,
              "train": {"iters": iters, "log_every": 1, "sample_every": iters,
                        "checkpoint_every": iters}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    r = cli("train", path, "--out", run)
    assert r.exit_code == 0, r.stderr
    return run


def random_pixels(shape, dtype, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


# ---- rectangular sizes -----------------------------------------------------------------------

def test_rectangular_crops_train_and_translate_at_their_size(cli, tmp_path):
    for i in range(4):  # aligned A|B pairs, each side 72x104 (height x width)
        save_raster(random_pixels((72, 208, 3), np.uint8, i), tmp_path / "data" / f"{i}.png")
    run = train(cli, tmp_path, {"path": str(tmp_path / "data"), "load_size": [72, 104],
                                "crop_size": [64, 96]})
    state = load_checkpoint(run)
    assert state["image_size"] == [64, 96]
    assert state["preprocess"] == {"mode": "resize_and_crop", "load_size": [72, 104],
                                   "crop_size": [64, 96]}
    with Image.open(run / "samples" / "iter_00000002.png") as sample:  # rows of in|out|target
        assert sample.size == (3 * 96, 4 * 64)
    model = load(run, device="cpu")
    assert model.image_size == (64, 96) and model.preprocess.test_size((50, 70), 32) == (64, 96)
    save_raster(random_pixels((50, 70, 3), np.uint8), tmp_path / "in.png")
    r = cli("translate", "-c", run, tmp_path / "in.png", tmp_path / "out.png")
    assert r.exit_code == 0, r.stderr
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (70, 50) and out.mode == "RGB"


# ---- the preprocessing modes -----------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(MODES), height=st.integers(1, 300), width=st.integers(1, 300),
       load=st.integers(64, 200), crop=st.tuples(st.sampled_from([32, 64]),
                                                 st.sampled_from([32, 64])))
def test_each_mode_gives_the_official_sizes(mode, height, width, load, crop):
    p = Preprocess(mode, (load, load), crop)
    loaded = p.loaded_size((height, width), STRIDE)
    if mode == "resize_and_crop":
        assert loaded == (load, load)
    elif mode == "crop":
        assert loaded == (height, width)
    elif mode == "none":  # the nearest multiples of the stride, never 0
        for side, original in zip(loaded, (height, width), strict=True):
            assert side % STRIDE == 0 and side >= STRIDE
            assert abs(side - original) <= STRIDE / 2 or side == STRIDE
    else:
        scaled_height = max(int(load * height / width), crop[0])
        if width == load and height >= crop[0]:
            scaled_height = height
        if mode == "scale_width_and_crop":
            assert loaded == (scaled_height, load)
        else:
            assert loaded == (max(STRIDE, round(scaled_height / STRIDE) * STRIDE),
                              max(STRIDE, round(load / STRIDE) * STRIDE))
    # What the generator sees: the crop, or the whole image at a multiple of the stride.
    seen = crop if p.crops else loaded
    assert seen[0] % STRIDE == 0 and seen[1] % STRIDE == 0
    test = p.test_size((height, width), STRIDE)
    assert (test is None) == (mode == "crop")
    if test is not None:
        assert test[0] % STRIDE == 0 and test[1] % STRIDE == 0


@settings(max_examples=12, deadline=None)
@given(mode=st.sampled_from(MODES), height=st.integers(70, 130), width=st.integers(70, 130),
       seed=st.integers(0, 99))
def test_each_mode_through_the_dataset_and_augment(mode, height, width, seed):
    with tempfile.TemporaryDirectory() as folder:
        for i in range(2):
            save_raster(random_pixels((height, 2 * width, 3), np.uint8, i),
                        Path(folder) / f"{i}.png")
        p = Preprocess(mode, (96, 96), (64, 32))
        data = PairedImages(folder, preprocess=p, stride=STRIDE)
        sources, targets = data.get_many([0, 1], stack=False)
        source, target = augment(sources, targets, p.crop_size if p.crops else None, True,
                                 seed, 0)
        expected = p.crop_size if p.crops else p.loaded_size((height, width), STRIDE)
        assert source.shape == (2, 3, *expected) and target.shape == source.shape


def test_a_process_share_of_mixed_sizes_is_cropped_as_in_the_whole_batch():
    # Crop mode keeps each image's size; a process sees only its share of the batch, not the
    # sizes of the others' items, and must still crop its items as the whole batch would.
    sizes = [(40, 50), (64, 33), (35, 90), (48, 48)]
    images = [torch.arange(3 * h * w).reshape(3, h, w) for h, w in sizes]
    whole, _ = augment(images, images, (32, 32), True, 7, 11)
    for first in range(1, 4):
        share, _ = augment(images[first:], images[first:], (32, 32), True, 7, 11, first=first)
        assert torch.equal(share, whole[first:])


def test_crop_refuses_images_smaller_than_the_crop(tmp_path):
    save_raster(random_pixels((40, 120, 3), np.uint8), tmp_path / "small.png")
    with pytest.raises(P2PError, match="small.png: 60x40 .* smaller than the crop"):
        PairedImages(tmp_path, preprocess=Preprocess("crop", (64, 64), (64, 64)))


def test_uncropped_modes_need_one_size_per_batch(cli, tmp_path):
    save_raster(random_pixels((64, 128, 3), np.uint8), tmp_path / "data" / "a.png")
    save_raster(random_pixels((96, 128, 3), np.uint8), tmp_path / "data" / "b.png")
    recipe = {"data": {"path": str(tmp_path / "data"), "preprocess": "none", "batch_size": 2,
                       "crop_size": 32}, "model": TINY_MODEL, "train": {"iters": 1}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    r = cli("train", tmp_path / "r.yaml", "--out", tmp_path / "run")
    assert r.exit_code == 2
    assert "a.png (64x64) and b.png (64x96) differ" in r.stderr and "batch_size 1" in r.stderr


@pytest.mark.parametrize(("data", "message"), [
    ({"crop_size": [64, 96, 3]}, "one number or [height, width]"),
    ({"crop_size": "wide"}, "expected int or a list of int"),
    ({"load_size": [300, 250], "crop_size": [256, 256]}, "larger than data.load_size"),
    ({"preprocess": "scale_width", "load_size": [286, 286]}, "load_size is the width"),
    ({"preprocess": "crop", "crop_size": [256, 100]}, "not a multiple of"),
    ({"in_channels": 0}, "in_channels must be at least 1"),
    ({"range": [1, 0]}, "min < max"),
    ({"range": {"C": [0, 1]}}, "the sides are A and B"),
    ({"preprocess": "resize"}, "not one of resize_and_crop, crop"),
])
def test_bad_data_values_name_the_fix(data, message):
    with pytest.raises(P2PError, match=message.replace("[", r"\[")):
        recipe_from_dict({"data": data})


def test_range_forms_give_each_side_its_range():
    both = recipe_from_dict({"data": {"range": [0, 4095]}}).data
    assert both.side_ranges() == ([0.0, 4095.0], [0.0, 4095.0])
    by_side = recipe_from_dict({"data": {"range": {"B": [-1, 1]}, "direction": "BtoA"}}).data
    assert by_side.side_ranges() == ([-1.0, 1.0], None)  # BtoA: B is the source


# ---- 16 bits, N channels ---------------------------------------------------------------------

def write_tiff_to_png_pairs(folder: Path, count: int = 4) -> None:
    for i in range(count):
        stack = random_pixels((4, 40, 48), np.uint16, i)  # 4 pages: the channels
        (folder / "A").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / "A" / f"{i}.tif", stack, photometric="minisblack")
        save_raster(random_pixels((40, 48, 1), np.uint16, 10 + i), folder / "B" / f"{i}.png")


def test_16bit_4_channel_tiff_to_16bit_gray_png(cli, tmp_path):
    write_tiff_to_png_pairs(tmp_path / "data")
    run = train(cli, tmp_path, {"path": str(tmp_path / "data"), "preprocess": "crop",
                                "crop_size": 32, "in_channels": 4, "out_channels": 1})
    state = load_checkpoint(run)
    uint16 = {"dtype": "uint16", "range": [0.0, 65535.0], "explicit": False}
    assert state["normalization"] == {"source": uint16, "target": uint16}
    assert state["generator_config"]["in_channels"] == 4
    source = tmp_path / "data" / "A" / "0.tif"
    r = cli("translate", "-c", run, source, tmp_path / "out")  # TIFF in: TIFF out
    assert r.exit_code == 0, r.stderr
    out = read_raster(tmp_path / "out" / "0.tif")
    assert out.pixels.dtype == np.uint16 and out.pixels.shape == (40, 48, 1)
    r = cli("translate", "-c", run, source, tmp_path / "png", "--ext", "png")
    assert r.exit_code == 0, r.stderr
    with Image.open(tmp_path / "png" / "0.png") as png:
        assert png.mode == "I;16" and png.size == (48, 40)
    assert read_raster(tmp_path / "png" / "0.png").pixels.shape == (40, 48, 1)
    # 4 channels cannot be shown side by side, and JPEG holds no 16 bits: said before any work.
    r = cli("translate", "-c", run, source, tmp_path / "sbs", "--side-by-side")
    assert r.exit_code == 2 and "--side-by-side shows images of 1 or 3 channels" in r.stderr
    r = cli("translate", "-c", run, source, tmp_path / "jpg", "--ext", "jpg")
    assert r.exit_code == 2 and "not 1 channel(s) of uint16" in r.stderr
    assert not (tmp_path / "jpg").exists()


def test_16bit_data_stays_16bit_in_memory(tmp_path):
    write_tiff_to_png_pairs(tmp_path)
    data = PairedImages(tmp_path, load_size=40, in_channels=4, out_channels=1)
    source, target = data[0]
    assert data.cache is not None and source.dtype == target.dtype == torch.uint16
    assert source.shape == (4, 40, 40) and target.shape == (1, 40, 40)
    values = to_float(torch.tensor([[[0, 65535]]], dtype=torch.uint16), data.ranges[0])
    assert values.tolist() == [[[-1.0, 1.0]]]
    # Every file of a side has one depth.
    save_raster(random_pixels((40, 48, 1), np.uint8), tmp_path / "B" / "1.png")
    with pytest.raises(P2PError, match="1.png: uint8 pixels, but those of the same side in "
                                       "0.tif are uint16"):
        PairedImages(tmp_path, load_size=40, in_channels=4, out_channels=1)


def test_16bit_colour_png_keeps_its_16_bits():
    pixels = random_pixels((5, 7, 3), np.uint16)
    assert np.array_equal(read_raster(encode_raster(pixels, "PNG")).pixels, pixels)


def test_gray_side_by_side_and_none_mode(cli, tmp_path):
    for i in range(2):  # 16-bit gray A|B pairs, 60x(2x90): "none" makes them 64x96
        save_raster(random_pixels((60, 180, 1), np.uint16, i), tmp_path / "data" / f"{i}.png")
    run = train(cli, tmp_path, {"path": str(tmp_path / "data"), "preprocess": "none",
                                "crop_size": 32, "in_channels": 1, "out_channels": 1,
                                "batch_size": 1})
    r = cli("translate", "-c", run, tmp_path / "data" / "0.png", tmp_path / "sbs.png",
            "--paired", "--side-by-side")
    assert r.exit_code == 0, r.stderr
    out = read_raster(tmp_path / "sbs.png").pixels
    assert out.dtype == np.uint16 and out.shape == (60, 270, 1)
    ab = read_raster(tmp_path / "data" / "0.png").pixels
    assert np.array_equal(out[:, :90], ab[:, :90])  # the input panel, unchanged
    assert np.array_equal(out[:, 180:], ab[:, 90:])  # the target panel


def test_outputs_png_cannot_hold_default_to_tiff(cli, tmp_path):
    generator = UnetGenerator(GeneratorConfig(in_channels=3, out_channels=4, **SMALL_GENERATOR))
    uint16 = {"dtype": "uint16", "range": [0.0, 65535.0], "explicit": False}
    preprocess = Preprocess("scale_width", (64, 64), (32, 32)).to_dict()
    save_checkpoint(tmp_path / "model.pt", generator_state(
        generator, "AtoB", 32, preprocess, {"source": uint16, "target": uint16}))
    save_raster(random_pixels((30, 50, 3), np.uint8), tmp_path / "in" / "photo.png")
    r = cli("translate", "-c", tmp_path / "model.pt", tmp_path / "in", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    out = read_raster(tmp_path / "out" / "photo.tif")
    assert out.pixels.dtype == np.uint16 and out.pixels.shape == (30, 50, 4)
    r = cli("translate", "-c", tmp_path / "model.pt", tmp_path / "in", tmp_path / "png",
            "--ext", "png")
    assert r.exit_code == 2 and "--ext tif" in r.stderr and not (tmp_path / "png").exists()


def test_npy_pairs_with_a_range(cli, tmp_path):
    (tmp_path / "data").mkdir()
    for i in range(2):  # H x 2W float arrays: one channel per side, values in [0, 1]
        np.save(tmp_path / "data" / f"{i}.npy", random_pixels((32, 64), np.float32, i))
    recipe = {"path": str(tmp_path / "data"), "load_size": 32, "crop_size": 32,
              "in_channels": 1, "out_channels": 1}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"data": recipe, "model": TINY_MODEL}))
    r = cli("train", tmp_path / "r.yaml", "--out", tmp_path / "norange")
    assert r.exit_code == 2 and "float32 values" in r.stderr and "data.range" in r.stderr
    run = train(cli, tmp_path, {**recipe, "range": [0, 1]})
    assert load_checkpoint(run)["normalization"]["target"] == {
        "dtype": "float32", "range": [0.0, 1.0], "explicit": True}
    np.save(tmp_path / "in.npy", random_pixels((20, 24), np.float32))
    r = cli("translate", "-c", run, tmp_path / "in.npy", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    out = np.load(tmp_path / "out" / "in.npy")
    assert out.dtype == np.float32 and out.shape == (20, 24)


# ---- FID and IS: 8-bit RGB only --------------------------------------------------------------

def test_fid_and_is_refuse_16bit_images_and_models(cli, tmp_path):
    from p2p.metrics import frechet

    rng = np.random.default_rng(0)
    frechet.save_statistics(frechet.statistics(rng.standard_normal((4, 6))), tmp_path / "real.npz")
    for i in range(2):
        save_raster(random_pixels((16, 16, 1), np.uint16, i), tmp_path / "fake" / f"{i}.png")
    for command in (["fid", tmp_path / "real.npz", tmp_path / "fake"],
                    ["is", tmp_path / "fake", "--splits", "1"]):
        r = cli("eval", *command)
        assert r.exit_code == 2, r.stderr
        assert "0.png: a 16-bit image of 1 channel(s); FID and IS apply to 8-bit RGB images" \
            in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # A model that writes 16-bit gray: refused before any data or weights are read.
    generator = UnetGenerator(GeneratorConfig(in_channels=4, out_channels=1, **SMALL_GENERATOR))
    uint16 = {"dtype": "uint16", "range": [0.0, 65535.0], "explicit": False}
    save_checkpoint(tmp_path / "model.pt", generator_state(
        generator, "AtoB", 32, normalization={"source": uint16, "target": uint16}))
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"data": {"path": str(tmp_path)}}))
    r = cli("eval", "run", "--recipe", tmp_path / "recipe.yaml", "-c", tmp_path / "model.pt")
    assert r.exit_code == 2 and "FID and IS apply to 8-bit RGB outputs only" in r.stderr


def test_npy_and_tiff_bytes_are_recognised_by_content():
    pixels = random_pixels((8, 6, 4), np.float32)
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    assert np.array_equal(read_raster(buffer.getvalue()).pixels, pixels)
    tiff = read_raster(encode_raster(pixels, "TIFF"))
    assert tiff.format == "TIFF" and np.array_equal(tiff.pixels, pixels)

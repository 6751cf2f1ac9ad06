"""The Python API: ``p2p.load`` and ``Model``, each input kind against the files ``p2p translate``
writes for the same model, input and options, pixel for pixel."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import p2p
from p2p.errors import P2PError
from p2p.images.raster import read_raster
from p2p.models import GeneratorConfig, UnetGenerator, init_weights
from p2p.weights.checkpoint import generator_state, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
UINT16 = {"dtype": "uint16", "range": [0.0, 65535.0], "explicit": False}


def save_model(path: Path, channels: int = 3, sixteen_bit: bool = False) -> Path:
    """A tiny U-Net with dropout (so paper mode and seeds matter), trained size 32x32."""
    torch.manual_seed(0)
    generator = init_weights(UnetGenerator(GeneratorConfig(
        in_channels=channels, out_channels=channels, num_downs=5, ngf=4, dropout=True)))
    normalization = {"source": UINT16, "target": UINT16} if sixteen_bit else None
    save_checkpoint(path, generator_state(generator, "AtoB", 32, normalization=normalization))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api")
    return {"rgb": save_model(root / "rgb.pt"), "gray16": save_model(root / "gray16.pt", 1, True)}


def noise(shape: tuple, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, shape, dtype=dtype)


def translated_file(cli, checkpoint: Path, source: Path, out: Path, *options) -> np.ndarray:
    r = cli("translate", "-c", checkpoint, source, out, *options)
    assert r.exit_code == 0, r.stderr
    return read_raster(out).pixels


@pytest.mark.parametrize("options,call", [
    (["--eval-mode"], {"mode": "eval"}),
    (["--seed", "3"], {"mode": "paper", "seed": 3}),
])
def test_a_pil_image_gives_the_pixels_of_translate(cli, models, tmp_path, options, call):
    source = tmp_path / "in.png"
    Image.fromarray(noise((40, 56, 3))).save(source)
    expected = translated_file(cli, models["rgb"], source, tmp_path / "out.png", *options)
    model = p2p.load(models["rgb"], device="cpu")
    with Image.open(source) as image:
        output = model(image, **call)
    assert isinstance(output, Image.Image) and output.size == (56, 40)
    assert np.array_equal(np.asarray(output), expected[:, :, :3])


def test_a_uint16_array_gives_the_pixels_of_translate(cli, models, tmp_path):
    pixels = noise((24, 40), np.uint16)
    np.save(tmp_path / "in.npy", pixels)
    expected = translated_file(cli, models["gray16"], tmp_path / "in.npy", tmp_path / "out.npy",
                               "--seed", "5")
    model = p2p.load(models["gray16"], device="cpu")
    assert model.depth == "uint16" and model.channels == (1, 1) and model.size == (32, 32)
    output = model(pixels, seed=5)
    assert output.dtype == np.uint16 and np.array_equal(output, expected)
    assert np.array_equal(model(pixels[:, :, None], seed=5), expected)  # H x W x 1 as well


def test_a_list_gives_a_list_batched_as_translate_batches_a_folder(cli, models, tmp_path):
    (tmp_path / "in").mkdir()
    arrays = [noise((32, 32, 3), seed=i) for i in range(5)]
    for i, array in enumerate(arrays):
        np.save(tmp_path / "in" / f"{i}.npy", array)
    r = cli("translate", "-c", models["rgb"], tmp_path / "in", tmp_path / "out", "--seed", "7")
    assert r.exit_code == 0, r.stderr
    outputs = p2p.load(models["rgb"], device="cpu")(arrays, seed=7)
    assert isinstance(outputs, list) and len(outputs) == 5
    for i, output in enumerate(outputs):
        assert np.array_equal(output, np.load(tmp_path / "out" / f"{i}.npy"))


def test_tensors_stay_in_minus_one_to_one_and_match_arrays(models):
    model = p2p.load(models["rgb"], device="cpu")
    pixels = noise((3, 32, 48)).astype(np.float32) / 127.5 - 1
    batch = torch.from_numpy(np.stack([pixels, pixels[:, :, ::-1].copy()]))
    output = model(batch, mode="eval")
    assert output.shape == (2, 3, 32, 48) and output.dtype == torch.float32
    assert output.min() >= -1 and output.max() <= 1
    single = model(batch[1], mode="eval")
    assert torch.equal(single, output[1])  # each image of a batch as if alone (eval mode)
    with pytest.raises(P2PError, match="float32 values, but the model was trained on uint8"):
        model(pixels.transpose(1, 2, 0), mode="eval")  # as a float .npy file is refused


def test_model_translate_writes_what_the_cli_writes(cli, models, tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(3):
        Image.fromarray(noise((32, 40, 3), seed=i)).save(tmp_path / "in" / f"{i}.png")
    model = p2p.load(models["rgb"], device="cpu")
    report = model.translate(tmp_path / "in", tmp_path / "api", paper_mode=False)
    assert report.translated == 3 and not report.bad and not report.existing
    cli("translate", "-c", models["rgb"], tmp_path / "in", tmp_path / "cli", "--eval-mode")
    for i in range(3):
        assert (tmp_path / "api" / f"{i}.png").read_bytes() == \
            (tmp_path / "cli" / f"{i}.png").read_bytes()
    again = model.translate(tmp_path / "in", tmp_path / "api", paper_mode=False)
    assert again.translated == 0 and len(again.existing) == 3


def test_load_takes_run_directories_and_names_what_it_cannot_find(models, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.pt").write_bytes(models["rgb"].read_bytes())
    model = p2p.load(f"{run}@latest", device="cpu", precision="fp32")
    assert model.source == f"{run}@latest" and model.precision == "fp32"
    assert model.sha256 == p2p.load(models["rgb"], device="cpu").sha256
    with pytest.raises(P2PError, match="unknown zoo model"):
        p2p.load("no-such-model")
    for missing in ("missing.pt", "runs/missing", f"{tmp_path}/missing@best"):
        with pytest.raises(P2PError, match="no such checkpoint file or run directory"):
            p2p.load(missing)
    with pytest.raises(P2PError, match="unknown test-time mode"):
        model(np.zeros((8, 8, 3), np.uint8), mode="train")
    with pytest.raises(P2PError, match="the model reads"):
        model(torch.zeros(1, 8, 8))


def test_import_p2p_imports_no_torch():
    code = "import sys, p2p; print('torch' in sys.modules, callable(p2p.load))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr


def tiny_recipe(data: Path) -> dict:
    return {"name": "tiny", "data": {"path": str(data), "load_size": 36, "crop_size": 32},
            "model": {"num_downs": 5, "ngf": 4, "ndf": 4},
            "train": {"iters": 2, "log_every": 1, "sample_every": 2, "checkpoint_every": 2,
                      "keep_checkpoints": 3}}


def test_train_then_read_the_run_and_resume_it(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(noise((32, 64, 3), seed=i)).save(tmp_path / "data" / "train" / f"{i}.png")
    records = []
    run = p2p.train(tiny_recipe(tmp_path / "data"), out=tmp_path / "run",
                    progress=records.append)
    assert isinstance(run, p2p.Run) and run.path == tmp_path / "run"
    assert [r["iteration"] for r in records] == [1, 2] == [r["iteration"] for r in run.log]
    assert run.history == [2] and run.metrics is None and run.best is None
    assert run.recipe.train.iters == 2 and run.checkpoint() == run.checkpoint("latest")
    model = run.load("latest", device="cpu")
    image = noise((32, 32, 3))
    assert np.array_equal(model(image, mode="eval"),
                          p2p.load(run.checkpoint(2), device="cpu")(image, mode="eval"))

    resumed = p2p.train(None, out=run.path, resume=True, overrides={"train.iters": 3})
    assert resumed.history == [2, 3] and resumed.log[-1]["iteration"] == 3
    with pytest.raises(P2PError, match="keeps its recipe"):
        p2p.train(None, out=run.path, resume=True, overrides={"train.lr": 1e-3})
    with pytest.raises(P2PError, match="already has a checkpoint"):
        p2p.train(tiny_recipe(tmp_path / "data"), out=run.path)
    with pytest.raises(P2PError, match="not a run directory"):
        p2p.Run(tmp_path / "data")


def test_metrics_give_the_numbers_eval_prints(cli, weights, tmp_path):
    import json

    from p2p_testing import write_images

    real = write_images(tmp_path / "real", 10, seed=1)
    fake = write_images(tmp_path / "fake", 10, seed=2)
    printed = json.loads(cli("eval", "fid", real, fake, "--weights", weights, "--json").out)
    result = p2p.metrics.fid(real, fake, weights=weights)
    assert (result.fid, result.n_real, result.n_fake) == (printed["fid"], printed["n_real"],
                                                          printed["n_fake"])
    printed = json.loads(cli("eval", "is", fake, "--splits", 2, "--weights", weights,
                             "--json").out)
    result = p2p.metrics.inception_score(fake, splits=2, weights=weights)
    assert (result.inception_score, result.std, result.n) == (printed["is"], printed["is_std"],
                                                             printed["n"])
    printed = json.loads(cli("eval", "pairs", real, fake, "--json").out)
    result = p2p.metrics.pairs(real, fake)
    assert {"l1": result.l1, "psnr": result.psnr, "ssim": result.ssim, "n": result.n} == printed
    saved = p2p.metrics.fid_statistics(real, tmp_path / "real.npz", weights=weights)
    assert saved.n == 10 and p2p.metrics.fid(tmp_path / "real.npz", fake,
                                             weights=weights).fid == pytest.approx(
        p2p.metrics.fid(real, fake, weights=weights).fid, abs=1e-9)

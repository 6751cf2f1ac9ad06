"""LPIPS v0.1 with AlexNet (issue 25): the numbers of the ``lpips`` package's
``LPIPS(net='alex')`` for the same backbone weights, through ``p2p eval pairs --lpips`` and
validation during training (``train.val_lpips``, ``train.best_metric: lpips``).

The backbone weights here are seeded random ones in torchvision's file layout; the package's
linear heads are its own v0.1 weights, shipped in its wheel."""

import dataclasses
import hashlib
import importlib.util
import json
import shutil
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import skip_or_fail
from p2p_testing import seed_convolutions
from PIL import Image
from torchvision.models import alexnet

from p2p.errors import P2PError
from p2p.metrics import backbones, perceptual
from p2p.weights import checkpoint as ckpt


@pytest.fixture(scope="module", autouse=True)
def lpips_installed() -> None:
    if importlib.util.find_spec("lpips") is None:
        skip_or_fail('the lpips extra is not installed: pip install -e ".[lpips]"', "CI")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """AlexNet's convolutions with seeded random weights, and a torchvision-layout file of them
    (``features.*``; the classifier is not needed)."""
    with torch.device("meta"):
        features = alexnet().features
    features = features.to_empty(device="cpu")
    seed_convolutions(features)
    path = tmp_path_factory.mktemp("alexnet") / backbones.ALEXNET_WEIGHTS.filename
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return features, path


@pytest.fixture(scope="module")
def reference(backbone):
    """The package's ``LPIPS(net='alex')`` with the same backbone weights: built with a random
    backbone (so that it downloads nothing), whose layers then get the weights of the layer of
    the same index of AlexNet's features."""
    import lpips

    features, _ = backbone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    for part in network.net.children():
        for index, layer in part.named_children():
            layer.load_state_dict(features[int(index)].state_dict())
    return network.eval()


@pytest.fixture(scope="module")
def ours(backbone):
    return perceptual.lpips_network(backbone[1])


def reference_distances(reference, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """8-bit batches scaled to [-1, 1] as the package's README does (x / 127.5 - 1)."""
    with torch.no_grad():
        return reference(x.float() / 127.5 - 1, y.float() / 127.5 - 1).flatten()


def test_lpips_equals_the_lpips_package_for_the_same_backbone(ours, reference):
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 64, 48, generator=generator) * 2 - 1
    y = (x + 0.3 * torch.randn(3, 3, 64, 48, generator=generator)).clamp(-1, 1)
    with torch.no_grad():
        expected = reference(x, y).flatten()
        torch.testing.assert_close(ours(x, y).flatten(), expected, rtol=0, atol=1e-4)
    assert expected.min() > 0.01  # a real distance, not a degenerate zero
    # On 8-bit images, gray ones read as three equal channels.
    a = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=generator)
    b = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=generator)
    torch.testing.assert_close(perceptual.distance(ours, a, b, (0, 255)),
                               reference_distances(reference, a, b).double(), rtol=0, atol=1e-4)
    torch.testing.assert_close(
        perceptual.distance(ours, a[:, :1], b[:, :1], (0, 255)),
        reference_distances(reference, a[:, :1].expand(-1, 3, -1, -1),
                            b[:, :1].expand(-1, 3, -1, -1)).double(), rtol=0, atol=1e-4)


def test_what_lpips_cannot_compare_is_refused(ours):
    with pytest.raises(P2PError, match="LPIPS compares RGB or gray images, not 4-channel"):
        perceptual.distance(ours, torch.zeros(1, 4, 40, 40), torch.zeros(1, 4, 40, 40), (0, 1))
    with pytest.raises(P2PError, match="at least 31x31 pixels, got 40x30"):
        perceptual.distance(ours, torch.zeros(1, 3, 30, 40), torch.zeros(1, 3, 30, 40), (0, 1))


def test_the_alexnet_weights_are_torchvisions_file_downloaded_and_verified(
        backbone, http_server, monkeypatch, p2p_home):
    # torchvision names its files with the first 8 hex digits of their sha256 and checks them.
    spec = backbones.ALEXNET_WEIGHTS
    assert spec.url == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert (spec.filename, spec.sha256) == ("alexnet-owt-7be5be79.pth", "7be5be79")
    body = backbone[1].read_bytes()
    http_server.add("/alexnet.pth", body)
    monkeypatch.setattr(perceptual, "ALEXNET_WEIGHTS", dataclasses.replace(
        spec, url=f"{http_server.url}/alexnet.pth", sha256=hashlib.sha256(body).hexdigest()[:8]))
    perceptual.lpips_network()
    assert (p2p_home / "weights" / spec.filename).read_bytes() == body


def write_pairs(folder, seed: int, like=None) -> list[np.ndarray]:
    """Three 48x40 RGB PNGs (or noisy versions of ``like``)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    images = []
    for i in range(3):
        if like is None:
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        else:
            pixels = np.clip(like[i] + rng.integers(-40, 40, like[i].shape), 0, 255)
        images.append(pixels.astype(np.uint8))
        Image.fromarray(images[-1]).save(folder / f"{i}.png")
    return images


def test_eval_pairs_lpips_adds_it_to_the_json_and_the_table(cli, backbone, reference, tmp_path,
                                                          monkeypatch):
    real = write_pairs(tmp_path / "real", 0)
    fake = write_pairs(tmp_path / "fake", 1, like=real)
    expected = float(reference_distances(
        reference, torch.from_numpy(np.stack(real)).permute(0, 3, 1, 2),
        torch.from_numpy(np.stack(fake)).permute(0, 3, 1, 2)).mean())
    folder = backbone[1].parent
    r = cli("eval", "pairs", tmp_path / "real", tmp_path / "fake", "--lpips", "--weights", folder,
            "--json")
    assert r.exit_code == 0, r.stderr
    values = json.loads(r.out)
    assert list(values) == ["l1", "psnr", "ssim", "lpips", "n"] and values["n"] == 3
    assert values["lpips"] == pytest.approx(expected, abs=1e-4)

    (tmp_path / "p2p_home" / "weights").mkdir(parents=True)  # the default place, as a table
    shutil.copy(backbone[1], tmp_path / "p2p_home" / "weights")
    monkeypatch.setenv("COLUMNS", "200")
    r = cli("eval", "pairs", tmp_path / "real", tmp_path / "fake", "--lpips")
    assert r.exit_code == 0, r.stderr
    header, *rows = [line for line in r.out.splitlines() if "│" in line or "┃" in line]
    assert "lpips" in header and f"{values['lpips']:.4f}" in rows[0]

    r = cli("eval", "pairs", tmp_path / "real", tmp_path / "fake", "--json")  # not asked: none
    assert list(json.loads(r.out)) == ["l1", "psnr", "ssim", "n"]
    r = cli("eval", "pairs", tmp_path / "real", tmp_path / "fake", "--weights", folder)
    assert r.exit_code == 2 and "--weights names the AlexNet weights of --lpips" in r.stderr


def test_without_the_package_the_error_names_the_extra(cli, tmp_path, monkeypatch):
    write_pairs(tmp_path / "real", 0)
    monkeypatch.setitem(sys.modules, "lpips", None)  # as if the extra were not installed
    r = cli("eval", "pairs", tmp_path / "real", tmp_path / "real", "--lpips")
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ('error: LPIPS needs the lpips package '
                                '(pip install "p2p-pix2pix[lpips]")')


RECIPE = """
name: tiny
data: {{path: {data}, load_size: 36, crop_size: 32, batch_size: 2}}
model: {{num_downs: 5, ngf: 4, ndf: 4}}
train: {{iters: 4, log_every: 2, sample_every: 100, checkpoint_every: 2, val_every: 1{train}}}
"""


def test_validation_scores_lpips_and_keeps_the_best_checkpoint_by_it(cli, backbone, tmp_path,
                                                                    p2p_home):
    from p2p.data.synthetic import make_pair

    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        (tmp_path / "data" / split).mkdir(parents=True)
        for i in range(count):
            make_pair(rng, size=32).save(tmp_path / "data" / split / f"{i}.png")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=tmp_path / "data",
                                    train=", val_lpips: true, best_metric: lpips"))
    (p2p_home / "weights").mkdir(parents=True)
    shutil.copy(backbone[1], p2p_home / "weights")
    r = cli("train", recipe, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text()
               .splitlines() if "val_l1" in line]
    assert [rec["iteration"] for rec in records] == [1, 2, 3, 4]
    assert all(0 < rec["val_lpips"] < 2 for rec in records)
    best = ckpt.best_metrics(tmp_path / "run")
    assert best["metric"] == "lpips"
    lowest = min(records, key=lambda rec: rec["val_lpips"])
    assert best["iteration"] == lowest["iteration"]
    assert best["metrics"]["lpips"] == pytest.approx(lowest["val_lpips"], abs=1e-6)
    assert "lpips" in r.stderr  # the validation lines name it

    recipe.write_text(RECIPE.format(data=tmp_path / "data", train=", best_metric: lpips"))
    r = cli("train", recipe, "--out", tmp_path / "other")
    assert r.exit_code == 2
    assert "train.best_metric lpips needs train.val_lpips: true" in r.stderr

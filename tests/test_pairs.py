"""L1 / PSNR / SSIM of image pairs (p2p.metrics.similarity) and `p2p eval pairs`."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from p2p.errors import P2PError
from p2p.metrics import similarity

skimage_metrics = pytest.importorskip("skimage.metrics")


def reference_ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """scikit-image's SSIM with Wang et al.'s settings, on (C, H, W) arrays."""
    return skimage_metrics.structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=data_range, channel_axis=0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), channels=st.sampled_from([1, 3]),
       height=st.integers(11, 40), width=st.integers(11, 40), bits=st.sampled_from([8, 16]),
       noise=st.floats(0.0, 1.0))
def test_ssim_psnr_l1_match_scikit_image_and_numpy(seed, channels, height, width, bits, noise):
    rng = np.random.default_rng(seed)
    top = 2**bits - 1
    x = rng.integers(0, top + 1, (channels, height, width))
    # y: x plus noise of a random strength, so SSIM spans its range, not only ~0.
    y = np.clip(x + rng.normal(0, noise * top / 4, x.shape), 0, top).round()
    dtype, torch_dtype = (np.uint8, torch.uint8) if bits == 8 else (np.uint16, torch.uint16)
    x, y = x.astype(dtype), y.astype(dtype)
    tx, ty = torch.from_numpy(x)[None], torch.from_numpy(y)[None]
    assert tx.dtype == torch_dtype
    data_range = similarity.data_range_of(tx.dtype)
    assert data_range == top
    ours = similarity.all_metrics(tx, ty, data_range)
    assert ours["ssim"].item() == pytest.approx(reference_ssim(x, y, top), abs=1e-4)
    diff = x.astype(np.float64) - y
    assert ours["l1"].item() == pytest.approx(np.abs(diff).mean() / top, abs=1e-12)
    mse = (diff**2).mean()
    expected_psnr = np.inf if mse == 0 else 10 * np.log10(top**2 / mse)
    assert ours["psnr"].item() == pytest.approx(expected_psnr)


def test_per_image_values_in_a_batch_equal_each_image_alone():
    rng = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 24, 20), generator=rng, dtype=torch.uint8)
    y = torch.randint(0, 256, (3, 3, 24, 20), generator=rng, dtype=torch.uint8)
    batch = similarity.all_metrics(x, y, 255)
    for i in range(3):
        alone = similarity.all_metrics(x[i:i + 1], y[i:i + 1], 255)
        for key in batch:
            assert batch[key][i].item() == pytest.approx(alone[key].item(), abs=1e-12)
    assert similarity.ssim(x, x, 255).tolist() == pytest.approx([1.0] * 3)
    assert torch.isinf(similarity.psnr(x, x, 255)).all()


def test_too_small_and_unknown_types_are_errors():
    with pytest.raises(P2PError, match="at least 11x11"):
        similarity.ssim(torch.zeros(1, 1, 10, 30), torch.zeros(1, 1, 10, 30), 255)
    with pytest.raises(P2PError, match="no known data range"):
        similarity.data_range_of(torch.float32)


def _write(folder, name, array):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_eval_pairs_matches_names_scores_means_and_lists_the_unmatched(cli, tmp_path):
    rng = np.random.default_rng(1)
    real, fake = tmp_path / "real", tmp_path / "fake"
    images = {}
    for name in ("a", "sub/b", "c"):
        x = rng.integers(0, 256, (16, 18, 3), dtype=np.uint8)
        y = np.clip(x.astype(int) + rng.integers(-40, 41, x.shape), 0, 255).astype(np.uint8)
        images[name] = (x, y)
        _write(real, f"{name}.png", x)
        _write(fake, f"{name}.png" if name != "c" else "c.bmp", y)  # extensions may differ
    _write(real, "only_real.png", images["a"][0])
    _write(fake, "sub/only_fake.png", images["a"][1])

    r = cli("eval", "pairs", real, fake, "--json")
    assert r.exit_code == 1, r.stderr  # unmatched names: scored, but not a clean result
    result = json.loads(r.out)
    assert result["n"] == 3
    per_image = [similarity.all_metrics(torch.from_numpy(x).permute(2, 0, 1)[None],
                                   torch.from_numpy(y).permute(2, 0, 1)[None], 255)
                 for x, y in images.values()]
    for key in ("l1", "psnr", "ssim"):
        assert result[key] == pytest.approx(np.mean([float(s[key]) for s in per_image]))
    assert result["ssim"] == pytest.approx(np.mean([
        reference_ssim(x.transpose(2, 0, 1), y.transpose(2, 0, 1), 255)
        for x, y in images.values()]), abs=1e-4)
    assert "only in" in r.stderr and "only_real" in r.stderr and "sub/only_fake" in r.stderr
    assert "2 unmatched" in r.stderr

    (real / "only_real.png").unlink()
    (fake / "sub" / "only_fake.png").unlink()
    table = cli("eval", "pairs", real, fake)
    assert table.exit_code == 0 and "psnr" in table.out and "ssim" in table.out


def test_eval_pairs_user_errors_are_one_line(cli, tmp_path):
    real, fake = tmp_path / "real", tmp_path / "fake"
    _write(real, "a.png", np.zeros((16, 16, 3), np.uint8))
    _write(fake, "a.png", np.zeros((32, 16, 3), np.uint8))
    r = cli("eval", "pairs", real, fake)
    assert r.exit_code == 2 and "16x32 pixels" in r.stderr and "is 16x16" in r.stderr
    _write(fake, "a.png", np.zeros((16, 16, 3), np.uint8))
    _write(fake, "a.jpg", np.zeros((16, 16, 3), np.uint8))
    r = cli("eval", "pairs", real, fake)
    assert r.exit_code == 2 and "same name" in r.stderr
    r = cli("eval", "pairs", real, tmp_path / "nowhere")
    assert r.exit_code == 2 and "not a folder" in r.stderr


def test_eval_pairs_on_unsplit_pairs_names_the_fix_and_the_fix_works(cli, tmp_path):
    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2))
    pairs, fake = tmp_path / "pairs", tmp_path / "fake"
    _write(pairs, "x.png", np.concatenate([a, b], axis=1))  # A|B, as the datasets come
    _write(fake, "x.png", b)
    r = cli("eval", "pairs", pairs, fake)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "look like A|B pairs" in r.stderr and "p2p data unpair" in r.stderr

    assert cli("data", "unpair", pairs, tmp_path / "halves").exit_code == 0  # the named fix
    r = cli("eval", "pairs", tmp_path / "halves" / "B", fake, "--json")
    assert r.exit_code == 0 and json.loads(r.out)["l1"] == 0.0

    r = cli("eval", "pairs", tmp_path / "halves" / "B", pairs)  # unsplit inputs translated
    assert r.exit_code == 2 and "--paired" in r.stderr


def test_eval_pairs_of_16_bit_files_uses_their_data_range(cli, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 65536, (20, 24), dtype=np.uint16)
    y = np.clip(x.astype(np.int64) + rng.integers(-3000, 3001, x.shape), 0, 65535).astype(np.uint16)
    for folder, array in (("real", x), ("fake", y)):
        (tmp_path / folder).mkdir()
        Image.fromarray(array).save(tmp_path / folder / "a.png")  # a 16-bit gray PNG
    r = cli("eval", "pairs", tmp_path / "real", tmp_path / "fake", "--json")
    assert r.exit_code == 0, r.stderr
    expected = similarity.all_metrics(torch.from_numpy(x)[None, None],
                                      torch.from_numpy(y)[None, None], 65535)
    result = json.loads(r.out)
    for key in ("l1", "psnr", "ssim"):
        assert result[key] == pytest.approx(float(expected[key]), rel=1e-12), key
    assert result["ssim"] == pytest.approx(reference_ssim(x[None], y[None], 65535), abs=1e-4)

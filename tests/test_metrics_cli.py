"""``p2p eval fid|is|stats`` through the real entry point, with seeded random Inception weights.

FID between image folders needs scipy's sqrtm of a 2048x2048 matrix (tens of seconds on 2
cores for the rank-deficient covariances of a few images), so the CLI's FID is tested with small
statistics files, and the folder path (cache, counts) with the distance recorded instead.
"""

import json

import numpy as np
import pytest
from p2p_testing import write_images

from p2p.metrics import frechet
from p2p.metrics.features import Settings


def test_fid_between_statistics_files_prints_exactly_the_documented_json(cli, tmp_path):
    rng = np.random.default_rng(0)
    real = frechet.statistics(rng.standard_normal((40, 6)))
    fake = frechet.statistics(rng.standard_normal((30, 6)) + 0.5)
    frechet.save_statistics(real, tmp_path / "real.npz")
    frechet.save_statistics(fake, tmp_path / "fake.npz")
    r = cli("eval", "fid", tmp_path / "real.npz", tmp_path / "fake.npz", "--json")
    assert r.exit_code == 0, r.stderr
    values = json.loads(r.out)
    assert list(values) == ["fid", "n_real", "n_fake"]
    assert values["fid"] == pytest.approx(frechet.frechet_distance(real, fake), rel=1e-12)
    assert (values["n_real"], values["n_fake"]) == (40, 30)
    table = cli("eval", "fid", tmp_path / "real.npz", tmp_path / "fake.npz")
    assert table.exit_code == 0 and "FID" in table.out and f"{values['fid']:.4f}" in table.out


def test_stats_writes_the_file_and_fills_the_cache(cli, tmp_path, weights, p2p_home):
    folder = write_images(tmp_path / "real", 3)
    r = cli("eval", "stats", folder, tmp_path / "real.npz", "--weights", weights, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.out) == {"n": 3, "out": str(tmp_path / "real.npz")}
    stats = frechet.load_statistics(tmp_path / "real.npz")
    assert stats.mu.shape == (2048,) and stats.sigma.shape == (2048, 2048) and stats.n == 3
    cached = list((p2p_home / "fid-stats").glob("*.npz"))
    assert len(cached) == 1
    assert np.array_equal(frechet.load_statistics(cached[0]).sigma, stats.sigma)


def test_is_prints_exactly_the_documented_json(cli, tmp_path, weights):
    folder = write_images(tmp_path / "fake", 4, size=(32, 32))
    r = cli("eval", "is", folder, "--splits", "2", "--weights", weights, "--json")
    assert r.exit_code == 0, r.stderr
    values = json.loads(r.out)
    assert list(values) == ["is", "is_std", "n"]
    assert values["n"] == 4 and values["is"] >= 1.0 and values["is_std"] >= 0.0
    too_few = cli("eval", "is", folder, "--weights", weights)  # 10 splits of 4 images
    assert too_few.exit_code == 2 and "fewer --splits" in too_few.stderr


def test_real_folder_statistics_are_computed_once(tmp_path, weights, monkeypatch, p2p_home):
    real = write_images(tmp_path / "real", 3, seed=1)
    fake = write_images(tmp_path / "fake", 2, seed=2, ext="jpg")
    seen = []
    monkeypatch.setattr(frechet, "frechet_distance", lambda r, f: seen.append((r, f)) or 1.5)
    passes = []
    settings = Settings(batch_size=2)

    def run():
        progress = []
        result = frechet.compute_fid(real, fake, settings, weights,
                                 progress=lambda *done_total: progress.append(done_total))
        passes.append(progress)
        return result

    assert run() == frechet.FidResult(1.5, 3, 2)
    assert passes[0][-1] == (5, 5)
    (p2p_home / "fid-stats").joinpath("unrelated.txt").write_text("")
    assert run() == frechet.FidResult(1.5, 3, 2)
    assert passes[1][0] == (3, 5) and passes[1][-1] == (5, 5)  # the real 3 came from the cache
    assert np.array_equal(seen[0][0].sigma, seen[1][0].sigma)
    assert len(list((p2p_home / "fid-stats").glob("*.npz"))) == 1
    (real / "001.png").write_bytes((real / "000.png").read_bytes())  # contents changed
    run()
    assert len(list((p2p_home / "fid-stats").glob("*.npz"))) == 2


def test_user_errors_are_one_line_and_exit_2(cli, tmp_path, weights):
    r = cli("eval", "fid", tmp_path / "missing", tmp_path / "also_missing.npz")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "also_missing.npz" in r.stderr or "missing" in r.stderr
    (tmp_path / "one").mkdir()
    write_images(tmp_path / "one", 1)
    r = cli("eval", "stats", tmp_path / "one", tmp_path / "out.npz", "--weights", weights)
    assert r.exit_code == 2 and "at least 2" in r.stderr and not (tmp_path / "out.npz").exists()
    r = cli("eval", "stats", tmp_path / "one", tmp_path / "out.npz", "--weights",
            tmp_path / "no_weights_here")
    assert r.exit_code == 2 and "6726825d" in r.stderr

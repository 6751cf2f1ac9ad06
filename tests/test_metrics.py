"""FID and IS: network structure, the formulas against references, preprocessing, weights.

No real Inception weights exist here: networks get seeded random weights of the right structure.
Inception at 299x299 costs about a second per image on 2 cores, so only a handful of images run.
"""

import hashlib
import io
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from p2p_testing import random_fid_network, write_images
from PIL import Image
from scipy.stats import entropy

from p2p.errors import P2PError
from p2p.images.eight_bit import to_uint8
from p2p.metrics import class_scores, frechet, inception
from p2p.metrics.features import Settings, Tally, network_outputs, preprocessed_batches


def state_bytes(network: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    return buffer.getvalue()


# ---- structure -------------------------------------------------------------------------------

def test_fid_network_has_exactly_the_published_keys_and_shapes(shared):
    name = inception.FID_WEIGHTS.filename.removesuffix(".pth")
    listing = json.loads((shared / "inception" / f"{name}.keys.json").read_text())
    expected = {k: (v["dtype"], v["shape"]) for k, v in listing["tensors"].items()}
    ours = {k: (str(v.dtype).removeprefix("torch."), list(v.shape))
            for k, v in inception.FIDInception().state_dict().items()}
    assert len(expected) == listing["n_tensors"] == 566
    assert ours == expected


def test_is_network_is_torchvisions_published_layout():
    import torchvision

    reference = torchvision.models.inception_v3(weights=None, aux_logits=True,
                                                transform_input=False, init_weights=False)
    ours = inception.is_network()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()}
    assert not ours.transform_input and ours.fc.out_features == 1000


@pytest.fixture(scope="module")
def network() -> inception.FIDInception:
    return random_fid_network()


def test_fid_network_resizes_bilinearly_to_299_inside(network):
    x = torch.rand(1, 3, 64, 80) * 2 - 1
    resized = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear",
                                              align_corners=False)
    with torch.inference_mode():
        features = network(x)
        assert features.shape == (1, 2048)
        assert torch.equal(features, network(resized))


# ---- FID formula -----------------------------------------------------------------------------

def reference_fid(mu1, sigma1, mu2, sigma2) -> float:
    """An independent route: tr sqrt(S1 S2) = sum of the square roots of its eigenvalues."""
    eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).real.clip(min=0)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
                 - 2 * np.sqrt(eigenvalues).sum())


@pytest.mark.slow
def test_fid_of_unit_gaussians_one_apart_in_2048_dimensions_is_2048():
    identity = np.eye(2048)
    zero = frechet.Statistics(np.zeros(2048), identity, None)
    one = frechet.Statistics(np.ones(2048), identity, None)
    assert frechet.frechet_distance(zero, one) == pytest.approx(2048, rel=1e-9)


def test_fid_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    stats = frechet.statistics(rng.standard_normal((300, 32)) @ rng.standard_normal((32, 32)))
    assert abs(frechet.frechet_distance(stats, stats)) < 1e-8


@settings(max_examples=15, deadline=None)
@given(dim=st.integers(1, 12), n=st.integers(20, 60), seed=st.integers(0, 2**31),
       shift=st.floats(-3, 3))
def test_fid_matches_a_numpy_reference(dim, n, seed, shift):
    rng = np.random.default_rng(seed)
    a = frechet.statistics(rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)))
    b = frechet.statistics(rng.standard_normal((n, dim)) * rng.uniform(0.5, 2, dim) + shift)
    expected = reference_fid(a.mu, a.sigma, b.mu, b.sigma)
    assert frechet.frechet_distance(a, b) == pytest.approx(expected, rel=1e-7, abs=1e-7)


def exact_trace_sqrt_product(features1: np.ndarray, features2: np.ndarray) -> float:
    """tr(sqrtm(S1 S2)) from the features themselves: with S = A^T A (A the centred features
    over sqrt(n - 1)), the non-zero eigenvalues of S1 S2 are the squared singular values of the
    small n1 x n2 matrix A1 A2^T, so the trace is its nuclear norm, free of the ~2000 rounded
    zeros of the D x D route."""
    def scaled(x):
        return (x - x.mean(0)) / np.sqrt(len(x) - 1)
    return float(np.linalg.svd(scaled(features1) @ scaled(features2).T, compute_uv=False).sum())


def pool_like_features(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Non-negative, correlated features (ReLU of a low-rank mix), like Inception's pool."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(0).standard_normal((48, dim))
    return np.maximum(rng.standard_normal((n, 48)) @ mix + shift, 0)


def fid_from_trace(a: frechet.Statistics, b: frechet.Statistics, trace: float) -> float:
    return float(np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace)


def assert_matches_exact_and_scipy(real_features: np.ndarray, fake_features: np.ndarray):
    """p2p's FID equals the one from the exact trace (to 1e-9) and scipy's route (to 1e-6);
    returns the two statistics."""
    real, fake = frechet.statistics(real_features), frechet.statistics(fake_features)
    exact = fid_from_trace(real, fake, exact_trace_sqrt_product(fake_features, real_features))
    scipy_value = fid_from_trace(real, fake, frechet._trace_sqrtm_scipy(fake.sigma, real.sigma))
    value = frechet.frechet_distance(real, fake)
    assert value == pytest.approx(exact, rel=1e-9)
    assert value == pytest.approx(scipy_value, rel=1e-6)
    return real, fake


@pytest.mark.parametrize(("n_real", "n_fake", "dim"), [(106, 100, 384), (200, 106, 384),
                                                       (60, 30, 64), (300, 200, 64)])
def test_symmetric_route_matches_scipy_and_the_exact_trace(n_real, n_fake, dim):
    # Rank-deficient (fewer images than dimensions, as every FID of the published table) and
    # full-rank covariances.
    real_features = pool_like_features(n_real, dim, seed=1)
    fake_features = pool_like_features(n_fake, dim, seed=2, shift=0.4)
    assert_matches_exact_and_scipy(real_features, fake_features)


@pytest.mark.slow
def test_symmetric_route_at_2048_dimensions_from_106_and_200_images():
    real_features = pool_like_features(200, 2048, seed=3)
    fake_features = pool_like_features(106, 2048, seed=4, shift=0.3)
    real, fake = assert_matches_exact_and_scipy(real_features, fake_features)
    # The route's own rounding: ~2000 zero eigenvalues whose square roots are not summed.
    assert frechet._trace_sqrt_product(fake.sigma, real.sigma) == pytest.approx(
        exact_trace_sqrt_product(fake_features, real_features), rel=1e-11)


@pytest.mark.parametrize("damage", ["asymmetric", "negative", "nan"])
def test_statistics_that_are_not_covariances_take_scipys_route(damage, monkeypatch):
    rng = np.random.default_rng(5)
    real = frechet.statistics(rng.standard_normal((40, 6)))
    sigma = frechet.statistics(rng.standard_normal((40, 6)) + 1).sigma.copy()
    if damage == "asymmetric":
        sigma[0, 1] += 0.1
    elif damage == "negative":
        sigma -= 2 * np.linalg.eigvalsh(sigma)[-1] * np.eye(6) * 0.01 + np.diag([5, 0, 0, 0, 0, 0])
    else:
        sigma[2, 2] = np.nan
    assert frechet._trace_sqrt_product(sigma, real.sigma) is None
    calls = []
    monkeypatch.setattr(frechet, "_trace_sqrtm_scipy", lambda s1, s2: calls.append(s1) or 1.0)
    frechet.frechet_distance(real, frechet.Statistics(np.zeros(6), sigma, None))
    frechet.frechet_distance(real, real)  # covariances: the symmetric route, scipy's is not called
    assert len(calls) == 1 and calls[0] is sigma


def test_statistics_are_float64_mean_and_unbiased_covariance():
    features = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32)
    stats = frechet.statistics(features)
    assert stats.mu.dtype == stats.sigma.dtype == np.float64 and stats.n == 10
    centred = features.astype(np.float64) - features.astype(np.float64).mean(0)
    np.testing.assert_allclose(stats.sigma, centred.T @ centred / 9, rtol=1e-12)
    with pytest.raises(P2PError, match="at least 2"):
        frechet.statistics(features[:1])


def test_a_large_imaginary_part_is_an_error_not_a_number():
    # Not a covariance (negative variance), as a damaged or hand-made statistics file could be.
    real = frechet.Statistics(np.zeros(2), np.diag([1.0, -1.0]), None)
    fake = frechet.Statistics(np.zeros(2), np.eye(2), None)
    with pytest.raises(P2PError, match="imaginary part"):
        frechet.frechet_distance(real, fake)


def test_statistics_of_different_dimensions_are_refused():
    with pytest.raises(P2PError, match="different dimensions"):
        frechet.frechet_distance(frechet.Statistics(np.zeros(2), np.eye(2), 5),
                             frechet.Statistics(np.zeros(3), np.eye(3), 5))


# ---- statistics files ------------------------------------------------------------------------

def test_statistics_files_round_trip_and_read_pytorch_fid_files(tmp_path):
    stats = frechet.statistics(np.random.default_rng(2).standard_normal((8, 3)))
    frechet.save_statistics(stats, tmp_path / "s.npz")
    loaded = frechet.load_statistics(tmp_path / "s.npz")
    assert loaded.n == 8 and np.array_equal(loaded.mu, stats.mu)
    assert np.array_equal(loaded.sigma, stats.sigma)
    np.savez(tmp_path / "pytorch_fid.npz", mu=stats.mu, sigma=stats.sigma)  # no n
    assert frechet.load_statistics(tmp_path / "pytorch_fid.npz").n is None


@pytest.mark.parametrize("content", [b"", b"not a zip", "pickle", "shapes", "no_sigma"])
def test_bad_statistics_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "bad.npz"
    if content == "pickle":
        np.savez(path, mu=np.array([object()], dtype=object), sigma=np.eye(1))
    elif content == "shapes":
        np.savez(path, mu=np.zeros(3), sigma=np.eye(2))
    elif content == "no_sigma":
        np.savez(path, mu=np.zeros(3))
    else:
        path.write_bytes(content)
    with pytest.raises(P2PError, match="bad.npz"):
        frechet.load_statistics(path)


# ---- Inception Score formula -----------------------------------------------------------------

def test_is_of_confident_and_evenly_spread_predictions_is_the_number_of_classes():
    probabilities = np.tile(np.eye(10), (10, 1))  # 100 images, each split sees all 10 classes
    assert class_scores.inception_score(probabilities, 10) == pytest.approx((10.0, 0.0))


def test_is_of_identical_predictions_is_one():
    probabilities = np.full((20, 1000), 1 / 1000)
    assert class_scores.inception_score(probabilities, 10) == pytest.approx((1.0, 0.0))


def test_106_images_make_10_splits_of_10_and_the_last_6_are_left_out():
    probabilities = np.tile(np.eye(10), (11, 1))[:106]
    probabilities[100:] = np.eye(10)[0]  # the 6 left over would lower the score if counted
    assert class_scores.inception_score(probabilities, 10) == pytest.approx((10.0, 0.0))
    # Splits of different quality: mean and ddof-0 std over the groups.
    mixed = np.concatenate([np.tile(np.eye(4), (1, 1)), np.full((4, 4), 0.25)])
    assert class_scores.inception_score(mixed, 2) == pytest.approx((2.5, 1.5))


@settings(max_examples=10, deadline=None)
@given(n=st.integers(10, 40), classes=st.integers(2, 30), splits=st.integers(1, 5),
       seed=st.integers(0, 2**31))
def test_is_matches_scipy_entropy_per_split(n, classes, splits, seed):
    logits = np.random.default_rng(seed).standard_normal((n, classes)) * 3
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    size = n // splits
    scores = []
    for k in range(splits):
        part = probabilities[k * size:(k + 1) * size]
        marginal = part.mean(0)
        scores.append(np.exp(np.mean([entropy(p, marginal) for p in part])))
    result = class_scores.inception_score(probabilities, splits)
    assert result == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-9, abs=1e-12)


def test_too_few_images_for_the_splits_is_an_error():
    with pytest.raises(P2PError, match="at least 10 images"):
        class_scores.inception_score(np.full((9, 3), 1 / 3), 10)


# ---- preprocessing ---------------------------------------------------------------------------

def test_is_input_is_pillow_bicubic_of_the_uint8_image_scaled_to_minus_one_one():
    image = torch.randint(0, 256, (3, 30, 50), dtype=torch.uint8)
    x = class_scores.is_input(image)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((299, 299), Image.BICUBIC)
    expected = (torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() - 127.5) / 127.5
    assert torch.equal(x, expected)


def test_float_outputs_are_truncated_not_rounded_before_is():
    value = 100.9 / 127.5 - 1  # (x + 1) * 127.5 = 100.9: truncation gives 100, rounding 101
    output = torch.full((3, 4, 4), value)
    assert to_uint8(output).unique().tolist() == [100]


def test_fid_input_scales_then_resizes_bilinearly():
    image = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8)
    expected = torch.nn.functional.interpolate(((image.float() - 127.5) / 127.5)[None],
                                               size=(299, 299), mode="bilinear")[0]
    assert torch.equal(frechet.fid_input(image), expected)


def test_features_do_not_depend_on_the_batch_size(tmp_path, network):
    files = sorted(write_images(tmp_path / "imgs", 5).iterdir())

    def features(batch_size: int) -> np.ndarray:
        settings_ = Settings(batch_size=batch_size, workers=2)
        batches = preprocessed_batches(files, lambda p: frechet.fid_input(
            torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)),
            settings_)
        tally = Tally(len(files), None)
        out = network_outputs(network, batches, settings_, tally)
        assert tally.done == 5
        return out

    one, five = features(1), features(5)
    assert one.shape == (5, 2048) and np.abs(one).mean() > 1e-3  # activations did not vanish
    np.testing.assert_allclose(features(2), one, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(five, one, rtol=1e-5, atol=1e-6)
    a, b = frechet.statistics(one), frechet.statistics(five)
    assert np.abs(a.mu - b.mu).max() <= 1e-6 * np.abs(a.mu).max()
    assert np.abs(a.sigma - b.sigma).max() <= 1e-6 * np.abs(a.sigma).max()


def test_a_corrupt_image_stops_the_pass_with_its_name(tmp_path, network):
    folder = write_images(tmp_path / "imgs", 3)
    (folder / "001.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(P2PError, match="001.png"):
        frechet.folder_statistics(folder, network, Settings(batch_size=2))


# ---- weights ---------------------------------------------------------------------------------

@pytest.fixture
def served_fid_weights(http_server, monkeypatch):
    """The FID weights' URL pointed at the local server, serving seeded random weights."""
    body = state_bytes(random_fid_network(1))
    route = http_server.add("/pt_inception.pth", body)
    spec = inception.WeightsFile("FID Inception weights", inception.FID_WEIGHTS.filename,
                                 f"{http_server.url}/pt_inception.pth",
                                 hashlib.sha256(body).hexdigest()[:8])
    monkeypatch.setattr(inception, "FID_WEIGHTS", spec)
    return route, spec


def test_missing_weights_are_downloaded_verified_and_then_reused(served_fid_weights, p2p_home):
    route, spec = served_fid_weights
    seen = []
    network = inception.fid_inception(progress=lambda done, total: seen.append((done, total)))
    assert (p2p_home / "weights" / spec.filename).is_file()
    assert seen and seen[-1][0] == seen[-1][1]
    expected = random_fid_network(1).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in network.state_dict().items())
    assert not network.training
    inception.fid_inception()
    assert route.hits == 1


def test_a_failed_download_names_the_url_the_checksum_and_where_to_put_the_file(
        http_server, monkeypatch, p2p_home):
    http_server.add("/gone.pth", status=404)
    spec = inception.WeightsFile("FID Inception weights", "pt.pth", f"{http_server.url}/gone.pth",
                                 "6726825d")
    monkeypatch.setattr(inception, "FID_WEIGHTS", spec)
    with pytest.raises(P2PError) as error:
        inception.fid_inception()
    text = str(error.value)
    assert spec.url in text and "6726825d" in text and str(p2p_home / "weights" / "pt.pth") in text
    assert "--weights" in text and "\n" not in text


def test_a_download_with_the_wrong_checksum_is_refused(served_fid_weights, monkeypatch):
    _, spec = served_fid_weights
    monkeypatch.setattr(inception, "FID_WEIGHTS",
                        inception.WeightsFile(spec.what, spec.filename, spec.url, "00000000"))
    with pytest.raises(P2PError, match="checksum"):
        inception.fid_inception()


def test_weights_given_as_a_file_or_a_folder(tmp_path):
    path = tmp_path / inception.FID_WEIGHTS.filename
    path.write_bytes(state_bytes(random_fid_network(2)))
    assert inception.locate_weights(inception.FID_WEIGHTS, path) == path
    assert inception.locate_weights(inception.FID_WEIGHTS, tmp_path) == path
    with pytest.raises(P2PError, match="sha256 begins with 6726825d"):
        inception.locate_weights(inception.FID_WEIGHTS, tmp_path / "nothing.pth")


def test_weights_of_another_network_are_refused_by_the_strict_load(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 4).state_dict(), path)
    with pytest.raises(P2PError, match="not the FID Inception weights"):
        inception.fid_inception(path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(state_bytes(torch.nn.Linear(3, 4))[:100])
    with pytest.raises(P2PError, match="truncated.pth"):
        inception.fid_inception(truncated)

"""Fréchet Inception Distance, as mmagic's TransFID computes it with inception_style='PyTorch'.

An image is scaled to [-1, 1] ((x - 127.5) / 127.5 for uint8; generator outputs as they are,
not rounded) and bilinearly resized to 299x299; its feature is the FID Inception's 2048-d pool.
Each set is summarised by the mean and the covariance (ddof=1) of its features, in float64, and

    FID = |mu_fake - mu_real|^2 + tr(S_fake) + tr(S_real) - 2 tr(sqrtm(S_fake S_real))

The published code takes scipy's sqrtm of the product (if that is not finite, 1e-6 I is added to
both covariances and it is tried again; an imaginary part is dropped only when the diagonal's is
below 1e-3). Only the trace is needed, and for covariances (symmetric, positive semi-definite)

    tr(sqrtm(S_fake S_real)) = sum of sqrt(eigenvalues of R S_real R),  R = sqrtm(S_fake)

a symmetric problem: one ``eigh`` of S_fake and one of a matrix as small as its rank, instead of
a Schur decomposition of a non-symmetric D x D matrix; faster (benchmarks/README.md) and more
accurate (the eigenvalues of a product of two PSD matrices are real and >= 0; scipy's Schur
route meets them as complex numbers near the many zeros that the covariances of fewer images
than dimensions have, which moved a FID of random-weight features by 2e-5 of its value).
Where the inputs are not covariances (a hand-made or damaged statistics file) or the
decomposition fails its checks (see ``_trace_sqrt_product``) scipy's route computes the value
as the published code does.

Statistics files are ``.npz`` with ``mu``, ``sigma`` (the names pytorch-fid uses, so its files
work here too) and ``n``. The statistics of real image folders are cached under
``$P2P_HOME/fid-stats/``, keyed by the images' names and bytes and by the network's weights.

Several processes (torchrun): each computes the features of its share of a folder (features.py)
and the float64 sums of x and x x^T over them; the sums are added over the processes and give mu
and sigma (``statistics_from_sums``), equal to one process's within float64 rounding (~1e-13
relative), with memory that does not grow with the images. The cache key is one process's:
the ranks hash their shares and rank 0 reads and writes the cache.
"""

import functools
import hashlib
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from p2p.distributed import from_main, gather, in_order, summed
from p2p.errors import P2PError
from p2p.images.files import list_images, open_file
from p2p.images.raster import read_8bit_image, read_npy_header
from p2p.metrics.features import (
    Item,
    Progress,
    Settings,
    Tally,
    network_outputs,
    preprocessed_batches,
)
from p2p.metrics.inception import (
    FEATURE_DIM,
    DownloadProgress,
    FIDInception,
    fid_inception,
    resize_bilinear,
)
from p2p.paths import atomic_path, home

STATISTICS_HINT = "expected a .npz with 'mu' and 'sigma', as 'p2p eval stats' writes"
SQRTM_EPS = 1e-6
MAX_IMAGINARY = 1e-3
# Part of every cache key: change it when the preprocessing changes.
CACHE_VERSION = b"p2p-fid-stats/1 uint8 (x-127.5)/127.5 bilinear-299 pool-2048"


@dataclass(frozen=True)
class Statistics:
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    n: int | None  # images summarised; None when a statistics file does not say


@dataclass(frozen=True)
class FidResult:
    fid: float
    n_real: int | None
    n_fake: int | None


def statistics(features: np.ndarray) -> Statistics:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise P2PError(f"FID needs the features of at least 2 images, got {len(features)}")
    sigma = np.atleast_2d(np.cov(features, rowvar=False))  # (1, 1), not a scalar, for D = 1
    return Statistics(features.mean(axis=0), sigma, len(features))


def statistics_from_sums(n: int, total: np.ndarray, outer: np.ndarray) -> Statistics:
    """The statistics of ``n`` features from their sum and the sum of their outer products
    (float64): the mean, and the covariance with ddof=1 as ``statistics`` computes it."""
    if n < 2:
        raise P2PError(f"FID needs the features of at least 2 images, got {n}")
    mu = total / n
    sigma = (outer - n * np.outer(mu, mu)) / (n - 1)
    return Statistics(mu, (sigma + sigma.T) / 2, n)  # exactly symmetric, whatever the rounding


def frechet_distance(real: Statistics, fake: Statistics) -> float:
    if real.mu.shape != fake.mu.shape:
        raise P2PError(f"statistics of different dimensions: {real.mu.shape[0]} (real) and "
                       f"{fake.mu.shape[0]} (fake)", "both must come from the FID Inception")
    diff = fake.mu - real.mu
    trace_covmean = _trace_sqrt_product(fake.sigma, real.sigma)
    if trace_covmean is None:
        trace_covmean = _trace_sqrtm_scipy(fake.sigma, real.sigma)
    return float(diff @ diff + np.trace(fake.sigma) + np.trace(real.sigma) - 2 * trace_covmean)


# Checks of the symmetric route, relative to the largest eigenvalue or the matrices' size.
# float64 rounding of a 2048x2048 eigh is ~1e-13 of the largest eigenvalue; these are wider.
SYMMETRY_TOLERANCE = 1e-10
NEGATIVE_EIGENVALUE_TOLERANCE = 1e-9
TRACE_TOLERANCE = 1e-9


def _numerical_rank_cut(values: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) below D x eps x the largest are rounding noise of zeros (numpy's
    matrix_rank cutoff): 0. Kept, their square roots (~1e-6 of the largest's each, ~2000 of
    them for the covariance of 100 images) would add ~1e-5 of the FID, as scipy's route does."""
    cutoff = len(values) * np.finfo(values.dtype).eps * max(values[-1], 0)
    return np.where(values > cutoff, values, 0.0)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float | None:
    """tr(sqrtm(sigma1 sigma2)) by symmetric eigendecompositions, or None where the inputs are
    not covariances or the result fails its checks (the caller then uses scipy's route).

    With sigma1 = V L V^T restricted to its r non-zero eigenvalues (r < D for fewer images than
    dimensions), R = V sqrt(L) V^T and R sigma2 R has the non-zero eigenvalues of the r x r
    matrix M^T sigma2 M, M = V sqrt(L): one D x D eigh, then an r x r one.

    Checks: both matrices finite and symmetric, with no eigenvalue of sigma1 or of M^T sigma2 M
    below -tolerance x the largest (larger negative ones mean not a covariance, where the
    published code's complex square root decides); and the residual of the trace: the
    eigenvalues of M^T sigma2 M must sum to tr(sigma1 sigma2) = sum(sigma1 * sigma2), which fails
    when M M^T is not sigma1 in the directions sigma2 weighs."""
    if not (np.isfinite(sigma1).all() and np.isfinite(sigma2).all()):
        return None
    scale = max(np.abs(sigma1).max(initial=0), np.abs(sigma2).max(initial=0))
    for sigma in (sigma1, sigma2):
        if np.abs(sigma - sigma.T).max(initial=0) > SYMMETRY_TOLERANCE * scale:
            return None
    values1, vectors1 = np.linalg.eigh(sigma1)
    if values1[0] < -NEGATIVE_EIGENVALUE_TOLERANCE * max(values1[-1], 0):
        return None
    values1 = _numerical_rank_cut(values1)
    kept = values1 > 0
    half = vectors1[:, kept] * np.sqrt(values1[kept])  # M: sigma1 = M M^T (up to rounding)
    small = half.T @ sigma2 @ half
    values = np.linalg.eigvalsh((small + small.T) / 2) if len(small) else np.zeros(1)
    if values[0] < -NEGATIVE_EIGENVALUE_TOLERANCE * max(values[-1], 0):
        return None
    expected = np.sum(sigma1 * sigma2)  # tr(sigma1 sigma2) for symmetric matrices
    bound = np.linalg.norm(sigma1) * np.linalg.norm(sigma2)  # |tr(sigma1 sigma2)| at most
    if abs(values.sum() - expected) > TRACE_TOLERANCE * bound:
        return None
    return float(np.sqrt(_numerical_rank_cut(values)).sum())


def _trace_sqrtm_scipy(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """The published code's route: the trace of scipy's sqrtm of the product."""
    with warnings.catch_warnings():
        # With fewer images than dimensions (every set of the table) the product is singular;
        # that is expected, and what sqrtm returns is checked below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(sigma1)) * SQRTM_EPS
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imaginary = np.abs(np.diagonal(covmean).imag).max()
        if imaginary > MAX_IMAGINARY:
            raise P2PError(f"FID is undefined for these statistics: the matrix square root has "
                           f"an imaginary part of {imaginary:.3g}",
                           "use more images (a few hundred at least)")
        covmean = covmean.real
    return float(np.trace(covmean))


# ---- statistics files and the cache ----------------------------------------------------------

def save_statistics(stats: Statistics, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no suffix
        np.savez(f, mu=stats.mu, sigma=stats.sigma, n=-1 if stats.n is None else stats.n)


def _read_member(archive: zipfile.ZipFile, name: str, path: str, ndim: int) -> np.ndarray:
    """The array ``name`` of a statistics file, its header checked before its data is read:
    ``ndim`` axes of at most FEATURE_DIM numbers, in as many bytes as the zip says the member
    holds (a few compressed bytes can declare gigabytes)."""
    info = archive.getinfo(f"{name}.npy")
    with archive.open(info) as member:
        shape, _, dtype = read_npy_header(member, f"{path}: {name}")
        if len(shape) != ndim or max(shape, default=0) > FEATURE_DIM or dtype.kind not in "uif":
            raise P2PError(f"{path}: {name} holds {dtype} of shape {shape}, not {ndim} axes of "
                           f"at most {FEATURE_DIM} numbers", STATISTICS_HINT)
        size = member.tell() + math.prod(shape) * dtype.itemsize
        if info.file_size != size:
            raise P2PError(f"{path}: {name} declares {shape} {dtype} ({size} bytes) but holds "
                           f"{info.file_size} bytes", STATISTICS_HINT)
        member.seek(0)
        return np.lib.format.read_array(member, allow_pickle=False)


def load_statistics(path: str | os.PathLike) -> Statistics:
    try:
        with open_file(path, str(path)) as file, zipfile.ZipFile(file) as archive:
            mu = np.asarray(_read_member(archive, "mu", str(path), 1), dtype=np.float64)
            sigma = np.asarray(_read_member(archive, "sigma", str(path), 2), dtype=np.float64)
            has_n = "n.npy" in archive.namelist()
            n = int(_read_member(archive, "n", str(path), 0)) if has_n else -1
    except (P2PError, MemoryError):
        raise
    except Exception as exc:  # zipfile meets bad bytes with many types: zlib.error, RuntimeError...
        raise P2PError(f"{path}: not a statistics file ({exc})", STATISTICS_HINT) from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise P2PError(f"{path}: mu has shape {mu.shape} and sigma {sigma.shape}",
                       "expected mu (D,) and sigma (D, D)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise P2PError(f"{path}: the statistics contain NaN or infinity")
    return Statistics(mu, sigma, None if n < 0 else n)


def cache_key(network: FIDInception, items: Iterable[bytes]) -> str:
    """A digest of the network's weights and of ``items`` (what the statistics summarise)."""
    return _key_of_digests(network, (hashlib.sha256(item).digest() for item in items))


def _key_of_digests(network: FIDInception, digests: Iterable[bytes]) -> str:
    digest = hashlib.sha256(CACHE_VERSION)
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for item in digests:
        digest.update(item)
    return digest.hexdigest()[:40]


def _cache_path(key: str) -> Path:
    return home() / "fid-stats" / f"{key}.npz"


def _from_cache(key: str) -> Statistics | None:
    path = _cache_path(key)
    if path.is_file():
        try:
            return load_statistics(path)
        except P2PError:
            pass  # a damaged entry is computed again and replaced
    return None


def cached_statistics(key: str, compute: Callable[[], Statistics]) -> Statistics:
    stats = _from_cache(key)
    if stats is None:
        stats = compute()
        save_statistics(stats, _cache_path(key))
    return stats


# ---- statistics of images --------------------------------------------------------------------

def fid_input(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, 299, 299): the protocol's scaling, then its resize."""
    return resize_bilinear(((image.float() - 127.5) / 127.5)[None])[0]


def folder_item(root: Path, path: Path) -> bytes:
    return path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes()


def image_statistics(items: Sequence[Item], read: Callable[[Item], torch.Tensor],
                     network: FIDInception, settings: Settings, tally: Tally | None = None,
                     key_items: Iterable[bytes] | None = None) -> Statistics:
    """Statistics of the images ``read(item)`` gives (float (3, 299, 299)) for each item; through
    the cache under ``key_items`` (what identifies the images) when given."""
    def compute() -> Statistics:
        batches = preprocessed_batches(items, read, settings)
        return statistics(network_outputs(network, batches, settings, tally))

    if key_items is None:
        return compute()
    done_before = tally.done if tally else 0
    stats = cached_statistics(cache_key(network, key_items), compute)
    if tally and tally.done == done_before:  # from the cache: count the images as done
        tally.advance(len(items))
    return stats


def folder_statistics(folder: Path, network: FIDInception, settings: Settings,
                      tally: Tally | None = None, use_cache: bool = False) -> Statistics:
    files = list_images(folder)
    if len(files) < 2:
        raise P2PError(f"{folder}: {len(files)} image(s); FID needs at least 2")
    if settings.world.size > 1:
        return _shared_folder_statistics(folder, files, network, settings, tally, use_cache)
    key_items = (folder_item(folder, f) for f in files) if use_cache else None
    return image_statistics(files, lambda path: fid_input(read_8bit_image(path)), network, settings,
                            tally, key_items)


def _shared_folder_statistics(folder: Path, files: list[Path], network: FIDInception,
                              settings: Settings, tally: Tally | None,
                              use_cache: bool) -> Statistics:
    """``folder_statistics`` with the images shared over the processes (module docstring)."""
    world, mine = settings.world, settings.share(files)
    key = None
    if use_cache:
        digests = gather([hashlib.sha256(folder_item(folder, f)).digest() for f in mine], world)
        key = _key_of_digests(network, in_order(digests, settings.batch_size))
        cached = from_main(_from_cache(key) if world.is_main else None, world)
        if cached is not None:
            if tally:
                tally.advance(len(mine))
            return cached
    batches = preprocessed_batches(mine, lambda path: fid_input(read_8bit_image(path)), settings)
    features = torch.from_numpy(network_outputs(network, batches, settings, tally) if mine
                                else np.zeros((0, FEATURE_DIM)))  # more processes than batches
    # On the group's device: NCCL adds CUDA tensors only.
    total = summed(features.sum(dim=0).to(settings.device), world).cpu()
    outer = summed((features.T @ features).to(settings.device), world).cpu()
    stats = statistics_from_sums(len(files), total.numpy(), outer.numpy())
    if key is not None and world.is_main:
        save_statistics(stats, _cache_path(key))
    return stats


def is_statistics_file(source: Path) -> bool:
    return source.suffix.lower() == ".npz"


def _check_source(source: Path) -> None:
    if not (is_statistics_file(source) or source.is_dir()):
        raise P2PError(f"{source}: neither a folder of images nor a statistics file (.npz)")


def count_images(source: Path) -> int:
    """Images a statistics source will run through the network (0 for a statistics file)."""
    _check_source(source)
    return 0 if is_statistics_file(source) else len(list_images(source))


def statistics_of(source: Path, network: Callable[[], FIDInception], settings: Settings,
                  tally: Tally | None = None, use_cache: bool = False) -> Statistics:
    """``source`` is a statistics file (.npz) or a folder of images; ``network()`` gives the
    FID Inception (loaded only when a folder needs it)."""
    _check_source(source)
    if is_statistics_file(source):
        return load_statistics(source)
    for first in list_images(source)[:1]:  # refuse 16-bit or N-channel folders before the weights
        read_8bit_image(first)
    return folder_statistics(source, network(), settings, tally, use_cache)


def _network_loader(settings: Settings, weights: str | os.PathLike | None,
                    download_progress: DownloadProgress | None) -> Callable[[], FIDInception]:
    return functools.cache(lambda: fid_inception(weights, download_progress).to(settings.device))


def compute_fid(real: Path, fake: Path, settings: Settings = Settings(),
                weights: str | os.PathLike | None = None, progress: Progress | None = None,
                download_progress: DownloadProgress | None = None) -> FidResult:
    """FID between ``real`` and ``fake``, each a folder of images or a statistics file.

    The statistics of a ``real`` folder come from (and go to) the cache."""
    network = _network_loader(settings, weights, download_progress)
    tally = Tally(sum(len(settings.share(range(count_images(source)))) for source in (real, fake)),
                  progress)
    real_stats = statistics_of(real, network, settings, tally, use_cache=True)
    fake_stats = statistics_of(fake, network, settings, tally)
    return FidResult(frechet_distance(real_stats, fake_stats), real_stats.n, fake_stats.n)


def compute_statistics(folder: Path, out: Path, settings: Settings = Settings(),
                       weights: str | os.PathLike | None = None, progress: Progress | None = None,
                       download_progress: DownloadProgress | None = None) -> Statistics:
    """Statistics of a folder of images (through the cache), saved to ``out``."""
    if not folder.is_dir():
        raise P2PError(f"{folder}: not a folder of images")
    network = fid_inception(weights, download_progress).to(settings.device)
    tally = Tally(len(settings.share(range(count_images(folder)))), progress)
    stats = folder_statistics(folder, network, settings, tally, use_cache=True)
    if settings.world.is_main:  # one process writes
        save_statistics(stats, out)
    return stats

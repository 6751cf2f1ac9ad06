"""Paired metrics: L1, PSNR and SSIM of translated images against their targets.

Each function takes two batches of the same shape (N, C, H, W), values on the scale
``[0, data_range]`` (the files' integer values: 255 for 8-bit, 65535 for 16-bit), and returns one
value per image (N,); a set of images is summarised by the mean of those values.

- L1: the mean absolute difference on the [0, 1] scale.
- PSNR: ``10 log10(data_range^2 / MSE)`` in dB (infinite for identical images).
- SSIM: Wang et al. 2004 — an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, population
  (co)variances, the map averaged over the positions where the window fits inside the image, per
  channel, then over channels. This is scikit-image's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` (tests compare the two).

Computed in float64 with one grouped, separable convolution, on whatever device the tensors are:
``p2p eval pairs`` and validation during training use the same functions. LPIPS (perceptual.py)
joins them when asked (``--lpips``, ``train.val_lpips``).
"""

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from p2p.errors import P2PError
from p2p.images.files import images_by_name
from p2p.images.raster import DEPTH_RANGES, read_raster
from p2p.metrics.defaults import THREADS

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
def data_range_of(dtype: torch.dtype) -> float:
    """The data range of decoded images of this dtype: its depth's full range (255 for 8-bit,
    65535 for 16-bit), what "data range" means for a file's values."""
    name = str(dtype).removeprefix("torch.")
    if name not in DEPTH_RANGES:
        raise P2PError(f"images of type {dtype} have no known data range",
                       "expected 8-bit or 16-bit images")
    low, high = DEPTH_RANGES[name]
    return high - low


def _float(x: torch.Tensor) -> torch.Tensor:
    # uint16 tensors support few operations; int32 holds them exactly on the way to float64.
    return (x.to(torch.int32) if x.dtype == torch.uint16 else x).to(torch.float64)


def _check(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two (N, C, H, W) batches of the same shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    return _float(x), _float(y)


def l1(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    x, y = _check(x, y)
    return (x - y).abs().mean(dim=(1, 2, 3)) / data_range


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    x, y = _check(x, y)
    mse = (x - y).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(data_range**2 / mse)  # mse 0 -> inf


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA,
                    device: torch.device | None = None) -> torch.Tensor:
    """The normalised 1-D Gaussian (size,), float64; its outer product is the 2-D window."""
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    weights = torch.exp(-x.square() / (2 * sigma**2))
    return weights / weights.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    x, y = _check(x, y)
    n, channels, height, width = x.shape
    if min(height, width) < WINDOW:
        raise P2PError(f"SSIM needs images of at least {WINDOW}x{WINDOW} pixels, got "
                       f"{width}x{height}")
    # Local means of x, y, x^2, y^2, xy: each channel filtered on its own (groups), only where
    # the whole window fits (no padding: what scikit-image keeps after cropping its borders).
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    g = gaussian_window(device=x.device)
    groups = maps.shape[1]
    maps = F.conv2d(maps, g.view(1, 1, WINDOW, 1).expand(groups, 1, WINDOW, 1), groups=groups)
    maps = F.conv2d(maps, g.view(1, 1, 1, WINDOW).expand(groups, 1, 1, WINDOW), groups=groups)
    mu_x, mu_y, xx, yy, xy = maps.split(channels, dim=1)
    var_x, var_y, cov = xx - mu_x.square(), yy - mu_y.square(), xy - mu_x * mu_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
             / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)))
    return index.mean(dim=(2, 3)).mean(dim=1)


def all_metrics(x: torch.Tensor, y: torch.Tensor, data_range: float) -> dict[str, torch.Tensor]:
    """``{"l1", "psnr", "ssim"}``, each (N,) on the CPU."""
    return {"l1": l1(x, y, data_range).cpu(), "psnr": psnr(x, y, data_range).cpu(),
            "ssim": ssim(x, y, data_range).cpu()}


@dataclass
class PairScores:
    """Running sums of per-image values; ``means()`` gives each metric's mean over images."""

    sums: dict[str, float] | None = None
    n: int = 0

    def add(self, scores: dict[str, torch.Tensor]) -> None:
        self.sums = self.sums or dict.fromkeys(scores, 0.0)
        for key, values in scores.items():
            self.sums[key] += float(values.sum())
        self.n += len(next(iter(scores.values())))

    def means(self) -> dict[str, float]:
        if not self.n:
            raise P2PError("no image pairs to score")
        return {key: total / self.n for key, total in self.sums.items()}


# ---- two folders of images, matched by name --------------------------------------------------

@dataclass(frozen=True)
class FolderScores:
    l1: float
    psnr: float
    ssim: float
    n: int  # matched pairs scored
    only_real: list[str]  # names (relative path without extension) without a partner
    only_fake: list[str]
    lpips: float | None = None  # scored only when asked


def _pixels(path: Path) -> torch.Tensor:
    """(C, H, W) at the file's own depth (uint8, uint16 or float32)."""
    return torch.from_numpy(read_raster(path).pixels).permute(2, 0, 1)


def _size_hint(real: torch.Tensor, fake: torch.Tensor) -> str:
    """The likely fix for (C, H, W) images of different sizes. Twice as wide is a folder of A|B
    pairs, scored against one of its halves (``p2p data unpair``); fakes two or three times as
    wide are unsplit inputs or --side-by-side grids."""
    (c, h, w), (fake_c, fake_h, fake_w) = real.shape, fake.shape
    if (c, h) == (fake_c, fake_h) and w == 2 * fake_w:
        return ("the real images look like A|B pairs: cut them with 'p2p data unpair REAL "
                "halves/' and score against halves/B (halves/A for BtoA)")
    if (c, h) == (fake_c, fake_h) and fake_w in (2 * w, 3 * w):
        return ("translate A|B inputs with --paired and without --side-by-side: outputs are "
                "then the size of one half")
    return "translate at the real images' size (p2p translate keeps the input size)"


def score_pair(real: Path, fake: Path,
               lpips_network: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The metrics of one pair of files, at the real image's data range (from its decoded type:
    255 for 8-bit files, 65535 for 16-bit ones); with ``lpips_network``
    (``perceptual.lpips_network``), LPIPS too."""
    x, y = _pixels(real), _pixels(fake)
    if x.dtype != y.dtype:
        raise P2PError(f"{fake}: {y.dtype} values, but {real} has {x.dtype}",
                       "compare images of the same bit depth")
    if x.shape != y.shape:
        raise P2PError(f"{fake}: {y.shape[2]}x{y.shape[1]} pixels, {y.shape[0]} channel(s), but "
                       f"{real} is {x.shape[2]}x{x.shape[1]}, {x.shape[0]}", _size_hint(x, y))
    data_range = data_range_of(x.dtype)
    scores = all_metrics(x[None], y[None], data_range)
    if lpips_network is not None:
        from p2p.metrics import perceptual  # torchvision's networks: only when LPIPS is asked

        try:
            scores["lpips"] = perceptual.distance(lpips_network, x[None], y[None],
                                                  (0, data_range))
        except P2PError as exc:
            raise P2PError(f"{fake}: {exc.message}", exc.hint) from None
    return scores


def score_folders(real: str | os.PathLike, fake: str | os.PathLike,
                  progress: Callable[[int, int], None] | None = None,
                  lpips_network: torch.nn.Module | None = None) -> FolderScores:
    """L1, PSNR and SSIM (and LPIPS with ``lpips_network``) of each fake image against the real
    image of the same name, averaged over the matched pairs; unmatched names are returned, not
    scored."""
    real_files, fake_files = images_by_name(real), images_by_name(fake)
    names = sorted(real_files.keys() & fake_files.keys())
    if not names:
        raise P2PError(f"no image in {fake} has the name of an image in {real}",
                       "images are matched by relative path without extension")
    scores = PairScores()
    # Decoding and the metrics release the GIL: a few threads keep both cores busy.
    with ThreadPoolExecutor(THREADS) as pool:
        for done, result in enumerate(pool.map(lambda name: score_pair(
                real_files[name], fake_files[name], lpips_network), names), start=1):
            scores.add(result)
            if progress:
                progress(done, len(names))
    means = scores.means()
    return FolderScores(means["l1"], means["psnr"], means["ssim"], scores.n,
                        sorted(real_files.keys() - fake_files.keys()),
                        sorted(fake_files.keys() - real_files.keys()), means.get("lpips"))

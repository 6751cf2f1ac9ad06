"""Paired images for training and evaluation.

Two layouts, as the published datasets and users' own data come:
- aligned: ``ROOT/SPLIT/*.jpg``, each image A|B side by side (A left, B right);
- separate: ``ROOT/SPLIT/A/`` and ``ROOT/SPLIT/B/`` with the same file names.
(``ROOT/A`` + ``ROOT/B`` or images directly in ROOT work when there are no split folders.)

``direction`` picks which side is the source: AtoB reads A as input and B as target. Each image is
decoded once, resized (bicubic, as the published runs) to ``load_size`` and kept as uint8 in memory
when the split fits the cache budget, so on 2 cores the loader is never the bottleneck. Random crop
and flip are applied per batch by ``augment``, from a seed and the iteration number alone, so a
resumed run sees exactly the batches an uninterrupted one would.
"""

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from p2p.errors import P2PError
from p2p.images import is_image_file, open_image, pil_to_tensor

Pair = tuple[torch.Tensor, torch.Tensor]
PREFETCH_BATCHES = 2  # batches decoded ahead of the training step (uncached splits)


def _split_dir(root: Path, split: str) -> Path:
    if (root / split).is_dir():
        return root / split
    if root.is_dir() and not any((root / s).is_dir() for s in ("train", "val", "test")):
        return root  # a folder of pairs without split folders
    raise P2PError(f"{root}: no '{split}' split folder here",
                   "expected ROOT/train, ROOT/val or ROOT/test")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def find_pairs(root: str | os.PathLike, split: str) -> list[tuple[Path, Path | None]]:
    """The split's files: (aligned image, None) or (A image, B image), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise P2PError(f"{root}: dataset folder not found")
    folder = _split_dir(root, split)
    if (folder / "A").is_dir() and (folder / "B").is_dir():
        a_files = {p.name: p for p in _images_in(folder / "A")}
        b_files = {p.name: p for p in _images_in(folder / "B")}
        unmatched = sorted(set(a_files) ^ set(b_files))
        if unmatched:
            side = "B" if unmatched[0] in a_files else "A"
            raise P2PError(f"{folder}: '{unmatched[0]}' has no partner in {side}/ "
                           f"({len(unmatched)} unmatched names)",
                           "A/ and B/ must hold the same file names")
        pairs = [(a_files[name], b_files[name]) for name in sorted(a_files)]
    else:
        pairs = [(p, None) for p in _images_in(folder)]
    if not pairs:
        raise P2PError(f"{folder}: no images in this split", "is it the right folder?")
    return pairs


def read_pair(a_path: Path, b_path: Path | None) -> tuple[Image.Image, Image.Image]:
    """Decode one pair as PIL images (A, B), splitting an aligned A|B image down the middle."""
    if b_path is not None:
        return open_image(a_path), open_image(b_path)
    ab = open_image(a_path)
    width, height = ab.size
    if width % 2:
        raise P2PError(f"{a_path}: width {width} is odd, so it is not an A|B side-by-side pair",
                       "aligned images are two equal halves; use A/ and B/ folders otherwise")
    half = width // 2
    return ab.crop((0, 0, half, height)), ab.crop((half, 0, width, height))


def _to_tensor(img: Image.Image, channels: int, size: int, antialias: bool) -> torch.Tensor:
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size == (size, size):
        return pil_to_tensor(img)
    if antialias:  # Pillow's bicubic widens its kernel when shrinking: the official code's resize
        return pil_to_tensor(img.resize((size, size), Image.BICUBIC))
    # OpenCV's bicubic (a = -0.75, half-pixel centres, no antialiasing), which mmagic's pipelines
    # use; it matters for maps (600 -> 256) when reproducing mmagic's table.
    x = pil_to_tensor(img).float()[None]
    x = torch.nn.functional.interpolate(x, (size, size), mode="bicubic", align_corners=False)
    return x[0].round().clamp(0, 255).to(torch.uint8)


class PairedImages:
    """A split as (source, target) uint8 tensors of shape (C, load_size, load_size)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", direction: str = "AtoB",
                 load_size: int = 286, in_channels: int = 3, out_channels: int = 3,
                 cache_gb: float = 4.0, workers: int = 2,
                 progress: Callable[[int, int], None] | None = None, antialias: bool = True):
        if direction not in ("AtoB", "BtoA"):
            raise P2PError(f"direction must be AtoB or BtoA, got {direction!r}")
        self.files = find_pairs(root, split)
        self.names = [a.name for a, _ in self.files]
        self.direction, self.load_size = direction, load_size
        self.in_channels, self.out_channels = in_channels, out_channels
        self.workers = max(1, workers)
        self.antialias = antialias
        size_gb = len(self.files) * (in_channels + out_channels) * load_size**2 / 1e9
        # One pool for the life of the dataset (PIL decodes without the GIL): uncached splits
        # decode every batch with it, so it is not rebuilt per batch.
        self._decoder = ThreadPoolExecutor(self.workers)
        self._prefetched: dict[tuple[int, ...], list[Future]] = {}
        self.cache: list[Pair] | None = None
        if size_gb <= cache_gb:
            self.cache = []
            for pair in self._decoder.map(self._load, range(len(self.files))):
                self.cache.append(pair)
                if progress:
                    progress(len(self.cache), len(self.files))
            self._decoder.shutdown()

    def _load(self, index: int) -> Pair:
        a, b = read_pair(*self.files[index])
        source, target = (a, b) if self.direction == "AtoB" else (b, a)
        return (_to_tensor(source, self.in_channels, self.load_size, self.antialias),
                _to_tensor(target, self.out_channels, self.load_size, self.antialias))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Pair:
        return self.cache[index] if self.cache is not None else self._load(index)

    def get_many(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack the given items into (N, C, S, S) uint8 batches, decoding in parallel if needed
        (or taking what ``prefetch`` started for these indices)."""
        if self.cache is not None:
            pairs = [self.cache[i] for i in indices]
        else:
            futures = self._prefetched.pop(tuple(indices), None)
            if futures is None:
                futures = [self._decoder.submit(self._load, i) for i in indices]
            pairs = [future.result() for future in futures]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def prefetch(self, indices: list[int]) -> None:
        """Start decoding a later batch in the pool (splits streamed from disk), so that the
        decoding overlaps the training step and ``get_many(indices)`` finds it done. Keeps at
        most ``PREFETCH_BATCHES`` batches; older ones are dropped."""
        key = tuple(indices)
        if self.cache is not None or key in self._prefetched:
            return
        while len(self._prefetched) >= PREFETCH_BATCHES:
            for future in self._prefetched.pop(next(iter(self._prefetched))):
                future.cancel()
        self._prefetched[key] = [self._decoder.submit(self._load, i) for i in indices]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], as the published runs normalise."""
    return images.float().div_(127.5).sub_(1.0)


def epoch_order(n: int, epoch: int, seed: int) -> torch.Tensor:
    """The shuffled order of the dataset in one epoch; a pure function of (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def batch_indices(n: int, iteration: int, batch_size: int, seed: int) -> list[int]:
    """The dataset indices of one batch: every item once per epoch, in shuffled order."""
    indices, orders = [], {}
    for k in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, position = divmod(k, n)
        if epoch not in orders:
            orders[epoch] = epoch_order(n, epoch, seed)
        indices.append(int(orders[epoch][position]))
    return indices


def _crop_and_flip(rng: torch.Generator, load_size: int, crop_size: int,
                   flip: bool) -> tuple[int, int, bool]:
    top, left = torch.randint(0, load_size - crop_size + 1, (2,), generator=rng).tolist()
    return top, left, flip and bool(torch.rand((), generator=rng) < 0.5)


def augment(source: torch.Tensor, target: torch.Tensor, crop_size: int, flip: bool,
            seed: int, iteration: int, first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random crop and flip for source and target, per item; a function of the seed
    and iteration only. ``first`` is the position of the first item in the iteration's whole
    batch, so that one process's share of it is cropped as in the whole."""
    load_size = source.shape[-1]
    if load_size == crop_size and not flip:
        return source, target
    rng = torch.Generator().manual_seed(seed * 1_000_003 + iteration)
    draws = [_crop_and_flip(rng, load_size, crop_size, flip) for _ in range(first + len(source))]
    sources, targets = [], []
    for s, t, (top, left, flipped) in zip(source, target, draws[first:], strict=True):
        s = s[:, top:top + crop_size, left:left + crop_size]
        t = t[:, top:top + crop_size, left:left + crop_size]
        if flipped:
            s, t = s.flip(-1), t.flip(-1)
        sources.append(s)
        targets.append(t)
    return torch.stack(sources), torch.stack(targets)


def center_crop(images: torch.Tensor, crop_size: int) -> torch.Tensor:
    offset = (images.shape[-1] - crop_size) // 2
    return images[..., offset:offset + crop_size, offset:offset + crop_size]

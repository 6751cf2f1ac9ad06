"""Paired images for training and evaluation.

Two layouts, as the published datasets and users' own data come:
- aligned: ``ROOT/SPLIT/*.jpg``, each image A|B side by side (A left, B right);
- separate: ``ROOT/SPLIT/A/`` and ``ROOT/SPLIT/B/`` with the same file names.
(``ROOT/A`` + ``ROOT/B`` or images directly in ROOT work when there are no split folders.)

``direction`` picks which side is the source: AtoB reads A as input and B as target. Each image is
decoded once, resized (bicubic, as the published runs) as its preprocessing mode says (see
``p2p.data.preprocess``; by default to ``load_size``) and kept in memory at its depth (uint8,
uint16 or float32) when the split fits the cache budget, so on 2 cores the loader is never the
bottleneck. Random crop and flip are applied per batch by ``augment``, from a seed and the
iteration number alone, so a resumed run sees exactly the batches an uninterrupted one would.

Files may be 8- or 16-bit PNG, TIFF, ``.npy`` or anything Pillow reads, with any channel count
(``p2p.images.decode_image``). Each side's values map to [-1, 1] by its files' depth or by an
explicit range (``value_range``); every file of a side must have the same depth.
"""

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from p2p.data.preprocess import Preprocess, Size, as_size
from p2p.errors import P2PError
from p2p.images.eight_bit import pil_to_tensor
from p2p.images.files import is_image_file
from p2p.images.raster import (
    DEPTH_RANGES,
    decode_image,
    image_size,
    normalize,
    resize_pixels,
    split_halves,
    to_channels,
)

Pair = tuple[torch.Tensor, torch.Tensor]
Decoded = Image.Image | np.ndarray
CHANNELS_HINT = "set data.in_channels / data.out_channels to the files' channel counts"
PREFETCH_BATCHES = 2  # batches decoded ahead of the training step (uncached splits)
DIRECTIONS = ("AtoB", "BtoA")  # AtoB: side A (left, or A/) is the source, B the target


def _split_dir(root: Path, split: str) -> Path:
    if (root / split).is_dir():
        return root / split
    if root.is_dir() and not any((root / s).is_dir() for s in ("train", "val", "test")):
        return root  # a folder of pairs without split folders
    raise P2PError(f"{root}: no '{split}' split folder here",
                   "expected ROOT/train, ROOT/val or ROOT/test")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def _by_stem(folder: Path) -> dict[str, Path]:
    files = {}
    for path in _images_in(folder):
        if path.stem in files:
            raise P2PError(f"{folder}: {files[path.stem].name} and {path.name} have the same name",
                           "keep one file per name in A/ and B/")
        files[path.stem] = path
    return files


def find_pairs(root: str | os.PathLike, split: str) -> list[tuple[Path, Path | None]]:
    """The split's files: (aligned image, None) or (A image, B image), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise P2PError(f"{root}: dataset folder not found")
    folder = _split_dir(root, split)
    if (folder / "A").is_dir() and (folder / "B").is_dir():
        # Partners share their name without the extension (A/x.tif pairs with B/x.png).
        a_files, b_files = _by_stem(folder / "A"), _by_stem(folder / "B")
        unmatched = sorted(set(a_files) ^ set(b_files))
        if unmatched:
            side = "B" if unmatched[0] in a_files else "A"
            name = (a_files.get(unmatched[0]) or b_files[unmatched[0]]).name
            raise P2PError(f"{folder}: '{name}' has no partner in {side}/ "
                           f"({len(unmatched)} unmatched names)",
                           "A/ and B/ must hold the same file names (extensions may differ)")
        pairs = sorted(((a_files[stem], b_files[stem]) for stem in a_files),
                       key=lambda pair: pair[0].name)
    else:
        pairs = [(p, None) for p in _images_in(folder)]
    if not pairs:
        raise P2PError(f"{folder}: no images in this split", "is it the right folder?")
    return pairs


def read_pair(a_path: Path, b_path: Path | None) -> tuple[Decoded, Decoded]:
    """Decode one pair (A, B) as PIL images (8 bits) or arrays, splitting an aligned A|B image
    down the middle."""
    if b_path is not None:
        return decode_image(a_path), decode_image(b_path)
    ab = decode_image(a_path)
    width = image_size(ab)[1]
    if width % 2:
        raise P2PError(f"{a_path}: width {width} is odd, so it is not an A|B side-by-side pair",
                       "aligned images are two equal halves; use A/ and B/ folders otherwise")
    return split_halves(ab)


def _to_tensor(image: Decoded, size: Size, antialias: bool) -> torch.Tensor:
    if isinstance(image, np.ndarray):  # any depth and channel count
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return resize_pixels(x, size, antialias).contiguous()
    height, width = size
    if antialias and image.size != (width, height):
        # Pillow's bicubic widens its kernel when shrinking: the official code's resize.
        image = image.resize((width, height), Image.BICUBIC)
    # Else OpenCV's bicubic (a = -0.75, half-pixel centres, no antialiasing), which mmagic's
    # pipelines use; it matters for maps (600 -> 256) when reproducing mmagic's table.
    return resize_pixels(pil_to_tensor(image), size, antialias=False)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def value_range(dtype: torch.dtype, explicit: Sequence[float] | None,
                side: str) -> tuple[float, float]:
    """The values of a side that map to -1 and 1: ``explicit`` (data.range), else the depth's."""
    if explicit is not None:
        return float(explicit[0]), float(explicit[1])
    name = _name(dtype)
    if name not in DEPTH_RANGES:
        raise P2PError(f"the {side} images hold {name} values, whose range is unknown",
                       "set data.range: [min, max], the values that map to -1 and 1")
    return DEPTH_RANGES[name]


class PairedImages:
    """A split as (source, target) tensors of shape (C, H, W) at the files' depth, at the size
    the preprocessing gives them before cropping (``load_size`` by default)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", direction: str = "AtoB",
                 load_size: int | Size = 286, in_channels: int = 3, out_channels: int = 3,
                 cache_gb: float = 4.0, workers: int = 2,
                 progress: Callable[[int, int], None] | None = None, antialias: bool = True,
                 preprocess: Preprocess | None = None, stride: int = 1,
                 ranges: tuple[Sequence[float] | None, Sequence[float] | None] = (None, None),
                 limit: int | None = None):
        """``limit``: only the first ``limit`` pairs (by name)."""
        if direction not in DIRECTIONS:
            raise P2PError(f"direction must be {' or '.join(DIRECTIONS)}, got {direction!r}")
        self.root = Path(root)
        self.files = find_pairs(root, split)[:limit]
        self.names = [a.name for a, _ in self.files]
        self.direction, self.load_size = direction, load_size
        self.preprocess = preprocess or Preprocess("resize_and_crop", as_size(load_size),
                                                   as_size(load_size))
        self.stride = stride
        self.in_channels, self.out_channels = in_channels, out_channels
        self.workers = max(1, workers)
        self.antialias = antialias
        # The first pair sets each side's depth (and so its value range) and the cache estimate.
        self.dtypes = None
        first = self._load(0)
        self.dtypes = (first[0].dtype, first[1].dtype)
        self.ranges = (value_range(first[0].dtype, ranges[0], "source"),
                       value_range(first[1].dtype, ranges[1], "target"))
        size_gb = len(self.files) * (first[0].nbytes + first[1].nbytes) / 1e9
        # One pool for the life of the dataset (PIL decodes without the GIL): uncached splits
        # decode every batch with it, so it is not rebuilt per batch.
        self._decoder = ThreadPoolExecutor(self.workers)
        self._prefetched: dict[tuple[int, ...], list[Future]] = {}
        self.cache: list[Pair] | None = None
        if size_gb <= cache_gb:
            self.cache = [first]
            if progress:
                progress(1, len(self.files))
            for pair in self._decoder.map(self._load, range(1, len(self.files))):
                self.cache.append(pair)
                if progress:
                    progress(len(self.cache), len(self.files))
            self._decoder.shutdown()

    def _load(self, index: int) -> Pair:
        a_path, b_path = self.files[index]
        a, b = read_pair(a_path, b_path)
        source, target = (a, b) if self.direction == "AtoB" else (b, a)
        source_path, target_path = ((a_path, b_path) if self.direction == "AtoB"
                                    else (b_path, a_path))
        paths = (source_path or a_path, target_path or a_path)
        pair = (self._side(source, self.in_channels, paths[0]),
                self._side(target, self.out_channels, paths[1]))
        for x, path, expected in zip(pair, paths, self.dtypes or (), strict=False):
            if x.dtype != expected:
                raise P2PError(f"{path}: {_name(x.dtype)} pixels, but those of the same side "
                               f"in {self.names[0]} are {_name(expected)}",
                               "all files of a side must have the same bit depth")
        return pair

    def _side(self, image: Decoded, channels: int, path: Path) -> torch.Tensor:
        image = to_channels(image, channels, str(path), CHANNELS_HINT)
        size = self.preprocess.loaded_size(image_size(image), self.stride, str(path))
        self.preprocess.check_fits(size, str(path))
        return _to_tensor(image, size, self.antialias)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Pair:
        return self.cache[index] if self.cache is not None else self._load(index)

    def get_many(self, indices: list[int], stack: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor] | tuple[list, list]:
        """The given items as (N, C, H, W) batches (``stack``) or as lists of (C, H, W) tensors,
        decoding in parallel if needed (or taking what ``prefetch`` started for these indices)."""
        if self.cache is not None:
            pairs = [self.cache[i] for i in indices]
        else:
            futures = self._prefetched.pop(tuple(indices), None)
            if futures is None:
                futures = [self._decoder.submit(self._load, i) for i in indices]
            pairs = [future.result() for future in futures]
        sources, targets = [p[0] for p in pairs], [p[1] for p in pairs]
        return (stack_batch(sources), stack_batch(targets)) if stack else (sources, targets)

    def check_batchable(self, batch_size: int) -> None:
        """Without cropping, items keep their own sizes: a batch of several needs one size."""
        if batch_size == 1 or self.preprocess.crops or self.cache is None:
            return  # uncached: ``stack_batch`` says so at the first mixed batch
        first = self.cache[0][0].shape
        for name, (source, _) in zip(self.names, self.cache, strict=True):
            if source.shape != first:
                raise P2PError(
                    f"data.preprocess {self.preprocess.mode} keeps sizes, and {self.names[0]} "
                    f"({first[-1]}x{first[-2]}) and {name} ({source.shape[-1]}x"
                    f"{source.shape[-2]}) differ, so they cannot share a batch",
                    "set data.batch_size 1, or use a mode that crops")

    def preview(self, count: int) -> Pair:
        """Up to ``count`` items of one size (centre-cropped in the crop modes) as batches, for
        sample grids."""
        crop = self.preprocess.crop_size if self.preprocess.crops else None
        items = [self[i] for i in range(min(count, len(self)))]
        if crop is not None:
            items = [(center_crop(s, crop), center_crop(t, crop)) for s, t in items]
        items = [(s, t) for s, t in items if s.shape == items[0][0].shape]
        return torch.stack([s for s, _ in items]), torch.stack([t for _, t in items])

    def normalization(self) -> dict:
        """What the checkpoint records: each side's dtype and value range, and whether the range
        was given (data.range) or follows the depth."""
        def side(dtype: torch.dtype, value_range: tuple[float, float]) -> dict:
            name = _name(dtype)
            return {"dtype": name, "range": list(value_range),
                    "explicit": DEPTH_RANGES.get(name) != value_range}
        return {"source": side(self.dtypes[0], self.ranges[0]),
                "target": side(self.dtypes[1], self.ranges[1])}

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


def stack_batch(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Images of one size as a batch; a batch already is one (no copy)."""
    if isinstance(images, torch.Tensor):
        return images
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        sizes = ", ".join(sorted(f"{s[-1]}x{s[-2]}" for s in shapes))
        raise P2PError(f"a batch holds images of different sizes ({sizes})",
                       "set data.batch_size 1, or use a data.preprocess mode that crops")
    return torch.stack(list(images))


def to_float(images: torch.Tensor,
             value_range: tuple[float, float] = DEPTH_RANGES["uint8"]) -> torch.Tensor:
    """Values in ``value_range`` (uint8 [0, 255] by default, as the published runs normalise)
    -> float [-1, 1]."""
    return normalize(images, value_range)


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


def _crop_and_flip(rng: torch.Generator, room: tuple[int, int],
                   flip: bool) -> tuple[int, int, bool]:
    # torch draws one 32-bit number per randint value whatever its bound (below 2^31), so the
    # draws of items whose sizes are unknown here (other processes' share) are skipped with
    # room (0, 0).
    top = int(torch.randint(0, room[0] + 1, (1,), generator=rng))
    left = int(torch.randint(0, room[1] + 1, (1,), generator=rng))
    return top, left, flip and bool(torch.rand((), generator=rng) < 0.5)


def augment(source: Sequence[torch.Tensor], target: Sequence[torch.Tensor],
            crop_size: int | Size | None, flip: bool, seed: int, iteration: int,
            first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random crop (None: no crop) and flip for source and target, per item; a
    function of the seed and iteration only. ``source`` and ``target`` are batches or lists of
    (C, H, W) images (of one size without a crop). ``first`` is the position of the first item
    in the iteration's whole batch, so that one process's share of it is cropped as in the
    whole. Returns stacked batches."""
    crop = None if crop_size is None else as_size(crop_size)
    if not flip and (crop is None or all(tuple(s.shape[-2:]) == crop for s in source)):
        return stack_batch(source), stack_batch(target)
    rng = torch.Generator().manual_seed(seed * 1_000_003 + iteration)
    for _ in range(first):
        _crop_and_flip(rng, (0, 0), flip)
    sources, targets = [], []
    for s, t in zip(source, target, strict=True):
        height, width = s.shape[-2:]
        room = (0, 0) if crop is None else (height - crop[0], width - crop[1])
        top, left, flipped = _crop_and_flip(rng, room, flip)
        if crop is not None:
            s = s[:, top:top + crop[0], left:left + crop[1]]
            t = t[:, top:top + crop[0], left:left + crop[1]]
        if flipped:
            s, t = s.flip(-1), t.flip(-1)
        sources.append(s)
        targets.append(t)
    return stack_batch(sources), stack_batch(targets)


def center_crop(images: torch.Tensor, crop_size: int | Size) -> torch.Tensor:
    crop_height, crop_width = as_size(crop_size)
    top = (images.shape[-2] - crop_height) // 2
    left = (images.shape[-1] - crop_width) // 2
    return images[..., top:top + crop_height, left:left + crop_width]

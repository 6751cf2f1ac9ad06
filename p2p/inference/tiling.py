"""Tiled inference: a generator over an image of any size, tile by tile, blended without seams.

The image is cut into tiles of ``tile`` pixels (a multiple of the generator's stride) that share
``overlap`` pixels with their neighbours; the last tile of a row or column is moved back to end at
the image's edge, and a side shorter than a tile is reflect-padded up to the stride. Each tile's
output is weighted by a window that ramps linearly over the overlap (separable: a ramp along y
times a ramp along x) and the weighted sum is divided by the sum of the weights, so where two
tiles overlap the output fades from one to the other and a pixel covered by one tile is that
tile's output exactly. The ramps never reach zero, so every pixel has weight.

Memory is bounded by the tiles, not the image: tiles run in batches, and the blended output is
kept in float only for one row of tiles (``tile`` rows of the image), then written into the
output array (uint8 by default) as soon as no later tile covers it: the input and output arrays
are this function's only image-sized buffers.

Normalization: tiles are normalized by what they see. That is right for batch norm in eval mode
(running statistics) and for models without norm; batch norm in the paper's mode or instance norm
would normalize each tile by its own statistics (see ``check_tiling`` and the README).
"""

import math
from collections.abc import Callable

import torch

from p2p.errors import P2PError
from p2p.images.eight_bit import to_uint8
from p2p.images.raster import DEPTH_RANGES, normalize, pad_to_multiple


def default_overlap(tile: int) -> int:
    return tile // 4


def check_tiling(tile: int, overlap: int, multiple: int) -> None:
    """Refuse a tile size the generator cannot run or an overlap that leaves no progress."""
    if tile < 1 or tile % multiple:
        lower = max(multiple, tile - tile % multiple)
        raise P2PError(f"tile size {tile} is not a multiple of {multiple}, the generator's stride",
                       f"use --tile {lower} or {lower + multiple}")
    if not 0 <= overlap < tile:
        raise P2PError(f"overlap {overlap} must be at least 0 and smaller than the tile ({tile})",
                       f"e.g. --overlap {default_overlap(tile)}")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles start along a side of ``length``: every ``tile - overlap`` pixels, the last one
    moved back to end at the edge (it then overlaps its neighbour by more)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def ramp(tile: int, overlap: int) -> torch.Tensor:
    """A tile's blending weight along one side: rising over the first ``overlap`` pixels, falling
    over the last, 1 between; two tiles overlapping by ``overlap`` sum to 1 across it."""
    i = torch.arange(tile, dtype=torch.float32)
    return torch.minimum(torch.minimum(i + 1, tile - i) / (overlap + 1), torch.tensor(1.0))


def _weight_sums(length: int, tile: int, starts: list[int], window: torch.Tensor) -> torch.Tensor:
    sums = torch.zeros(length)
    for start in starts:
        end = min(start + tile, length)
        sums[start:end] += window[:end - start]
    return sums


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    return normalize(x, DEPTH_RANGES["uint8"])


def translate_tiled(forward: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, *,
                    tile: int, overlap: int, multiple: int, out_channels: int,
                    batch_size: int = 1,
                    to_input: Callable[[torch.Tensor], torch.Tensor] = from_uint8,
                    to_output: Callable[[torch.Tensor], torch.Tensor] = to_uint8,
                    out_dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """Run ``forward`` over ``image`` (C, H, W) in blended tiles; returns (out_channels, H, W).

    ``forward`` maps a float batch (N, C, h, w) in [-1, 1] to (N, out_channels, h, w) (e.g.
    ``Model.run`` with its mode bound). ``to_input`` turns a slice of
    ``image`` into that float range, ``to_output`` turns blended float rows into ``out_dtype``.
    """

    check_tiling(tile, overlap, multiple)
    height, width = image.shape[-2:]
    # A side shorter than the tile gets one tile, only as large as the stride needs.
    tile_h = min(tile, math.ceil(height / multiple) * multiple)
    tile_w = min(tile, math.ceil(width / multiple) * multiple)
    ys, xs = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    ramp_y, ramp_x = ramp(tile_h, overlap), ramp(tile_w, overlap)
    # The windows are separable and the tiles a grid, so the sum of weights is too.
    sum_y = _weight_sums(height, tile_h, ys, ramp_y)
    sum_x = _weight_sums(width, tile_w, xs, ramp_x)

    output = torch.empty((out_channels, height, width), dtype=out_dtype)
    strip = torch.zeros((out_channels, tile_h, width))  # blended rows [top, top + tile_h)

    def emit(top: int, end: int) -> None:
        """Rows [top, end) are final: normalize them and write them out."""
        rows = strip[:, :end - top] / (sum_y[top:end, None] * sum_x[None, :])
        output[:, top:end] = to_output(rows)

    for row, top in enumerate(ys):
        rows = min(tile_h, height - top)
        for first in range(0, len(xs), batch_size):
            chunk = xs[first:first + batch_size]
            batch = torch.stack([pad_to_multiple(to_input(image[:, top:top + tile_h,
                                                                x:x + tile_w]), multiple)
                                 for x in chunk])
            outputs = forward(batch).cpu()
            for x, out in zip(chunk, outputs, strict=True):
                cols = min(tile_w, width - x)
                window = ramp_y[:rows, None] * ramp_x[None, :cols]
                strip[:, :rows, x:x + cols] += out[:, :rows, :cols] * window
        end = ys[row + 1] if row + 1 < len(ys) else height
        emit(top, end)
        shift = end - top  # the rows the next tile row shares stay, moved to the strip's top
        strip[:, :tile_h - shift] = strip[:, shift:].clone()
        strip[:, tile_h - shift:] = 0
    return output

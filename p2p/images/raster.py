"""Pixels as stored, for training and translation on any data: (H, W, C) uint8, uint16 or
float32 from 8- and 16-bit PNG, TIFF (multi-channel and multi-page, with tifffile) and ``.npy``;
written back at their depth, the format following the extension. 8-bit images of 1 or 3 channels
take Pillow's path (eight_bit.py), the fast one.
"""

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from p2p.errors import ImageTooLarge, P2PError, install_extra
from p2p.images.eight_bit import convert, encode_image, open_pil, pil_to_tensor, to_uint8
from p2p.images.files import (
    MAX_TIFF_PAGES,
    Source,
    check_declared,
    check_pixels,
    format_for,
    label_of,
    npy_bytes,
    read_bytes,
)
from p2p.paths import write_bytes_atomic

# The value range of each integer depth: what [-1, 1] maps to unless data.range says otherwise.
DEPTH_RANGES = {"uint8": (0.0, 255.0), "uint16": (0.0, 65535.0)}
_PNG_CHANNELS = (1, 3)  # what PNG and the 8-bit formats hold here (2 and 4 would read as alpha)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NPY_SIGNATURE = b"\x93NUMPY"


@dataclass(frozen=True)
class Raster:
    """Pixels as the file stores them: (H, W, C) uint8, uint16 or float32, and the file's format
    (``PNG``, ``TIFF``, ``NPY``, ``JPEG``, ...). The dtype is the bit depth."""

    pixels: np.ndarray
    format: str

    @property
    def depth(self) -> str:
        return self.pixels.dtype.name


def _kind(source: Source) -> str:
    """``TIFF``, ``NPY`` or ``PIL`` (everything Pillow reads), by extension or by content."""
    if isinstance(source, bytes):
        if source.startswith(_NPY_SIGNATURE):
            return "NPY"
        return "TIFF" if source[:4] in _TIFF_SIGNATURES else "PIL"
    suffix = Path(source).suffix.lower()
    return {".tif": "TIFF", ".tiff": "TIFF", ".npy": "NPY"}.get(suffix, "PIL")


def read_raster(source: Source, name: str | None = None) -> Raster:
    """Decode ``source`` (a path or encoded bytes) into its pixels at their own bit depth.

    8- and 16-bit PNG (gray, RGB, with alpha as a channel), every format Pillow reads at 8 bits,
    TIFF (pages and samples become channels, in that order) and ``.npy`` (H x W or H x W x C).
    Integers other than uint8 and uint16, and floats, become float32.
    """
    label = label_of(source, name)
    kind = _kind(source)
    if kind == "NPY":
        pixels = _read_npy(source, label)
    elif kind == "TIFF":
        pixels = _read_tiff(source, label)
    else:
        data = source if isinstance(source, bytes) else None
        if data is None and Path(source).suffix.lower() == ".png":
            data = read_bytes(source, label)
        if data is not None and _is_16bit_color_png(data):
            pixels = _read_png16_color(data, label)  # Pillow keeps only the top 8 bits of these
        else:
            img = open_pil(data if data is not None else source, label)
            return Raster(_pil_pixels(img, label), img.format or "PNG")
    return Raster(pixels, kind if kind != "PIL" else "PNG")


def _as_hwc(pixels: np.ndarray, label: str) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    check_pixels(pixels.shape, pixels.dtype, label)
    if pixels.dtype in (np.uint8, np.uint16, np.float32):
        return pixels
    return pixels.astype(np.float32)


def read_npy_header(stream: BinaryIO, label: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) that an .npy header declares, read without the data
    (``stream`` is left where the data begins): a hostile header is refused before anything is
    allocated for it."""
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"format version {version} is not read here")
        return read_header(stream)
    except Exception as exc:  # numpy's parser of the header raises many types (TokenError...)
        raise P2PError(f"{label}: not a readable .npy array ({exc})") from None


def _read_npy(source: Source, label: str) -> np.ndarray:
    data = source if isinstance(source, bytes) else read_bytes(source, label)
    stream = io.BytesIO(data)
    shape, fortran_order, dtype = read_npy_header(stream, label)
    check_pixels(shape + (1,) if len(shape) == 2 else shape, dtype, label)
    height, width, *channels = shape
    check_declared(label, height, width, math.prod(channels), dtype)
    try:  # the data behind the header, as np.load reads it, without parsing the header again
        pixels = np.frombuffer(data, dtype, math.prod(shape), offset=stream.tell())
    except ValueError:  # fewer bytes than declared
        raise P2PError(f"{label}: truncated .npy array (its header declares {shape} {dtype})"
                       ) from None
    return _as_hwc(pixels.reshape(shape, order="F" if fortran_order else "C").copy(), label)


def _tiff_series(tif, label: str):
    """The first series of ``tif`` (a tifffile.TiffFile), checked from the headers: nothing is
    decoded yet."""
    try:
        tif.pages.get(MAX_TIFF_PAGES)  # follows the chain of pages this far, no further
    except IndexError:
        pass
    else:
        raise ImageTooLarge(f"{label}: more than {MAX_TIFF_PAGES} pages",
                            "store fewer pages per file")
    series = tif.series[0]
    axes, shape = series.axes, series.shape
    if "Y" not in axes or "X" not in axes:
        raise P2PError(f"{label}: TIFF axes {axes!r} hold no image plane")
    height, width = shape[axes.index("Y")], shape[axes.index("X")]
    channels = math.prod(n for n, axis in zip(shape, axes, strict=True) if axis not in "YX")
    check_pixels((height, width, channels), series.dtype, label)
    check_declared(label, height, width, channels, series.dtype)
    if series.dataoffset is None:  # not one block: decoded strip by strip (or tile by tile)
        # tifffile visits every strip the size implies, present or not: a few bytes declaring
        # millions of one-row strips would take minutes.
        segments = math.prod(series.keyframe.chunked)
        if any(len(page.dataoffsets) < segments for page in series.pages if page is not None):
            raise P2PError(f"{label}: corrupt TIFF (fewer strips or tiles than its size needs)")
    return series


def _read_tiff(source: Source, label: str) -> np.ndarray:
    import tifffile

    data = source if isinstance(source, bytes) else read_bytes(source, label)
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series = _tiff_series(tif, label)
            pixels, axes = series.asarray(), series.axes
        # Rows and columns first; every other axis (pages, channels, samples) becomes channels.
        order = [axes.index("Y"), axes.index("X")]
        pixels = pixels.transpose(order + [i for i, a in enumerate(axes) if a not in "YX"])
        pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    except (P2PError, MemoryError):
        raise
    except Exception as exc:  # tifffile meets bad bytes with many types: zlib.error, TypeError...
        if "imagecodecs" not in str(exc):
            raise P2PError(f"{label}: corrupt or unreadable TIFF ({exc})") from None
        # A compression tifffile decodes only with imagecodecs (LZW, JPEG): Pillow's libtiff
        # reads the common single-page 8- and 16-bit ones.
        try:
            img = open_pil(data, label)
        except P2PError:
            raise P2PError(f"{label}: this TIFF's compression needs the imagecodecs package",
                           install_extra("tiff")) from None
        return _pil_pixels(img, label)
    return _as_hwc(pixels, label)


def _is_16bit_color_png(data: bytes) -> bool:
    # IHDR is the first chunk: bit depth at byte 24, colour type at 25 (2 RGB, 4 LA, 6 RGBA).
    return data.startswith(_PNG_SIGNATURE) and len(data) > 25 and data[24] == 16 and \
        data[25] in (2, 4, 6)


def _read_png16_color(data: bytes, label: str) -> np.ndarray:
    import png  # pypng: Pillow has no 16-bit colour mode

    try:
        width, height, rows, info = png.Reader(bytes=data).asDirect()
        check_declared(label, height, width, info["planes"], np.dtype(np.uint16))
        pixels = np.vstack([np.asarray(row, np.uint16) for row in rows])
    except png.Error as exc:
        raise P2PError(f"{label}: corrupt or truncated image ({exc})") from None
    return pixels.reshape(height, width, info["planes"])


def _pil_pixels(img: Image.Image, label: str) -> np.ndarray:
    """A decoded PIL image's pixels at its depth; palettes expanded, alpha kept as a channel."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img).astype(np.uint16)[:, :, None]
    if img.mode == "I":  # 32-bit integers: 16-bit data when it fits
        array = np.asarray(img)
        if array.min() >= 0 and array.max() <= 65535:
            return array.astype(np.uint16)[:, :, None]
        return array.astype(np.float32)[:, :, None]
    if img.mode == "F":
        return np.asarray(img, np.float32)[:, :, None]
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGB")  # 1, CMYK, YCbCr, ...
    return _as_hwc(np.array(img), label)  # np.array: writable (torch.from_numpy wants that)


def match_channels(pixels: np.ndarray, channels: int, label: str, hint: str) -> np.ndarray:
    """``pixels`` (H, W, C) with ``channels`` channels: gray <-> RGB and alpha composited on
    white as ``open_image`` does; any other difference is an error naming the file."""
    have = pixels.shape[2]
    if have == channels:
        return pixels
    if have in (2, 4) and channels == have - 1:  # colour + alpha: composite on white
        top = DEPTH_RANGES.get(pixels.dtype.name, (0.0, 1.0))[1]
        alpha = pixels[:, :, -1:].astype(np.float32) / top
        blended = pixels[:, :, :-1] * alpha + top * (1 - alpha)
        return _cast_like(blended, pixels.dtype)
    if have == 1 and channels == 3:
        return np.repeat(pixels, 3, axis=2)
    if have in (3, 4) and channels == 1:  # ITU-R 601-2 luma, as Pillow's convert("L")
        rgb = match_channels(pixels, 3, label, hint) if have == 4 else pixels
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return _cast_like(luma[:, :, None], pixels.dtype)
    raise P2PError(f"{label}: {have} channel(s), but {channels} are expected", hint)


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return values.astype(dtype)
    top = DEPTH_RANGES[dtype.name][1]
    return np.clip(np.rint(values), 0, top).astype(dtype)


def normalize(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Values in ``value_range`` -> float [-1, 1], as a new tensor (``x`` is left alone)."""
    low, high = value_range
    x = x.to(torch.float32, copy=True)  # one conversion; float input is copied, not changed
    if low:
        x = x.sub_(low)
    return x.div_((high - low) / 2).sub_(1.0)


def denormalize(x: torch.Tensor, dtype: str, value_range: tuple[float, float]) -> np.ndarray:
    """Float [-1, 1] (C, H, W) -> (H, W, C) array of ``dtype`` over ``value_range``.

    8 bits truncate, as the published code saves images (``to_uint8``); 16 bits round; floats
    are mapped without clamping."""
    low, high = value_range
    x = x.detach().float().cpu()
    if dtype == "uint8" and value_range == DEPTH_RANGES["uint8"]:
        return to_uint8(x).permute(1, 2, 0).numpy()
    if dtype != "float32":
        x = x.clamp(-1, 1)
    values = ((x + 1) * ((high - low) / 2) + low).permute(1, 2, 0).numpy()
    return values.astype(np.float32) if dtype == "float32" else _cast_like(values, np.dtype(dtype))


def output_suffix(source_suffix: str, png_holds_output: bool = True) -> str:
    """The default output extension for an input: TIFF stays TIFF, .npy stays .npy, the rest
    becomes PNG, or TIFF when PNG cannot hold the output (``can_hold``)."""
    kind = {".tif": ".tif", ".tiff": ".tif", ".npy": ".npy"}.get(source_suffix.lower())
    return kind or (".png" if png_holds_output else ".tif")


def can_hold(fmt: str, channels: int, dtype: str) -> bool:
    """Whether format ``fmt`` (a ``FORMATS`` value) stores ``channels`` channels of ``dtype``."""
    if fmt in ("TIFF", "NPY"):
        return True
    depths = ("uint8", "uint16") if fmt == "PNG" else ("uint8",)
    return channels in _PNG_CHANNELS and dtype in depths


def check_writable(path: str | os.PathLike, channels: int, dtype: str) -> None:
    """Raise P2PError naming the fix when ``path``'s format cannot hold such pixels."""
    fmt = format_for(path)
    if not can_hold(fmt, channels, dtype):
        bits = "8- and 16-bit" if fmt == "PNG" else "8-bit"
        raise P2PError(f"{path}: {fmt} holds {bits} images of 1 or 3 channels, not "
                       f"{channels} channel(s) of {dtype}", "write .tif (--ext tif) or .npy")


def encode_raster(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode (H, W, C) pixels in ``fmt`` at their own depth (see ``check_writable``)."""
    if fmt == "NPY":
        return npy_bytes(pixels if pixels.shape[2] > 1 else pixels[:, :, 0])
    buffer = io.BytesIO()
    if fmt == "TIFF":
        import tifffile

        channels = pixels.shape[2]
        photometric = "rgb" if channels == 3 and pixels.dtype != np.float32 else "minisblack"
        tifffile.imwrite(buffer, pixels if channels > 1 else pixels[:, :, 0],
                         photometric=photometric, planarconfig="contig", compression="zlib")
    elif pixels.dtype == np.uint16 and pixels.shape[2] == 3:
        import png  # pypng: Pillow cannot write 16-bit colour

        height, width, _ = pixels.shape
        png.Writer(width, height, greyscale=False, bitdepth=16).write(
            buffer, pixels.reshape(height, width * 3))
    else:
        return encode_image(Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels),
                            fmt)
    return buffer.getvalue()


def save_raster(pixels: np.ndarray, path: str | os.PathLike) -> None:
    """Write (H, W, C) pixels atomically at their depth; the format follows the extension."""
    check_writable(path, pixels.shape[2], pixels.dtype.name)
    write_bytes_atomic(path, encode_raster(pixels, format_for(path)))


def read_8bit_image(source: Source, name: str | None = None) -> torch.Tensor:
    """An 8-bit RGB (or gray, made RGB) image as a uint8 (3, H, W) tensor, for FID and IS: their
    Inception networks were trained on 8-bit RGB photos, so other data is refused."""
    label = label_of(source, name)
    pixels = decode_image(source, name)
    if isinstance(pixels, Image.Image):  # 8 bits, as Pillow reads it
        return pil_to_tensor(convert(pixels, 3))
    if pixels.dtype == np.uint8 and pixels.shape[2] in (1, 3, 4):
        return torch.from_numpy(match_channels(pixels, 3, label, "")).permute(2, 0, 1).contiguous()
    depth = {"uint16": "16-bit", "float32": "floating-point"}.get(pixels.dtype.name, "8-bit")
    raise P2PError(f"{label}: a {depth} image of {pixels.shape[2]} channel(s); FID and IS apply "
                   "to 8-bit RGB images only", "convert the images to 8-bit RGB to score them")


_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def decode_image(source: Source, name: str | None = None) -> Image.Image | np.ndarray:
    """Decode for training and translation: an 8-bit image Pillow reads stays a PIL image (its
    converting and resizing are the fast path); anything else is its (H, W, C) array."""
    label = label_of(source, name)
    if not isinstance(source, bytes) and Path(source).suffix.lower() == ".png":
        source = read_bytes(source, label)  # read once: its header says which reader decodes it
    if _kind(source) == "PIL" and not (isinstance(source, bytes) and _is_16bit_color_png(source)):
        img = open_pil(source, label)
        return img if img.mode not in _HIGH_DEPTH_MODES else _pil_pixels(img, label)
    return read_raster(source, label).pixels


def from_memory(image: Image.Image | np.ndarray, label: str) -> Image.Image | np.ndarray:
    """An image already in memory as ``decode_image`` gives a file: an 8-bit PIL image stays one
    (loaded), a PIL image of higher depth or an array becomes its (H, W, C) array (H x W arrays
    gain a channel; other numeric types become float32, as in ``.npy`` files)."""
    if isinstance(image, Image.Image):
        image.load()
        return image if image.mode not in _HIGH_DEPTH_MODES else _pil_pixels(image, label)
    pixels = _as_hwc(np.asarray(image), label)
    check_declared(label, *pixels.shape, pixels.dtype)  # the limits of a file of that size
    # A PIL image's buffer, say, is read-only: torch wants writable arrays.
    return pixels if pixels.flags.writeable else pixels.copy()


def to_channels(image: Image.Image | np.ndarray, channels: int, label: str,
                hint: str) -> Image.Image | np.ndarray:
    """``image`` with ``channels`` channels: a PIL image becomes mode L or RGB (as
    ``open_image``) when 1 or 3 are asked, else its array; see ``match_channels``."""
    if isinstance(image, Image.Image):
        if channels in (1, 3):
            return convert(image, channels)
        image = _pil_pixels(image, label)
    return match_channels(image, channels, label, hint)


def image_size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(height, width) of a PIL image or an (H, W, C) array."""
    return (image.height, image.width) if isinstance(image, Image.Image) else image.shape[:2]


def split_halves(image: Image.Image | np.ndarray) -> tuple[Image.Image | np.ndarray, ...]:
    """The left and right halves of an A|B side-by-side image (split at width // 2)."""
    height, width = image_size(image)
    half = width // 2
    if isinstance(image, Image.Image):
        return image.crop((0, 0, half, height)), image.crop((half, 0, width, height))
    return image[:, :half], image[:, half:]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (C, H, W) on the right and bottom to sides that are multiples of ``multiple``.

    Reflect padding (no hard edge for the convolutions to react to). It cannot pad more than the
    side minus one at once, so small images grow in steps; a side of one pixel is replicated.
    """
    pad = torch.nn.functional.pad
    while True:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % multiple, -width % multiple
        if not pad_h and not pad_w:
            return x
        if min(height, width) == 1:
            return pad(x[None], (0, pad_w, 0, pad_h), mode="replicate")[0]
        x = pad(x[None], (0, min(pad_w, width - 1), 0, min(pad_h, height - 1)),
                mode="reflect")[0]


def resize_pixels(x: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bicubic resize of (C, H, W) to ``size`` (height, width), keeping the dtype (integers are
    rounded and clamped to their depth). ``antialias`` widens the kernel when shrinking, as
    Pillow's resize does."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = torch.nn.functional.interpolate(x[None].float(), size, mode="bicubic",
                                          align_corners=False, antialias=antialias)[0]
    if x.dtype.is_floating_point:
        return out.to(x.dtype)
    top = DEPTH_RANGES[str(x.dtype).removeprefix("torch.")][1]
    return out.round_().clamp_(0, top).to(x.dtype)

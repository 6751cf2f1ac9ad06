"""The one image reader and writer: every image p2p reads or writes goes through here.

Reading is defensive because datasets and user folders contain every kind of file: empty files,
truncated JPEGs, 16-bit PNGs, RGBA and palette images, and files whose header declares absurd
dimensions. What can be converted is converted; the rest raises P2PError naming the file.
"""

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from p2p.errors import P2PError
from p2p.paths import write_bytes_atomic

# What we read and write: extension -> Pillow format.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP",
           ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM"}
IMAGE_EXTENSIONS = set(FORMATS)
# Larger than any dataset image (maps are 1200x600) by far, small enough that a hostile header
# cannot make us allocate gigabytes.
MAX_PIXELS = 16384 * 16384
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow warns above this (we make it an error) before decoding
# zlib level of the PNGs we write (Pillow's default is 6): lossless either way; level 1 encodes a
# 256x256 output 3.4x faster for 3% more bytes (benchmarks/README.md, "Translate overheads").
PNG_COMPRESS_LEVEL = 1

Source = str | os.PathLike | bytes


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted order of their relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise P2PError(f"{folder}: not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


def _sixteen_bit_to_8(img: Image.Image) -> Image.Image:
    # Pillow clips I;16 to L instead of scaling; scale the full 16-bit range down instead.
    array = np.asarray(img, dtype=np.uint32)
    return Image.fromarray((array // 257).astype(np.uint8), mode="L")


def open_image(source: Source, channels: int = 3, name: str | None = None) -> Image.Image:
    """Decode ``source`` (a path or encoded bytes) into a PIL image of mode RGB (3) or L (1)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    label = name or (f"{source}" if not isinstance(source, bytes) else "<stdin>")
    try:
        if isinstance(source, bytes):
            if not source:
                raise P2PError(f"{label}: empty input, not an image")
            stream = io.BytesIO(source)
        else:
            if os.path.getsize(source) == 0:
                raise P2PError(f"{label}: empty file (0 bytes), not an image")
            stream = open(source, "rb")  # noqa: SIM115 - closed below via the image
        with stream, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(stream)  # checks the declared size against MAX_IMAGE_PIXELS
            img.load()
    except P2PError:
        raise
    except FileNotFoundError:
        raise P2PError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise P2PError(f"{label}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise P2PError(f"{label}: not an image (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise P2PError(f"{label}: declared image size is too large ({exc})",
                       "resize it below 16384x16384 first") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError with its own wording.
        raise P2PError(f"{label}: corrupt or truncated image ({exc})") from None
    return _convert(img, channels)


def _convert(img: Image.Image, channels: int) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        img = _sixteen_bit_to_8(img)
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: what a viewer shows for a transparent background.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    target = "RGB" if channels == 3 else "L"
    return img if img.mode == target else img.convert(target)


def read_image(source: Source, channels: int = 3, name: str | None = None) -> torch.Tensor:
    """Decode ``source`` into a uint8 tensor of shape (channels, H, W)."""
    return pil_to_tensor(open_image(source, channels, name))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Map a float tensor in [-1, 1] to uint8 by truncation, as the published code saves images."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).to(torch.uint8)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """A (C, H, W) tensor, uint8 or float in [-1, 1], as a PIL image (mode L or RGB)."""
    if x.dtype != torch.uint8:
        x = to_uint8(x)
    array = x.cpu().permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(array, mode="RGB")


def _format_for(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise P2PError(f"{path}: unknown image extension {suffix!r}",
                       f"use one of {', '.join(sorted(FORMATS))}")
    return FORMATS[suffix]


def encode_image(img: Image.Image | torch.Tensor, fmt: str = "PNG") -> bytes:
    if isinstance(img, torch.Tensor):
        img = tensor_to_pil(img)
    buffer = io.BytesIO()
    options = {"JPEG": {"quality": 95}, "PNG": {"compress_level": PNG_COMPRESS_LEVEL}}.get(fmt, {})
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def save_image(img: Image.Image | torch.Tensor, path: str | os.PathLike) -> None:
    """Write an image atomically; the format follows the file extension."""
    write_bytes_atomic(path, encode_image(img, _format_for(path)))

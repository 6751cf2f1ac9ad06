"""8-bit images through Pillow: RGB or gray (16-bit scaled down), what the metrics, reports,
dataset tools and 8-bit models read and write. Decoding turns every way a file can be bad into a
P2PError naming it: empty files, truncated JPEGs, RGBA and palette images are converted, absurd
declared sizes refused.
"""

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from p2p.errors import ImageTooLarge, P2PError
from p2p.images.files import PIL_FORMATS, Source, format_for, label_of, npy_bytes, open_file
from p2p.limits import MAX_SIDE
from p2p.paths import write_bytes_atomic

# zlib level of the PNGs we write (Pillow's default is 6): lossless either way; level 1 encodes a
# 256x256 output 3.4x faster for 3% more bytes (benchmarks/README.md, "Translate overheads").
PNG_COMPRESS_LEVEL = 1

def _sixteen_bit_to_8(img: Image.Image) -> Image.Image:
    # Pillow clips I;16 to L instead of scaling; scale the full 16-bit range down instead.
    array = np.asarray(img, dtype=np.uint32)
    return Image.fromarray((array // 257).astype(np.uint8), mode="L")


def open_pil(source: Source, label: str) -> Image.Image:
    """Decode with Pillow, turning every way a file can be bad into a P2PError naming it."""
    if isinstance(source, bytes):
        if not source:
            raise P2PError(f"{label}: empty input, not an image")
        stream = io.BytesIO(source)
    else:
        stream = open_file(source, label)
    try:
        with stream, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Checks the declared size against MAX_IMAGE_PIXELS.
            img = Image.open(stream, formats=PIL_FORMATS)
            img.load()
    except UnidentifiedImageError:
        raise P2PError(f"{label}: not an image (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{label}: declared image size is too large ({exc})",
                            f"resize it below {MAX_SIDE}x{MAX_SIDE} first") from None
    except MemoryError:
        raise
    except Exception as exc:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError with its own wording,
        # and some hostile headers as other types (TypeError from its TIFF plugin).
        raise P2PError(f"{label}: corrupt or truncated image ({exc})") from None
    return img


def open_image(source: Source, channels: int = 3, name: str | None = None) -> Image.Image:
    """Decode ``source`` (a path or encoded bytes) into a PIL image of mode RGB (3) or L (1)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return convert(open_pil(source, label_of(source, name)), channels)


def declared_size(data: bytes, name: str) -> tuple[int, int]:
    """(height, width) that encoded image bytes declare, read from the header only."""
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data), formats=PIL_FORMATS) as img:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller decides
            return img.height, img.width
    except UnidentifiedImageError:
        raise P2PError(f"{name}: not an image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: declared image size is too large ({exc})") from None
    except MemoryError:
        raise
    except Exception as exc:  # as in open_pil
        raise P2PError(f"{name}: corrupt or truncated image ({exc})") from None


def convert(img: Image.Image, channels: int) -> Image.Image:
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


def encode_image(img: Image.Image | torch.Tensor, fmt: str = "PNG") -> bytes:
    if isinstance(img, torch.Tensor):
        img = tensor_to_pil(img)
    if fmt == "NPY":  # Pillow does not write .npy; H x W for gray, as encode_raster writes it
        return npy_bytes(np.asarray(img))
    buffer = io.BytesIO()
    options = {"JPEG": {"quality": 95}, "PNG": {"compress_level": PNG_COMPRESS_LEVEL}}.get(fmt, {})
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def save_image(img: Image.Image | torch.Tensor, path: str | os.PathLike) -> None:
    """Write an image atomically; the format follows the file extension."""
    write_bytes_atomic(path, encode_image(img, format_for(path)))


def preview_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) as 3 channels for viewing: gray repeated, the first three of more, the first
    of two."""
    channels = x.shape[1]
    if channels >= 3:
        return x[:, :3]
    return x[:, :1].expand(-1, 3, -1, -1)

"""Which files are images, and reading them safely: every image p2p reads or writes passes here.

The bytes are untrusted: only regular files are read (a link to /dev/zero never ends), Pillow
tries only PIL_FORMATS (its EPS plugin runs Ghostscript), and what a header declares is checked
against MAX_PIXELS, MAX_DECODED_BYTES and MAX_TIFF_PAGES before anything is decoded.
"""

import io
import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from p2p.errors import ImageTooLarge, P2PError, human_bytes
from p2p.limits import MAX_PIXELS, MAX_SIDE

# What we read and write: extension -> Pillow format.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP",
           ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM", ".npy": "NPY"}
IMAGE_EXTENSIONS = set(FORMATS)
# What Pillow may decode: the formats above, and GIF (stdin, uploads). An allow-list: left to
# itself Pillow tries every plugin it has, EPS among them, whose decoding runs Ghostscript on the
# file's bytes.
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow warns above this (we make it an error) before decoding
# MAX_PIXELS bounds one plane; TIFF pages and samples and .npy channels multiply it. All of a
# file's pixels may take 2 GiB decoded: a 16384x16384 16-bit RGBA image.
MAX_DECODED_BYTES = MAX_PIXELS * 4 * 2
# TIFF pages become channels: far more than a model reads, few enough that following a hostile
# file's chain of pages (tifffile follows a loop in it for 2^32 steps) stays fast.
MAX_TIFF_PAGES = 1024
# tifffile logs what it finds wrong in a file; p2p reports it as one P2PError instead (an app
# that configures logging still gets the records).
logging.getLogger("tifffile").addHandler(logging.NullHandler())
Source = str | os.PathLike | bytes


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted order of their relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise P2PError(f"{folder}: not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


def images_by_name(folder: str | os.PathLike) -> dict[str, Path]:
    """``list_images(folder)`` by relative path without extension, how files are matched across
    folders (A/x.tif with B/x.png); two files that differ only in extension are refused."""
    folder = Path(folder)
    files: dict[str, Path] = {}
    for path in list_images(folder):
        name = path.relative_to(folder).with_suffix("").as_posix()
        if name in files:
            raise P2PError(f"{folder}: {files[name].relative_to(folder)} and "
                           f"{path.relative_to(folder)} have the same name", "keep one of them")
        files[name] = path
    return files


def label_of(source: Source, name: str | None) -> str:
    return name or (f"{source}" if not isinstance(source, bytes) else "<stdin>")


def open_file(path: str | os.PathLike, label: str) -> BinaryIO:
    """``path`` opened for reading; P2PError naming it unless it is a regular file that is not
    empty. Links are followed: a link to /dev/zero would be read until memory runs out, and a pipe
    or a socket blocks, so neither is opened."""
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise P2PError(f"{label}: is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise P2PError(f"{label}: not a regular file (a device, pipe or socket)")
        if info.st_size == 0:
            raise P2PError(f"{label}: empty file (0 bytes)")
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise P2PError(f"{label}: no such file") from None
    except OSError as exc:
        raise P2PError(f"{label}: cannot read ({exc.strerror or exc})") from None


def format_for(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise P2PError(f"{path}: unknown image extension {suffix!r}",
                       f"use one of {', '.join(sorted(FORMATS))}")
    return FORMATS[suffix]


def read_bytes(path: str | os.PathLike, label: str) -> bytes:
    with open_file(path, label) as file:
        try:
            return file.read()
        except OSError as exc:
            raise P2PError(f"{label}: cannot read ({exc.strerror or exc})") from None


def check_declared(label: str, height: int, width: int, channels: int,
                    dtype: np.dtype) -> None:
    """Refuse, from what a header declares, an image over MAX_PIXELS or MAX_DECODED_BYTES:
    before anything is allocated for it."""
    if height * width > MAX_PIXELS:
        raise ImageTooLarge(f"{label}: image size {width}x{height} is too large",
                            f"resize it below {MAX_SIDE}x{MAX_SIDE} first")
    size = height * width * channels * dtype.itemsize
    if size > MAX_DECODED_BYTES:
        raise ImageTooLarge(f"{label}: {width}x{height} pixels of {channels} {dtype} channel(s) "
                            f"are {human_bytes(size)} decoded, over the limit of "
                            f"{human_bytes(MAX_DECODED_BYTES)}",
                            "store fewer pages or channels per file")


def check_pixels(shape: tuple[int, ...], dtype: np.dtype, label: str) -> None:
    """Refuse an array that is not (H, W, C) of integers, floats or booleans."""
    if len(shape) != 3 or min(shape) < 1:
        raise P2PError(f"{label}: array of shape {shape} is not an image",
                       "images are H x W or H x W x C")
    if dtype.kind not in "uifb":
        raise P2PError(f"{label}: values of type {dtype} are not pixels",
                       "store integers or floats")


def npy_bytes(pixels: np.ndarray) -> bytes:
    """``pixels`` as the bytes of a ``.npy`` file (never a pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, pixels, allow_pickle=False)
    return buffer.getvalue()

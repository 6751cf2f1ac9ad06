"""The built-in quickstart dataset: label maps -> shaded renders, generated deterministically.

Each pair is a flat-colour label map (A) of circles, rectangles and triangles on a background,
and a "photo" (B) in which every class has its own appearance: shaded spheres, striped bricks,
gradient triangles and a textured sky. Small enough to train on 2 CPU cores in a minute, and
structured enough that the samples visibly improve. No network, same bytes on every machine.
"""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = {"train": 200, "val": 20, "test": 20}
SIZE = 64
LABEL_COLOURS = {"background": (40, 40, 120), "circle": (220, 40, 40),
                 "rectangle": (40, 200, 40), "triangle": (230, 220, 40)}


def _background(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size] / size
    label = np.empty((size, size, 3), np.float32)
    label[:] = LABEL_COLOURS["background"]
    phase = rng.uniform(0, 2 * np.pi)
    sky = np.stack([90 + 80 * y, 140 + 60 * y, 230 - 40 * y], -1)
    sky += 12 * np.sin(9 * x + 5 * y + phase)[..., None]
    return label, sky


def _shape_mask(kind: str, size: int, rng: np.random.Generator):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(0.15, 0.85, 2) * size
    r = rng.uniform(0.1, 0.22) * size
    if kind == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r**2, (x - cx) / r, (y - cy) / r
    if kind == "rectangle":
        w, h = rng.uniform(0.6, 1.4, 2) * r
        return (abs(x - cx) <= w) & (abs(y - cy) <= h), (x - cx) / w, (y - cy) / h
    # triangle pointing up: below the two slanted edges, above the base
    mask = (y <= cy + r) & (y >= cy - r + 2 * abs(x - cx))
    return mask, (x - cx) / r, (y - cy) / r


def _appearance(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if kind == "circle":  # a sphere lit from the top left
        z = np.sqrt(np.clip(1 - u**2 - v**2, 0, 1))
        light = np.clip(-0.5 * u - 0.5 * v + 0.7 * z, 0, 1)
        return np.stack([250 * light + 5, 140 * light + 10, 30 * light + 5], -1)
    if kind == "rectangle":  # bricks: horizontal mortar lines
        mortar = (np.abs(np.sin(v * 6.0)) < 0.25)[..., None]
        return np.where(mortar, np.array([200, 200, 190]), np.array([150, 60, 40]))
    return np.stack([120 + 100 * v, 40 + 20 * u, 160 - 60 * v], -1)  # a purple gradient


def make_pair(rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    label, photo = _background(size, rng)
    for _ in range(rng.integers(2, 6)):
        kind = ("circle", "rectangle", "triangle")[rng.integers(0, 3)]
        mask, u, v = _shape_mask(kind, size, rng)
        label[mask] = LABEL_COLOURS[kind]
        photo[mask] = _appearance(kind, u, v)[mask]
    pair = np.concatenate([label, photo], axis=1)
    return Image.fromarray(np.clip(pair, 0, 255).astype(np.uint8), "RGB")


def generate(root: str | os.PathLike, seed: int = 0) -> Path:
    """Write the dataset (``train/ val/ test/``, A|B PNGs) to ``root``, atomically."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        rng = np.random.default_rng(seed)
        for split, count in SPLITS.items():
            (staging / split).mkdir()
            for i in range(1, count + 1):
                make_pair(rng).save(staging / split / f"{i}.png")
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root

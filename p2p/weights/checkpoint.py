"""The checkpoint format: one ``torch.save``d dict of tensors and plain Python values.

Every checkpoint holds the generator and what is needed to use it (``generator_config``,
``direction``, ``image_size``: an int for a square, else [height, width]). Checkpoints written
since preprocessing modes and N-channel data add ``preprocess`` (mode, load and crop sizes) and
``normalization`` (per side: the files' dtype and the value range mapped to [-1, 1]); older
ones read as ``resize_and_crop`` at ``image_size`` on 8-bit files. A generator whose decoder
resizes records ``upsample: resize`` in its ``generator_config``; without the key it has the
published transposed convolutions (``GeneratorConfig.to_dict``). A training checkpoint adds
the discriminator, both optimizers and schedulers, the iteration, the RNG states and the resolved
recipe. Zoo entries are generator-only checkpoints. Loading always uses ``weights_only=True``:
a checkpoint is data.
"""

import math
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2p.data.paired import DIRECTIONS
from p2p.data.preprocess import Preprocess, as_size
from p2p.errors import P2PError, shown
from p2p.models import GeneratorConfig, state_shapes
from p2p.paths import atomic_file, link_atomic
from p2p.weights import safe_pickle

FORMAT = "p2p-checkpoint/1"
LATEST = "latest.pt"  # in a run directory: checkpoints/latest.pt
BEST = "best.pt"  # checkpoints/best.pt: the generator with the best validation result
HISTORY_NAME = re.compile(r"iter_(\d{8,})\.pt")  # checkpoints/iter_NNNNNNNN.pt


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    # To a file object, not a path: torch then writes through Python, so a failed write keeps
    # its reason (disk full, ...) instead of becoming an "unexpected pos" RuntimeError.
    with atomic_file(path) as f:
        torch.save({"format": FORMAT, **state}, f)


def generator_state(generator: nn.Module, direction: str, image_size: int | tuple[int, int],
                    preprocess: dict | None = None,
                    normalization: dict | None = None) -> dict[str, Any]:
    """The part of a checkpoint that translation needs. ``preprocess`` is
    ``Preprocess.to_dict()``; ``normalization`` maps ``source`` and ``target`` to
    ``{"dtype": ..., "range": [min, max], "explicit": bool}`` (explicit: set by data.range, not
    by the files' depth)."""
    height, width = as_size(image_size)
    state = {"generator_config": generator.config.to_dict(), "direction": direction,
             "image_size": height if height == width else [height, width],
             "generator": generator.state_dict()}
    if preprocess is not None:
        state["preprocess"] = preprocess
    if normalization is not None:
        state["normalization"] = normalization
    return state


def image_size_of(state: dict) -> tuple[int, int]:
    """The (height, width) a checkpoint's generator was trained at."""
    return as_size(state["image_size"], "image_size")


def preprocess_of(state: dict) -> dict:
    """The checkpoint's preprocessing; checkpoints from before the modes resized to their size."""
    if "preprocess" in state:
        return state["preprocess"]
    size = list(image_size_of(state))
    return {"mode": "resize_and_crop", "load_size": size, "crop_size": size}


def normalization_of(state: dict) -> dict:
    """The checkpoint's value ranges per side; before N-channel data, 8-bit files."""
    eight_bit = {"dtype": "uint8", "range": [0.0, 255.0], "explicit": False}
    return state.get("normalization", {"source": eight_bit, "target": eight_bit})


def writes_8bit_images(normalization: dict, out_channels: int) -> bool:
    """Whether a generator's outputs are plain 8-bit images: 1 or 3 channels over the full
    0..255 (what Pillow writes, and what FID and IS read)."""
    target = normalization["target"]
    return target["dtype"] == "uint8" and not target["explicit"] and out_channels in (1, 3)


# ---- the checkpoints of a run: latest, the history, the best -----------------------------------

def history_path(run_dir: Path, iteration: int) -> Path:
    return run_dir / "checkpoints" / f"iter_{iteration:08d}.pt"


def history(run_dir: Path) -> list[int]:
    """The iterations of ``checkpoints/iter_NNNNNNNN.pt`` in ``run_dir``, ascending."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir()
                  if (m := HISTORY_NAME.fullmatch(p.name)))


def available(run_dir: Path) -> list[str]:
    """The selectors that name a checkpoint of ``run_dir``: latest, best, then iterations."""
    folder = run_dir / "checkpoints"
    return ([s for s in ("latest", "best") if (folder / f"{s}.pt").is_file()]
            + [str(i) for i in history(run_dir)])


def save_training_checkpoint(run_dir: Path, state: dict[str, Any], keep: int) -> None:
    """``checkpoints/latest.pt`` and, when ``keep`` > 0, ``checkpoints/iter_NNNNNNNN.pt`` of the
    same state; only the newest ``keep`` history files stay. The state is serialized once: the
    history file is written, and latest.pt becomes a hard link to it (a copy where the filesystem
    has no hard links)."""
    latest = run_dir / "checkpoints" / LATEST
    if keep == 0:
        save_checkpoint(latest, state)
        return
    iteration = int(state["iteration"])
    kept = history_path(run_dir, iteration)
    save_checkpoint(kept, state)
    link_atomic(kept, latest)
    for old in [i for i in history(run_dir) if i != iteration][:-(keep - 1) or None]:
        history_path(run_dir, old).unlink(missing_ok=True)


def save_best(run_dir: Path, state: dict[str, Any]) -> None:
    save_checkpoint(run_dir / "checkpoints" / BEST, state)


def best_metrics(run_dir: Path) -> dict | None:
    """What ``checkpoints/best.pt`` records (``iteration``, ``metric``, ``metrics``), or None
    when there is none. Reads the small values only (memory-mapped)."""
    path = run_dir / "checkpoints" / BEST
    if not path.is_file():
        return None
    state = load_weights_only(path, mmap=True)
    return {key: state.get(key) for key in ("iteration", "metric", "metrics")}


def load_weights_only(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                      mmap: bool = False, *, inert_classes: bool = False) -> Any:
    """``torch.load`` of any file (ours or published) that refuses arbitrary pickled objects.

    ``mmap=True`` (files written by ``torch.save``) reads tensors only when they are used.
    ``inert_classes=True`` (another tool's training checkpoint, e.g. mmagic 1.x / mmengine's):
    objects of classes that weights-only loading refuses are read as inert placeholders by
    ``p2p.weights.safe_pickle`` (tensors on the CPU) instead; functions are still refused.
    """
    try:
        if safe_pickle.is_zip_format(path):
            with zipfile.ZipFile(path) as archive:
                safe_pickle.check_records(archive)  # before torch.load allocates any record
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except safe_pickle.RefusedRecord as exc:
        raise _unreadable(path, str(exc)) from None
    except pickle.UnpicklingError as exc:
        refused = _refused_global(str(exc))
        if refused is None:
            raise _unreadable(path) from None
    except OSError as exc:
        raise P2PError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except MemoryError:
        raise
    except Exception:  # anything else while parsing an untrusted file: it is not a checkpoint
        raise _unreadable(path) from None
    if not inert_classes or not safe_pickle.is_zip_format(path):
        raise _refused(path, refused)
    try:
        return safe_pickle.load(path)
    except safe_pickle.RefusedGlobal as exc:
        raise _refused(path, exc.name) from None
    except (OSError, MemoryError):
        raise
    except Exception:
        raise _unreadable(path) from None


def _refused_global(message: str) -> str | None:
    """The global that torch's weights-only unpickler refused, or None when the file is corrupt.

    torch names it as "GLOBAL <name> was not an allowed global" or "GLOBAL <name> whose module
    ... is blocked"; a corrupt file yields other complaints, or a name that cannot exist.
    """
    match = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", message)
    if match is None or not safe_pickle.could_exist(match[1]):
        return None
    return match[1]


def _refused(path: str | os.PathLike, name: str) -> P2PError:
    return P2PError(f"{path}: refused to load: it needs {name}, which could run code",
                    "only load checkpoints from sources you trust, converted by p2p")


def _unreadable(path: str | os.PathLike, reason: str = "corrupt, truncated or not a PyTorch "
                "file") -> P2PError:
    return P2PError(f"{path}: not a readable checkpoint ({reason})",
                    "check its size and checksum, or download it again")


# ---- checks of what a checkpoint or model folder records, before anything is built -----------

# The depths of the files a generator reads and writes (images/raster.py).
DTYPES = ("uint8", "uint16", "float32")


def check_generator(state: dict, origin: str | os.PathLike,
                    shapes: dict[str, tuple[int, ...]] | None = None) -> GeneratorConfig:
    """The generator config of a checkpoint dict, once every recorded fact checks out: the
    config's fields, the direction, the training size, preprocessing and normalization (each
    one's type and range), and the names and shapes of the tensors (``state["generator"]``, or
    ``shapes`` as a model folder's header gives them before they are read) against those the
    config gives (computed without memory). Files are untrusted: a P2PError names the first
    that does not, before anything is built."""
    required = ["generator_config", "direction", "image_size"]
    if shapes is None:
        required.append("generator")
    missing = [k for k in required if k not in state]
    if missing:
        raise P2PError(f"{origin}: incomplete p2p checkpoint (no {', '.join(missing)})",
                       "save it again with p2p, or import published weights with p2p zoo import")
    try:
        config = GeneratorConfig.from_dict(state["generator_config"])
        if state["direction"] not in DIRECTIONS:
            raise P2PError(f"direction must be one of {', '.join(DIRECTIONS)}, got "
                           f"{shown(state['direction'])}")
        image_size_of(state)
        Preprocess.from_dict(preprocess_of(state))
        _check_normalization(normalization_of(state))
    except P2PError as exc:
        raise P2PError(f"{origin}: {exc.message}",
                       "it was not written by p2p, or was edited since") from None
    if shapes is None:
        shapes = tensor_shapes(state["generator"], origin)
    problem = _shape_problem(state_shapes(config), shapes, "its generator_config")
    if problem:
        raise P2PError(f"{origin}: the generator in this checkpoint does not load ({problem})")
    return config


def _check_normalization(normalization: Any) -> None:
    sides = normalization if isinstance(normalization, dict) else {}
    for side in ("source", "target"):
        entry = sides.get(side)
        if not (isinstance(entry, dict) and entry.get("dtype") in DTYPES
                and type(entry.get("explicit")) is bool and _is_range(entry.get("range"))):
            raise P2PError(f"normalization.{side} is {{dtype: {' or '.join(DTYPES)}, range: "
                           f"[low, high] with low < high, explicit: true or false}}, got "
                           f"{shown(entry)}")


def _is_range(value: Any) -> bool:
    """[low, high] of numbers, low < high and high - low finite: [-1, 1] is it scaled by that."""
    if not (isinstance(value, list) and len(value) == 2
            and all(type(v) in (int, float) for v in value)):
        return False
    low, high = value
    return low < high and math.isfinite(high - low)


def tensor_shapes(tensors: Any, origin: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """The shapes of a generator's tensors as a loaded file holds them, once they are what a
    generator's state_dict is: named by text, dense tensors holding their values (not sparse,
    not meta), needing no more bytes than their storages hold. A pickle can make tensors that
    overlap (stride 0: a 1-element storage read as a 4096x4096 tensor); a generator built for
    their shapes would take far more memory than the file."""
    if not isinstance(tensors, dict) or not tensors:
        raise P2PError(f"{origin}: holds no generator weights")
    storages = {}
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise P2PError(f"{origin}: a tensor is named {shown(name)}, not by text",
                           "is it a generator checkpoint?")
        if not isinstance(tensor, torch.Tensor):
            raise P2PError(f"{origin}: {name!r} is not a tensor", "is it a generator checkpoint?")
        if tensor.layout != torch.strided or tensor.is_meta:
            kind = "meta" if tensor.is_meta else str(tensor.layout).removeprefix("torch.")
            raise P2PError(f"{origin}: {name!r} is a {kind} tensor, not a dense one holding "
                           "its values", "is it a generator checkpoint?")
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    needed = sum(t.numel() * t.element_size() for t in tensors.values())
    if needed > sum(storages.values()):
        raise P2PError(f"{origin}: its tensors overlap: they would need {needed} bytes, the "
                       f"file holds {sum(storages.values())}", "is it a generator checkpoint?")
    return {name: tuple(tensor.shape) for name, tensor in tensors.items()}


def _shape_problem(expected: dict[str, torch.Size], shapes: dict[str, tuple[int, ...]],
                   ours: str) -> str | None:
    """The first difference between the names and shapes a generator has (``ours``) and the
    ones a file holds, or None."""
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    if missing or unexpected:
        first = (f"no tensor {missing[0]!r} there" if missing
                 else f"tensor {unexpected[0]!r} there is not in {ours}")
        return f"{first} ({len(missing)} missing, {len(unexpected)} unexpected)"
    for name, shape in expected.items():
        if tuple(shapes[name]) != tuple(shape):
            return (f"tensor {name!r} has shape {tuple(shapes[name])} there but {tuple(shape)} "
                    f"in {ours}")
    return None


def load_generator_weights(generator: torch.nn.Module, tensors: Any, origin: str) -> None:
    """Load ``tensors`` into ``generator`` strictly: the same names, every one used, the same
    shapes; the error names the first tensor that differs."""
    shapes = tensor_shapes(tensors, origin)
    problem = _shape_problem({k: v.shape for k, v in generator.state_dict().items()}, shapes,
                             "this recipe's generator")
    if problem:
        raise P2PError(f"{origin}: not the same generator: {problem}",
                       "the recipe's model must match the checkpoint's generator: num_downs, ngf, "
                       "norm, upsample, in_channels and out_channels")
    generator.load_state_dict(tensors, strict=True)

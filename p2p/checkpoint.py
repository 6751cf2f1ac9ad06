"""The checkpoint format: one ``torch.save``d dict of tensors and plain Python values.

Every checkpoint holds the generator and what is needed to use it (``generator_config``,
``direction``, ``image_size``: an int for a square, else [height, width]). Checkpoints written
since preprocessing modes and N-channel data add ``preprocess`` (mode, load and crop sizes) and
``normalization`` (per side: the files' dtype and the value range mapped to [-1, 1]); older
ones read as ``resize_and_crop`` at ``image_size`` on 8-bit files. A training checkpoint adds
the discriminator, both optimizers and schedulers, the iteration, the RNG states and the resolved
recipe. Zoo entries are generator-only checkpoints. Loading always uses ``weights_only=True``:
a checkpoint is data.
"""

import os
import pickle
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2p import safe_pickle
from p2p.data.preprocess import as_size
from p2p.errors import P2PError
from p2p.models import GeneratorConfig, build_generator
from p2p.paths import atomic_file, link_atomic

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
    state = {"generator_config": asdict(generator.config), "direction": direction,
             "image_size": height if height == width else [height, width],
             "generator": generator.state_dict()}
    if preprocess is not None:
        state["preprocess"] = preprocess
    if normalization is not None:
        state["normalization"] = normalization
    return state


def image_size_of(state: dict) -> tuple[int, int]:
    """The (height, width) a checkpoint's generator was trained at."""
    return as_size(state["image_size"])


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


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (its ``checkpoints/latest.pt``), or a run directory
    with a selector: ``RUN_DIR@latest``, ``RUN_DIR@best`` or ``RUN_DIR@ITERATION``.

    Hugging Face model folders (see hub.py) resolve to themselves, ``hf:OWNER/NAME[@REV]`` to
    the downloaded folder.
    """
    from p2p import hub  # light: its dependencies load when a folder is read or fetched

    if hub.is_reference(path):
        return hub.download(str(path))
    if hub.is_model_folder(path):
        return Path(path)
    path = Path(path)
    if path.is_dir():
        latest = path / "checkpoints" / LATEST
        if not latest.is_file():
            raise P2PError(f"{path}: no checkpoint in this run directory (expected {latest})",
                           "train it first or pass a checkpoint file")
        return latest
    if path.exists():
        return path
    run_dir, at, selector = str(path).rpartition("@")
    if at and Path(run_dir).is_dir():
        return _select(Path(run_dir), selector)
    raise P2PError(f"{path}: no such checkpoint file or run directory")


def _select(run_dir: Path, selector: str) -> Path:
    folder = run_dir / "checkpoints"
    if selector in ("latest", "best"):
        chosen = folder / f"{selector}.pt"
    elif selector.isdigit():
        chosen = history_path(run_dir, int(selector))
    else:
        raise P2PError(f"{run_dir}@{selector}: unknown selector {selector!r}",
                       "use RUN_DIR@best, RUN_DIR@latest or RUN_DIR@ITERATION")
    if not chosen.is_file():
        present = ", ".join(available(run_dir)) or "none"
        raise P2PError(f"{run_dir}@{selector}: no such checkpoint in this run",
                       f"it has: {present}")
    return chosen


def run_directory(spec: str | os.PathLike) -> Path | None:
    """The run directory that ``spec`` (as ``resolve`` takes it) names, if it names one."""
    path = Path(spec)
    if path.is_dir():
        return path
    run_dir, at, _ = str(path).rpartition("@")
    return Path(run_dir) if at and not path.exists() and Path(run_dir).is_dir() else None


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
    ``p2p.safe_pickle`` (tensors on the CPU) instead; functions are still refused.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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


def _unreadable(path: str | os.PathLike) -> P2PError:
    return P2PError(f"{path}: not a readable checkpoint (corrupt, truncated or not a PyTorch "
                    "file)", "check its size and checksum, or download it again")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = resolve(path)
    state = load_weights_only(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise P2PError(f"{path}: not a p2p checkpoint",
                       "import published weights with 'p2p zoo import'")
    return state


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Build the generator stored in a checkpoint; returns (generator, checkpoint dict)."""
    from p2p import hub

    path = resolve(path)
    state = (hub.load_state(path, map_location) if hub.is_model_folder(path)
             else load_checkpoint(path, map_location))
    missing = [k for k in ("generator_config", "generator", "direction", "image_size")
               if k not in state]
    if missing:
        raise P2PError(f"{resolve(path)}: incomplete p2p checkpoint (no {', '.join(missing)})",
                       "save it again with p2p, or import published weights with p2p zoo import")
    try:
        generator = build_generator(GeneratorConfig(**state["generator_config"]))
        generator.load_state_dict(state["generator"])
    except (TypeError, ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise P2PError(f"{resolve(path)}: the generator in this checkpoint does not load "
                       f"({first_line})") from None
    return generator, state


def load_generator_weights(generator: torch.nn.Module, tensors: Any, origin: str) -> None:
    """Load ``tensors`` into ``generator`` strictly: the same names, every one used, the same
    shapes; the error names the first tensor that differs."""
    if not isinstance(tensors, dict):
        raise P2PError(f"{origin}: holds no generator weights")
    own = generator.state_dict()
    hint = ("the recipe's model must match the checkpoint's generator: num_downs, ngf, norm, "
            "in_channels and out_channels")
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        first = (f"no tensor {missing[0]!r} there" if missing
                 else f"tensor {unexpected[0]!r} there is not in this recipe's generator")
        raise P2PError(f"{origin}: not the same generator: {first} ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected)", hint)
    for name, tensor in own.items():
        theirs = tensors[name]
        if not isinstance(theirs, torch.Tensor) or theirs.shape != tensor.shape:
            shape = tuple(theirs.shape) if isinstance(theirs, torch.Tensor) else type(theirs)
            raise P2PError(f"{origin}: tensor {name!r} has shape {shape} there but "
                           f"{tuple(tensor.shape)} in this recipe's generator", hint)
    generator.load_state_dict(tensors, strict=True)

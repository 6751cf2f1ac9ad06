"""The checkpoint format: one ``torch.save``d dict of tensors and plain Python values.

Every checkpoint holds the generator and what is needed to use it (``generator_config``,
``direction``, ``image_size``). A training checkpoint adds the discriminator, both optimizers and
schedulers, the iteration, the RNG states and the resolved recipe. Zoo entries are
generator-only checkpoints. Loading always uses ``weights_only=True``: a checkpoint is data.
"""

import os
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2p.errors import P2PError
from p2p.models import GeneratorConfig, build_generator
from p2p.paths import atomic_path

FORMAT = "p2p-checkpoint/1"
LATEST = "latest.pt"  # in a run directory: checkpoints/latest.pt


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def generator_state(generator: nn.Module, direction: str, image_size: int) -> dict[str, Any]:
    """The part of a checkpoint that translation needs."""
    return {"generator_config": asdict(generator.config), "direction": direction,
            "image_size": image_size, "generator": generator.state_dict()}


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (its ``checkpoints/latest.pt``)."""
    path = Path(path)
    if path.is_dir():
        latest = path / "checkpoints" / LATEST
        if not latest.is_file():
            raise P2PError(f"{path}: no checkpoint in this run directory (expected {latest})",
                           "train it first or pass a checkpoint file")
        return latest
    if not path.exists():
        raise P2PError(f"{path}: no such checkpoint file or run directory")
    return path


def load_weights_only(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                      mmap: bool = False) -> Any:
    """``torch.load`` of any file (ours or published) that refuses arbitrary pickled objects.

    ``mmap=True`` (files written by ``torch.save``) reads tensors only when they are used.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise P2PError(f"{path}: refused to load: it needs arbitrary pickled objects, which could "
                       f"run code ({str(exc).splitlines()[0]})",
                       "only load checkpoints from sources you trust, converted by p2p") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise P2PError(f"{path}: not a readable checkpoint ({exc})",
                       "the file may be truncated or corrupt") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = resolve(path)
    state = load_weights_only(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise P2PError(f"{path}: not a p2p checkpoint",
                       "import published weights with 'p2p zoo import'")
    return state


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Build the generator stored in a checkpoint; returns (generator, checkpoint dict)."""
    state = load_checkpoint(path, map_location)
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

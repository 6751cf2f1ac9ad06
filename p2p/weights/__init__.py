"""Where a model's weights come from: the one resolver and the one loader.

``resolve`` turns any source a user names into a file or folder: a zoo name (the registry's or
an imported one, pulled on first use), ``hf:OWNER/NAME[@REVISION]`` (downloaded into the Hub's
cache), a Hugging Face model folder, a p2p checkpoint file, or a run directory (its latest
checkpoint; ``RUN_DIR@best``, ``@latest`` and ``@ITERATION`` pick another). ``load_checkpoint``
reads what it resolves to as a checkpoint dict and ``load_generator`` builds its generator, every
recorded fact checked first (``checkpoint.check_generator``). Everything that takes a model
(translate, serve, the API, ``eval run``, ``zoo export``, ``model.init_from``) comes through here.
"""

import os
from pathlib import Path

import torch

from p2p.download import Progress
from p2p.errors import P2PError
from p2p.models import build_generator
from p2p.weights import hub, zoo
from p2p.weights.checkpoint import (
    FORMAT,
    LATEST,
    available,
    check_generator,
    history_path,
    load_weights_only,
)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")  # a name ending so is a file, not a zoo model


def resolve(source: str | os.PathLike, progress: Progress | None = None) -> Path:
    """The checkpoint file or model folder ``source`` names (see the module's docstring).

    Zoo names never contain '@' or '/', so a missing path (or a name ending like a checkpoint
    file) is reported as a missing path, any other unknown name as an unknown zoo model.
    ``progress`` follows a download."""
    text = str(source)
    if hub.is_reference(text):
        return hub.download(text)
    if hub.is_model_folder(text):
        return Path(text)
    path = Path(text)
    if path.is_dir():
        latest = path / "checkpoints" / LATEST
        if not latest.is_file():
            raise P2PError(f"{path}: no checkpoint in this run directory (expected {latest})",
                           "train it first or pass a checkpoint file")
        return latest
    if path.exists():
        return path
    run_dir, at, selector = text.rpartition("@")
    if at and Path(run_dir).is_dir():
        return _select(Path(run_dir), selector)
    if at or "/" in text or os.sep in text or path.suffix in CHECKPOINT_SUFFIXES:
        raise P2PError(f"{path}: no such checkpoint file or run directory")
    return zoo.checkpoint_path(text, progress)


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


def weights_file(path: Path) -> Path:
    """The file holding the tensors of a resolved source: itself, or a model folder's."""
    return path / hub.WEIGHTS if hub.is_model_folder(path) else path


def load_checkpoint(source: str | os.PathLike, map_location: str | torch.device = "cpu",
                    progress: Progress | None = None) -> dict:
    """The checkpoint dict of ``source``: a checkpoint file's, or a model folder's generator
    with its config (``hub.load_state``)."""
    return _read_state(resolve(source, progress), map_location)


def load_generator(source: str | os.PathLike, map_location: str | torch.device = "cpu",
                   progress: Progress | None = None):
    """Build the generator ``source`` holds; returns (generator, checkpoint dict)."""
    path = resolve(source, progress)
    state = _read_state(path, map_location)
    config = check_generator(state, path)
    generator = build_generator(config)
    try:
        generator.load_state_dict(state["generator"])
    except RuntimeError as exc:  # shapes agree: a dtype that does not convert, say
        first_line = str(exc).strip().splitlines()[0]
        raise P2PError(f"{path}: the generator in this checkpoint does not load "
                       f"({first_line})") from None
    return generator, state


def _read_state(path: Path, map_location: str | torch.device) -> dict:
    """The checkpoint dict of a resolved ``path``."""
    if hub.is_model_folder(path):
        return hub.load_state(path, map_location)
    state = load_weights_only(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise P2PError(f"{path}: not a p2p checkpoint",
                       "import published weights with 'p2p zoo import'")
    return state

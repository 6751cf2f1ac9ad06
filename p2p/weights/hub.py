"""Hugging Face model folders: read one, fetch one from the Hub (export.py writes them).

A model folder holds what the Hub expects of a model repository:

- ``model.safetensors``: the generator's tensors (safetensors: loading runs no pickle);
- ``config.json``: how to build and use it (``generator_config``, channels, direction, training
  size and preprocessing, normalisation per side as checkpoints record it, default test-time
  mode, this format's version);
- ``README.md``: the model card, YAML front matter (license, tags, ``pipeline_tag``) and a body
  built from the run (task, dataset, recipe, iterations, scores), plus ``sample.png`` when the
  run saved sample grids.

``weights.load_generator`` reads such a folder wherever a checkpoint is accepted, and
``hf:OWNER/NAME[@REVISION]`` downloads one through ``huggingface_hub`` (its cache, ``HF_ENDPOINT``
and ``HF_HUB_OFFLINE`` apply). Uploading is the Hub CLI's job: ``hf upload OWNER/NAME DIR``.
"""

import json
import os
import re
from pathlib import Path
from typing import Any

from p2p.errors import P2PError, human_bytes, install_extra
from p2p.version import __version__

PREFIX = "hf:"
FORMAT = "p2p-hf/1"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
SAMPLE = "sample.png"
# OWNER/NAME as the Hub spells repository ids; REVISION a branch, tag or commit.
REFERENCE = re.compile(r"hf:([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@([\w./-]+))?")


def is_reference(source: str | os.PathLike) -> bool:
    return str(source).startswith(PREFIX)


def is_model_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


# ---- fetch ---------------------------------------------------------------------------------

def download(reference: str) -> Path:
    """The local folder of ``hf:OWNER/NAME[@REVISION]``, downloaded into the Hub cache if needed."""
    match = REFERENCE.fullmatch(str(reference))
    if not match:
        raise P2PError(f"{reference}: not a Hugging Face model reference",
                       "write hf:OWNER/NAME or hf:OWNER/NAME@REVISION")
    repo_id, revision = match.groups()
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise P2PError(f"{reference}: downloading from the Hub needs huggingface_hub",
                       install_extra("hf")) from None
    try:
        folder = Path(huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=[CONFIG, WEIGHTS],
            library_name="p2p", library_version=__version__))
    except LocalEntryNotFoundError:
        raise P2PError(f"{reference}: not in the Hugging Face cache and the Hub cannot be "
                       "reached (HF_HUB_OFFLINE, or no network)",
                       "download it once online, or set HF_ENDPOINT to a mirror") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise P2PError(f"{reference}: cannot download ({first_line})",
                       "check the name and revision; HF_TOKEN for private models") from None
    if not is_model_folder(folder):
        raise P2PError(f"{reference}: not a p2p model ({CONFIG} and {WEIGHTS} expected)",
                       "export one with: p2p zoo export MODEL --format hf DIR")
    return folder


# ---- read ----------------------------------------------------------------------------------

MAX_CONFIG_BYTES = 1 << 20  # a config is about 1 KB


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / CONFIG
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise P2PError(f"{path}: larger than {human_bytes(MAX_CONFIG_BYTES)}, not a p2p "
                           "model config")
        config = json.loads(data)
    # ValueError: not UTF-8, not JSON, or an integer of thousands of digits; RecursionError:
    # nested thousands deep.
    except (OSError, ValueError, RecursionError) as exc:
        raise P2PError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise P2PError(f"{path}: not a p2p model config (format {FORMAT!r} expected)",
                       "export one with: p2p zoo export MODEL --format hf DIR")
    return config


def load_state(folder: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A model folder as a generator-only checkpoint dict (what ``load_generator`` builds from).

    The config and the tensors' shapes in the safetensors header are checked against each other
    (``checkpoint.check_generator``) before any tensor is read."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from p2p.weights import checkpoint

    config = read_config(folder)
    known = ("generator_config", "direction", "image_size", "preprocess", "normalization",
             "dataset", "task", "source", "iteration")
    state = {"format": checkpoint.FORMAT, **{key: config[key] for key in known if key in config}}
    weights = Path(folder) / WEIGHTS
    try:
        with safe_open(weights, framework="pt") as file:
            names = file.keys()  # safe_open is not iterable
            shapes = {key: tuple(file.get_slice(key).get_shape()) for key in names}
        checkpoint.check_generator(state, folder, shapes)
        tensors = load_file(weights, device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise P2PError(f"{weights}: not a readable safetensors file ({exc})",
                       "the file may be truncated or corrupt") from None
    return {**state, "generator": tensors}

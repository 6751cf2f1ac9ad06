"""Hugging Face model folders: write one from any generator, read one, fetch one from the Hub.

A model folder holds what the Hub expects of a model repository:

- ``model.safetensors``: the generator's tensors (safetensors: loading runs no pickle);
- ``config.json``: how to build and use it (``generator_config``, channels, direction, training
  size and preprocessing, normalisation per side as checkpoints record it, default test-time
  mode, this format's version);
- ``README.md``: the model card, YAML front matter (license, tags, ``pipeline_tag``) and a body
  built from the run (task, dataset, recipe, iterations, scores), plus ``sample.png`` when the
  run saved sample grids.

``checkpoint.load_generator`` reads such a folder wherever a checkpoint is accepted, and
``hf:OWNER/NAME[@REVISION]`` downloads one through ``huggingface_hub`` (its cache, ``HF_ENDPOINT``
and ``HF_HUB_OFFLINE`` apply). Uploading is the Hub CLI's job: ``hf upload OWNER/NAME DIR``.
"""

import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from p2p import __version__
from p2p.errors import P2PError, human_bytes
from p2p.paths import writing

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
                       "install the extra: pip install 'p2p[hf]'") from None
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

    from p2p import checkpoint

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


# ---- write ---------------------------------------------------------------------------------

def export_folder(source: str, out: str | os.PathLike, progress=None) -> Path:
    """Write the generator of ``source`` (zoo name, checkpoint, run directory, model folder or
    ``hf:`` reference) as a model folder ``out``, atomically.

    The folder is built beside ``out`` under a temporary name, read back (every tensor must equal
    the source's) and only then renamed into place. An existing
    ``out`` is replaced only if it is empty or a p2p model folder. Returns the folder.
    """
    from safetensors.torch import save

    from p2p import checkpoint, zoo
    from p2p.archive import replace_directory

    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_ours(out))):
        raise P2PError(f"{out}: exists and is not a p2p model folder",
                       "choose a new folder name (an existing model folder is replaced)")
    path = zoo.resolve_generator(source, progress)
    generator, state = checkpoint.load_generator(path)
    card = _card_facts(source, path, state)
    config = {"format": FORMAT, "p2p_version": __version__,
              "generator_config": state["generator_config"],
              "in_channels": generator.config.in_channels,
              "out_channels": generator.config.out_channels,
              "direction": state["direction"], "image_size": state["image_size"],
              # how training sized its images, and per side the files' dtype and the value
              # range mapped to [-1, 1] (8-bit: x / 127.5 - 1); see checkpoint.py
              "preprocess": checkpoint.preprocess_of(state),
              "normalization": checkpoint.normalization_of(state),
              "test_time_mode": "paper",
              **{key: card[key] for key in ("dataset", "task", "iteration") if card.get(key)},
              "source": card["source"]}
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    # Serialized here and written by Python, not by save_file: safetensors writes through a
    # private (0600) temporary file of its own, and its errors lose the OSError that names why.
    weights = save(tensors, metadata={"format": "pt"})
    work = out.parent / f".{out.name}.{secrets.token_hex(8)}.tmp"
    try:
        with writing(out):  # a full disk, a read-only folder, a path under a file: one line
            out.parent.mkdir(parents=True, exist_ok=True)
            work.mkdir()
            (work / WEIGHTS).write_bytes(weights)
            (work / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            if card["sample"] is not None:
                shutil.copyfile(card["sample"], work / SAMPLE)
            (work / CARD).write_text(model_card(out.name, config, card))
            if not _same_tensors(generator, checkpoint.load_generator(work)[0]):
                raise P2PError("the exported model differs from the source; nothing was written",
                               "this is a bug in p2p; please report it")
            work.chmod(0o755)
            replace_directory(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _is_ours(folder: Path) -> bool:
    try:
        return read_config(folder) is not None
    except P2PError:
        return False


def _same_tensors(ours, reloaded) -> bool:
    """Every tensor of the two generators equal: same keys, dtypes, shapes and values."""
    import torch

    a, b = ours.state_dict(), reloaded.state_dict()
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def _card_facts(source: str, path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """What the model card says, from the run directory, the zoo registry or an earlier card."""
    from p2p import zoo
    from p2p.metrics import METRICS_FILE

    facts: dict[str, Any] = {"dataset": state.get("dataset"), "task": state.get("task"),
                             "iteration": state.get("iteration"), "recipe": state.get("recipe"),
                             "metrics": None, "sample": None, "license": "other",
                             "source": state.get("source") or {"checkpoint": str(source)}}
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    if run_dir is not None and (run_dir / "recipe.yaml").is_file():
        facts["source"] = {"run": run_dir.name}
        metrics = run_dir / METRICS_FILE
        if metrics.is_file():
            try:
                facts["metrics"] = json.loads(metrics.read_text())
            except (OSError, json.JSONDecodeError):
                facts["metrics"] = None  # a broken metrics file is left out of the card
        samples = sorted((run_dir / "samples").glob("iter_*.png"))
        facts["sample"] = samples[-1] if samples else None
    if isinstance(facts["recipe"], dict):
        data = facts["recipe"].get("data", {})
        facts["dataset"] = facts["dataset"] or Path(str(data.get("path", ""))).name or None
    if state.get("zoo_name"):
        entry = zoo.entry_named(state["zoo_name"])
        if entry is not None:
            facts.update(dataset=entry.dataset, task=entry.task,
                         license="apache-2.0" if entry.layout == "mmagic" else "bsd")
        else:
            facts["task"] = facts["task"] or f"imported ({state.get('source', {}).get('layout')})"
    if facts["task"] is None and facts["dataset"]:
        facts["task"] = _task_from_catalog(facts["dataset"], state["direction"])
    return facts


def _task_from_catalog(dataset: str, direction: str) -> str | None:
    from p2p.data.catalog import DATASETS

    known = DATASETS.get(dataset)
    if known is None:
        return None
    source, target = (known.a, known.b) if direction == "AtoB" else (known.b, known.a)
    return f"{source} -> {target}"


def _published_row(facts: dict[str, Any], direction: str):
    from p2p.metrics.protocol import TABLE

    task = (facts["metrics"] or {}).get("task")
    for row in TABLE:
        if row.task == task or (row.dataset == facts["dataset"] and row.direction == direction):
            return row
    return None


def model_card(name: str, config: dict[str, Any], facts: dict[str, Any]) -> str:
    """README.md: YAML front matter the Hub reads, then what the model is and how to use it."""
    import yaml

    dataset = facts["dataset"]
    front = {"license": facts["license"], "library_name": "p2p", "pipeline_tag": "image-to-image",
             "tags": ["pix2pix", "image-to-image", "gan", "pytorch", "p2p"]
             + ([dataset] if dataset else [])}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {name}: pix2pix {facts['task'] or 'image-to-image'}", "",
             "A pix2pix generator (Isola et al., CVPR 2017, \"Image-to-Image Translation with "
             "Conditional Adversarial Networks\") exported by p2p.", "",
             "| | |", "| --- | --- |",
             f"| task | {_or_unknown(facts['task'])} |",
             f"| dataset | {dataset or 'not recorded'}, direction {config['direction']} |",
             f"| generator | {_inline(config['generator_config'])} |",
             f"| trained at | {_size(config['image_size'])}, preprocess "
             f"{config['preprocess'].get('mode')} |",
             f"| iterations | {_or_unknown(facts['iteration'])} |",
             f"| source | {_inline(facts['source'])} |", ""]
    if facts["license"] == "other":
        lines += ["License: not recorded by p2p; set `license:` above before publishing, "
                  "following the dataset's terms.", ""]
    lines += _scores(facts, config["direction"])
    if facts["sample"] is not None:
        lines += ["## Samples", "", "Rows of input | output | target from the end of training:",
                  "", f"![samples]({SAMPLE})", ""]
    if isinstance(facts["recipe"], dict):
        recipe = yaml.safe_dump(facts["recipe"], sort_keys=False).strip()
        lines += ["## Recipe", "", "```yaml", recipe, "```", ""]
    lines += ["## Use it with p2p", "", "```bash", "pip install 'p2p[hf]'",
              f"p2p translate --task hf:OWNER/{name} inputs/ outputs/   # from the Hub",
              f"p2p translate -c {name}/ inputs/ outputs/                # this folder",
              f"pip install 'p2p[serve]' && p2p serve --task hf:OWNER/{name}  # a web page",
              "```", "",
              "Inputs are resized to the training size (`--keep-size` pads instead) and outputs "
              "resized back. By default the generator runs in the paper's test-time mode "
              "(dropout on, each image's own batch-norm statistics; `--seed N` repeats it); "
              "`--eval-mode` is deterministic.", "",
              f"Files: `{WEIGHTS}` (the generator's tensors), `{CONFIG}` (architecture, "
              "channels, direction, training size and preprocessing, normalisation per side, "
              "default test-time mode). Publish the folder with the Hub's CLI: "
              f"`hf upload OWNER/{name} {name}/`.", ""]
    return "\n".join(lines)


def _size(image_size: int | list[int]) -> str:
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return f"{width}x{height}"


def _or_unknown(value: Any) -> str:
    return "not recorded" if value is None else str(value)


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _scores(facts: dict[str, Any], direction: str) -> list[str]:
    row = _published_row(facts, direction)
    metrics = facts["metrics"]
    if row is None and metrics is None:
        return []
    lines = ["## Scores", "", "FID and IS as the published table computes them "
             "(`p2p eval run`; lower FID and higher IS are better).", "",
             "| | FID | IS | split |", "| --- | --- | --- | --- |"]
    if metrics is not None:
        lines.append(f"| this model | {_num(metrics.get('fid'))} | {_num(metrics.get('is'))} | "
                     f"{metrics.get('split', '')} |")
    if row is not None:
        lines += [f"| published, mmagic {row.task} | {_num(row.mmagic_fid)} | "
                  f"{_num(row.mmagic_is)} | {row.split} |",
                  f"| published, official pix2pix {row.task} | {_num(row.official_fid)} | "
                  f"{_num(row.official_is)} | {row.split} |"]
    return lines + [""]


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"

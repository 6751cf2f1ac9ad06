"""``p2p zoo export``: a model as ONNX, TorchScript or a Hugging Face model folder.

ONNX and TorchScript hold the generator in eval mode (running statistics, no dropout), a fixed
function that is run on a batch of 2 against ours before it is kept. A model folder (see hub.py)
holds ``model.safetensors``, ``config.json``, a model card (``README.md``: YAML front matter and
a body built from the run: task, dataset, recipe, iterations, scores beside the published ones)
and the run's latest sample grid; every tensor is read back before the folder is renamed into
place.
"""

import io
import json
import os
import secrets
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from p2p import weights
from p2p.data.catalog import DATASETS
from p2p.errors import P2PError, install_extra
from p2p.metrics import METRICS_FILE
from p2p.paths import write_bytes_atomic, writing
from p2p.published import TABLE
from p2p.version import __version__
from p2p.weights import checkpoint, hub, zoo
from p2p.weights.hub import CARD, CONFIG, FORMAT, SAMPLE, WEIGHTS

EXPORT_FORMATS = ("onnx", "torchscript", "hf")
Progress = zoo.Progress


@dataclass(frozen=True)
class Exported:
    path: Path
    checked_with: str | None  # "torchscript" or "onnxruntime"; None: onnxruntime not installed
    # Largest output difference to our model on a batch of 2; None where no batch is run (a
    # Hugging Face folder is checked tensor by tensor).
    max_abs_diff: float | None


EXPORT_TOLERANCE = 1e-4


def export(source: str, fmt: str, out: str | os.PathLike,
           progress: Progress | None = None) -> Exported:
    """Write the generator of ``source`` as ONNX or TorchScript, batch axis dynamic.

    The exported model is the generator in eval mode (running statistics, no dropout): a fixed
    function that can be checked. It is run on a batch of 2 against ours before it is kept.
    """
    if fmt not in EXPORT_FORMATS:
        raise P2PError(f"unknown export format {fmt!r}", f"use one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "hf":  # a Hugging Face model folder
        return Exported(export_folder(source, out, progress), "p2p (every tensor read back)",
                        None)
    if fmt == "onnx":
        _onnx()  # fail before any download or conversion
    generator, state = weights.load_generator(source, progress=progress)
    generator.eval()
    (height, width), channels = checkpoint.image_size_of(state), generator.config.in_channels
    rng = torch.Generator().manual_seed(0)
    example = torch.rand(1, channels, height, width, generator=rng) * 2 - 1
    batch = torch.rand(2, channels, height, width, generator=rng) * 2 - 1
    with torch.no_grad():
        expected = generator(batch)
    # Serialized in memory and written in one atomic write: the exporters' own file writers
    # abort the process on a full disk (TorchScript) or leave a temporary file behind.
    with warnings.catch_warnings():
        # torch marks both exporters as deprecated in favour of torch.export; they still work.
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            data, actual, checked_with = _export_torchscript(generator, example, batch)
        else:
            data, actual, checked_with = _export_onnx(generator, example, batch)
    diff = None if actual is None else (actual - expected).abs().max().item()
    if diff is not None and not diff <= EXPORT_TOLERANCE:
        raise P2PError(f"the exported {fmt} model differs from ours by {diff:.3g} "
                       f"(tolerance {EXPORT_TOLERANCE}); nothing was written",
                       "this is a bug in p2p or torch; please report it")
    write_bytes_atomic(out, data)
    return Exported(Path(out), checked_with, diff)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise P2PError("ONNX export needs the onnx package",
                       install_extra("onnx")) from None
    return onnx


def _export_torchscript(generator: nn.Module, example: torch.Tensor,
                        batch: torch.Tensor) -> tuple[bytes, torch.Tensor, str]:
    with torch.no_grad():
        traced = torch.jit.trace(generator, example)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    with torch.no_grad():
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue())).eval()
        return buffer.getvalue(), loaded(batch), "torchscript"


def _export_onnx(generator: nn.Module, example: torch.Tensor,
                 batch: torch.Tensor) -> tuple[bytes, torch.Tensor | None, str | None]:
    axes = {"input": {0: "batch"}, "output": {0: "batch"}}
    buffer = io.BytesIO()
    torch.onnx.export(generator, (example,), buffer, input_names=["input"],
                      output_names=["output"], dynamic_axes=axes, dynamo=False)
    data = buffer.getvalue()
    _onnx().checker.check_model(data)
    try:
        import onnxruntime
    except ImportError:
        return data, None, None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    output = session.run(None, {"input": batch.numpy()})[0]
    return data, torch.from_numpy(output), "onnxruntime"


# ---- Hugging Face model folders -----------------------------------------------------------

def export_folder(source: str, out: str | os.PathLike, progress=None) -> Path:
    """Write the generator of ``source`` (zoo name, checkpoint, run directory, model folder or
    ``hf:`` reference) as a model folder ``out``, atomically.

    The folder is built beside ``out`` under a temporary name, read back (every tensor must equal
    the source's) and only then renamed into place. An existing
    ``out`` is replaced only if it is empty or a p2p model folder. Returns the folder.
    """
    from safetensors.torch import save

    from p2p.archive import replace_directory

    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_ours(out))):
        raise P2PError(f"{out}: exists and is not a p2p model folder",
                       "choose a new folder name (an existing model folder is replaced)")
    path = weights.resolve(source, progress)
    generator, state = weights.load_generator(path)
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
    data = save(tensors, metadata={"format": "pt"})
    work = out.parent / f".{out.name}.{secrets.token_hex(8)}.tmp"
    try:
        with writing(out):  # a full disk, a read-only folder, a path under a file: one line
            out.parent.mkdir(parents=True, exist_ok=True)
            work.mkdir()
            (work / WEIGHTS).write_bytes(data)
            (work / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            if card["sample"] is not None:
                shutil.copyfile(card["sample"], work / SAMPLE)
            (work / CARD).write_text(model_card(out.name, config, card))
            if not _same_tensors(generator, weights.load_generator(work)[0]):
                raise P2PError("the exported model differs from the source; nothing was written",
                               "this is a bug in p2p; please report it")
            work.chmod(0o755)
            replace_directory(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _is_ours(folder: Path) -> bool:
    try:
        return hub.read_config(folder) is not None
    except P2PError:
        return False


def _same_tensors(ours, reloaded) -> bool:
    """Every tensor of the two generators equal: same keys, dtypes, shapes and values."""
    a, b = ours.state_dict(), reloaded.state_dict()
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def _card_facts(source: str, path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """What the model card says, from the run directory, the zoo registry or an earlier card."""

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
    known = DATASETS.get(dataset)
    if known is None:
        return None
    source, target = (known.a, known.b) if direction == "AtoB" else (known.b, known.a)
    return f"{source} -> {target}"


def _published_row(facts: dict[str, Any], direction: str):
    task = (facts["metrics"] or {}).get("task")
    for row in TABLE:
        if row.task == task or (row.dataset == facts["dataset"] and row.direction == direction):
            return row
    return None


def model_card(name: str, config: dict[str, Any], facts: dict[str, Any]) -> str:
    """README.md: YAML front matter the Hub reads, then what the model is and how to use it."""
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
    lines += ["## Use it with p2p", "", "```bash", install_extra("hf"),
              f"p2p translate --task hf:OWNER/{name} inputs/ outputs/   # from the Hub",
              f"p2p translate -c {name}/ inputs/ outputs/                # this folder",
              f"{install_extra('serve')} && p2p serve --task hf:OWNER/{name}  # a web page",
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

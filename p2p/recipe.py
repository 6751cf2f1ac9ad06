"""Recipes: typed dataclasses loaded from YAML, validated with messages that name the fix.

A recipe has three sections, ``data``, ``model`` and ``train``. Unknown keys are errors that
suggest the closest valid key; ``--set section.key=value`` overrides any field.
"""

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from p2p.errors import P2PError
from p2p.models import DiscriminatorConfig, GeneratorConfig


@dataclass
class DataConfig:
    path: str = "synthetic"  # a dataset name (`p2p data list`) or a folder
    direction: Literal["AtoB", "BtoA"] = "AtoB"
    split: str = "train"
    load_size: int = 286  # resize both images to this square size (bicubic) ...
    crop_size: int = 256  # ... then take the same random crop of A and B
    flip: bool = True  # the same random horizontal flip for A and B
    in_channels: Literal[1, 3] = 3
    out_channels: Literal[1, 3] = 3
    batch_size: int = 1  # the global batch: with N processes, each trains on batch_size / N
    cache_gb: float = 4.0  # keep the decoded split in memory when it fits in this budget
    workers: int = 2  # decoding threads when the split is read from disk


@dataclass
class ModelConfig:
    num_downs: int = 8  # 8 = unet_256, 7 = unet_128
    ngf: int = 64
    norm: Literal["batch", "instance", "none"] = "batch"
    dropout: bool = True
    ndf: int = 64
    d_layers: int = 3  # 3 = the 70x70 PatchGAN, 1 = 16x16, 0 = pixel GAN
    d_norm: Literal["batch", "instance", "none"] = "batch"


@dataclass
class TrainConfig:
    iters: int = 80_000
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    schedule: Literal["constant", "linear"] = "constant"
    decay_iters: int = 0  # linear: lr falls to 0 over the last decay_iters iterations
    gan_loss: Literal["vanilla", "lsgan", "hinge"] = "vanilla"
    lambda_l1: float = 100.0
    seed: int = 0
    log_every: int = 100
    sample_every: int = 1000
    checkpoint_every: int = 5000
    device: str = "auto"  # auto = cuda when present, else cpu
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (avx512_bf16, AMX)
    channels_last: bool = True  # CUDA only
    fused_adam: bool = True
    compile: bool = False  # torch.compile the generator and discriminator
    tensorboard: bool = False  # also log to RUN_DIR/tensorboard (needs the tensorboard extra)


@dataclass
class Recipe:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def generator_config(self) -> GeneratorConfig:
        m = self.model
        return GeneratorConfig(self.data.in_channels, self.data.out_channels, m.num_downs, m.ngf,
                               m.norm, m.dropout)

    def discriminator_config(self) -> DiscriminatorConfig:
        m = self.model
        return DiscriminatorConfig(self.data.in_channels + self.data.out_channels, m.ndf,
                                   m.d_layers, m.d_norm)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"


def _coerce(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise P2PError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported recipe field type {kind}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if kind in (int, float, str, bool) and not (
        isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    ):
        raise P2PError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise P2PError(f"{where}: expected a mapping of keys to values, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise P2PError(f"unknown recipe key '{path}'", _suggest(str(key), names))
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value or {}, path)
        else:
            kwargs[key] = _coerce(value, kind, path)
    return cls(**kwargs)


def _validate(recipe: Recipe) -> Recipe:
    d, m, t = recipe.data, recipe.model, recipe.train
    positive = {"data.load_size": d.load_size, "data.crop_size": d.crop_size,
                "data.batch_size": d.batch_size, "model.ngf": m.ngf, "model.ndf": m.ndf,
                "train.iters": t.iters, "train.log_every": t.log_every,
                "train.sample_every": t.sample_every, "train.checkpoint_every": t.checkpoint_every}
    for key, value in positive.items():
        if value <= 0:
            raise P2PError(f"recipe: {key} must be positive, got {value}")
    if d.crop_size > d.load_size:
        raise P2PError(f"recipe: data.crop_size ({d.crop_size}) is larger than data.load_size "
                       f"({d.load_size})", "crop_size must be <= load_size")
    if not 5 <= m.num_downs <= 9:
        raise P2PError(f"recipe: model.num_downs must be between 5 and 9, got {m.num_downs}")
    if d.crop_size % 2**m.num_downs:
        raise P2PError(f"recipe: data.crop_size {d.crop_size} is not a multiple of "
                       f"2^model.num_downs = {2**m.num_downs}",
                       "use crop_size 256 with num_downs 8, or 128 with 7")
    if not 0 <= m.d_layers <= 5:
        raise P2PError(f"recipe: model.d_layers must be between 0 and 5, got {m.d_layers}")
    if not 0 <= t.decay_iters <= t.iters:
        raise P2PError(f"recipe: train.decay_iters must be between 0 and train.iters ({t.iters})")
    if t.lr <= 0 or t.lambda_l1 < 0:
        raise P2PError("recipe: train.lr must be positive and train.lambda_l1 non-negative")
    return recipe


def apply_override(values: dict, assignment: str) -> None:
    """Apply ``section.key=value`` (value parsed as YAML) to a raw recipe dict."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise P2PError(f"--set {assignment!r}: expected section.key=value, e.g. train.iters=1000")
    *sections, leaf = key.strip().split(".")
    node = values
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise P2PError(f"--set {assignment!r}: '{section}' is not a recipe section")
    node[leaf] = yaml.safe_load(raw) if raw.strip() else ""


def recipe_from_dict(values: dict, overrides: list[str] = ()) -> Recipe:
    values = dict(values or {})
    for assignment in overrides:
        apply_override(values, assignment)
    return _validate(_build(Recipe, values, ""))


def load_recipe(path: str | os.PathLike, overrides: list[str] = ()) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise P2PError(f"{path}: no such recipe file", "see recipes/ for examples") from None
    except OSError as exc:
        raise P2PError(f"{path}: cannot read recipe ({exc.strerror})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise P2PError(f"{path}: not valid YAML{where}") from None
    if values is not None and not isinstance(values, dict):
        raise P2PError(f"{path}: a recipe is a mapping with sections data, model, train")
    try:
        return recipe_from_dict(values or {}, overrides)
    except P2PError as exc:
        raise P2PError(f"{path}: {exc.message}", exc.hint) from None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)

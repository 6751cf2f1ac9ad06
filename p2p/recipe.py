"""Recipes: typed dataclasses loaded from YAML, validated with messages that name the fix.

A recipe has three sections, ``data``, ``model`` and ``train``. Unknown keys are errors that
suggest the closest valid key; ``--set section.key=value`` overrides any field.
"""

import contextlib
import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from p2p.data.paired import DIRECTIONS
from p2p.data.preprocess import MODES, Preprocess, as_size
from p2p.errors import SHOWN_CHARS, P2PError, human_bytes, shown
from p2p.limits import MAX_COUNT, MAX_WORKERS
from p2p.losses import GAN_LOSSES
from p2p.models import (
    MAX_WIDTH,
    NORMS,
    TEST_MODES,
    UNET_DEPTHS,
    UPSAMPLINGS,
    DiscriminatorConfig,
    GeneratorConfig,
    input_multiple,
)

RESNET_BLOCKS = {"resnet_6blocks": 6, "resnet_9blocks": 9}  # model.generator -> residual blocks

ValueRange = list[float]  # [min, max]: the values that map to -1 and 1

LOGGERS = ("tensorboard", "mlflow", "wandb")  # train.loggers: p2p/training/loggers.py opens them


@dataclass
class DataConfig:
    path: str = "synthetic"  # a dataset name (`p2p data list`) or a folder
    direction: Literal[DIRECTIONS] = "AtoB"
    split: str = "train"
    # Sizes are an int (a square) or [height, width]; see `preprocess` for how they are used.
    load_size: int | list[int] = 286  # resize both images to this size (bicubic) ...
    crop_size: int | list[int] = 256  # ... then take the same random crop of A and B
    flip: bool = True  # the same random horizontal flip for A and B
    in_channels: int = 3  # any count; gray files become RGB and back, others must match
    out_channels: int = 3
    batch_size: int = 1  # the global batch: with N processes, each trains on batch_size / N
    cache_gb: float = 4.0  # keep the decoded split in memory when it fits in this budget
    workers: int = 2  # decoding threads when the split is read from disk
    # resize_and_crop, crop, scale_width (load_size = the width), scale_width_and_crop, none
    # (sides to the nearest multiple of 2^num_downs): see p2p/data/preprocess.py
    preprocess: Literal[MODES] = "resize_and_crop"
    # Values mapped to [-1, 1]: null = by the files' depth (uint8 0..255, uint16 0..65535; floats
    # need a range); [min, max] for both sides; or {A: [min, max], B: [min, max]}.
    range: ValueRange | dict[str, ValueRange] | None = None

    def preprocessing(self) -> Preprocess:
        return Preprocess(self.preprocess, as_size(self.load_size), as_size(self.crop_size))

    def side_ranges(self) -> tuple[ValueRange | None, ValueRange | None]:
        """The value ranges of the (source, target) sides; None: by the files' depth."""
        by_side = self.range if isinstance(self.range, dict) else {"A": self.range,
                                                                   "B": self.range}
        a, b = by_side.get("A"), by_side.get("B")
        return (a, b) if self.direction == "AtoB" else (b, a)


@dataclass
class ModelConfig:
    num_downs: int = 8  # 8 = unet_256, 7 = unet_128
    ngf: int = 64
    norm: Literal[NORMS] = "batch"
    dropout: bool = True
    ndf: int = 64
    d_layers: int = 3  # 3 = the 70x70 PatchGAN, 1 = 16x16, 0 = pixel GAN
    d_norm: Literal[NORMS] = "batch"
    # PatchGANs (each of d_layers, ndf, d_norm), the k-th judging the pair downsampled k times
    # (pix2pixHD's multi-scale discriminator); the GAN loss is their average. 1 = pix2pix.
    d_scales: int = 1
    # Fine-tuning: start the generator from these weights (a zoo name, a p2p checkpoint, a run
    # directory, optionally RUN_DIR@best / @latest / @ITERATION, a model folder or
    # hf:OWNER/NAME[@REVISION]) instead of the random init; the discriminator and optimizers
    # start fresh. "" = train from scratch.
    init_from: str = ""
    # unet: num_downs levels; resnet_Nblocks: the official ResNet (num_downs is not used)
    generator: Literal["unet", "resnet_6blocks", "resnet_9blocks"] = "unet"
    # How the decoder doubles the resolution: transpose (the published transposed convolutions)
    # or resize (nearest-neighbour x2, then a 3x3 convolution: no checkerboard artifacts).
    upsample: Literal[UPSAMPLINGS] = "transpose"


@dataclass
class TrainConfig:
    iters: int = 80_000
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    schedule: Literal["constant", "linear"] = "constant"
    decay_iters: int = 0  # linear: lr falls to 0 over the last decay_iters iterations
    gan_loss: Literal[GAN_LOSSES] = "vanilla"
    lambda_l1: float = 100.0
    # pix2pixHD's extra generator losses (0 = off, as pix2pix; pix2pixHD uses 10 for both):
    # L1 between the discriminator's hidden features on real and generated pairs, and L1 between
    # VGG19 features of output and target (needs 1- or 3-channel outputs and the VGG19 weights:
    # vgg_weights, null = $P2P_HOME/weights/vgg19-dcbb9e9d.pth, downloaded when missing).
    lambda_feat: float = 0.0
    lambda_vgg: float = 0.0
    vgg_weights: str | None = None
    seed: int = 0
    log_every: int = 100
    sample_every: int = 1000
    checkpoint_every: int = 5000
    device: str = "auto"  # auto = cuda when present, else cpu
    # bf16 autocast (p2p.training.loop.training_dtype). auto: on CUDA and on CPUs with native
    # bf16, else fp32 (facades trains 1.46x faster in bf16 on a Zen 4: benchmarks/README.md,
    # "CPU bf16"); true: bf16, refused where it would be emulated (slower than fp32); false:
    # fp32, what the four published recipes set.
    amp: Literal["auto", True, False] = "auto"
    channels_last: bool = True  # CUDA only
    fused_adam: bool = True
    compile: bool = False  # torch.compile the generator and discriminator
    tensorboard: bool = False  # also log to RUN_DIR/tensorboard (needs the tensorboard extra)
    # Where else the run logs (p2p/training/loggers.py), each needing its extra: tensorboard
    # (as train.tensorboard: true), mlflow (MLFLOW_TRACKING_URI, else a store in RUN_DIR/mlflow),
    # wandb (WANDB_PROJECT, WANDB_MODE...).
    loggers: list[Literal[LOGGERS]] = field(default_factory=list)
    experiment: str | None = None  # MLflow's experiment, W&B's project; null = the recipe's name
    log_checkpoints: bool = False  # also upload every checkpoint to MLflow and W&B
    # Validation on held-out pairs, and the checkpoints kept.
    val_every: int = 0  # score the generator on the validation split every N iterations; 0 = off
    val_split: str = ""  # "" = the dataset's val/ split, else its test/ split
    val_images: int = 0  # score at most this many pairs (the first by name); 0 = all of them
    val_mode: Literal[TEST_MODES] = "paper"  # the test-time mode, as p2p translate's
    val_fid: bool = False  # also FID (needs the FID Inception weights, as p2p eval)
    val_lpips: bool = False  # also LPIPS (needs the lpips extra and the AlexNet weights)
    best_metric: Literal["l1", "psnr", "ssim", "lpips", "fid"] = "l1"  # picks checkpoints/best.pt
    keep_checkpoints: int = 3  # newest checkpoints/iter_NNNNNNNN.pt kept; 0 = latest.pt only

    def logger_names(self) -> list[str]:
        """``loggers``, each once, with tensorboard when ``tensorboard`` (its older spelling) is
        true."""
        return list(dict.fromkeys([*self.loggers, *(["tensorboard"] if self.tensorboard else [])]))


@dataclass
class Recipe:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def generator_stride(self) -> int:
        """Every side the generator sees must be a multiple of this."""
        return input_multiple(self.generator_config())

    def generator_config(self) -> GeneratorConfig:
        m = self.model
        blocks = RESNET_BLOCKS.get(m.generator)
        return GeneratorConfig(self.data.in_channels, self.data.out_channels, m.num_downs, m.ngf,
                               m.norm, m.dropout, architecture="resnet" if blocks else "unet",
                               blocks=blocks or GeneratorConfig.blocks, upsample=m.upsample)

    def discriminator_config(self) -> DiscriminatorConfig:
        m = self.model
        return DiscriminatorConfig(self.data.in_channels + self.data.out_channels, m.ndf,
                                   m.d_layers, m.d_norm, m.d_scales)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key[:SHOWN_CHARS], valid, n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"


def _describe(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}"
    return "null" if kind is type(None) else kind.__name__


def _coerce(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise P2PError(f"{where}: {shown(value)} is not one of "
                           f"{', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(kind):
            with contextlib.suppress(P2PError):
                return _coerce(value, member, where)
        raise P2PError(f"{where}: expected {_describe(kind)}, got {shown(value)}")
    if kind is type(None):
        if value is not None:
            raise P2PError(f"{where}: expected null, got {shown(value)}")
        return None
    if origin is list:
        if not isinstance(value, list):
            raise P2PError(f"{where}: expected {_describe(kind)}, got {shown(value)}")
        return [_coerce(item, typing.get_args(kind)[0], where) for item in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise P2PError(f"{where}: expected {_describe(kind)}, got {shown(value)}")
        key_kind, value_kind = typing.get_args(kind)
        return {_coerce(k, key_kind, where): _coerce(v, value_kind, f"{where}.{k}")
                for k, v in value.items()}
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
        raise P2PError(f"{where}: expected {kind.__name__}, got {shown(value)}")
    return value


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise P2PError(f"{where}: expected a mapping of keys to values, got {shown(values)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise P2PError(f"unknown recipe key {shown(path)}", _suggest(str(key), names))
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value or {}, path)
        else:
            kwargs[key] = _coerce(value, kind, path)
    return cls(**kwargs)


# Upper bounds that no sensible recipe reaches; above them a value can only be a slip, and
# refusing it here keeps the memory estimate and torch's seeds within 64-bit integers. Sizes,
# counts and workers (p2p.limits) and widths (models.MAX_WIDTH) are bounded as everywhere
# else; below those, whether a width fits the machine at hand is for the memory check
# before training (p2p.training.footprint).
MAX_TRAIN_SEED = 2**32 - 1  # seed * 1_000_003 + iteration must stay a 64-bit torch seed
MAX_D_SCALES = 4  # pix2pixHD uses 2 or 3; the crop size bounds it further


def _validate_data(d: DataConfig, stride: int) -> None:
    for key in ("load_size", "crop_size"):  # their type, length, sign and limits
        as_size(getattr(d, key), f"recipe: data.{key}")
    for key in ("in_channels", "out_channels"):
        if getattr(d, key) < 1:
            raise P2PError(f"recipe: data.{key} must be at least 1, got {getattr(d, key)}")
    load, crop = as_size(d.load_size), as_size(d.crop_size)
    if d.preprocess.startswith("scale_width") and isinstance(d.load_size, list):
        raise P2PError(f"recipe: data.load_size is the width with data.preprocess {d.preprocess}, "
                       f"got {shown(d.load_size)}", "give one number")
    checked = {"resize_and_crop": (0, 1), "scale_width_and_crop": (1,)}.get(d.preprocess, ())
    if any(crop[i] > load[i] for i in checked):
        raise P2PError(f"recipe: data.crop_size ({shown(d.crop_size)}) is larger than "
                       f"data.load_size "
                       f"({shown(d.load_size)})", "crop_size must be <= load_size")
    # Only the crop modes give the generator crops; none and scale_width round each image's
    # sides to the stride themselves (crop_size is then only scale_width's least height).
    if d.preprocessing().crops and (crop[0] % stride or crop[1] % stride):
        raise P2PError(f"recipe: data.crop_size {shown(d.crop_size)} is not a multiple of "
                       f"{stride}, the generator's stride (2^model.num_downs for the U-Net, 4 "
                       "for a ResNet)", _nearest_crop_sizes(crop, stride))
    ranges = d.range.items() if isinstance(d.range, dict) else [(None, d.range)]
    for side, value_range in ranges:
        where = f"data.range.{side}" if side is not None else "data.range"
        if side not in (None, "A", "B"):
            raise P2PError(f"recipe: unknown side {where}", "the sides are A and B")
        if value_range is not None and (len(value_range) != 2 or
                                        not value_range[0] < value_range[1]):
            raise P2PError(f"recipe: {where} must be [min, max] with min < max, got "
                           f"{shown(value_range)}")


def _validate(recipe: Recipe) -> Recipe:
    d, m, t = recipe.data, recipe.model, recipe.train
    positive = {"data.batch_size": d.batch_size, "model.ngf": m.ngf, "model.ndf": m.ndf,
                "train.iters": t.iters, "train.log_every": t.log_every,
                "train.sample_every": t.sample_every, "train.checkpoint_every": t.checkpoint_every}
    for key, value in positive.items():
        if value <= 0:
            raise P2PError(f"recipe: {key} must be positive, got {shown(value)}")
    if m.generator == "unet" and m.num_downs not in UNET_DEPTHS:
        raise P2PError(f"recipe: model.num_downs must be between {UNET_DEPTHS.start} and "
                       f"{UNET_DEPTHS.stop - 1}, got {shown(m.num_downs)}")
    _validate_data(d, recipe.generator_stride())
    width_hint = "the published runs use 64"
    at_most = {"data.in_channels": (d.in_channels, MAX_WIDTH, None),
               "data.out_channels": (d.out_channels, MAX_WIDTH, None),
               "data.batch_size": (d.batch_size, MAX_COUNT, None),
               "data.workers": (d.workers, MAX_WORKERS, None),
               "model.ngf": (m.ngf, MAX_WIDTH, width_hint),
               "model.ndf": (m.ndf, MAX_WIDTH, width_hint),
               "train.iters": (t.iters, MAX_COUNT, None),
               "train.log_every": (t.log_every, MAX_COUNT, None),
               "train.sample_every": (t.sample_every, MAX_COUNT, None),
               "train.checkpoint_every": (t.checkpoint_every, MAX_COUNT, None)}
    for key, (value, limit, hint) in at_most.items():
        if value > limit:
            raise P2PError(f"recipe: {key} must be at most {limit}, got {shown(value)}", hint)
    if d.workers < 0:
        raise P2PError(f"recipe: data.workers must not be negative, got {d.workers}")
    if not (math.isfinite(d.cache_gb) and d.cache_gb >= 0):
        raise P2PError(f"recipe: data.cache_gb must be a finite number >= 0, got {d.cache_gb}",
                       "0 reads every batch from disk")
    if not 0 <= m.d_layers <= 5:
        raise P2PError(f"recipe: model.d_layers must be between 0 and 5, got {shown(m.d_layers)}")
    if not 1 <= m.d_scales <= MAX_D_SCALES:
        raise P2PError(f"recipe: model.d_scales must be between 1 and {MAX_D_SCALES}, got "
                       f"{shown(m.d_scales)}", "pix2pix uses 1, pix2pixHD 2 or 3")
    # The PatchGAN's output side at the coarsest scale, if d_layers > 0.
    coarsest = min(as_size(d.crop_size))
    for _ in range(m.d_scales - 1):
        coarsest = -(-coarsest // 2)  # each scale: 3x3 pooling, stride 2, padding 1
    patch_side = coarsest // 2**m.d_layers - 2
    if m.d_layers and patch_side < 1:
        scales = f" at model.d_scales {m.d_scales}" if m.d_scales > 1 else ""
        raise P2PError(f"recipe: data.crop_size {shown(d.crop_size)} is too small for "
                       f"model.d_layers "
                       f"{m.d_layers}{scales} (no patch left to judge)",
                       f"use crop_size >= {3 * 2**(m.d_layers + m.d_scales - 1)} or fewer "
                       f"d_layers{' or d_scales' if scales else ''}")
    if not 0 <= t.decay_iters <= t.iters:
        raise P2PError(f"recipe: train.decay_iters must be between 0 and train.iters ({t.iters})")
    if not (math.isfinite(t.lr) and t.lr > 0):
        raise P2PError(f"recipe: train.lr must be a finite number > 0, got {t.lr}",
                       "the published runs use 0.0002")
    for key, beta in (("train.beta1", t.beta1), ("train.beta2", t.beta2)):
        if not 0 <= beta < 1:  # NaN fails this too
            raise P2PError(f"recipe: {key} must be in [0, 1), got {beta}",
                           "the published runs use beta1 0.5, beta2 0.999")
    if not (math.isfinite(t.lambda_l1) and t.lambda_l1 >= 0):
        raise P2PError(f"recipe: train.lambda_l1 must be a finite number >= 0, got "
                       f"{t.lambda_l1}", "the published runs use 100")
    for key, weight in (("train.lambda_feat", t.lambda_feat), ("train.lambda_vgg", t.lambda_vgg)):
        if not (math.isfinite(weight) and weight >= 0):
            raise P2PError(f"recipe: {key} must be a finite number >= 0, got {weight}",
                           "0 turns it off; pix2pixHD uses 10")
    if t.lambda_vgg and d.out_channels not in (1, 3):
        raise P2PError(f"recipe: train.lambda_vgg needs 1- or 3-channel outputs (VGG19 reads "
                       f"RGB), but data.out_channels is {d.out_channels}",
                       "set train.lambda_vgg: 0")
    if t.vgg_weights is not None and ("\0" in t.vgg_weights or not t.vgg_weights):
        raise P2PError(f"recipe: train.vgg_weights {shown(t.vgg_weights)} is not a path",
                       "null finds or downloads them in $P2P_HOME/weights")
    if not -MAX_TRAIN_SEED <= t.seed <= MAX_TRAIN_SEED:
        raise P2PError(f"recipe: train.seed must be between -{MAX_TRAIN_SEED} and "
                       f"{MAX_TRAIN_SEED}, got {shown(t.seed)}")
    for key, text in (("name", recipe.name), ("data.path", d.path), ("data.split", d.split),
                      ("train.device", t.device)):
        if "\0" in text or len(text) > 4096:
            raise P2PError(f"recipe: {key} {shown(text)} is not a name or path")
    if recipe.name in ("", ".", "..") or "/" in recipe.name or "\\" in recipe.name:
        raise P2PError(f"recipe: name {shown(recipe.name)} is not a plain folder name",
                       "it names the run directory runs/NAME, e.g. name: facades")
    if t.experiment is not None and (not t.experiment.strip() or "\0" in t.experiment
                                     or len(t.experiment) > 4096):
        raise P2PError(f"recipe: train.experiment {shown(t.experiment)} is not a name",
                       "null uses the recipe's name")
    for key, value in {"train.val_every": t.val_every, "train.val_images": t.val_images,
                       "train.keep_checkpoints": t.keep_checkpoints}.items():
        if not 0 <= value <= MAX_COUNT:
            raise P2PError(f"recipe: {key} must be between 0 and {MAX_COUNT}, got "
                           f"{shown(value)}")
    scored = {"fid": t.val_fid, "lpips": t.val_lpips}  # the metrics validation only adds on ask
    if t.val_every and not scored.get(t.best_metric, True):
        raise P2PError(f"recipe: train.best_metric {t.best_metric} needs train.val_"
                       f"{t.best_metric}: true",
                       f"set train.val_{t.best_metric}: true, or pick l1, psnr or ssim")
    if t.val_every and t.val_lpips and d.out_channels not in (1, 3):
        raise P2PError(f"recipe: train.val_lpips compares RGB or gray images, but "
                       f"data.out_channels is {d.out_channels}", "set train.val_lpips: false")
    if t.val_every and t.val_fid and t.val_images == 1:
        raise P2PError("recipe: train.val_fid needs at least 2 validation images",
                       "raise train.val_images, or 0 for all")
    return recipe


# A recipe is a few hundred bytes; this bounds reading and parsing (PyYAML's pure-Python parser,
# the one that lets us refuse aliases, reads ~100 KB/s).
MAX_RECIPE_BYTES = 64 << 10
MAX_DEPTH = 8  # of nested mappings and lists: a recipe needs 2


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` without what a recipe never needs: tags (``!!python/...``, ``!x``),
    anchors and aliases (``&a``, ``*a``: a few hundred bytes of nested aliases expand to more
    than memory holds), and deep nesting (the composer recurses)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = f"line {event.start_mark.line + 1}"
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise P2PError(f"{line}: YAML anchors and aliases (&name, *name) are not allowed in "
                           "a recipe", "write the values out")
        if event.tag is not None:
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            raise P2PError(f"{line}: YAML tags ({shown(tag)}) are not allowed in a recipe",
                           "write plain values")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise P2PError(f"{line}: nested more than {MAX_DEPTH} levels deep",
                               "a recipe has sections data, model, train of plain values")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def parse_yaml(text: str) -> Any:
    """A recipe's YAML (a file, or a ``--set`` value) as plain values; P2PError if it is not."""
    try:
        loader = _RecipeLoader(text)  # the reader already refuses control characters
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise P2PError(f"not valid YAML{where}: {problem[:SHOWN_CHARS]}") from None
    except ValueError as exc:  # a value the YAML type cannot hold: 5000 digits, a 13th month
        raise P2PError(f"not a valid value: {str(exc)[:SHOWN_CHARS]}") from None


def apply_override(values: dict, assignment: str) -> None:
    """Apply ``section.key=value`` (value parsed as YAML) to a raw recipe dict;
    ``section.key+=value`` adds value to a list unless it is there already (``--log-to``)."""
    key, sep, raw = assignment.partition("=")
    adding = key.strip().endswith("+")
    key = key.strip().removesuffix("+")
    if not sep or not key.strip():
        raise P2PError(f"--set {shown(assignment)}: expected section.key=value, "
                       "e.g. train.iters=1000")
    *sections, leaf = key.strip().split(".")
    node = values
    for section in sections:
        if node.get(section) is None:  # absent, or an empty section in the file
            node[section] = {}
        node = node[section]
        if not isinstance(node, dict):
            raise P2PError(f"--set {shown(assignment)}: {shown(section)} is not a recipe section")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except P2PError as exc:
        raise P2PError(f"--set {shown(assignment)}: {exc.message}",
                       exc.hint or "quote text, e.g. --set name='\"my run\"'") from None
    if adding:
        present = node.get(leaf) or []  # absent: the default, an empty list
        if not isinstance(present, list):
            raise P2PError(f"--set {shown(assignment)}: {shown(key)} is not a list",
                           "set it with = instead")
        value = present if value in present else [*present, value]
    node[leaf] = value


def recipe_from_dict(values: dict, overrides: list[str] = ()) -> Recipe:
    values = dict(values or {})
    for assignment in overrides:
        apply_override(values, assignment)
    return _validate(_build(Recipe, values, ""))


def _nearest_crop_sizes(crop: tuple[int, int], stride: int) -> str:
    """The valid crop sizes nearest ``crop`` (height, width): each side rounded down and up to a
    multiple of ``stride``, the nearest first."""
    def around(side: int) -> list[int]:
        low = max(stride, side // stride * stride)
        if low == side:
            return [side]
        return sorted({low, low + stride}, key=lambda valid: (abs(valid - side), valid))

    heights, widths = around(crop[0]), around(crop[1])
    sizes = [(h, w) for h in heights for w in widths]
    sizes.sort(key=lambda size: abs(size[0] - crop[0]) + abs(size[1] - crop[1]))
    text = [str(h) if h == w else f"[{h}, {w}]" for h, w in sizes]
    return f"the nearest valid data.crop_size is {text[0]}; also {', '.join(text[1:])}"


def load_recipe(path: str | os.PathLike, overrides: list[str] = ()) -> Recipe:
    path = Path(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_RECIPE_BYTES + 1)
    except FileNotFoundError:
        raise P2PError(f"{path}: no such recipe file", "see recipes/ for examples") from None
    except OSError as exc:
        raise P2PError(f"{path}: cannot read recipe ({exc.strerror})") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise P2PError(f"{path}: larger than {human_bytes(MAX_RECIPE_BYTES)}, not a recipe",
                       "see recipes/ for examples")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise P2PError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                       f"{exc.start})", "save the recipe as UTF-8") from None
    try:
        values = parse_yaml(text)
        if values is not None and not isinstance(values, dict):
            raise P2PError("a recipe is a mapping with sections data, model, train")
        return recipe_from_dict(values or {}, overrides)
    except P2PError as exc:
        raise P2PError(f"{path}: {exc.message}", exc.hint) from None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)

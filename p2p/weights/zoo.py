"""Published pix2pix weights: the registry, pull (download + verify + convert) and import.

Two families are published, with two module trees for the same U-Net:

- official (junyanz/pytorch-CycleGAN-and-pix2pix): a bare generator state_dict of a recursive
  ``UnetSkipConnectionBlock`` tree, keys like ``model.model.1.model.3.model.1.weight``;
- mmagic (open-mmlab): a training checkpoint whose ``state_dict`` holds
  ``generators.<domain>.model.model.1.model.0.conv.weight`` (mmcv ``ConvModule``s with ``conv`` and
  ``bn`` children), plus discriminator weights that translation does not need.

Both map one to one onto our flat ``down[i]`` / ``up[i]`` blocks (level i of the recursion is our
``down[i]`` and ``up[i]``). The official ResnetGenerator (``resnet_6blocks`` / ``resnet_9blocks``)
is one flat Sequential, keys ``model.N.weight`` and ``model.N.conv_block.M.weight``; the official
format recognises it by that layout and maps it onto our ``ResnetGenerator``. Conversion is
strict: every generator tensor is used, every shape is checked, only ``num_batches_tracked``
(absent from files saved before PyTorch 0.4.1) may be missing, and a ResNet's instance norms may
carry running statistics that are dropped (as the official loader drops them). Converted weights
are p2p checkpoints under ``$P2P_HOME/zoo/NAME/generator.pt``; ``weights.resolve`` finds them
by name, and export.py writes any model as ONNX, TorchScript or a model folder.
"""

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2p.data.paired import DIRECTIONS
from p2p.data.preprocess import as_size
from p2p.download import Progress, download, sha256_file
from p2p.errors import P2PError
from p2p.models import GeneratorConfig, build_generator, state_shapes
from p2p.paths import zoo_dir
from p2p.weights import checkpoint

LAYOUTS = ("official", "mmagic")
CHECKPOINT_NAME = "generator.pt"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")  # a name ending so is a file, not a zoo model

MMAGIC_URL = "https://download.openmmlab.com/mmediting/pix2pix/refactor/"
OFFICIAL_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/models-pytorch/"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    task: str
    dataset: str  # the paired dataset it was trained on (A|B images, A on the left)
    direction: str  # "AtoB" or "BtoA" on that dataset
    layout: str  # "official" or "mmagic": the key layout of the published file
    url: str
    sha256: str | None  # full digest where known, else the prefix published in the file name
    size: int | None = None  # bytes of the published file, where known
    bgr: bool = False  # the published generator reads and writes BGR
    domain: str | None = None  # mmagic: the generator's key under ``generators.``
    image_size: int = 256


def _mmagic(name: str, task: str, dataset: str, direction: str, domain: str, file: str,
            bgr: bool) -> ZooEntry:
    # mmagic file names end with the first 8 hex digits of the file's sha256.
    return ZooEntry(name, task, dataset, direction, "mmagic", MMAGIC_URL + file,
                    sha256=file.rsplit("-", 1)[1].removesuffix(".pth"), bgr=bgr, domain=domain)


def _official(name: str, task: str, dataset: str, direction: str) -> ZooEntry:
    # The official model server publishes no checksums; pull records the digest it received.
    return ZooEntry(f"official-{name}", task, dataset, direction, "official",
                    f"{OFFICIAL_URL}{name}.pth", sha256=None)


# The four runs of the seeds' table (mmagic configs/pix2pix) and the official PyTorch generators
# (scripts/download_pix2pix_model.sh). All are unet_256 with batch norm and dropout.
# All four mmagic generators read and write BGR: mmgen trained facades on OpenCV's BGR arrays
# (to_rgb=False); the other three, MMEditing 0.x runs on RGB, were converted to that order
# ("convert-bgr"); mmagic 1.x evaluates all four on BGR input.
ENTRIES: list[ZooEntry] = [
    _mmagic("facades", "facade labels -> photo", "facades", "BtoA", "photo",
            "pix2pix_vanilla_unet_bn_1x1_80k_facades_20210902_170442-c0958d50.pth", bgr=True),
    _mmagic("aerial2maps", "aerial photo -> map", "maps", "AtoB", "map",
            "pix2pix_vanilla_unet_bn_a2b_1x1_219200_maps_convert-bgr_20210902_170729-59a31517.pth",
            bgr=True),
    _mmagic("maps2aerial", "map -> aerial photo", "maps", "BtoA", "aerial",
            "pix2pix_vanilla_unet_bn_b2a_1x1_219200_maps_convert-bgr_20210902_170814-6d2eac4a.pth",
            bgr=True),
    _mmagic("edges2shoes", "shoe edges -> photo", "edges2shoes", "AtoB", "photo",
            "pix2pix_vanilla_unet_bn_wo_jitter_flip_1x4_186840_edges2shoes_convert-bgr_"
            "20210902_170902-0c828552.pth", bgr=True),
    _official("facades_label2photo", "facade labels -> photo", "facades", "BtoA"),
    _official("sat2map", "aerial photo -> map", "maps", "AtoB"),
    _official("map2sat", "map -> aerial photo", "maps", "BtoA"),
    _official("edges2shoes", "shoe edges -> photo", "edges2shoes", "AtoB"),
    _official("day2night", "day -> night", "night2day", "BtoA"),
]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# --- names and places ---------------------------------------------------------------------------

def converted_path(name: str) -> Path:
    return zoo_dir() / name / CHECKPOINT_NAME


def imported_names() -> list[str]:
    """Names present under the zoo folder that are not registry entries (``zoo import``)."""
    folder = zoo_dir()
    registry = {e.name for e in ENTRIES}
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.name not in registry and (p / CHECKPOINT_NAME).is_file())


def _unknown(name: str) -> P2PError:
    known = [e.name for e in ENTRIES] + imported_names()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    close += [k for k in known if name.lower() in k.lower() and k not in close]
    hint = f"did you mean {', '.join(close[:3])}?" if close else "see 'p2p zoo list'"
    return P2PError(f"unknown zoo model {name!r}", hint)


def entry_named(name: str) -> ZooEntry | None:
    return next((entry for entry in ENTRIES if entry.name == name), None)


def find_entry(name: str) -> ZooEntry:
    entry = entry_named(name)
    if entry is None:
        raise _unknown(name)
    return entry


def checkpoint_path(name: str, progress: Progress | None = None) -> Path:
    """The local converted checkpoint of zoo entry ``name``, pulled on first use."""
    if not NAME_PATTERN.fullmatch(name):  # never a path out of the zoo folder
        raise _unknown(name)
    path = converted_path(name)
    if path.is_file():
        return path
    return pull(name, progress=progress).path


# --- reading published files --------------------------------------------------------------------

def _module_paths(layout: str, num_downs: int) -> dict[str, str]:
    """Where each of our layers (``down.3.conv``...) sits in the published module tree.

    Level ``d`` of the recursion holds our ``down[d]`` and ``up[d]``; its ``model`` Sequential is
    official: outermost ``[conv, sub, relu, upconv, tanh]``, middle ``[lrelu, conv, norm, sub,
    relu, upconv, norm, (dropout)]``, innermost ``[lrelu, conv, relu, upconv, norm]``;
    mmagic: ``[down, sub, up, (tanh|dropout)]``, innermost ``[down, up]``, where ``down`` and
    ``up`` are ConvModules holding ``conv`` and ``bn``.
    """
    paths = {}
    block = "model.model"
    for d in range(num_downs):
        outermost, innermost = d == 0, d == num_downs - 1
        if layout == "official":
            up_conv = 3 if outermost or innermost else 5
            paths[f"down.{d}.conv"] = f"{block}.{0 if outermost else 1}"
            paths[f"down.{d}.norm"] = f"{block}.2"
            paths[f"up.{d}.conv"] = f"{block}.{up_conv}"
            paths[f"up.{d}.norm"] = f"{block}.{up_conv + 1}"
            block = f"{block}.{1 if outermost else 3}.model"
        else:
            up = 1 if innermost else 2
            paths[f"down.{d}.conv"] = f"{block}.0.conv"
            paths[f"down.{d}.norm"] = f"{block}.0.bn"
            paths[f"up.{d}.conv"] = f"{block}.{up}.conv"
            paths[f"up.{d}.norm"] = f"{block}.{up}.bn"
            block = f"{block}.1.model"
    return paths


def published_names(config: GeneratorConfig, layout: str) -> dict[str, str]:
    """Our state_dict key -> the published key, for every tensor of our generator."""
    if config.architecture == "resnet":
        paths = _official_resnet_paths(config.blocks, config.dropout)
    else:
        paths = _module_paths(layout, config.num_downs)
    names = {}
    for key in state_shapes(config):
        layer, param = key.rsplit(".", 1)
        names[key] = f"{paths[layer]}.{param}"
    return names


def generator_tensors(raw: Any, layout: str, origin: str,
                      domain: str | None = None) -> dict[str, torch.Tensor]:
    """The generator's tensors of a loaded published file, keyed relative to the generator."""
    if layout not in LAYOUTS:
        raise P2PError(f"unknown checkpoint format {layout!r}", f"use one of {', '.join(LAYOUTS)}")
    if layout == "mmagic":
        state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
        if not isinstance(state, dict):
            raise P2PError(f"{origin}: not an mmagic checkpoint (no state_dict)",
                           "try --format official")
        # Keys that are not text cannot be a generator's; the rest of the file is not read.
        domains = sorted({k.split(".")[1] for k in state
                          if isinstance(k, str) and k.startswith("generators.")})
        if domain is not None and domain not in domains:
            raise P2PError(f"{origin}: no generator for domain {domain!r} in this mmagic "
                           f"checkpoint (found: {', '.join(domains) or 'none'})",
                           "is it the right file? try --format official")
        if domain is None:
            if len(domains) != 1:
                raise P2PError(f"{origin}: expected one mmagic generator, found "
                               f"{len(domains)} ({', '.join(domains)})",
                               "try --format official" if not domains else None)
            domain = domains[0]
        prefix = f"generators.{domain}."
        tensors = {k[len(prefix):]: v for k, v in state.items()
                   if isinstance(k, str) and k.startswith(prefix)}
    else:
        if not isinstance(raw, dict):
            raise P2PError(f"{origin}: not an official generator state_dict",
                           "try --format mmagic")
        tensors = dict(raw)
    checkpoint.tensor_shapes(tensors, origin)  # named by text, dense, not overlapping
    return tensors


def infer_config(tensors: dict[str, torch.Tensor], layout: str, origin: str,
                 dropout: bool = True) -> GeneratorConfig:
    """The U-Net these tensors belong to: depth, width, channels and norm read from the shapes.

    Dropout has no weights, so it cannot be read; the published runs all use it. An official
    ResNet generator is recognised by its layout, which also tells its dropout.
    """
    if layout == "official" and _is_official_resnet(tensors):
        return _infer_official_resnet(tensors, origin)
    convs = sum(1 for v in tensors.values() if v.dim() == 4)  # one down and one up conv per level
    num_downs = convs // 2
    paths = _module_paths(layout, max(num_downs, 1))
    first = tensors.get(paths["down.0.conv"] + ".weight")
    last = tensors.get(paths["up.0.conv"] + ".weight")
    if convs % 2 or num_downs < 5 or first is None or last is None:
        other = "mmagic" if layout == "official" else "official"
        raise P2PError(f"{origin}: not a {layout} pix2pix U-Net generator "
                       f"({len(tensors)} tensors, {convs} convolutions)",
                       f"try --format {other}")
    # Batch norm keeps running statistics; instance norm (the other published choice) has none.
    norm = "batch" if any(k.endswith(".running_mean") for k in tensors) else "instance"
    return GeneratorConfig(in_channels=first.shape[1], out_channels=last.shape[1],
                           num_downs=num_downs, ngf=first.shape[0], norm=norm, dropout=dropout)


# --- the official ResNet generator: one flat Sequential ------------------------------------------

RESNET_BLOCK_KEY = re.compile(r"model\.(\d+)\.conv_block\.")
FIRST_BLOCK = 10  # model.0-9: pad, stem conv, norm, ReLU, then (conv, norm, ReLU) twice


def _is_official_resnet(tensors: dict[str, torch.Tensor]) -> bool:
    return any(RESNET_BLOCK_KEY.match(k) for k in tensors)


def _official_resnet_paths(blocks: int, dropout: bool) -> dict[str, str]:
    """Where each of our ResNet layers sits in the official Sequential ``model``.

    ``[pad, conv, norm, relu] + 2 x [conv, norm, relu] + blocks + 2 x [convT, norm, relu] +
    [pad, conv, tanh]``; a block's ``conv_block`` is ``[pad, conv, norm, relu, (dropout), pad,
    conv, norm]``.
    """
    paths = {"stem.conv": "model.1", "stem.norm": "model.2"}
    for i, at in enumerate((4, 7)):
        paths |= {f"down.{i}.conv": f"model.{at}", f"down.{i}.norm": f"model.{at + 1}"}
    second = 6 if dropout else 5
    for b in range(blocks):
        body = f"model.{FIRST_BLOCK + b}.conv_block"
        paths |= {f"blocks.{b}.body.conv1": f"{body}.1", f"blocks.{b}.body.norm1": f"{body}.2",
                  f"blocks.{b}.body.conv2": f"{body}.{second}",
                  f"blocks.{b}.body.norm2": f"{body}.{second + 1}"}
    up = FIRST_BLOCK + blocks
    for i, at in enumerate((up, up + 3)):
        paths |= {f"up.{i}.conv": f"model.{at}", f"up.{i}.norm": f"model.{at + 1}"}
    paths["head.conv"] = f"model.{up + 7}"
    return paths


def _infer_official_resnet(tensors: dict[str, torch.Tensor], origin: str) -> GeneratorConfig:
    """Blocks, width, channels, norm and dropout of an official ResnetGenerator's tensors."""
    indices = sorted({int(RESNET_BLOCK_KEY.match(k).group(1)) for k in tensors
                      if RESNET_BLOCK_KEY.match(k)})
    blocks = len(indices)
    stem = tensors.get("model.1.weight")
    head = tensors.get(f"model.{FIRST_BLOCK + blocks + 7}.weight")
    if indices != list(range(FIRST_BLOCK, FIRST_BLOCK + blocks)) or stem is None or head is None \
            or stem.dim() != 4 or head.dim() != 4:
        raise P2PError(f"{origin}: not an official pix2pix ResNet generator ({len(tensors)} "
                       f"tensors, residual blocks at model.{', model.'.join(map(str, indices))})",
                       "is it a ResnetGenerator state_dict?")
    # A block's second conv moves from conv_block.5 to .6 when dropout sits between the two.
    second = tensors.get(f"model.{FIRST_BLOCK}.conv_block.6.weight")
    dropout = second is not None and second.dim() == 4
    # The official rule: batch norm has affine weights; instance norm has none, and only it
    # gives the convolutions a bias; with no norm they have neither.
    if "model.2.weight" in tensors:
        norm = "batch"
    elif "model.1.bias" in tensors:
        norm = "instance"
    else:
        norm = "none"
    return GeneratorConfig(in_channels=stem.shape[1], out_channels=head.shape[0], ngf=stem.shape[0],
                           norm=norm, dropout=dropout, architecture="resnet", blocks=blocks)


def _without_instance_norm_statistics(tensors: dict[str, torch.Tensor],
                                      config: GeneratorConfig) -> dict[str, torch.Tensor]:
    """Drop the running statistics that official files saved before PyTorch 0.4 hold for their
    instance norms: the official loader drops them too (instance norm uses its input's own)."""
    if config.norm != "instance":
        return tensors
    paths = _official_resnet_paths(config.blocks, config.dropout)
    norms = {theirs for ours, theirs in paths.items() if ours.rsplit(".", 1)[1].startswith("norm")}
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in tensors.items()
            if not (k.rsplit(".", 1)[0] in norms and k.rsplit(".", 1)[1] in statistics)}


def _sample(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def convert(tensors: dict[str, torch.Tensor], layout: str, origin: str, *, bgr: bool = False,
            dropout: bool = True) -> nn.Module:
    """Our generator holding exactly the published generator's weights (RGB in and out)."""
    try:  # within the bounds of what p2p builds, before it is built (or even sized)
        config = infer_config(tensors, layout, origin, dropout).checked()
    except P2PError as exc:
        raise P2PError(f"{origin}: {exc.message}", "is it a pix2pix generator?") from None
    if config.architecture == "resnet":
        tensors = _without_instance_norm_statistics(tensors, config)
    kind = "ResNet" if config.architecture == "resnet" else "U-Net"
    names = published_names(config, layout)
    ours = state_shapes(config)  # the shapes are compared before the generator is built
    missing = [theirs for key, theirs in names.items() if theirs not in tensors
               and not key.endswith("num_batches_tracked")]
    unused = sorted(set(tensors) - set(names.values()))
    if missing or unused:
        raise P2PError(f"{origin}: does not match the {layout} {kind} layout: "
                       + "; ".join(filter(None, [
                           missing and f"{len(missing)} missing ({_sample(missing)})",
                           unused and f"{len(unused)} unexpected ({_sample(unused)})"])),
                       f"is it a pix2pix {kind} generator? check --format")
    for key, theirs in names.items():
        if theirs in tensors and tensors[theirs].shape != ours[key]:
            size = (f"{config.blocks} blocks" if kind == "ResNet"
                    else f"{config.num_downs} levels")
            raise P2PError(f"{origin}: {theirs} has shape {tuple(tensors[theirs].shape)}, "
                           f"expected {tuple(ours[key])} for a {kind} with {size} "
                           f"and {config.ngf} base channels", "is the file complete?")
    generator = build_generator(config)
    own = generator.state_dict()
    # num_batches_tracked of a pre-0.4.1 file is missing: the generator's own (0) stays.
    state = {key: tensors.get(theirs, own[key]) for key, theirs in names.items()}
    if bgr:
        state = _bgr_to_rgb(state, config, origin)
    generator.load_state_dict(state)
    return generator


def _bgr_to_rgb(state: dict[str, torch.Tensor], config: GeneratorConfig,
                origin: str) -> dict[str, torch.Tensor]:
    """Reverse the colour channels a BGR generator reads (first conv) and writes (last conv)."""
    if config.in_channels != 3 or config.out_channels != 3:
        raise P2PError(f"{origin}: --bgr needs 3 input and 3 output channels")
    state = dict(state)
    flip = [2, 1, 0]
    if config.architecture == "resnet":  # both ends are Conv2d: weights (out, in, k, k)
        state["stem.conv.weight"] = state["stem.conv.weight"][:, flip]
        state["head.conv.weight"] = state["head.conv.weight"][flip]
        state["head.conv.bias"] = state["head.conv.bias"][flip]
        return state
    # Conv2d weights are (out, in, k, k); ConvTranspose2d weights are (in, out, k, k).
    state["down.0.conv.weight"] = state["down.0.conv.weight"][:, flip]
    state["up.0.conv.weight"] = state["up.0.conv.weight"][:, flip]
    state["up.0.conv.bias"] = state["up.0.conv.bias"][flip]
    return state


# --- pull and import ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Pulled:
    path: Path  # the converted checkpoint
    sha256: str  # full digest of the published file that was converted
    verified: bool  # False: the registry has no checksum for it, the digest was only recorded


def _store(generator: nn.Module, name: str, direction: str, image_size: int,
           source: dict[str, Any]) -> Path:
    path = converted_path(name)
    checkpoint.save_checkpoint(path, {**checkpoint.generator_state(generator, direction,
                                                                   image_size),
                                      "source": source, "zoo_name": name})
    return path


def _convert_file(path: Path, layout: str, *, domain: str | None = None, bgr: bool = False,
                  dropout: bool = True) -> nn.Module:
    # mmagic 1.x / mmengine training checkpoints hold mmengine objects beside the weights.
    raw = checkpoint.load_weights_only(path, inert_classes=layout == "mmagic")
    return convert(generator_tensors(raw, layout, str(path), domain), layout, str(path), bgr=bgr,
                   dropout=dropout)


def pull(name: str, *, url: str | None = None, source_file: str | os.PathLike | None = None,
         progress: Progress | None = None) -> Pulled:
    """Download (or take ``source_file``), verify, convert and store zoo entry ``name``.

    ``url`` replaces the registry's address (a mirror of the same file: the same checksum
    applies). A download that fails its checksum is deleted; a ``source_file`` is never deleted.
    """
    entry = find_entry(name)
    if source_file is not None:
        file = Path(source_file)
        if not file.is_file():
            raise P2PError(f"{file}: no such file")
        digest = sha256_file(file)
        if entry.sha256 and not digest.startswith(entry.sha256):
            raise P2PError(f"checksum mismatch for {file}: expected sha256 {entry.sha256} "
                           f"({entry.name}), got {digest}",
                           "is it the right file? it was left as it is")
        origin = str(file)
    else:
        origin = url or entry.url
        file = zoo_dir() / entry.name / entry.url.rsplit("/", 1)[-1]
        download(origin, file, sha256=entry.sha256, size=entry.size, progress=progress)
        digest = sha256_file(file)
    try:
        generator = _convert_file(file, entry.layout, domain=entry.domain, bgr=entry.bgr)
    finally:
        if source_file is None:
            file.unlink()  # the converted checkpoint replaces it; a refused file is of no use
    path = _store(generator, entry.name, entry.direction, entry.image_size,
                  {"layout": entry.layout, "origin": origin, "sha256": digest, "bgr": entry.bgr})
    return Pulled(path, digest, verified=entry.sha256 is not None)


def import_file(file: str | os.PathLike, layout: str, name: str, *, direction: str = "AtoB",
                image_size: int = 256, bgr: bool = False, dropout: bool = True) -> Path:
    """Convert a published-layout checkpoint (e.g. a junyanz ``latest_net_G.pth``) into the zoo."""
    if not NAME_PATTERN.fullmatch(name):
        raise P2PError(f"invalid zoo name {name!r}",
                       "use letters, digits, '.', '_' and '-', starting with a letter or digit")
    if entry_named(name) is not None:
        raise P2PError(f"{name!r} is a registry model",
                       f"use 'p2p zoo pull {name} --from FILE', or choose another name")
    if direction not in DIRECTIONS:
        raise P2PError(f"invalid direction {direction!r}", f"use {' or '.join(DIRECTIONS)}")
    as_size(image_size, "--image-size")  # refused now, not when the model is used
    file = Path(file)
    if not file.is_file():
        raise P2PError(f"{file}: no such file")
    generator = _convert_file(file, layout, bgr=bgr, dropout=dropout)
    return _store(generator, name, direction, image_size,
                  {"layout": layout, "origin": str(file.resolve()), "sha256": sha256_file(file),
                   "bgr": bgr})


# --- list -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Listing:
    name: str
    task: str
    direction: str
    source: str  # "mmagic", "official" or "imported"
    size: int | None  # bytes of the published file, where known
    present: bool
    local_size: int | None  # bytes of the converted checkpoint, when present
    problem: str | None = None  # why an imported entry cannot be read (it is then not present)
    channels: str = "RGB"  # the published generator's channel order; converted ones are all RGB


def _channels(bgr: bool) -> str:
    return "BGR" if bgr else "RGB"


def listing() -> list[Listing]:
    rows = []
    for entry in ENTRIES:
        path = converted_path(entry.name)
        present = path.is_file()
        rows.append(Listing(entry.name, entry.task, entry.direction, entry.layout, entry.size,
                            present, path.stat().st_size if present else None,
                            channels=_channels(entry.bgr)))
    return rows + [_imported_listing(name) for name in imported_names()]


def _imported_listing(name: str) -> Listing:
    """The row of a ``zoo import``ed entry; a file that is not one (put there by hand, or
    damaged) is listed as unreadable, with the reason, instead of failing the whole list."""
    path = converted_path(name)
    size = path.stat().st_size
    try:
        # mmap: reads the few plain values without reading the tensors.
        state = checkpoint.load_weights_only(path, mmap=True)
    except P2PError as exc:
        return Listing(name, "unreadable", "-", "imported", None, False, size, exc.message)
    source = state.get("source") if isinstance(state, dict) else None
    layout = source.get("layout") if isinstance(source, dict) else None
    direction = state.get("direction") if isinstance(state, dict) else None
    if layout not in LAYOUTS or direction not in DIRECTIONS:
        return Listing(name, "unreadable", "-", "imported", None, False, size,
                       f"{path}: not a checkpoint written by 'p2p zoo import'")
    return Listing(name, f"imported ({layout})", direction, "imported", None, True, size,
                   channels=_channels(bool(source.get("bgr", False))))

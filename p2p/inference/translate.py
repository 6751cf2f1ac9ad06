"""Inference: run a pix2pix generator over image files of any size, in batches.

Test-time mode: ``paper_mode`` (the default; each image's own batch-norm statistics, dropout
on) or eval mode, as ``generator.run_generator`` runs them; ``Model.run`` is the one call.

Sizes. By default an image is brought to the scale the model was trained at, as its checkpoint's
preprocessing says (``Preprocess.test_size``: for the default ``resize_and_crop``, resized bicubic
to the training crop size) and the output resized back; with ``keep_size`` it is reflect-padded
to a multiple of 2**num_downs instead and the output cropped back. Either way the output has the
input's size. With ``tile``, each image runs at its own size in overlapping tiles blended by
``tiling.py``.

Depths and channels. Inputs are read at their depth with any channel count (``images.read_raster``)
and normalised as the checkpoint records: by the file's own depth, or by the training's explicit
``data.range``. Outputs are written in the depth and channel count the model was trained to
produce; 8-bit models with 1 or 3 channels take Pillow's path, exactly as before.

Decoding and encoding run in a small thread pool (Pillow and torch release the GIL) so that the
generator, not file handling, sets the pace.

Batches and dropout. The jobs are cut into chunks of ``batch_size`` consecutive jobs, and a batch
never spans two chunks: so a process that translates whole chunks (a rank's share, a Ray task)
forms exactly the batches one process forms. Paper mode's dropout masks are a function of the
run's seed and each job's ``key`` (its path relative to the input, without extension;
``generator.dropout_seed``), not of the order or the batch: an output does not depend on
``batch_size``, on the number of processes or on the engine. Without a seed, one is drawn from
torch's global RNG for the run (``torch.manual_seed`` repeats it; each run draws a new one).
"""

import contextlib
import functools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from p2p.data.preprocess import Preprocess
from p2p.device import autocast_dtype, pick_device
from p2p.errors import P2PError
from p2p.images.eight_bit import encode_image, pil_to_tensor, save_image, tensor_to_pil
from p2p.images.files import IMAGE_EXTENSIONS, is_image_file, list_images
from p2p.images.raster import (
    DEPTH_RANGES,
    can_hold,
    check_writable,
    decode_image,
    denormalize,
    encode_raster,
    from_memory,
    image_size,
    normalize,
    output_suffix,
    pad_to_multiple,
    resize_pixels,
    save_raster,
    split_halves,
    to_channels,
)
from p2p.inference.generator import dropout_seed, run_generator
from p2p.inference.manifest import listed_images
from p2p.inference.tiling import check_tiling, default_overlap, translate_tiled
from p2p.limits import MAX_SEED
from p2p.memory import reuse_freed_memory
from p2p.models import TEST_MODES, input_multiple
from p2p.paths import remove_temp_files
from p2p.weights import load_generator, resolve, weights_file
from p2p.weights.checkpoint import (
    image_size_of,
    normalization_of,
    preprocess_of,
    writes_8bit_images,
)

STDIN_NAME = "<stdin>"
# Pillow and torch release the GIL, so a few threads keep decoding and encoding off the critical
# path; more only compete with torch's own threads for the cores.
THREADS = min(4, os.cpu_count() or 1)

Progress = Callable[[int, int | None], None]  # (done, total)
# What Model() translates in memory: PIL images, (H, W[, C]) arrays, float tensors in [-1, 1].
Input = Image.Image | np.ndarray | torch.Tensor
DEFAULT_BATCH_SIZE = 4  # p2p translate's --batch-size


# ---- the model -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Model:
    """A generator ready for translation and what it needs to know about its inputs."""

    generator: nn.Module  # models.UnetGenerator or models.ResnetGenerator
    direction: str  # "AtoB": the left half of a pair is the input
    image_size: tuple[int, int]  # (height, width) it was trained at
    device: torch.device
    preprocess: Preprocess = Preprocess()  # how training sized its images
    # Per side ("source", "target"): {"dtype", "range", "explicit"}; see checkpoint.py.
    normalization: dict = field(default_factory=lambda: normalization_of({}))
    dataset: str | None = None  # the dataset it was trained on (name or folder), where recorded
    precision: str = "auto"  # fp32, bf16, or auto (see p2p.device.autocast_dtype)
    source: str | None = None  # what it was loaded from, as given to p2p.load
    weights: Path | None = None  # the file holding its tensors
    # The generator's layout; it decides the order of paper mode's dropout draws (generator.py).
    memory_format: torch.memory_format = torch.channels_last

    def __call__(self, image: Input | list[Input], *, mode: str = "paper",
                 seed: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE
                 ) -> Input | list[Input]:
        """Translate one image, or a list of them, in memory; the output has the input's size.

        - a PIL image: a PIL image (an array when the model writes more than 8-bit images of 1
          or 3 channels);
        - a numpy array (H x W or H x W x C; uint8, uint16 or float): an array at the model's
          depth (``Model.depth``), with its channel count;
        - a torch tensor (C x H x W, or N x C x H x W), float in [-1, 1]: a float tensor in
          [-1, 1] of the same layout.

        The pixels are exactly those ``p2p translate`` writes for the same model, input and
        options. ``mode``: ``"paper"`` (dropout on, each image's own batch-norm statistics, the
        paper's test-time mode) or ``"eval"`` (running statistics, deterministic); ``seed``
        repeats paper mode's dropout. Its masks follow each image's key, as a file's follow its
        relative path: a single image is keyed as a single file is, the i-th of a list as a file
        named i in a folder (the j-th of a batch tensor: j, or i/j in a list).

        >>> photo = model(Image.open("labels.png"), mode="eval")  # doctest: +SKIP
        """
        if mode not in TEST_MODES:
            raise P2PError(f"unknown test-time mode {mode!r}", f"use {' or '.join(TEST_MODES)}")
        single = not isinstance(image, list)
        images = [image] if single else image
        # A batch tensor is its images, one job each, stacked again afterwards.
        batches = [isinstance(item, torch.Tensor) and item.dim() == 4 for item in images]
        jobs = [Job(x, f"image {index}[{i}]" if batch else f"image {index}", None,
                    _memory_key(single, index, i if batch else None))
                for index, (item, batch) in enumerate(zip(images, batches, strict=True))
                for i, x in enumerate(item if batch else [item])]
        options = TranslateOptions(paper_mode=mode == "paper", seed=seed, batch_size=batch_size,
                                   precision=self.precision)
        outputs = iter(translate(self, jobs, options).outputs)
        results = [torch.stack([next(outputs) for _ in item]) if batch else next(outputs)
                   for item, batch in zip(images, batches, strict=True)]
        return results[0] if single else results

    def translate(self, inputs: str | os.PathLike, output: str | os.PathLike, *,
                  ext: str | None = None, overwrite: bool = False,
                  progress: Progress | None = None, **options) -> "Report":
        """Translate an image file or a folder of them into ``output`` (a file or a folder), as
        ``p2p translate`` does; ``options`` are ``TranslateOptions``' fields (``paper_mode``,
        ``seed``, ``batch_size``, ``tile``, ...). Existing outputs are kept unless
        ``overwrite``; the report lists them (``existing``) and any bad inputs."""
        plan = plan_jobs(str(inputs), str(output), ext, overwrite,
                         png_holds_output=self.png_holds_output)
        options.setdefault("precision", self.precision)
        report = translate(self, plan.jobs, TranslateOptions(**options), progress)
        report.existing = plan.existing
        return report

    def run(self, batch: torch.Tensor, paper_mode: bool = True, *, precision: str | None = None,
            batch_statistics: bool = False,
            dropout_seeds: list[int] | None = None) -> torch.Tensor:
        """The generator on ``batch`` (N, C, H, W), float in [-1, 1], sides multiples of
        ``multiple``, in a test-time mode (``generator.run_generator``; ``dropout_seeds``: each
        image's, else the global RNG); float32 in [-1, 1] on the model's device. ``precision``
        None: the model's."""
        return run_generator(self.generator, batch.to(self.device), paper_mode,
                             self.precision if precision is None else precision,
                             batch_statistics=batch_statistics, memory_format=self.memory_format,
                             dropout_seeds=dropout_seeds)

    def on(self, device: torch.device) -> "Model":
        """This model on ``device`` (its generator moved there: a Ray worker's GPU)."""
        self.generator.to(device, memory_format=self.memory_format)
        return replace(self, device=device)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) it was trained at."""
        return self.image_size

    @property
    def channels(self) -> tuple[int, int]:
        """(input, output) channel counts."""
        return self.in_channels, self.out_channels

    @property
    def depth(self) -> str:
        """The dtype of its outputs: uint8, uint16 or float32."""
        return self.output_dtype

    @functools.cached_property
    def sha256(self) -> str | None:
        """The sha256 of the file holding its tensors (None when built in memory)."""
        from p2p.download import sha256_file

        return None if self.weights is None else sha256_file(self.weights)

    @property
    def output_dtype(self) -> str:
        return self.normalization["target"]["dtype"]

    @property
    def png_holds_output(self) -> bool:
        return can_hold("PNG", self.out_channels, self.output_dtype)

    @property
    def writes_8bit_images(self) -> bool:
        """Outputs go through Pillow as before: 8-bit, 1 or 3 channels, the full 0..255."""
        return writes_8bit_images(self.normalization, self.out_channels)

    def value_range(self, side: str, dtype: str, label: str) -> tuple[float, float]:
        """The range of ``side``'s values in a file of ``dtype``: the training's explicit range,
        else the file's own depth."""
        recorded = self.normalization[side]
        if recorded["explicit"]:
            return tuple(recorded["range"])
        if dtype not in DEPTH_RANGES:
            raise P2PError(f"{label}: {dtype} values, but the model was trained on "
                           f"{recorded['dtype']} files without a data.range",
                           f"convert it to {recorded['dtype']}")
        return DEPTH_RANGES[dtype]

    @property
    def in_channels(self) -> int:
        return self.generator.config.in_channels

    @property
    def out_channels(self) -> int:
        return self.generator.config.out_channels

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (each down level halves them)."""
        return input_multiple(self.generator.config)


def load(source: str | os.PathLike, *, device: str = "auto", precision: str = "auto",
         download_progress: Progress | None = None,
         memory_format: torch.memory_format = torch.channels_last) -> Model:
    """The model ``source`` names, ready to translate: a zoo name (downloaded on first use),
    ``hf:OWNER/NAME[@REVISION]``, a Hugging Face model folder, a p2p checkpoint file, or a run
    directory (``RUN_DIR@best``, ``@latest`` or ``@ITERATION`` pick a checkpoint).

    >>> model = p2p.load("facades")  # doctest: +SKIP
    >>> model = p2p.load("runs/quickstart@latest", device="cpu", precision="fp32")  # doctest: +SKIP

    ``memory_format``: the generator's layout; channels_last is the fast one, the contiguous
    layout draws paper mode's dropout as the reference code does (the published protocol).
    """
    target = pick_device(device)
    autocast_dtype(precision, target)  # refused here, not at the first image
    path = resolve(source, download_progress)
    generator, state = load_generator(path, map_location=target)  # every recorded fact checked
    generator.to(target, memory_format=memory_format)
    return model_from_state(generator, state, target, precision=precision, source=str(source),
                            weights=weights_file(path), memory_format=memory_format)


def model_from_state(generator: nn.Module, state: dict, device: torch.device, *,
                     precision: str = "auto", source: str | None = None,
                     weights: Path | None = None,
                     memory_format: torch.memory_format = torch.channels_last) -> Model:
    """A ``Model`` of ``generator`` with what its checkpoint ``state`` records (direction, size,
    preprocessing, value ranges): also a generator in training, from the state it would save."""
    return Model(generator, state["direction"], image_size_of(state), device,
                 Preprocess.from_dict(preprocess_of(state)), normalization_of(state),
                 _trained_on(state), precision, source, weights, memory_format)


def _trained_on(state: dict) -> str | None:
    """The dataset a checkpoint records: its recipe's, its model folder's, or its zoo entry's."""
    recipe = state.get("recipe")
    if isinstance(recipe, dict) and isinstance(recipe.get("data"), dict):
        path = recipe["data"].get("path")
        return str(path) if path else None  # not the string "None"
    if state.get("dataset"):
        return str(state["dataset"])
    if state.get("zoo_name"):
        from p2p.weights import zoo

        entry = zoo.entry_named(state["zoo_name"])
        return entry.dataset if entry else None
    return None


# ---- what goes where -------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One image to translate: from a file, encoded bytes or an image in memory (``Input``), to
    a file or (target None) to the report's outputs: encoded bytes for a file or bytes, the
    same kind of object for an image in memory."""

    source: Path | bytes | Input
    name: str  # for messages
    target: Path | None
    # What paper mode's dropout masks follow: the path relative to the input (a folder, or a
    # manifest's common root) without extension; "" for the input itself (one file, stdin).
    key: str = ""

    @property
    def in_memory(self) -> bool:
        return not isinstance(self.source, Path | bytes)


def _memory_key(single: bool, index: int, position: int | None) -> str:
    """The key of an image given to ``Model()``: see ``Model.__call__``."""
    if position is None:
        return "" if single else str(index)
    return str(position) if single else f"{index}/{position}"


@dataclass
class Plan:
    jobs: list[Job]
    existing: list[Path] = field(default_factory=list)  # outputs already there, left alone


def plan_jobs(input: str, output: str, ext: str | None = "png", overwrite: bool = False,
              stdin: bytes | None = None, png_holds_output: bool = True, *,
              manifest: bool = False, skip_missing: bool = False) -> Plan:
    """Pair each input image with its output.

    ``input``: an image file, a folder (recursively, in sorted order), ``-`` (the bytes in
    ``stdin``) or with ``manifest`` a list of image files (``manifest.py``; their outputs keep
    their paths relative to the list's common root; missing files are refused unless
    ``skip_missing``, and then are bad inputs of the run). ``output``: a folder (same relative
    names with extension ``ext``; None: the input's own for TIFF and .npy, else png, or tif
    unless ``png_holds_output``, see
    ``Model.png_holds_output``), an image file, or ``-`` (the encoded PNG, or TIFF when PNG
    cannot hold the output, is returned instead of written). An existing folder, or a path
    without an image extension, is a folder. Existing outputs are kept unless ``overwrite``, and
    the temporary files a killed run left for these outputs are removed (see paths.atomic_path).
    """
    suffix = None if ext is None else f".{ext.lower().lstrip('.')}"
    if suffix is not None and suffix not in IMAGE_EXTENSIONS:
        raise P2PError(f"unknown output extension {ext!r}",
                       f"use one of {', '.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))}")
    if input == "-":
        if stdin is None:
            raise P2PError("input '-' needs the image's bytes from stdin")
        if output != "-" and Path(output).is_dir():
            raise P2PError(f"{output}: is a folder; one image from stdin needs an output file",
                           "name a file, or - for stdout")
        jobs = [Job(stdin, STDIN_NAME, _output_file(output))]
    elif manifest:
        root, sources = listed_images(Path(input), skip_missing)
        jobs = _rooted_jobs(root, sources, _output_folder(input, "a list of images", output),
                            suffix, png_holds_output)
    elif Path(input).is_dir():
        jobs = _folder_jobs(Path(input), output, suffix, png_holds_output)
    elif Path(input).exists():
        source = Path(input)
        out = Path(output)
        if output != "-" and (out.is_dir() or not is_image_file(out)):
            # into a folder, created if needed
            out = out / source.with_suffix(
                suffix or output_suffix(source.suffix, png_holds_output)).name
        jobs = [Job(source, input, _output_file(str(out)))]
    else:
        raise P2PError(f"{input}: no such file or folder")
    _remove_leftovers(jobs)
    if overwrite:
        return Plan(jobs)
    kept, existing = [], []
    for job in jobs:
        if job.target is not None and job.target.exists():
            existing.append(job.target)
        else:
            kept.append(job)
    return Plan(kept, existing)


def _output_file(output: str) -> Path | None:
    if output == "-":
        return None
    path = Path(output)
    if not is_image_file(path):
        raise P2PError(f"{output}: not an image file name",
                       f"end it in one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return path


def _output_folder(source: str, what: str, output: str) -> Path:
    if output == "-":
        raise P2PError(f"{source}: {what} cannot go to stdout", "name an output folder")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise P2PError(f"{output}: exists and is not a folder", f"{what} needs an output folder")
    return out


def _folder_jobs(folder: Path, output: str, suffix: str | None,
                 png_holds_output: bool) -> list[Job]:
    out = _output_folder(str(folder), "a folder of images", output)
    # An output folder inside the input folder must not be read back as input.
    sources = [p for p in list_images(folder) if not p.resolve().is_relative_to(out.resolve())]
    if not sources:
        raise P2PError(f"{folder}: no images in this folder",
                       f"image files end in {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return _rooted_jobs(folder, sources, out, suffix, png_holds_output)


def _rooted_jobs(root: Path, sources: list[Path], out: Path, suffix: str | None,
                 png_holds_output: bool) -> list[Job]:
    """Each source's output at its path relative to ``root`` under ``out``."""
    jobs, claimed = [], {}
    for source in sources:
        relative = source.relative_to(root)
        target = out / relative.with_suffix(
            suffix or output_suffix(source.suffix, png_holds_output))
        if target in claimed:
            raise P2PError(f"{claimed[target]} and {source} would both be written to {target}",
                           "rename one of them")
        claimed[target] = source
        jobs.append(Job(source, str(source), target, relative.with_suffix("").as_posix()))
    return jobs


def _remove_leftovers(jobs: list[Job]) -> None:
    """Remove the temporary files of these jobs' outputs that a killed run left behind."""
    names: dict[Path, set[str]] = {}
    for job in jobs:
        if job.target is not None:
            names.setdefault(job.target.parent, set()).add(job.target.name)
    for folder, targets in names.items():
        remove_temp_files(folder, targets)


# ---- translation -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TranslateOptions:
    paired: bool = False  # inputs are A|B side by side; the model's direction picks the input
    side_by_side: bool = False  # write input|output|target (input|output without a target)
    keep_size: bool = False  # pad to a multiple of 2**num_downs instead of resizing
    paper_mode: bool = True  # see generator.py
    batch_size: int = 1
    seed: int | None = None  # repeatable dropout in paper mode
    skip_bad: bool = False  # report bad inputs and go on, instead of stopping at the first
    tile: int | None = None  # run each image at its own size in blended tiles (see tiling.py)
    overlap: int | None = None  # pixels neighbouring tiles share; None: a quarter of the tile
    precision: str = "auto"  # fp32, bf16, or auto (see p2p.device.autocast_dtype)


@dataclass
class Report:
    translated: int = 0
    bad: list[str] = field(default_factory=list)  # one message per skipped input, naming it
    outputs: list = field(default_factory=list)  # of the jobs without a target, in job order
    existing: list[Path] = field(default_factory=list)  # outputs kept (Model.translate)

    @property
    def output_bytes(self) -> bytes | None:
        """The encoded output of the one job without a target (stdin to stdout, serve)."""
        return self.outputs[-1] if self.outputs else None


@dataclass
class Decoded:
    """A job's input decoded and sized for the model (``decode_job``)."""

    job: Job
    # 8-bit models: PIL images; otherwise (C, H, W) float tensors in [-1, 1] at the input's size
    input: Image.Image | torch.Tensor
    target: Image.Image | torch.Tensor | None  # the other half of a pair
    tensor: torch.Tensor  # (C, H, W) in [-1, 1], resized or padded for the model
    size: tuple[int, int]  # (H, W) of ``tensor`` before padding


def translate(model: Model, jobs: Iterable[Job], options: TranslateOptions = TranslateOptions(),
              progress: Progress | None = None) -> Report:
    """Translate every job; returns what was done and which inputs were bad.

    A bad input raises its P2PError unless ``options.skip_bad``. Images of the same model-side
    size are batched together, up to ``options.batch_size``, within each chunk of that many
    consecutive jobs. Each output file appears atomically.
    """
    check_options(model, options)
    options = with_seed(options)
    jobs = list(jobs)
    check_outputs(model, jobs, options)
    report = Report()
    written = []

    def advance() -> None:
        if progress:
            progress(report.translated + len(report.bad), len(jobs))

    decode = functools.partial(decode_job, model=model, options=options)
    # Tiled images are large: decode only the next one ahead.
    ahead = 1 if options.tile is not None else 2 * options.batch_size + THREADS
    with reuse_freed_memory(model.device), ThreadPoolExecutor(THREADS) as pool, \
            contextlib.closing(_in_order(pool, decode, jobs, ahead)) as decoded:
        for chunk in _chunks(decoded, options.batch_size):
            for item in chunk:
                if isinstance(item, P2PError):
                    if not options.skip_bad:
                        raise item
                    report.bad.append(str(item))
                    advance()
            for batch in batches(chunk, options):
                outputs = generate(model, batch, options)
                written.extend(pool.submit(finish, item, output, options, model)
                               for item, output in zip(batch, outputs, strict=True))
                report.translated += len(batch)
                advance()
        for future in written:
            data = future.result()
            if data is not None:
                report.outputs.append(data)
    return report


def check_options(model: Model, options: TranslateOptions) -> None:
    """Refuse options the model cannot run, before any work rather than mid-way."""
    if options.batch_size < 1:
        raise P2PError(f"batch size must be at least 1, got {options.batch_size}")
    autocast_dtype(options.precision, model.device)
    if options.tile is not None:
        _check_tiles(model, options)


def looks_like_unsplit_pairs(model: Model, jobs: list[Job], options: TranslateOptions) -> bool:
    """Whether the first input looks like an A|B pair given without ``options.paired``: exactly
    twice as wide as tall, for a model trained on square images. Such inputs translate whole,
    both halves into one output, without any error, so the CLI warns. Tiled inputs are left
    unchecked: they are the large ones, and this decodes the first input a second time."""
    if options.paired or options.tile is not None or not jobs or model.size[0] != model.size[1]:
        return False
    job = jobs[0]
    try:
        image = (from_memory if job.in_memory else decode_image)(job.source, job.name)
    except P2PError:
        return False  # translating it reports the problem
    height, width = image_size(image)
    return width == 2 * height


def with_seed(options: TranslateOptions) -> TranslateOptions:
    """``options`` with the run's dropout seed in paper mode: its own, or one drawn from
    torch's global RNG."""
    if options.seed is not None or not options.paper_mode:
        return options
    return replace(options, seed=int(torch.randint(MAX_SEED, ())))


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def batches(chunk: list[Decoded | P2PError], options: TranslateOptions) -> list[list[Decoded]]:
    """How a chunk's decoded images run: runs of one model-side size (with tiles, one image
    each); the bad ones left out."""
    groups: list[list[Decoded]] = []
    for item in chunk:
        if isinstance(item, P2PError):
            continue
        if groups and options.tile is None and groups[-1][0].tensor.shape == item.tensor.shape:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def generate(model: Model, batch: list[Decoded], options: TranslateOptions) -> list[torch.Tensor]:
    """The generator's outputs for one batch (``batches``), on the CPU; ``options.seed`` set
    (``with_seed``): each image's dropout masks follow its key."""
    seeds = ([dropout_seed(options.seed, item.job.key) for item in batch] if options.paper_mode
             else [None] * len(batch))
    if options.tile is not None:
        return [_run_tiled(model, item.tensor, options, seed)
                for item, seed in zip(batch, seeds, strict=True)]
    tensor = torch.stack([item.tensor for item in batch])
    return list(model.run(tensor, options.paper_mode, precision=options.precision,
                          dropout_seeds=seeds if options.paper_mode else None).cpu())


def _in_order(pool: ThreadPoolExecutor, fn: Callable, items: list, ahead: int) -> Iterator:
    """``map(fn, items)`` computed in ``pool``, at most ``ahead`` items in advance, in order."""
    futures = deque()
    try:
        for item in items:
            futures.append(pool.submit(fn, item))
            if len(futures) > ahead:
                yield futures.popleft().result()
        while futures:
            yield futures.popleft().result()
    finally:  # stopped early (a bad input): don't decode what nobody will use
        for future in futures:
            future.cancel()


def check_outputs(model: Model, jobs: list[Job], options: TranslateOptions) -> None:
    """Refuse, before any work, outputs that cannot be written as asked."""
    if options.side_by_side and (model.in_channels not in (1, 3) or
                                 model.out_channels not in (1, 3)):
        raise P2PError(f"--side-by-side shows images of 1 or 3 channels; this model reads "
                       f"{model.in_channels} and writes {model.out_channels}",
                       "translate without --side-by-side")
    channels = 3 if options.side_by_side else model.out_channels
    for job in jobs:
        if job.target is not None:
            check_writable(job.target, channels, model.output_dtype)


def decode_job(job: Job, model: Model, options: TranslateOptions) -> Decoded | P2PError:
    try:
        if isinstance(job.source, torch.Tensor):
            return _decode_tensor(job, model, options)
        image, target = _read(job, model, options)
        if isinstance(image, Image.Image) and model.writes_8bit_images and \
                not model.normalization["source"]["explicit"]:
            return _decode_8bit(job, model, options, image, target)
        return _decode_any(job, model, options, image, target)
    except P2PError as exc:
        return exc  # returned, not raised: the caller decides whether to stop, in input order


def _model_size(model: Model, options: TranslateOptions, size: tuple[int, int],
                label: str) -> tuple[int, int] | None:
    """The size the model sees an input of ``size`` at; None: its own, padded."""
    if options.keep_size or options.tile is not None:
        return None
    return model.preprocess.test_size(size, model.multiple, label)


def _decode_8bit(job: Job, model: Model, options: TranslateOptions, image: Image.Image,
                 target: Image.Image | None) -> Decoded:
    if options.tile is not None:  # own size, kept in uint8: tiles are cut and scaled one by one
        tensor = pil_to_tensor(image)
        return Decoded(job, image, target, tensor, tuple(tensor.shape[1:]))
    size = _model_size(model, options, (image.height, image.width), job.name)
    resized = image if size is None or size == (image.height, image.width) else image.resize(
        (size[1], size[0]), Image.Resampling.BICUBIC)
    tensor = pil_to_tensor(resized).float().div_(127.5).sub_(1)
    return Decoded(job, image, target, pad_to_multiple(tensor, model.multiple),
                    tuple(tensor.shape[1:]))


def _normalized(image: Image.Image | np.ndarray, model: Model, side: str,
                label: str) -> torch.Tensor:
    if isinstance(image, Image.Image):
        x, dtype = pil_to_tensor(image), "uint8"
    else:
        x, dtype = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), image.dtype.name
    return normalize(x, model.value_range(side, dtype, label))


def _decode_any(job: Job, model: Model, options: TranslateOptions,
                image: Image.Image | np.ndarray, target: Image.Image | np.ndarray | None
                ) -> Decoded:
    x = _normalized(image, model, "source", job.name)
    other = None if target is None else _normalized(target, model, "target", job.name)
    return _sized(job, model, options, x, other)


def _decode_tensor(job: Job, model: Model, options: TranslateOptions) -> Decoded:
    """A (C, H, W) float tensor already in [-1, 1] (``Model()``)."""
    x = job.source.detach().to("cpu", torch.float32)
    if x.dim() != 3 or x.shape[0] != model.in_channels:
        raise P2PError(f"{job.name}: a tensor of shape {tuple(x.shape)}; the model reads "
                       f"({model.in_channels}, H, W) or (N, {model.in_channels}, H, W)")
    return _sized(job, model, options, x, None)


def _sized(job: Job, model: Model, options: TranslateOptions, x: torch.Tensor,
           other: torch.Tensor | None) -> Decoded:
    """Float (C, H, W) ``x`` in [-1, 1] brought to the model's size, then padded."""
    if options.tile is not None:  # own size: tiling pads only the tiles that need it
        return Decoded(job, x, other, x, tuple(x.shape[1:]))
    size = _model_size(model, options, tuple(x.shape[1:]), job.name)
    resized = x if size is None else resize_pixels(x, size)
    return Decoded(job, x, other, pad_to_multiple(resized, model.multiple),
                    tuple(resized.shape[1:]))


def _overlap(options: TranslateOptions) -> int:
    return default_overlap(options.tile) if options.overlap is None else options.overlap


def _check_tiles(model: Model, options: TranslateOptions) -> None:
    check_tiling(options.tile, _overlap(options), model.multiple)
    if options.paper_mode and any(isinstance(m, nn.BatchNorm2d)
                                  for m in model.generator.modules()):
        raise P2PError("tiles need --eval-mode with a batch-norm generator: the paper's test-time "
                       "mode normalizes by the statistics of what the generator sees, so each "
                       "tile would get its own and neighbouring tiles would differ in tone",
                       "add --eval-mode (running statistics), or translate without --tile")


def _run_tiled(model: Model, image: torch.Tensor, options: TranslateOptions,
               seed: int | None) -> torch.Tensor:
    """8-bit inputs (uint8) are scaled tile by tile and come back as uint8; inputs of other
    depths arrive normalized and come back as floats in [-1, 1]. Paper mode: the image's
    ``seed`` and each tile's index (tiles run in one order, whatever the batch) give the tile's
    dropout masks."""
    done = 0  # tiles run so far

    def forward(batch: torch.Tensor) -> torch.Tensor:
        nonlocal done
        seeds = (None if seed is None else
                 [dropout_seed(seed, str(tile)) for tile in range(done, done + len(batch))])
        done += len(batch)
        return model.run(batch, options.paper_mode, precision=options.precision,
                         dropout_seeds=seeds)

    floats = {} if image.dtype == torch.uint8 else {
        "to_input": torch.Tensor.float, "to_output": torch.Tensor.float,
        "out_dtype": torch.float32}
    return translate_tiled(forward, image, tile=options.tile, overlap=_overlap(options),
                           multiple=model.multiple, out_channels=model.out_channels,
                           batch_size=options.batch_size, **floats)


def _read(job: Job, model: Model, options: TranslateOptions):
    """The input (and with ``paired`` the target half), with the model's channel counts: PIL
    images of mode L or RGB for 8-bit files of 1 or 3 channels, else arrays."""
    hint = f"the model reads {model.in_channels} and writes {model.out_channels} channel(s)"
    image = (from_memory if job.in_memory else decode_image)(job.source, job.name)
    if not options.paired:
        return to_channels(image, model.in_channels, job.name, hint), None
    width = image_size(image)[1]
    if width < 2:
        raise P2PError(f"{job.name}: {width} pixel wide, not an A|B pair")
    left, right = split_halves(image)
    source, target = (left, right) if model.direction == "AtoB" else (right, left)
    return (to_channels(source, model.in_channels, job.name, hint),
            to_channels(target, model.out_channels, job.name, hint))


def finish(item: Decoded, output: torch.Tensor, options: TranslateOptions,
            model: Model) -> bytes | None:
    """Crop and resize the output back to the input's size, compose, encode, write."""
    height, width = item.size
    output = output[:, :height, :width]
    in_memory = item.job.in_memory
    if isinstance(item.input, Image.Image):
        image = tensor_to_pil(output)
        if image.size != item.input.size:
            image = image.resize(item.input.size, Image.Resampling.BICUBIC)
        if options.side_by_side:
            panels = [item.input, image] + ([item.target] if item.target is not None else [])
            image = _side_by_side(panels)
        if item.job.target is None:
            return image if in_memory else encode_image(image, "PNG")
        save_image(image, item.job.target)
        return None
    output = resize_pixels(output, tuple(item.input.shape[1:]))
    if isinstance(item.job.source, torch.Tensor):
        return output  # stays in [-1, 1]
    if options.side_by_side:
        panels = [item.input, output] + ([item.target] if item.target is not None else [])
        channels = max(p.shape[0] for p in panels)
        output = torch.cat([p.expand(channels, -1, -1) for p in panels], dim=2)
    target = model.normalization["target"]
    pixels = denormalize(output, target["dtype"], tuple(target["range"]))
    if item.job.target is None and in_memory:
        return pixels
    if item.job.target is None:
        fmt = "PNG" if can_hold("PNG", pixels.shape[2], pixels.dtype.name) else "TIFF"
        return encode_raster(pixels, fmt)
    save_raster(pixels, item.job.target)  # a failed write is a P2PError naming the file
    return None


def _side_by_side(panels: list[Image.Image]) -> Image.Image:
    mode = "RGB" if any(p.mode == "RGB" for p in panels) else "L"
    canvas = Image.new(mode, (sum(p.width for p in panels), max(p.height for p in panels)))
    left = 0
    for panel in panels:
        canvas.paste(panel.convert(mode), (left, 0))
        left += panel.width
    return canvas

"""The published table's protocol: which split is translated, how, and the numbers to compare.

The seeds' table (mmagic configs/pix2pix/README.md) reports TransFID and TransIS with
``inception_style='PyTorch'`` for four runs; its "official" rows are the numbers mmagic reports
for the official pix2pix generators. Per run, every image of the split is resized to 256x256
(bicubic as OpenCV does it in mmagic's pipeline: no antialiasing), the generator translates the
source side in paper mode (training-mode batch norm, so the statistics of each batch of 4, and
dropout on), and the outputs are compared with the target side: FID on the float outputs as they
are, IS on the outputs truncated to uint8.

The generator runs through ``Model.run`` like every other translation, with the protocol's two
explicit choices: the batch's statistics (``batch_statistics``) and the reference code's layout
(contiguous, so that dropout draws as it does), in fp32.
"""

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from p2p.data.catalog import resolve_dataset
from p2p.data.paired import PairedImages, to_float
from p2p.data.preprocess import Preprocess, as_size
from p2p.errors import P2PError
from p2p.images.eight_bit import to_uint8
from p2p.inference.translate import Model, model_from_state
from p2p.metrics import GENERATOR_BATCH, METRICS_FILE, SPLITS, class_scores, frechet
from p2p.metrics.features import Progress, Settings, Tally, rgb
from p2p.metrics.inception import DownloadProgress, fid_inception, is_inception
from p2p.paths import write_bytes_atomic
from p2p.recipe import load_recipe
from p2p.weights import load_generator, resolve, run_directory, weights_file

IMAGE_SIZE = 256


@dataclass(frozen=True)
class TableRow:
    task: str
    dataset: str  # the dataset's name in `p2p data list`
    direction: str  # the source side of its A|B pairs
    split: str
    images: int
    mmagic_fid: float
    mmagic_is: float
    official_fid: float
    official_is: float


TABLE = [
    TableRow("facades", "facades", "BtoA", "test", 106, 124.9773, 1.620, 119.135, 1.650),
    TableRow("aerial2maps", "maps", "AtoB", "val", 1098, 122.5856, 3.137, 149.731, 2.529),
    TableRow("maps2aerial", "maps", "BtoA", "val", 1098, 88.4635, 3.310, 102.072, 3.552),
    TableRow("edges2shoes", "edges2shoes", "AtoB", "val", 200, 84.3750, 2.815, 75.774, 2.766),
]


def find_row(task: str) -> TableRow:
    for row in TABLE:
        if row.task == task:
            return row
    tasks = ", ".join(row.task for row in TABLE)
    raise P2PError(f"unknown task {task!r}", f"the table's tasks: {tasks}")


@dataclass(frozen=True)
class Target:
    """A split to translate and score, and the table row it compares with (if any)."""

    data: str  # a dataset name or folder
    split: str | None  # None: the folder's test split if it has one, else val
    direction: str
    preprocess: Preprocess  # how images are brought to the generator (at test time)
    row: TableRow | None

    @property
    def load_size(self) -> int | list[int]:
        """A square's side, or [height, width]."""
        height, width = self.preprocess.load_size
        return height if height == width else [height, width]


def target_for_task(task: str, data: str | None = None) -> Target:
    row = find_row(task)
    size = as_size(IMAGE_SIZE)
    return Target(data or row.dataset, row.split, row.direction,
                  Preprocess("resize_and_crop", size, size), row)


def target_for_recipe(path: str | os.PathLike, data: str | None = None) -> Target:
    """The recipe's dataset and direction, brought to size as translate and validation do
    (``Preprocess.at_test_time``)."""
    recipe = load_recipe(path)
    source = data or recipe.data.path
    name = Path(source).name
    row = next((r for r in TABLE
                if r.dataset == name and r.direction == recipe.data.direction), None)
    return Target(source, row.split if row else None, recipe.data.direction,
                  recipe.data.preprocessing().at_test_time(), row)


@dataclass(frozen=True)
class RunResult:
    fid: float
    inception_score: float
    is_std: float
    n_real: int
    n_fake: int
    split: str | None = None


def protocol_model(generator: torch.nn.Module, state: dict, device: torch.device,
                   source: str | None = None, weights: Path | None = None) -> Model:
    """``generator`` (with what its checkpoint ``state`` records) as the protocol runs it: fp32,
    in the reference code's layout."""
    generator.to(device, memory_format=torch.contiguous_format)
    return model_from_state(generator, state, device, precision="fp32", source=source,
                            weights=weights, memory_format=torch.contiguous_format)


def generated(model: Model, dataset: PairedImages, batch_size: int) -> Iterator[torch.Tensor]:
    """The model's float outputs for the dataset's sources, in order, ``batch_size`` at a time,
    in paper mode with each batch's statistics (as training at that batch size). Seed torch
    first for repeatable dropout."""
    for start in range(0, len(dataset), batch_size):
        sources, _ = dataset.get_many(list(range(start, min(start + batch_size, len(dataset)))))
        yield model.run(to_float(sources, dataset.ranges[0]), batch_statistics=True)


def evaluate(model: Model, dataset: PairedImages, fid_network: torch.nn.Module,
             is_network: torch.nn.Module, settings: Settings, *, batch_size: int = GENERATOR_BATCH,
             splits: int = SPLITS, real_key_items: Iterable[bytes] | None = None,
             progress: Progress | None = None) -> RunResult:
    """FID (targets vs outputs) and IS (outputs) of ``model`` (``protocol_model``) on ``dataset``.

    The real statistics are cached under ``real_key_items`` (what identifies the targets) when
    given. ``is_network`` gives class probabilities."""
    n = len(dataset)
    tally = Tally(2 * n, progress)

    real = frechet.image_statistics(range(n), lambda i: frechet.fid_input(rgb(dataset[i][1])),
                                    fid_network, settings, tally, real_key_items)

    features, probabilities = [], []
    with torch.inference_mode():
        for outputs in generated(model, dataset, batch_size):
            outputs = rgb(outputs)
            features.append(fid_network(outputs).double().cpu().numpy())  # not rounded
            truncated = torch.stack([class_scores.is_input(to_uint8(o)) for o in outputs.cpu()])
            probabilities.append(is_network(truncated.to(settings.device)).double().cpu().numpy())
            tally.advance(len(outputs))
    fake = frechet.statistics(np.concatenate(features))
    score, std = class_scores.inception_score(np.concatenate(probabilities), splits)
    return RunResult(frechet.frechet_distance(real, fake), score, std, n, n)


def dataset_key_items(dataset: PairedImages, split: str) -> Iterator[bytes]:
    """What identifies the real side of a split: its files' names and bytes, and how it is read."""
    yield (f"{split} {dataset.direction} {dataset.load_size} {dataset.out_channels}"
           f"{'' if dataset.preprocess.mode == 'resize_and_crop' else dataset.preprocess.mode}"
           ).encode()
    for pair in dataset.files:
        for path in pair:
            if path is not None:
                yield path.name.encode() + b"\0" + path.read_bytes()


def _split_of(root: Path, target: Target) -> str:
    if target.split is not None:
        return target.split
    return "test" if (root / "test").is_dir() else "val"


def run(target: Target, checkpoint: str | os.PathLike | None, settings: Settings = Settings(),
        weights: str | os.PathLike | None = None, *, batch_size: int = GENERATOR_BATCH,
        seed: int = 0, splits: int = SPLITS, progress: Progress | None = None,
        data_progress: Progress | None = None,
        download_progress: Callable[[str], DownloadProgress] | None = None) -> RunResult:
    """Translate ``target``'s split with ``checkpoint`` (for a task, default: the zoo model of
    the same name) under the table's protocol and score it. ``weights`` is a folder holding both
    Inception weights files; ``download_progress(what)`` gives a callback per download."""
    if checkpoint is None:
        if target.row is None:
            raise P2PError("no checkpoint given", "--checkpoint PATH (a file or a run directory)")
        checkpoint = target.row.task  # the zoo model of the task, downloaded on first use
    path = resolve(checkpoint, _named(download_progress, str(checkpoint)))
    generator, state = load_generator(path, map_location=settings.device)
    model = protocol_model(generator, state, settings.device, str(checkpoint), weights_file(path))
    if model.direction != target.direction:
        raise P2PError(f"{checkpoint}: the generator translates {model.direction}, but "
                       f"this evaluation reads {target.direction}",
                       "pick the checkpoint trained for this task")
    writes = model.normalization
    if not model.writes_8bit_images:
        raise P2PError(f"{checkpoint}: the generator writes {model.out_channels} "
                       f"channel(s) of {writes['target']['dtype']}; FID and IS apply to 8-bit "
                       "RGB outputs only", "score such a model with per-pixel metrics instead")
    if target.preprocess.mode == "resize_and_crop" and any(
            side % model.multiple for side in target.preprocess.load_size):
        raise P2PError(f"{checkpoint}: images of {target.load_size} pixels do not fit this "
                       f"generator (sides must be multiples of {model.multiple})")
    root = resolve_dataset(target.data)
    split = _split_of(root, target)
    dataset = PairedImages(root, split, target.direction, target.preprocess.load_size,
                           model.in_channels, model.out_channels,
                           workers=settings.workers, progress=data_progress, antialias=False,
                           preprocess=target.preprocess, stride=model.multiple,
                           ranges=(writes["source"]["range"] if writes["source"]["explicit"]
                                   else None, None))
    try:
        dataset.check_batchable(batch_size)
    except P2PError as exc:  # the same refusal, with this command's knob
        raise P2PError(exc.message, "translate one image at a time: --batch-size 1") from None
    fid_network = fid_inception(weights, _named(download_progress, "FID Inception weights"))
    is_network = class_scores.class_probabilities(
        is_inception(weights, _named(download_progress, "IS Inception weights")))
    with torch.random.fork_rng(devices=[settings.device] if settings.device.type == "cuda"
                               else []):
        torch.manual_seed(seed)
        result = evaluate(model, dataset, fid_network.to(settings.device),
                          is_network.to(settings.device), settings, batch_size=batch_size,
                          splits=splits, real_key_items=dataset_key_items(dataset, split),
                          progress=progress)
    result = dataclasses.replace(result, split=split)
    run_dir = run_directory(checkpoint)
    if run_dir is not None:  # a training run: keep its scores beside it for `p2p report`
        record = {"fid": result.fid, "is": result.inception_score, "is_std": result.is_std,
                  "n_real": result.n_real, "n_fake": result.n_fake, "split": split,
                  "task": target.row.task if target.row else None,
                  "iteration": state.get("iteration"), "batch_size": batch_size, "seed": seed,
                  "checkpoint": path.relative_to(run_dir).as_posix()}
        write_bytes_atomic(run_dir / METRICS_FILE,
                           (json.dumps(record, indent=2) + "\n").encode())
    return result


def _named(factory: Callable[[str], DownloadProgress] | None,
           what: str) -> DownloadProgress | None:
    return factory(what) if factory else None

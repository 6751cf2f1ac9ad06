"""Validation during training: the generator scored on held-out pairs every ``train.val_every``
iterations.

What is scored is what ``p2p translate`` would produce for the validation images with this
model: each pair of the split (``val/``, else ``test/``) brought to the size translate gives it
(``Preprocess.test_size``: for the default resize_and_crop, ``data.crop_size``, the official test
path's load_size = crop_size with no crop or flip; Pillow bicubic, as translate resizes; padded to
the stride where the mode keeps the image's size), translated at batch 1 in the run's test-time
mode (``paper``: dropout on and each image normalized by its own statistics, as translate's
default; ``eval``: running statistics, no dropout), written back to the target side's depth as
translate writes it (8 bits truncated), and compared with the target: L1, PSNR and SSIM from
p2p.metrics.similarity (the functions of ``p2p eval pairs``; the data range is the depth's, or
data.range's), LPIPS when asked (p2p.metrics.perceptual, as ``p2p eval pairs --lpips``, on the
same written images, scaled from the depth's or data.range's range), and FID on the float
outputs when asked (as ``p2p eval``; the real statistics go through its cache; 8-bit images with
1 or 3 channels only, as eval).

Validation leaves no trace on training: dropout draws from a fixed seed inside a forked RNG, paper
mode neither reads nor updates the running statistics, and the generator's train/eval state is
restored, so a run's weights are bit-identical with and without it (tests check this on CPU).
"""

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from p2p.data.paired import PairedImages, to_float
from p2p.errors import P2PError
from p2p.images.raster import DEPTH_RANGES, denormalize, pad_to_multiple
from p2p.inference.generator import seeded
from p2p.inference.translate import Model
from p2p.metrics import similarity
from p2p.recipe import Recipe

LOWER_IS_BETTER = {"l1": True, "psnr": False, "ssim": False, "lpips": True, "fid": True}


def better(metric: str, value: float, than: float | None) -> bool:
    """Whether ``value`` of ``metric`` beats ``than`` (None: nothing to beat); ties do not."""
    if than is None:
        return True
    return value < than if LOWER_IS_BETTER[metric] else value > than


@dataclass
class Validator:
    dataset: PairedImages  # the validation pairs at the model's size
    split: str
    paper_mode: bool
    seed: int  # the dropout noise, the same at every validation
    device: torch.device
    fid_network: nn.Module | None = None
    lpips_network: nn.Module | None = None  # perceptual.lpips_network, when LPIPS is on
    real_statistics: object = None  # frechet.Statistics of the targets, when FID is on


def validation_split(root: Path, chosen: str) -> str:
    if chosen:
        if not (root / chosen).is_dir():
            raise P2PError(f"{root}: no '{chosen}' split folder for train.val_split",
                           "name a folder of the dataset, e.g. val or test")
        return chosen
    for split in ("val", "test"):
        if (root / split).is_dir():
            return split
    raise P2PError(f"{root}: no val/ or test/ split folder to validate on",
                   "add one (p2p data split), set train.val_split, or train.val_every: 0")


def prepare(recipe: Recipe, root: Path, device: torch.device,
            download_progress: Callable[[int, int | None], None] | None = None) -> Validator:
    """Read the validation split; for LPIPS, load its network; for FID, load the FID Inception
    (each failing now, before training, when its weights cannot be found or downloaded) and the
    real statistics."""
    d, t = recipe.data, recipe.train
    split = validation_split(Path(root), t.val_split)
    preprocess = d.preprocessing().at_test_time()  # what translate would feed the model
    dataset = PairedImages(root, split, d.direction, preprocess.load_size, d.in_channels,
                           d.out_channels, d.cache_gb, d.workers, preprocess=preprocess,
                           stride=recipe.generator_stride(), ranges=d.side_ranges(),
                           limit=t.val_images or None)
    if t.val_fid and len(dataset) < 2:
        raise P2PError(f"{root}/{split}: FID needs at least 2 validation images, found "
                       f"{len(dataset)}", "add images, or set train.val_fid: false")
    if t.val_fid and (dataset.dtypes[1] != torch.uint8 or d.out_channels not in (1, 3)):
        raise P2PError("train.val_fid: FID reads 8-bit images with 1 or 3 channels, and this "
                       "dataset's targets are not", "set train.val_fid: false")
    validator = Validator(dataset, split, t.val_mode == "paper", t.seed, device)
    if t.val_lpips:
        from p2p.metrics import perceptual

        side = min(min(dataset[i][1].shape[-2:]) for i in range(len(dataset)))
        if side < perceptual.MIN_SIDE:
            raise P2PError(f"{root}/{split}: LPIPS needs images of at least "
                           f"{perceptual.MIN_SIDE} pixels a side, and a validation image has "
                           f"{side}", "set train.val_lpips: false")
        validator.lpips_network = perceptual.lpips_network(None, download_progress).to(device)
    if t.val_fid:
        from p2p.metrics import frechet
        from p2p.metrics.features import Settings, rgb
        from p2p.metrics.inception import fid_inception

        validator.fid_network = fid_inception(None, download_progress).to(device)
        validator.real_statistics = frechet.image_statistics(
            range(len(dataset)), lambda i: frechet.fid_input(rgb(dataset[i][1])),
            validator.fid_network, Settings(device, workers=d.workers),
            key_items=_target_key_items(dataset))
    return validator


def _target_key_items(dataset: PairedImages) -> Iterator[bytes]:
    """What identifies the real side: the target pixels exactly as they are scored."""
    yield b"p2p validation targets"
    for index in range(len(dataset)):
        yield hashlib.sha256(dataset[index][1].numpy().tobytes()).digest()


def validate(validator: Validator, model: Model) -> dict[str, float]:
    """The mean L1, PSNR and SSIM over the validation pairs (and LPIPS and FID when on; NaN
    when FID is undefined for these images), with a fixed dropout seed; training's RNG is
    untouched."""
    scores, features = similarity.PairScores(), []
    device, dataset = validator.device, validator.dataset
    if validator.fid_network is not None:  # the FID machinery is imported only when FID is on
        from p2p.metrics.features import rgb
    if validator.lpips_network is not None:
        from p2p.metrics import perceptual
    dtype = str(dataset.dtypes[1]).removeprefix("torch.")
    low, high = dataset.ranges[1]
    depth_low, depth_high = DEPTH_RANGES.get(dtype, (low, high))  # float data: data.range's
    data_range = depth_high - depth_low
    with seeded(validator.seed, device):
        for index in range(len(dataset)):
            source, target = dataset[index]
            height, width = source.shape[-2:]
            # Padded to the generator's stride, the output cropped back (as translate does).
            x = pad_to_multiple(to_float(source, dataset.ranges[0]), model.multiple)
            output = model.run(x[None], validator.paper_mode)[..., :height, :width]
            # At the target's depth as translate writes it: the numbers of eval pairs on its files.
            written = torch.from_numpy(denormalize(output[0], dtype, (low, high))).permute(2, 0, 1)
            pair = similarity.all_metrics(written[None], target[None], data_range)
            if validator.lpips_network is not None:
                pair["lpips"] = perceptual.distance(validator.lpips_network, written[None],
                                                    target[None], (depth_low, depth_high))
            scores.add(pair)
            if validator.fid_network is not None:
                with torch.inference_mode():  # FID reads the float outputs, as p2p eval
                    features.append(validator.fid_network(rgb(output)).double().cpu().numpy())
    metrics = scores.means()
    if validator.fid_network is not None:
        from p2p.metrics import frechet

        try:
            metrics["fid"] = frechet.frechet_distance(validator.real_statistics,
                                                  frechet.statistics(np.concatenate(features)))
        except P2PError:  # too few images for a defined FID: a gap in the curve, not a crash
            metrics["fid"] = float("nan")
    return metrics

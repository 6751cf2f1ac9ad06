"""A folder's FID statistics as a Ray Data pipeline (``p2p eval stats --engine ray``, extra
``p2p-pix2pix[ray]``).

The stages: read the file list (the images in chunks of ``batch_size``, one row each); decode
(``images.read_8bit_image``, in Ray tasks); ``map_batches`` with ``FeatureWorker``, an actor
class holding the FID Inception (``ActorPoolStrategy``: ``workers`` actors of
``gpus_per_worker`` GPUs each), which scales and resizes each image as one process does and
returns the chunk's features; the driver adds their float64 sums of x and x x^T, so memory does
not grow with the images, and ``frechet.statistics_from_sums`` gives mu and sigma: one
process's within float64 rounding, as each chunk is one process's batch. The statistics go
through the cache (keyed by the images and the weights, as one process keys them) and to the
output file.
"""

import pickle
from pathlib import Path

import numpy as np
import torch

from p2p.cluster import joined
from p2p.errors import P2PError
from p2p.images.files import list_images
from p2p.images.raster import read_8bit_image
from p2p.metrics.defaults import INCEPTION_BATCH
from p2p.metrics.features import Progress, Settings, Tally, network_outputs
from p2p.metrics.frechet import (
    FEATURE_DIM,
    Statistics,
    cache_key,
    cached_statistics,
    fid_input,
    folder_item,
    save_statistics,
    statistics_from_sums,
)
from p2p.metrics.inception import DownloadProgress, FIDInception, fid_inception


def statistics_on_ray(folder: Path, out: Path, *, weights=None,
                      batch_size: int = INCEPTION_BATCH,
                      address: str | None = None, workers: int = 1, gpus_per_worker: float = 0,
                      progress: Progress | None = None,
                      download_progress: DownloadProgress | None = None) -> Statistics:
    """The FID statistics of the images in ``folder``, computed on the Ray cluster at
    ``address`` (None: an embedded one) unless cached, and saved to ``out``."""
    if not folder.is_dir():
        raise P2PError(f"{folder}: not a folder of images")
    files = list_images(folder)
    if len(files) < 2:
        raise P2PError(f"{folder}: {len(files)} image(s); FID needs at least 2")
    read_8bit_image(files[0])  # refuse 16-bit or N-channel folders before the weights
    network = fid_inception(weights, download_progress)
    tally = Tally(len(files), progress)

    def compute() -> Statistics:
        chunks = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
        total, outer = np.zeros(FEATURE_DIM), np.zeros((FEATURE_DIM, FEATURE_DIM))
        with joined(address) as ray:
            rows = [{"data": pickle.dumps(chunk)} for chunk in chunks]
            pipeline = (
                ray.data.from_items(rows, override_num_blocks=len(rows))
                .map(_decode)
                .map_batches(FeatureWorker, batch_size=1,
                             fn_constructor_kwargs={"network": [ray.put(network)]},
                             compute=ray.data.ActorPoolStrategy(size=workers),
                             num_gpus=gpus_per_worker))
            for row in pipeline.iter_rows():
                features = torch.from_numpy(pickle.loads(row["data"]))
                total += features.sum(dim=0).numpy()
                outer += (features.T @ features).numpy()
                tally.advance(len(features))
        return statistics_from_sums(len(files), total, outer)

    key = cache_key(network, (folder_item(folder, f) for f in files))
    done_before = tally.done
    stats = cached_statistics(key, compute)
    if tally.done == done_before:  # from the cache: count the images as done
        tally.advance(len(files))
    save_statistics(stats, out)
    return stats


class FeatureWorker:
    """The model actor: a chunk's images through the FID Inception on this worker's device."""

    def __init__(self, network: list):
        import ray

        device = torch.device("cuda" if ray.get_gpu_ids() else "cpu")
        self.network: FIDInception = ray.get(network[0]).to(device)  # one copy in Ray's store
        self.settings = Settings(device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        data = np.empty(len(batch["data"]), dtype=object)
        for i, payload in enumerate(batch["data"]):
            images = torch.stack([fid_input(image) for image in pickle.loads(payload)])
            data[i] = pickle.dumps(network_outputs(self.network, [images], self.settings))
        return {"data": data}


def _decode(row: dict) -> dict:
    return {"data": pickle.dumps([read_8bit_image(path) for path in pickle.loads(row["data"])])}

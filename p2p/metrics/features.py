"""Running an Inception network over many images: decoding in threads, batched inference.

Decoding, scaling and resizing one image happen in a small thread pool (Pillow and torch
release the GIL), a few batches ahead of the network, so on 2 cores the network sets the pace.
Every image is preprocessed on its own before batching, so the result does not depend on the
batch size beyond float rounding in the network, and folders may mix image sizes.

Under torchrun (``p2p eval ... --nproc N``) each rank takes a share of the images: whole batches
dealt out in turn (``p2p.distributed.share``), so every image meets the network in the batch one
process would give it and its outputs are one process's, bit for bit; frechet.py and
class_scores.py reduce them.
"""

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from p2p.distributed import World, process_device, process_group, share, world_from_env
from p2p.memory import reuse_freed_memory
from p2p.metrics.defaults import INCEPTION_BATCH, THREADS

Item = TypeVar("Item")
Progress = Callable[[int, int], None]  # (done, total)

BATCHES_AHEAD = 2


@dataclass(frozen=True)
class Settings:
    """How to run the networks; none of it changes the numbers beyond float rounding."""

    device: torch.device = torch.device("cpu")
    batch_size: int = INCEPTION_BATCH
    workers: int = THREADS
    world: World = World()  # this process's place when several share the images (torchrun)

    def share(self, items: Sequence[Item]) -> list[Item]:
        """This process's share of ``items`` (all of them in one process)."""
        return share(items, self.batch_size, self.world)


@contextlib.contextmanager
def joined_settings(device: str, batch_size: int, workers: int) -> Iterator[Settings]:
    """The settings of a command or API call. Under torchrun, while active, this rank in the
    evaluation's process group, on its local rank's GPU (with GPUs): the images are shared out."""
    from p2p.device import pick_device

    world = world_from_env()
    target = process_device(pick_device(device), world)
    with process_group(world, target, job="evaluation"):
        yield Settings(target, batch_size, workers, world)


class Tally:
    """Images done out of the total of all passes of one command, reported as (done, total)."""

    def __init__(self, total: int, progress: Progress | None):
        self.total, self.done, self.progress = total, 0, progress

    def advance(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)


def preprocessed_batches(items: Sequence[Item], prepare: Callable[[Item], torch.Tensor],
                         settings: Settings) -> Iterator[torch.Tensor]:
    """``torch.stack`` of ``prepare(item)`` for consecutive batches of ``items``, in order."""
    chunks = [items[i:i + settings.batch_size]
              for i in range(0, len(items), settings.batch_size)]
    pool = ThreadPoolExecutor(max(1, settings.workers))
    pending: deque = deque()
    try:
        for chunk in chunks:
            pending.append([pool.submit(prepare, item) for item in chunk])
            if len(pending) > BATCHES_AHEAD:
                yield torch.stack([future.result() for future in pending.popleft()])
        while pending:
            yield torch.stack([future.result() for future in pending.popleft()])
    finally:  # stopped early (a bad image): don't decode what nobody will use
        pool.shutdown(wait=True, cancel_futures=True)


def network_outputs(network: nn.Module, batches: Iterable[torch.Tensor], settings: Settings,
                    tally: Tally | None = None) -> np.ndarray:
    """The network's outputs for all batches, as one float64 array (N, D)."""
    outputs = []
    with torch.inference_mode(), reuse_freed_memory(settings.device):
        for batch in batches:
            outputs.append(network(batch.to(settings.device)).double().cpu().numpy())
            if tally:
                tally.advance(len(batch))
    return np.concatenate(outputs)

def rgb(x: torch.Tensor) -> torch.Tensor:
    """Inception reads RGB: a gray image (1 channel) is its three equal channels."""
    return x.expand(*x.shape[:-3], 3, *x.shape[-2:]) if x.shape[-3] == 1 else x

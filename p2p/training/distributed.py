"""Multi-process training: what a recipe needs on top of ``p2p.distributed`` (the process
group, torchrun, a process's place and device).

Every process builds the same models from the same seed, DistributedDataParallel averages their
gradients, and only rank 0 writes. With one process nothing here does anything and training runs
exactly as in a single process.

The choices, so that a recipe means the same run at any process count:
- ``data.batch_size`` is the global batch: each iteration's batch is cut into equal contiguous
  shares, one per rank, so every pair is seen once per epoch across ranks, and a checkpoint from
  N processes resumes on M with the same data order.
- Batch norm becomes SyncBatchNorm with more than one process: statistics over the global batch,
  as one process would compute them. PyTorch's SyncBatchNorm runs on GPUs only, so a multi-process
  CPU run needs ``model.norm`` and ``model.d_norm`` instance or none.
"""

import hashlib

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from p2p.distributed import World
from p2p.errors import P2PError
from p2p.recipe import Recipe


def check(recipe: Recipe, world_size: int, device_type: str) -> None:
    """Refuse what cannot run as asked before any process starts waiting for the others."""
    if world_size == 1:
        return
    batch = recipe.data.batch_size
    if batch % world_size:
        raise P2PError(f"recipe: data.batch_size {batch} (the global batch) does not split "
                       f"evenly over {world_size} processes",
                       f"use a multiple of {world_size}, e.g. --set data.batch_size="
                       f"{world_size * max(1, batch // world_size)}")
    if device_type != "cuda" and "batch" in (recipe.model.norm, recipe.model.d_norm):
        raise P2PError(f"recipe: batch norm over {world_size} processes needs CUDA GPUs "
                       f"(PyTorch's SyncBatchNorm runs on GPUs only)",
                       "train on GPUs, in one process, or --set model.norm=instance "
                       "--set model.d_norm=instance")


def parallel(module: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """``module`` for multi-process training: its batch norm layers replaced by SyncBatchNorm
    (in place, sharing parameters and buffers, so the module itself still saves the plain
    state dict) and the whole wrapped in DistributedDataParallel."""
    module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def rank_share(batch_size: int, world: World) -> slice:
    """This rank's positions in an iteration's global batch."""
    share = batch_size // world.size
    return slice(world.rank * share, (world.rank + 1) * share)


def seed_rank(seed: int, world: World, iteration: int) -> None:
    """Give each rank its own random stream (dropout), as the items of one batch get in a single
    process; a function of (seed, rank, iteration), so a resumed run starts a fresh one."""
    digest = hashlib.sha256(f"{seed}/{world.rank}/{iteration}".encode()).digest()
    torch.manual_seed(int.from_bytes(digest[:8], "little"))


def mean(values: dict[str, torch.Tensor], world: World) -> dict[str, torch.Tensor]:
    """The average over ranks of each scalar: per-rank means of equal shares average to the
    mean over the global batch."""
    if world.size == 1:
        return values
    stacked = torch.stack([v.detach().float() for v in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, stacked / world.size, strict=True))

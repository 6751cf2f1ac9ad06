"""Multi-process training on PyTorch's own engine: torch.distributed, started by torchrun.

torchrun starts one process per GPU (or CPU slot) on each node and tells each its place through
environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``).
Every process builds the same models from the same seed, DistributedDataParallel averages their
gradients, and only rank 0 writes. Without those variables (or with one process) nothing here does
anything and training runs exactly as in a single process.

The choices, so that a recipe means the same run at any process count:
- ``data.batch_size`` is the global batch: each iteration's batch is cut into equal contiguous
  shares, one per rank, so every pair is seen once per epoch across ranks, and a checkpoint from
  N processes resumes on M with the same data order.
- Batch norm becomes SyncBatchNorm with more than one process: statistics over the global batch,
  as one process would compute them. PyTorch's SyncBatchNorm runs on GPUs only, so a multi-process
  CPU run needs ``model.norm`` and ``model.d_norm`` instance or none.
- Collectives time out: a process that dies or hangs ends the job with an error naming the rank
  instead of blocking the others forever.
"""

import contextlib
import hashlib
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from p2p.errors import P2PError
from p2p.recipe import Recipe

# Longer than any legitimate wait between collectives (rank 0 writing a checkpoint, the first
# iteration's compilation), short enough that a lost process does not hold the job for long.
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the process's index on its node: which GPU it drives

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    """This process's place in the job, from the variables torchrun sets (one process if none)."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    if not all(name in os.environ for name in names[:2]):
        return World()
    try:
        rank, size, local_rank = (int(os.environ.get(name, "0")) for name in names)
    except ValueError:
        raise P2PError("RANK, WORLD_SIZE and LOCAL_RANK must be integers",
                       "start multi-process training with torchrun") from None
    if not 0 <= rank < size:
        raise P2PError(f"RANK {rank} is outside WORLD_SIZE {size}")
    return World(rank, size, local_rank)


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


def process_device(device: torch.device, world: World) -> torch.device:
    """With several processes, each drives the GPU of its local rank."""
    if device.type != "cuda" or world.size == 1:
        return device
    if world.local_rank >= torch.cuda.device_count():
        raise P2PError(f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} "
                       f"GPUs are visible", "start at most one process per GPU on each node")
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def process_group(world: World, device: torch.device,
                  timeout: timedelta = TIMEOUT) -> Iterator[None]:
    """Joins the job's process group (NCCL on CUDA, gloo on CPU) while active. A collective that
    fails or times out (another process died or hangs) becomes a P2PError naming this rank."""
    if world.size == 1:
        yield
        return
    # DDP imports torch._dynamo when it is built. Imported while a group exists, that module
    # tree keeps a reference to the group (seen in torch 2.15), so destroy_process_group cannot
    # free it and gloo's worker threads live on into interpreter shutdown, where one of them
    # releasing a finished collective aborts the process ("terminate called without an active
    # exception"). Imported first, the group is freed and its threads joined on the way out.
    import torch._dynamo  # noqa: F401
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    try:
        yield
    except RuntimeError as exc:
        # NCCL raises DistError; gloo a plain RuntimeError prefixed with its source file.
        text = str(exc).strip()
        if not (isinstance(exc, dist.DistError) or "/gloo/" in text.partition("]")[0]):
            raise
        reason = re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0]
        raise P2PError(f"rank {world.rank} of {world.size}: lost contact with the other "
                       f"training processes ({reason})",
                       "another process failed or hangs; see its messages") from None
    finally:
        dist.destroy_process_group()


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


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (a stop signal reached some process)."""
    if world.size == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean(values: dict[str, torch.Tensor], world: World) -> dict[str, torch.Tensor]:
    """The average over ranks of each scalar: per-rank means of equal shares average to the
    mean over the global batch."""
    if world.size == 1:
        return values
    stacked = torch.stack([v.detach().float() for v in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, stacked / world.size, strict=True))


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def launch(nproc: int, args: list[str]) -> int:
    """Run ``python -m p2p ARGS`` in ``nproc`` processes on this machine under torchrun (a
    standalone rendezvous on a free port) and wait. Returns 0, or 130 when the job was stopped
    by a signal (rank 0 saved a checkpoint); a process that fails stops the others and raises
    P2PError naming it."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    torchrun_args = get_args_parser().parse_args(
        ["--standalone", "--nproc_per_node", str(nproc), "--module", "p2p", *args])
    # torchrun turns termination signals into exceptions for as long as its process lives;
    # put the previous handlers back afterwards.
    handlers = {sig: signal.getsignal(sig)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)}
    try:
        run(torchrun_args)
    except SignalException:
        return 130
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode == 130:
            return 130
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        raise P2PError(f"training process rank {rank} of {nproc} {how}; the others were stopped",
                       "its own messages are above") from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0

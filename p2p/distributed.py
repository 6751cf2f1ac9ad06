"""Processes on PyTorch's own engine: torch.distributed, started by torchrun.

torchrun starts one process per GPU (or CPU slot) on each node and tells each its place through
environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``).
Without those variables (or with one process) nothing here does anything: one process runs as it
always did. Training (``training/distributed.py``), translation and the metrics share what is
here: a process's place, its device, the process group, the launcher, deterministic shares of a
list, and the few collectives they need.

Collectives time out: a process that dies or hangs ends the job with an error naming the rank
instead of blocking the others forever.
"""

import contextlib
import os
import re
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from p2p.errors import P2PError

# Longer than any legitimate wait between collectives (rank 0 writing a checkpoint, the first
# iteration's compilation), short enough that a lost process does not hold the job for long.
TIMEOUT = timedelta(minutes=10)

Item = TypeVar("Item")


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
                       "start several processes with torchrun") from None
    if not 0 <= rank < size:
        raise P2PError(f"RANK {rank} is outside WORLD_SIZE {size}")
    return World(rank, size, local_rank)


def process_device(device: torch.device, world: World) -> torch.device:
    """With several processes, each drives the GPU of its local rank."""
    if device.type != "cuda" or world.size == 1:
        return device
    if world.local_rank >= torch.cuda.device_count():
        raise P2PError(f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} "
                       f"GPUs are visible", "start at most one process per GPU on each node")
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def process_group(world: World, device: torch.device, timeout: timedelta = TIMEOUT,
                  job: str = "training") -> Iterator[None]:
    """Joins the job's process group (NCCL on CUDA, gloo on CPU) while active. A collective that
    fails or times out (another process died or hangs) becomes a P2PError naming this rank and
    the ``job`` ("training", "translation", ...). A group the caller has already joined is used
    as it is."""
    if world.size == 1 or dist.is_initialized():
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
                       f"{job} processes ({reason})",
                       "another process failed or hangs; see its messages") from None
    finally:
        dist.destroy_process_group()


# ---- shares of a list ------------------------------------------------------------------------

def share_indices(count: int, chunk: int, world: World) -> list[int]:
    """The positions of ``count`` items that this rank takes: consecutive chunks of ``chunk``
    items dealt out in turn (chunk k to rank k mod size). Whole chunks, so that a rank that
    batches its share ``chunk`` at a time forms exactly the batches one process forms."""
    chunks = range(world.rank * chunk, count, world.size * chunk)
    return [i for start in chunks for i in range(start, min(start + chunk, count))]


def share(items: Sequence[Item], chunk: int, world: World) -> list[Item]:
    """This rank's items (``share_indices``), in their order."""
    return [items[i] for i in share_indices(len(items), chunk, world)]


def in_order(shares: list[Sequence[Item]], chunk: int) -> list[Item]:
    """The items of every rank's share (``shares[rank]``) back in their original order."""
    world_size, count = len(shares), sum(len(s) for s in shares)
    ordered: list = [None] * count
    for rank, items in enumerate(shares):
        for i, item in zip(share_indices(count, chunk, World(rank, world_size)), items,
                           strict=True):
            ordered[i] = item
    return ordered


# ---- collectives -----------------------------------------------------------------------------

def gather(value: Any, world: World) -> list:
    """``value`` of every rank, in rank order, on every rank (any picklable object)."""
    if world.size == 1:
        return [value]
    values: list = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def from_main(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every rank."""
    if world.size == 1:
        return value
    box = [value if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def summed(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The sum over ranks of ``tensor`` (same shape everywhere, on the group's device: CUDA for
    NCCL), in its dtype: float64 sums of features stay exact to float64 rounding."""
    if world.size == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (a stop signal reached some process)."""
    if world.size == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


# ---- the launcher ----------------------------------------------------------------------------

def launch(nproc: int, args: list[str], job: str = "training",
           results: tuple[int, ...] = (130,)) -> int:
    """Run ``python -m p2p ARGS`` in ``nproc`` processes on this machine under torchrun (a
    standalone rendezvous on a free port) and wait. Returns 0, or the exit code of the first
    process that ended with one of ``results``: codes that are an outcome, not a failure (130:
    stopped by a signal, training's rank 0 saved a checkpoint; translation adds 1: finished with
    skipped items). A process that fails otherwise stops the others and raises P2PError naming
    it and the ``job``."""
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
        if failure.exitcode in results:
            return failure.exitcode
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        raise P2PError(f"{job} process rank {rank} of {nproc} {how}; the others were stopped",
                       "its own messages are above") from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0

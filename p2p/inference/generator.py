"""A generator run at test time: the one place that decides how batch norm and dropout behave.

The paper's code runs the generator at test time as in training: dropout on, and batch norm
normalizing by the statistics of what it is given rather than its running statistics. That is
paper mode. Its batch norm statistics come either from each image alone (``batch_statistics``
False: the paper's test batch size of 1, whatever the batch size here; translate, serve,
validation and the API) or from the whole batch, as training at that batch size computes them
(True: the published table's protocol at batch 4, and training's sample grids). Eval mode is
the usual one: running statistics, no dropout, deterministic. Neither mode reads or updates the
running statistics, and the generator's train/eval state is restored afterwards.

Where paper mode's dropout draws from. Translation gives each image its own seed
(``dropout_seeds``, from ``dropout_seed(seed, key)``: the run's seed and the image's key, its
path relative to the input), and each image's masks come from a generator of that seed alone, in
the order of the dropout layers: an image's output does not depend on which images share its
batch, the batch size, the number of processes or the engine. Without ``dropout_seeds`` dropout
draws from torch's global RNG for the whole batch (training's sample grids, validation, and the
published protocol, which draws as the reference code does), in the memory order of its input:
there the generator's layout changes the draws (not their distribution): channels_last is the
fast layout on CPUs and GPUs; the contiguous layout is the reference code's, which the protocol
needs to repeat its numbers.
"""

import contextlib
import functools
import hashlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from p2p.device import autocast_dtype


def run_generator(generator: nn.Module, batch: torch.Tensor, paper_mode: bool = True,
                  precision: str = "auto", *, batch_statistics: bool = False,
                  memory_format: torch.memory_format = torch.channels_last,
                  dropout_seeds: Sequence[int] | None = None) -> torch.Tensor:
    """Translate ``batch`` (N, C, H, W), float in [-1, 1], on the generator's device.

    Returns float32 (N, C_out, H, W) in [-1, 1]; H and W must be multiples of 2**num_downs.
    ``paper_mode`` and ``batch_statistics``: see the module's docstring. Paper mode's dropout
    draws each image's masks from its own seed in ``dropout_seeds`` (one per image), or without
    them from torch's global RNG: seed it first (``seeded``) for repeatable output. Runs under
    ``torch.inference_mode``, with the input in ``memory_format`` (the generator's layout), and
    autocast to the dtype of ``precision`` (``p2p.device.autocast_dtype``: ``auto`` is bf16 on
    CUDA and on CPUs with native bf16).
    """
    device = batch.device
    dtype = autocast_dtype(precision, device)
    with torch.inference_mode(), \
            test_time_mode(generator, paper_mode, batch_statistics, dropout_seeds), \
            torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        output = generator(batch.contiguous(memory_format=memory_format))
    return output.float().contiguous()


@contextlib.contextmanager
def test_time_mode(generator: nn.Module, paper_mode: bool, batch_statistics: bool = False,
                   dropout_seeds: Sequence[int] | None = None) -> Iterator[None]:
    """The generator in paper mode (dropout on, batch norm by the statistics of what it is given:
    each image's, or with ``batch_statistics`` the batch's; dropout from each image's seed in
    ``dropout_seeds``, else the global RNG) or eval mode, for the block."""
    was_training = generator.training
    # _BatchNorm: also the SyncBatchNorm layers of a multi-process training run's generator,
    # which here normalize without synchronizing (only one process may be sampling).
    norms = ([m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
             if paper_mode else [])
    generator.train(paper_mode)  # paper mode: dropout on
    normalize = _batch_norm if batch_statistics else _per_image_batch_norm
    for norm in norms:  # an instance attribute shadows the class's forward until deleted
        norm.forward = functools.partial(normalize, norm)
    dropouts = ([m for m in generator.modules() if type(m) is nn.Dropout]
                if paper_mode and dropout_seeds is not None else [])
    draws = _ImageDraws(dropout_seeds)
    for dropout in dropouts:
        dropout.forward = functools.partial(draws.dropout, dropout)
    try:
        yield
    finally:
        for module in norms + dropouts:
            del module.forward
        generator.train(was_training)


def _batch_norm(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    # Training-mode batch norm over the whole batch, bit for bit, without running statistics.
    return F.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps)


def _per_image_batch_norm(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    # Training-mode batch norm at batch size 1, image by image: the native kernel on each image
    # is ~8x faster on CPU than reducing over H and W ourselves.
    return torch.cat([_batch_norm(norm, image[None]) for image in x])


def dropout_seed(seed: int, key: str) -> int:
    """The seed of the dropout masks of the image ``key`` (its path relative to the input) in a
    run of seed ``seed``: a hash, so that neighbouring keys or seeds give unrelated masks."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # within torch's signed 64-bit seeds


class _ImageDraws:
    """Each image's own random stream, created on the device of the first dropout input. Its
    layers draw in the order the generator runs them, a mask of the image's logical shape each,
    so neither the batch nor the memory layout changes an image's masks."""

    def __init__(self, seeds: Sequence[int] | None):
        self.seeds = list(seeds or [])
        self.streams: list[torch.Generator] = []

    def dropout(self, layer: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
        if len(x) != len(self.seeds):
            raise ValueError(f"{len(self.seeds)} dropout seeds for a batch of {len(x)}")
        if not self.streams:
            self.streams = [torch.Generator(x.device).manual_seed(s) for s in self.seeds]
        keep = 1 - layer.p
        masks = torch.stack([torch.rand(x.shape[1:], generator=stream, device=x.device) < keep
                             for stream in self.streams])
        return x * masks.to(x.dtype) / keep


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed the RNG that dropout on ``device`` draws from for the block (repeatable dropout),
    then restore it and touch no other device's; ``seed`` None leaves the RNG alone."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            torch.cuda.default_generators[index].manual_seed(seed)
        else:
            torch.random.default_generator.manual_seed(seed)
        yield

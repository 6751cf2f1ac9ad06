"""A generator run at test time: the one place that decides how batch norm and dropout behave.

The paper's code runs the generator at test time as in training: dropout on, and batch norm
normalizing by the statistics of what it is given rather than its running statistics. That is
paper mode. Its batch norm statistics come either from each image alone (``batch_statistics``
False: the paper's test batch size of 1, whatever the batch size here; translate, serve,
validation and the API) or from the whole batch, as training at that batch size computes them
(True: the published table's protocol at batch 4, and training's sample grids). Eval mode is
the usual one: running statistics, no dropout, deterministic. Neither mode reads or updates the
running statistics, and the generator's train/eval state is restored afterwards.

Dropout draws its masks in the memory order of its input, so the generator's layout changes the
draws (not their distribution): channels_last is the fast layout on CPUs and GPUs; the
contiguous layout draws as the reference code does, which the published protocol needs to
repeat its numbers.
"""

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from p2p.device import autocast_dtype


def run_generator(generator: nn.Module, batch: torch.Tensor, paper_mode: bool = True,
                  precision: str = "auto", *, batch_statistics: bool = False,
                  memory_format: torch.memory_format = torch.channels_last) -> torch.Tensor:
    """Translate ``batch`` (N, C, H, W), float in [-1, 1], on the generator's device.

    Returns float32 (N, C_out, H, W) in [-1, 1]; H and W must be multiples of 2**num_downs.
    ``paper_mode`` and ``batch_statistics``: see the module's docstring. Dropout draws from
    torch's global RNG: seed it first (``seeded``) for repeatable paper-mode output. Runs under
    ``torch.inference_mode``, with the input in ``memory_format`` (the generator's layout), and
    autocast to the dtype of ``precision`` (``p2p.device.autocast_dtype``: ``auto`` is bf16 on
    CUDA and on CPUs with native bf16).
    """
    device = batch.device
    dtype = autocast_dtype(precision, device)
    with torch.inference_mode(), test_time_mode(generator, paper_mode, batch_statistics), \
            torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        output = generator(batch.contiguous(memory_format=memory_format))
    return output.float().contiguous()


@contextlib.contextmanager
def test_time_mode(generator: nn.Module, paper_mode: bool,
                   batch_statistics: bool = False) -> Iterator[None]:
    """The generator in paper mode (dropout on, batch norm by the statistics of what it is given:
    each image's, or with ``batch_statistics`` the batch's) or eval mode, for the block."""
    was_training = generator.training
    # _BatchNorm: also the SyncBatchNorm layers of a multi-process training run's generator,
    # which here normalize without synchronizing (only one process may be sampling).
    norms = ([m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
             if paper_mode else [])
    generator.train(paper_mode)  # paper mode: dropout on
    normalize = _batch_norm if batch_statistics else _per_image_batch_norm
    for norm in norms:  # an instance attribute shadows the class's forward until deleted
        norm.forward = functools.partial(normalize, norm)
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward
        generator.train(was_training)


def _batch_norm(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    # Training-mode batch norm over the whole batch, bit for bit, without running statistics.
    return F.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps)


def _per_image_batch_norm(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    # Training-mode batch norm at batch size 1, image by image: the native kernel on each image
    # is ~8x faster on CPU than reducing over H and W ourselves.
    return torch.cat([_batch_norm(norm, image[None]) for image in x])


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

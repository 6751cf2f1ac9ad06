"""Translation in several processes: torchrun, or ``p2p translate --nproc N`` which starts it.

Rank 0 plans the jobs (so that no rank sees outputs another has already written) and every rank
gets its plan; each rank translates its share: whole chunks of ``batch_size`` consecutive jobs,
dealt out in turn (``p2p.distributed.share``), so its batches are those one process forms, and
with the run's one dropout seed (rank 0's) each output is byte for byte one process's. Outputs are
written atomically by the rank that made them; the reports are gathered, so every rank knows the
whole run's and rank 0 prints it. With one process everything here is the plain ``translate``.
"""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace

from p2p.device import pick_device
from p2p.distributed import World, barrier, from_main, gather, process_device, process_group, share
from p2p.inference.translate import (
    Job,
    Model,
    Plan,
    Progress,
    Report,
    TranslateOptions,
    load,
    plan_jobs,
    translate,
    with_seed,
)


@contextlib.contextmanager
def joined(world: World, device: str) -> Iterator[str]:
    """This rank in the translation's process group while active (nothing with one process);
    yields the device it translates on: with several processes on GPUs, its local rank's."""
    target = process_device(pick_device(device), world)
    with process_group(world, target, job="translation"):
        yield str(target)


def load_in_turn(source: str | os.PathLike, world: World, **options) -> Model:
    """``load(source, **options)`` on every rank, rank 0 first: a zoo model downloads once."""
    model = load(source, **options) if world.is_main else None
    barrier(world)
    return model if world.is_main else load(source, **options)


def planned(world: World, *args, **options) -> Plan:
    """Rank 0's ``plan_jobs(*args, **options)``, on every rank."""
    return from_main(plan_jobs(*args, **options) if world.is_main else None, world)


def translate_share(model: Model, jobs: list[Job], options: TranslateOptions, world: World,
                    progress: Progress | None = None) -> Report:
    """This rank's share of ``jobs`` translated; returns the whole run's report on every rank:
    the images all ranks translated and the bad inputs of all (rank by rank). ``outputs`` are
    this rank's own (jobs without a target: the first chunk, so rank 0's)."""
    options = replace(options, seed=from_main(with_seed(options).seed, world))
    report = translate(model, share(jobs, options.batch_size, world), options, progress)
    ranks = gather((report.translated, report.bad), world)
    return Report(sum(translated for translated, _ in ranks), [b for _, bad in ranks for b in bad],
                  report.outputs)

"""The pix2pix training loop: one iteration = a discriminator step, then a generator step.

A run directory holds ``recipe.yaml`` (as resolved), ``log.jsonl`` (one JSON object per logged
iteration), ``samples/iter_XXXXXXXX.png`` (input | output | target rows) and
``checkpoints/latest.pt``. Resuming restores every piece of state, including the RNG, and batches
are a pure function of (seed, iteration), so N iterations + resume + M iterations gives the same
weights as N + M uninterrupted iterations on CPU.
"""

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from p2p import checkpoint as ckpt
from p2p import distributed
from p2p.data.paired import (
    PairedImages,
    augment,
    batch_indices,
    center_crop,
    to_float,
)
from p2p.device import autocast_dtype, pick_device
from p2p.errors import P2PError
from p2p.images import save_image
from p2p.losses import discriminator_loss, generator_gan_loss
from p2p.memory import reuse_freed_memory
from p2p.models import PatchDiscriminator, UnetGenerator, buffers_restored, init_weights
from p2p.paths import write_bytes_atomic
from p2p.recipe import Recipe, dump_recipe, load_recipe

SAMPLE_COUNT = 4  # rows in a sample grid


@dataclass
class Models:
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler


@dataclass
class Outcome:
    iteration: int  # iterations completed
    stopped_by: str | None  # the signal name when interrupted, else None


def lr_factor(recipe: Recipe) -> Callable[[int], float]:
    """``constant`` (mmagic) or ``linear``: constant, then falls to 0 over the last decay_iters
    (the official 100 + 100 epochs, counted in iterations)."""
    t = recipe.train
    if t.schedule == "constant" or t.decay_iters == 0:
        return lambda it: 1.0
    start = t.iters - t.decay_iters
    return lambda it: 1.0 - max(0, it - start) / (t.decay_iters + 1)


def build_models(recipe: Recipe, device: torch.device) -> Models:
    torch.manual_seed(recipe.train.seed)
    generator = init_weights(UnetGenerator(recipe.generator_config())).to(device)
    discriminator = init_weights(PatchDiscriminator(recipe.discriminator_config())).to(device)
    if device.type == "cuda" and recipe.train.channels_last:
        generator = generator.to(memory_format=torch.channels_last)
        discriminator = discriminator.to(memory_format=torch.channels_last)
    t = recipe.train

    def adam(model):
        return torch.optim.Adam(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2),
                                fused=t.fused_adam or None)

    opt_g, opt_d = adam(generator), adam(discriminator)
    factor = lr_factor(recipe)
    return Models(generator, discriminator, opt_g, opt_d,
                  torch.optim.lr_scheduler.LambdaLR(opt_g, factor),
                  torch.optim.lr_scheduler.LambdaLR(opt_d, factor))


def train_step(models: Models, source: torch.Tensor, target: torch.Tensor, recipe: Recipe,
               autocast: contextlib.AbstractContextManager,
               forward_g: Callable | None = None,
               forward_d: Callable | None = None) -> dict[str, torch.Tensor]:
    """One pix2pix iteration. ``forward_g``/``forward_d`` default to the modules themselves (they
    may be compiled or DDP-wrapped versions of them)."""
    # Not `or`: a compiled module's __len__ raises for modules without one.
    forward_g = models.generator if forward_g is None else forward_g
    forward_d = models.discriminator if forward_d is None else forward_d
    kind = recipe.train.gan_loss
    with autocast:
        fake = forward_g(source)

    # Discriminator: real pairs -> 1, generated pairs -> 0; the fake is detached from G.
    models.discriminator.requires_grad_(True)
    models.opt_d.zero_grad(set_to_none=True)
    with autocast:
        fake_logits = forward_d(torch.cat([source, fake.detach()], 1))
        real_logits = forward_d(torch.cat([source, target], 1))
        d_real, d_fake = discriminator_loss(kind, real_logits.float(), fake_logits.float())
        loss_d = 0.5 * (d_real + d_fake)
    loss_d.backward()
    models.opt_d.step()

    # Generator: fool D, and stay close to the target in L1.
    models.discriminator.requires_grad_(False)
    models.opt_g.zero_grad(set_to_none=True)
    with autocast:
        g_gan = generator_gan_loss(kind, forward_d(torch.cat([source, fake], 1)).float())
        g_l1 = F.l1_loss(fake.float(), target)
        loss_g = g_gan + recipe.train.lambda_l1 * g_l1
    loss_g.backward()
    models.opt_g.step()
    models.sched_g.step()
    models.sched_d.step()
    return {"g_gan": g_gan.detach(), "g_l1": g_l1.detach(),
            "d_real": d_real.detach(), "d_fake": d_fake.detach()}


@dataclass
class Stepper:
    """One training iteration as a function of its number: the batch, its crop and flip, the D
    and G steps. The loop and benchmarks/train_speed.py run exactly this."""
    recipe: Recipe
    dataset: PairedImages
    models: Models
    device: torch.device
    forward_g: Callable
    forward_d: Callable
    autocast: contextlib.AbstractContextManager
    memory_format: torch.memory_format
    share: slice  # this process's part of each batch (all of it without torchrun)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = to_float(x.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=self.memory_format)

    def __call__(self, iteration: int) -> dict[str, torch.Tensor]:
        d, seed = self.recipe.data, self.recipe.train.seed
        indices = batch_indices(len(self.dataset), iteration, d.batch_size, seed)[self.share]
        source, target = self.dataset.get_many(indices)
        if self.dataset.cache is None:  # streamed from disk: decode the next during this step
            self.dataset.prefetch(batch_indices(len(self.dataset), iteration + 1, d.batch_size,
                                                seed)[self.share])
        source, target = augment(source, target, d.crop_size, d.flip, seed, iteration,
                                 first=self.share.start)
        return train_step(self.models, self.to_device(source), self.to_device(target),
                          self.recipe, self.autocast, self.forward_g, self.forward_d)


def make_stepper(recipe: Recipe, dataset: PairedImages, models: Models, device: torch.device,
                 world: distributed.World = distributed.World()) -> Stepper:
    """The recipe's device settings (amp: bf16 autocast on CUDA and on CPUs with native bf16;
    CUDA: channels_last), DDP wrappers when there are several processes, and torch.compile when
    asked."""
    t = recipe.train
    dtype = autocast_dtype("auto" if t.amp else "fp32", device, "train.amp")
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    forward_g, forward_d = models.generator, models.discriminator
    if world.size > 1:
        forward_g = distributed.parallel(models.generator, device)
        forward_d = distributed.parallel(models.discriminator, device)
    if t.compile:
        forward_g, forward_d = torch.compile(forward_g), torch.compile(forward_d)
    memory_format = (torch.channels_last if device.type == "cuda" and t.channels_last
                     else torch.contiguous_format)
    return Stepper(recipe, dataset, models, device, forward_g, forward_d, autocast,
                   memory_format, distributed.rank_share(recipe.data.batch_size, world))


def training_state(models: Models, recipe: Recipe, iteration: int) -> dict:
    state = ckpt.generator_state(models.generator, recipe.data.direction, recipe.data.crop_size)
    state.update(
        discriminator_config=asdict(models.discriminator.config),
        discriminator=models.discriminator.state_dict(),
        optimizer_g=models.opt_g.state_dict(), optimizer_d=models.opt_d.state_dict(),
        scheduler_g=models.sched_g.state_dict(), scheduler_d=models.sched_d.state_dict(),
        iteration=iteration, recipe=recipe.to_dict(),
        rng_cpu=torch.get_rng_state(),
        rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    )
    return state


def restore(models: Models, state: dict) -> int:
    models.generator.load_state_dict(state["generator"])
    models.discriminator.load_state_dict(state["discriminator"])
    models.opt_g.load_state_dict(state["optimizer_g"])
    models.opt_d.load_state_dict(state["optimizer_d"])
    models.sched_g.load_state_dict(state["scheduler_g"])
    models.sched_d.load_state_dict(state["scheduler_d"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return int(state["iteration"])


def sample_grid(models: Models, source: torch.Tensor, target: torch.Tensor,
                autocast: contextlib.AbstractContextManager) -> torch.Tensor:
    """Rows of input | output | target, in [-1, 1], generated as in the paper (train mode).

    Sampling leaves no trace: the RNG and the batch-norm running statistics are restored, so a
    run's weights do not depend on when it sampled (resume stays bit-identical)."""
    cuda = [source.device] if source.device.type == "cuda" else []
    with (torch.random.fork_rng(devices=cuda), buffers_restored(models.generator),
          torch.no_grad(), autocast):
        fake = models.generator(source).float()

    def rgb(x):
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    rows = torch.cat([rgb(source), rgb(fake), rgb(target)], dim=3)  # side by side
    return torch.cat(list(rows.cpu()), dim=1)  # stacked vertically


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[str]]:
    """While active, SIGINT/SIGTERM ask the loop to stop after the current iteration (it then
    saves a checkpoint) instead of killing the process. Yields a list that receives the name."""
    requested: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {}

    def handler(signum, frame):
        requested.append(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def check_new_run(run_dir: Path) -> None:
    if (run_dir / "checkpoints" / ckpt.LATEST).exists():
        raise P2PError(f"{run_dir}: this run directory already has a checkpoint",
                       f"continue it with --resume {run_dir}, or choose another --out")


def prepare_run(recipe: Recipe, run_dir: Path) -> None:
    check_new_run(run_dir)
    write_bytes_atomic(run_dir / "recipe.yaml", dump_recipe(recipe).encode())


def load_run(run_dir: Path, iters: int | None = None) -> Recipe:
    """The recipe of an existing run; ``iters`` extends (or shortens) its length, checked as
    any recipe value."""
    if not (run_dir / "recipe.yaml").is_file():
        raise P2PError(f"{run_dir}: not a run directory (no recipe.yaml)")
    overrides = [f"train.iters={iters}"] if iters is not None else []
    return load_recipe(run_dir / "recipe.yaml", overrides)


def load_dataset(recipe: Recipe, data_root: Path,
                 progress: Callable[[int, int], None] | None = None) -> PairedImages:
    d = recipe.data
    return PairedImages(data_root, d.split, d.direction, d.load_size, d.in_channels,
                        d.out_channels, d.cache_gb, d.workers, progress=progress)


def train(recipe: Recipe, dataset: PairedImages, run_dir: Path, resume: bool = False,
          on_log: Callable[[dict], None] | None = None,
          on_sample: Callable[[int, torch.Tensor], None] | None = None) -> Outcome:
    """Train (or resume) a run. ``on_log`` receives each logged record, ``on_sample`` each sample
    grid (iteration, (3, H, W) float tensor in [-1, 1]).

    Under torchrun this process is one of several (see p2p.distributed): each trains on its share
    of every batch, and only rank 0 writes files and calls ``on_log`` and ``on_sample``."""
    world = distributed.world_from_env()
    device = distributed.process_device(pick_device(recipe.train.device, "train.device"), world)
    distributed.check(recipe, world.size, device.type)
    with distributed.process_group(world, device), reuse_freed_memory(device):
        return _train(recipe, dataset, run_dir, resume, on_log, on_sample, world, device)


def _train(recipe: Recipe, dataset: PairedImages, run_dir: Path, resume: bool,
           on_log: Callable[[dict], None] | None,
           on_sample: Callable[[int, torch.Tensor], None] | None,
           world: distributed.World, device: torch.device) -> Outcome:
    t, d = recipe.train, recipe.data
    models = build_models(recipe, device)
    start = 0
    if resume:
        start = restore(models, ckpt.load_checkpoint(run_dir, map_location=device))
    elif world.is_main:
        prepare_run(recipe, run_dir)
    else:
        check_new_run(run_dir)

    step = make_stepper(recipe, dataset, models, device, world)
    if world.size > 1:
        distributed.seed_rank(t.seed, world, start)
    sample_source, sample_target = dataset.get_many(list(range(min(SAMPLE_COUNT, len(dataset)))))
    sample_source = step.to_device(center_crop(sample_source, d.crop_size))
    sample_target = step.to_device(center_crop(sample_target, d.crop_size))

    def save(iteration: int) -> None:
        if world.is_main:
            ckpt.save_checkpoint(run_dir / "checkpoints" / ckpt.LATEST,
                                 training_state(models, recipe, iteration))
        distributed.barrier(world)  # the others wait until it is on disk before they go on or exit

    log_path = run_dir / "log.jsonl"
    models.generator.train()
    models.discriminator.train()
    hardware = (f"{torch.cuda.get_device_name(device)} x {world.size}" if device.type == "cuda"
                else f"cpu, {torch.get_num_threads()} threads x {world.size}")
    window_start, window_iters = time.perf_counter(), 0
    iteration = start
    with stop_on_signals() as stop, contextlib.ExitStack() as files:
        log = files.enter_context(open(log_path, "a")) if world.is_main else None
        while iteration < t.iters and not distributed.any_rank(bool(stop), world, device):
            losses = step(iteration)
            iteration += 1
            window_iters += 1
            done = iteration == t.iters
            if iteration % t.log_every == 0 or done:
                losses = distributed.mean(losses, world)
                elapsed = time.perf_counter() - window_start
                record = {"iteration": iteration,
                          **{k: round(float(v), 6) for k, v in losses.items()},
                          "lr": models.opt_g.param_groups[0]["lr"],
                          "it_per_s": round(window_iters / elapsed, 4) if elapsed else None,
                          "time": round(time.time(), 3), "device": hardware}
                if not all(math.isfinite(record[k]) for k in losses):
                    save(iteration)
                    raise P2PError(f"training diverged at iteration {iteration} (loss is not "
                                   f"finite)", "lower train.lr or check the data")
                if world.is_main:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    if on_log:
                        on_log(record)
                window_start, window_iters = time.perf_counter(), 0
            if iteration % t.sample_every == 0 or done:
                # Every rank generates: SyncBatchNorm layers gather statistics from all of them.
                grid = sample_grid(models, sample_source, sample_target, step.autocast)
                if world.is_main:
                    save_image(grid, run_dir / "samples" / f"iter_{iteration:08d}.png")
                    if on_sample:
                        on_sample(iteration, grid)
            if iteration % t.checkpoint_every == 0 or done:
                save(iteration)
        stopped = distributed.any_rank(bool(stop), world, device)
        if stopped:
            save(iteration)
    return Outcome(iteration,
                   (stop[0] if stop else "a signal to another process") if stopped else None)

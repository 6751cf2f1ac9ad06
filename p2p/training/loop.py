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

from p2p import distributed, run_lock, weights
from p2p.data.catalog import resolve_dataset
from p2p.data.paired import PairedImages, augment, batch_indices, to_float
from p2p.device import autocast_dtype, pick_device
from p2p.errors import P2PError, StoppedBeforeStart
from p2p.images.eight_bit import preview_rgb, save_image
from p2p.inference.translate import Model, model_from_state
from p2p.losses import (
    discriminator_loss,
    feature_matching_loss,
    generator_gan_loss,
    mean_over_scales,
    perceptual_loss,
)
from p2p.memory import reuse_freed_memory
from p2p.models import build_discriminator, build_generator, init_weights
from p2p.paths import append_text, write_bytes_atomic
from p2p.recipe import Recipe, dump_recipe, load_recipe
from p2p.training import distributed as data_parallel
from p2p.training import footprint, loggers, tracking, validation
from p2p.weights import checkpoint as ckpt

SAMPLE_COUNT = 4  # rows in a sample grid


@dataclass
class Models:
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler
    vgg: torch.nn.Module | None = None  # train.lambda_vgg's frozen VGG19 (vgg.py), else None


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


def build_models(recipe: Recipe, device: torch.device, vgg_path: Path | None = None) -> Models:
    """The networks, optimizers and schedulers of a new run. With train.lambda_vgg, the VGG19
    too, from ``vgg_path`` (``vgg_weights``) or else found or downloaded here."""
    torch.manual_seed(recipe.train.seed)
    generator = init_weights(build_generator(recipe.generator_config())).to(device)
    discriminator = init_weights(build_discriminator(recipe.discriminator_config())).to(device)
    if device.type == "cuda" and recipe.train.channels_last:
        generator = generator.to(memory_format=torch.channels_last)
        discriminator = discriminator.to(memory_format=torch.channels_last)
    t = recipe.train

    def adam(model):
        return torch.optim.Adam(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2),
                                fused=t.fused_adam or None)

    opt_g, opt_d = adam(generator), adam(discriminator)
    factor = lr_factor(recipe)
    perceptual = None
    if t.lambda_vgg:
        from p2p.training import vgg  # torchvision: imported only when the loss is on

        perceptual = vgg.vgg_features(vgg_path or vgg.locate(t.vgg_weights)).to(device)
    return Models(generator, discriminator, opt_g, opt_d,
                  torch.optim.lr_scheduler.LambdaLR(opt_g, factor),
                  torch.optim.lr_scheduler.LambdaLR(opt_d, factor), perceptual)


def vgg_weights(recipe: Recipe, world: distributed.World,
                progress: Callable[[int, int | None], None] | None = None) -> Path | None:
    """train.lambda_vgg's VGG19 weights file (None when the loss is off), found or downloaded
    before anything is written. Rank 0 goes first, so that only one process downloads."""
    if not recipe.train.lambda_vgg:
        return None
    from p2p.training import vgg

    path = None
    for turn in (True, False):  # rank 0's turn, then the others'
        if world.is_main == turn:
            path = vgg.locate(recipe.train.vgg_weights, progress)
        distributed.barrier(world)
    return path


def train_step(models: Models, source: torch.Tensor, target: torch.Tensor, recipe: Recipe,
               autocast: contextlib.AbstractContextManager,
               forward_g: Callable | None = None,
               forward_d: Callable | None = None) -> dict[str, torch.Tensor]:
    """One pix2pix iteration, with the objectives the recipe adds (model.d_scales,
    train.lambda_feat, train.lambda_vgg); returns the losses to log. ``forward_g``/``forward_d``
    default to the modules themselves (they may be compiled or DDP-wrapped versions of them)."""
    # Not `or`: a compiled module's __len__ raises for modules without one.
    forward_g = models.generator if forward_g is None else forward_g
    forward_d = models.discriminator if forward_d is None else forward_d
    t, scales = recipe.train, recipe.model.d_scales
    kind = t.gan_loss
    with autocast:
        fake = forward_g(source)

    # Discriminator: real pairs -> 1, generated pairs -> 0; the fake is detached from G. With
    # several scales, each loss is the average of the scales'.
    models.discriminator.requires_grad_(True)
    models.opt_d.zero_grad(set_to_none=True)
    with autocast:
        fake_logits = judge(forward_d, torch.cat([source, fake.detach()], 1), scales)
        real_logits = judge(forward_d, torch.cat([source, target], 1), scales)
        per_scale = [discriminator_loss(kind, on_real.float(), on_fake.float())
                     for on_real, on_fake in zip(real_logits, fake_logits, strict=True)]
        d_real = mean_over_scales([loss for loss, _ in per_scale])
        d_fake = mean_over_scales([loss for _, loss in per_scale])
        loss_d = 0.5 * (d_real + d_fake)
    loss_d.backward()
    models.opt_d.step()

    # Generator: fool D, and stay close to the target in L1 (and, when on, in D's features and
    # VGG19's).
    models.discriminator.requires_grad_(False)
    models.opt_g.zero_grad(set_to_none=True)
    with autocast:
        judged = judge(forward_d, torch.cat([source, fake], 1), scales, bool(t.lambda_feat))
        logits = [out[-1] for out in judged] if t.lambda_feat else judged
        g_gan = mean_over_scales([generator_gan_loss(kind, x.float()) for x in logits])
        g_l1 = F.l1_loss(fake.float(), target)
        loss_g = g_gan + t.lambda_l1 * g_l1
        losses = {"g_gan": g_gan, "g_l1": g_l1}
        if t.lambda_feat:
            # The real pair's features through the same (updated) discriminator: a target.
            with torch.no_grad():
                real_features = judge(forward_d, torch.cat([source, target], 1), scales,
                                      features=True)
            losses["g_feat"] = feature_matching_loss(judged, real_features)
            loss_g = loss_g + t.lambda_feat * losses["g_feat"]
        if t.lambda_vgg:
            with torch.no_grad():
                target_features = models.vgg(target)
            losses["g_vgg"] = perceptual_loss(models.vgg(fake), target_features)
            loss_g = loss_g + t.lambda_vgg * losses["g_vgg"]
    loss_g.backward()
    models.opt_g.step()
    models.sched_g.step()
    models.sched_d.step()
    return {**{key: value.detach() for key, value in losses.items()},
            "d_real": d_real.detach(), "d_fake": d_fake.detach()}


def judge(forward_d: Callable, pair: torch.Tensor, scales: int,
          features: bool = False) -> list:
    """The discriminator's output on ``pair`` as a list with one entry per scale (one for the
    published PatchGAN): the logits, or with ``features`` the hidden features and the logits."""
    output = forward_d(pair, features=features)
    return output if scales > 1 else [output]


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

    def to_device(self, x: torch.Tensor, side: int) -> torch.Tensor:
        """A batch of side 0 (source) or 1 (target) as float [-1, 1] on the device."""
        x = to_float(x.to(self.device, non_blocking=True), self.dataset.ranges[side])
        return x.contiguous(memory_format=self.memory_format)

    def __call__(self, iteration: int) -> dict[str, torch.Tensor]:
        d, seed = self.recipe.data, self.recipe.train.seed
        indices = batch_indices(len(self.dataset), iteration, d.batch_size, seed)[self.share]
        source, target = self.dataset.get_many(indices, stack=False)  # augment stacks them
        if self.dataset.cache is None:  # streamed from disk: decode the next during this step
            self.dataset.prefetch(batch_indices(len(self.dataset), iteration + 1, d.batch_size,
                                                seed)[self.share])
        crop = self.dataset.preprocess.crop_size if self.dataset.preprocess.crops else None
        source, target = augment(source, target, crop, d.flip, seed, iteration,
                                 first=self.share.start)
        return train_step(self.models, self.to_device(source, 0), self.to_device(target, 1),
                          self.recipe, self.autocast, self.forward_g, self.forward_d)


def training_precision(recipe: Recipe) -> str:
    """``train.amp`` as translate's ``--precision``: ``auto``, ``bf16`` (true) or ``fp32``."""
    return {False: "fp32", True: "bf16"}.get(recipe.train.amp, "auto")


def hardware_of(device: torch.device, world: distributed.World) -> str:
    """What trains, for people and log.jsonl: the device (CPU: its threads) x processes."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x {world.size}"
    return f"cpu, {torch.get_num_threads()} threads x {world.size}"


def training_setting(recipe: Recipe) -> str:
    """Where and how ``train`` trains ``recipe`` in this process, as log.jsonl records it:
    ``cpu, 2 threads x 1, bf16``."""
    world = distributed.world_from_env()
    device = distributed.process_device(pick_device(recipe.train.device, "train.device"), world)
    precision = "fp32" if training_dtype(recipe, device) is None else "bf16"
    return f"{hardware_of(device, world)}, {precision}"


def training_dtype(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` (None: fp32), as translate's ``--precision``:
    ``auto``: bf16 on CUDA and on CPUs with native bf16 (facades 1.46x faster than fp32 on a
    Zen 4, with loss and validation curves that track fp32's: benchmarks/README.md), else fp32;
    ``true``: bf16, refused where it would be emulated; ``false``: fp32."""
    return autocast_dtype(training_precision(recipe), device, "train.amp",
                          asked="train.amp: true",
                          instead="train.amp: auto (bf16 where native, else fp32) or false")


def make_stepper(recipe: Recipe, dataset: PairedImages, models: Models, device: torch.device,
                 world: distributed.World = distributed.World()) -> Stepper:
    """The recipe's device settings (``training_dtype``; CUDA: channels_last), DDP wrappers when
    there are several processes, and torch.compile when asked."""
    t = recipe.train
    dtype = training_dtype(recipe, device)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    forward_g, forward_d = models.generator, models.discriminator
    if world.size > 1:
        forward_g = data_parallel.parallel(models.generator, device)
        forward_d = data_parallel.parallel(models.discriminator, device)
    if t.compile:
        forward_g, forward_d = torch.compile(forward_g), torch.compile(forward_d)
    memory_format = (torch.channels_last if device.type == "cuda" and t.channels_last
                     else torch.contiguous_format)
    return Stepper(recipe, dataset, models, device, forward_g, forward_d, autocast,
                   memory_format, data_parallel.rank_share(recipe.data.batch_size, world))


def generator_checkpoint(models: Models, recipe: Recipe, normalization: dict | None) -> dict:
    """What translation needs: the generator, its direction, preprocessing and value ranges."""
    d = recipe.data
    preprocess = d.preprocessing()
    return ckpt.generator_state(models.generator, d.direction, preprocess.crop_size,
                                preprocess.to_dict(), normalization)


def inference_model(models: Models, recipe: Recipe, device: torch.device,
                    normalization: dict | None = None) -> Model:
    """The generator in training as translate would run it (what its checkpoint would record):
    samples and validation go through it."""
    return model_from_state(models.generator, generator_checkpoint(models, recipe, normalization),
                            device)


def training_state(models: Models, recipe: Recipe, iteration: int,
                   normalization: dict | None = None) -> dict:
    """``normalization``: the dataset's (``PairedImages.normalization``), recorded for
    translate."""
    state = generator_checkpoint(models, recipe, normalization)
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


# What --resume needs from a checkpoint, with the type each piece must have.
RESUME_STATE = {"generator": dict, "discriminator": dict, "optimizer_g": dict,
                "optimizer_d": dict, "scheduler_g": dict, "scheduler_d": dict,
                "iteration": int, "rng_cpu": torch.Tensor, "rng_cuda": list}


def restore(models: Models, state: dict, source: str | Path = "the checkpoint") -> int:
    """Load a training checkpoint into ``models`` (and the RNG); returns its iteration.

    A piece that is missing, of the wrong type or from another architecture is a P2PError
    naming it (``source`` names the file)."""
    missing = [key for key in RESUME_STATE if key not in state]
    if missing:
        raise P2PError(f"{source}: cannot resume: the checkpoint has no {', '.join(missing)}",
                       "it is not a training checkpoint of p2p; start a new run from the recipe")
    for key, kind in RESUME_STATE.items():
        if not isinstance(state[key], kind) or (kind is int and isinstance(state[key], bool)):
            raise P2PError(f"{source}: cannot resume: '{key}' is a {type(state[key]).__name__}, "
                           f"expected a {kind.__name__}", "the checkpoint is damaged")
    if state["iteration"] < 0:
        raise P2PError(f"{source}: cannot resume: 'iteration' is {state['iteration']}",
                       "the checkpoint is damaged")
    pieces = [(models.generator, "generator"), (models.discriminator, "discriminator"),
              (models.opt_g, "optimizer_g"), (models.opt_d, "optimizer_d"),
              (models.sched_g, "scheduler_g"), (models.sched_d, "scheduler_d")]
    for target, key in pieces:
        try:
            target.load_state_dict(state[key])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise P2PError(f"{source}: cannot resume: its '{key}' does not fit the run's recipe "
                           f"({first_line[:200]})",
                           "was it saved by another architecture? resume it with the "
                           "recipe.yaml it was trained with") from None
    try:
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
    except (RuntimeError, TypeError) as exc:
        raise P2PError(f"{source}: cannot resume: its random number generator state does not "
                       f"load ({str(exc).strip().splitlines()[0][:200]})",
                       "the checkpoint is damaged") from None
    return state["iteration"]


def sample_grid(model: Model, source: torch.Tensor, target: torch.Tensor,
                precision: str) -> torch.Tensor:
    """Rows of input | output | target, in [-1, 1], generated as training would at this batch
    (paper mode, the batch's statistics), in the training's ``precision``.

    Sampling leaves no trace: the RNG is restored and the running statistics are not touched, so
    a run's weights do not depend on when it sampled (resume stays bit-identical)."""
    cuda = [source.device] if source.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        fake = model.run(source, precision=precision, batch_statistics=True)

    rows = torch.cat([preview_rgb(source), preview_rgb(fake), preview_rgb(target)],
                     dim=3)  # side by side
    return torch.cat(list(rows.cpu()), dim=1)  # stacked vertically


def validate_and_keep_best(validator: validation.Validator, models: Models, recipe: Recipe,
                           run_dir: Path, iteration: int, best: dict | None,
                           normalization: dict | None, model: Model) -> tuple[dict, dict | None]:
    """Score the generator on the validation pairs; when it beats ``best`` (what best.pt
    records), it becomes checkpoints/best.pt. Returns the log record and the best so far."""
    started = time.perf_counter()
    metrics = validation.validate(validator, model)
    seconds = time.perf_counter() - started
    metric = recipe.train.best_metric
    record = {"iteration": iteration, **{f"val_{k}": _rounded(v) for k, v in metrics.items()},
              "val_images": len(validator.dataset), "val_split": validator.split,
              "val_seconds": round(seconds, 3), "time": round(time.time(), 3)}
    so_far = best["metrics"].get(metric) if best and best.get("metric") == metric else None
    if validation.better(metric, metrics[metric], so_far):
        best = {"iteration": iteration, "metric": metric, "metrics": metrics}
        ckpt.save_best(run_dir, {**generator_checkpoint(models, recipe, normalization), **best,
                                 "recipe": recipe.to_dict()})
        record["val_best"] = True
    return record, best


def _rounded(value: float) -> float | None:
    # JSON has no NaN or infinity that every reader accepts: an undefined value is null.
    return round(value, 6) if math.isfinite(value) else None


def init_generator(generator: torch.nn.Module, source: str, world: distributed.World,
                   progress: Callable[[int, int | None], None] | None = None) -> dict | None:
    """Load model.init_from's generator weights into ``generator`` (strictly: the same tensors,
    of the same shapes). Returns what the run records about the source: what was asked, the
    file, its sha256 and its iteration (None for a published model). Rank 0 resolves first, so
    that only one process downloads a zoo model."""
    if not source:
        return None
    from p2p.download import sha256_file

    path = None
    for turn in (True, False):  # rank 0's turn, then the others'
        if world.is_main == turn:
            try:
                path = weights.resolve(source, progress)
            except P2PError as exc:
                raise P2PError(f"model.init_from: {exc.message}", exc.hint) from None
        distributed.barrier(world)
    state = weights.load_checkpoint(path)  # a checkpoint file or a model folder
    ckpt.load_generator_weights(generator, state.get("generator"), f"model.init_from {path}")
    # Only rank 0 writes and logs this record: the others need not read the file again.
    return {"init_from": source, "path": str(path.resolve()),
            "sha256": sha256_file(weights.weights_file(path)) if world.is_main else None,
            "source_iteration": state.get("iteration")}


def weights_finite(models: Models) -> bool:
    """Whether the weights and norm statistics of both networks are all finite numbers."""
    return all(bool(torch.isfinite(x).all()) for net in (models.generator, models.discriminator)
               for x in net.state_dict().values() if x.is_floating_point())


def diverged(iteration: int) -> P2PError:
    return P2PError(f"training diverged at iteration {iteration} (loss or weights are not "
                    f"finite); the last checkpoint, if any, is kept",
                    "lower train.lr or check the data")


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
    """A run directory with a checkpoint is a run to protect; one without (a start that was
    stopped or failed before its first checkpoint) is started afresh."""
    if (run_dir / "checkpoints" / ckpt.LATEST).exists():
        raise P2PError(f"{run_dir}: this run directory already has a checkpoint",
                       f"continue it with --resume {run_dir}, or choose another --out")


def prepare_run(recipe: Recipe, run_dir: Path) -> None:
    check_new_run(run_dir)
    write_bytes_atomic(run_dir / "recipe.yaml", dump_recipe(recipe).encode())
    write_bytes_atomic(run_dir / "log.jsonl", b"")  # a log left by a start without checkpoint


# What a resumed run may change: its length and where it logs, not what it trains.
RESUME_OVERRIDES = ("train.iters", "train.tensorboard", "train.loggers")


def load_run(run_dir: Path, overrides: list[str] = ()) -> Recipe:
    """The recipe of an existing run, with ``overrides`` (``KEY=VALUE`` of
    ``RESUME_OVERRIDES`` only) checked as any recipe value."""
    if not (run_dir / "recipe.yaml").is_file():
        raise P2PError(f"{run_dir}: not a run directory (no recipe.yaml)")
    for assignment in overrides:
        if assignment.split("=", 1)[0].strip().removesuffix("+") not in RESUME_OVERRIDES:
            raise P2PError(f"{assignment}: a resumed run keeps its recipe",
                           f"override only {' or '.join(RESUME_OVERRIDES)}")
    return load_recipe(run_dir / "recipe.yaml", list(overrides))


def load_dataset(recipe: Recipe, data_root: Path,
                 progress: Callable[[int, int], None] | None = None) -> PairedImages:
    d = recipe.data
    preprocess = d.preprocessing()
    dataset = PairedImages(data_root, d.split, d.direction, preprocess.load_size, d.in_channels,
                           d.out_channels, d.cache_gb, d.workers, progress=progress,
                           preprocess=preprocess, stride=recipe.generator_stride(),
                           ranges=d.side_ranges())
    dataset.check_batchable(d.batch_size)
    return dataset


def preflight(recipe: Recipe, device: torch.device, processes: int, data_root: Path) -> None:
    """Refuse, before anything is loaded or written, a recipe that this device, these processes
    or this dataset cannot train: a batch that does not split over the processes, train.amp
    true without native bf16, networks and a batch beyond the free memory, validation without a
    split to validate on, validation's LPIPS without the lpips package. The CLI calls it before
    decoding the data; ``train`` again."""
    data_parallel.check(recipe, processes, device.type)
    loggers.check(recipe)
    half = training_dtype(recipe, device) is not None
    footprint.check_fits(recipe, device, processes, half)
    if recipe.train.val_every:
        validation.validation_split(data_root, recipe.train.val_split)
        if recipe.train.val_lpips:
            from p2p.metrics.perceptual import lpips_package

            lpips_package()


@contextlib.contextmanager
def claimed(recipe: Recipe, run_dir: Path, processes: int) -> Iterator[Path]:
    """Hold ``run_dir`` for writing (the main process; another is refused, naming the PID of the
    one training) and refuse, before any data is decoded, what ``processes`` processes could not
    train (``preflight``). Yields the dataset's folder."""
    world = distributed.world_from_env()
    with run_lock.hold(run_dir) if world.is_main else contextlib.nullcontext():
        device = pick_device(recipe.train.device, "train.device")
        data_root = resolve_dataset(recipe.data.path)
        preflight(recipe, device, max(processes, world.size), data_root)
        yield data_root


def train(recipe: Recipe, dataset: PairedImages, run_dir: Path, resume: bool = False,
          on_log: Callable[[dict], None] | None = None,
          on_sample: Callable[[int, torch.Tensor], None] | None = None,
          on_download: Callable[[int, int | None], None] | None = None) -> Outcome:
    """Train (or resume) a run. ``on_log`` receives each logged record (training losses, or
    ``val_*`` metrics), ``on_sample`` each sample grid (iteration, (3, H, W) float tensor in
    [-1, 1]), ``on_download`` the progress of a download before training (model.init_from's zoo
    model, the VGG19 weights for train.lambda_vgg, the FID Inception weights for train.val_fid,
    the AlexNet weights for train.val_lpips).

    Under torchrun this process is one of several (see p2p.distributed and
    p2p.training.distributed): each trains on its share of every batch, and only rank 0 writes
    files and calls ``on_log`` and ``on_sample``, and logs to the loggers the recipe turns on
    (loggers.py)."""
    world = distributed.world_from_env()
    device = distributed.process_device(pick_device(recipe.train.device, "train.device"), world)
    preflight(recipe, device, world.size, dataset.root)
    # Signals are taken from here on: one during start-up stops before the loop, unsaved.
    with (stop_on_signals() as stop, distributed.process_group(world, device),
          reuse_freed_memory(device),
          (loggers.open_loggers(recipe, run_dir) if world.is_main
           else loggers.Loggers()) as trackers):  # an error ends the trackers' run FAILED
        outcome = _train(recipe, dataset, run_dir, resume, on_log, on_sample, world, device,
                         stop, trackers, on_download)
        trackers.end(tracking.KILLED if outcome.stopped_by else tracking.FINISHED)
        return outcome


def _train(recipe: Recipe, dataset: PairedImages, run_dir: Path, resume: bool,
           on_log: Callable[[dict], None] | None,
           on_sample: Callable[[int, torch.Tensor], None] | None,
           world: distributed.World, device: torch.device, stop: list[str],
           trackers: loggers.Loggers,
           on_download: Callable[[int, int | None], None] | None = None) -> Outcome:
    t = recipe.train
    models = build_models(recipe, device, vgg_weights(recipe, world, on_download))
    # Before anything is written: a bad init_from or missing FID weights fail a run cleanly.
    validator = (validation.prepare(recipe, dataset.root, device, on_download)
                 if t.val_every and world.is_main else None)
    start, init_source, best = 0, None, None
    if resume:
        state = weights.load_checkpoint(run_dir, map_location=device)
        start = restore(models, state, weights.resolve(run_dir))
        init_source = state.get("init_from")  # a fine-tune resumes from its own checkpoint
        best = ckpt.best_metrics(run_dir)
    else:
        init_source = init_generator(models.generator, recipe.model.init_from, world,
                                     on_download)
        if world.is_main:
            prepare_run(recipe, run_dir)
        else:
            check_new_run(run_dir)
    trackers.start(start, resume, init_source)

    step = make_stepper(recipe, dataset, models, device, world)
    if world.size > 1:
        data_parallel.seed_rank(t.seed, world, start)
    sample_source, sample_target = dataset.preview(SAMPLE_COUNT)
    sample_source = step.to_device(sample_source, 0)
    sample_target = step.to_device(sample_target, 1)
    normalization = dataset.normalization()
    model = inference_model(models, recipe, device, normalization)

    def save(iteration: int, history: bool = False) -> None:
        """latest.pt; ``history``: also checkpoints/iter_N.pt (a regular checkpoint)."""
        # Never replace the last good checkpoint with weights that are no longer numbers (the
        # loss is only checked when logged).
        if not weights_finite(models):
            raise diverged(iteration)
        if world.is_main:
            state = {**training_state(models, recipe, iteration, normalization),
                     "init_from": init_source}
            ckpt.save_training_checkpoint(run_dir, state, t.keep_checkpoints if history else 0)
            trackers.checkpoint(iteration)
        distributed.barrier(world)  # the others wait until it is on disk before they go on or exit

    models.generator.train()
    models.discriminator.train()
    if distributed.any_rank(bool(stop), world, device):
        raise StoppedBeforeStart(stop[0] if stop else "a signal to another process")

    log_path = run_dir / "log.jsonl"
    hardware = hardware_of(device, world)
    precision = "fp32" if training_dtype(recipe, device) is None else "bf16"
    window_start, window_iters = time.perf_counter(), 0
    iteration = start

    def emit(record: dict) -> None:  # rank 0 only: a line of log.jsonl, flushed for readers
        append_text(log_path, json.dumps(record) + "\n")
        trackers.log(record)
        if on_log:
            on_log(record)

    if init_source is not None and not resume and world.is_main:
        emit({"event": "init_from", **init_source, "time": round(time.time(), 3)})
    while iteration < t.iters and not distributed.any_rank(bool(stop), world, device):
        losses = step(iteration)
        iteration += 1
        window_iters += 1
        done = iteration == t.iters
        if iteration % t.log_every == 0 or done:
            losses = data_parallel.mean(losses, world)
            elapsed = time.perf_counter() - window_start
            record = {"iteration": iteration,
                      **{k: round(float(v), 6) for k, v in losses.items()},
                      "lr": models.opt_g.param_groups[0]["lr"],
                      "it_per_s": round(window_iters / elapsed, 4) if elapsed else None,
                      "time": round(time.time(), 3), "device": hardware,
                      "precision": precision}
            if not all(math.isfinite(record[k]) for k in losses):
                raise diverged(iteration)
            if world.is_main:
                emit(record)
            window_start, window_iters = time.perf_counter(), 0
        if (iteration % t.sample_every == 0 or done) and world.is_main:
            grid = sample_grid(model, sample_source, sample_target,
                               training_precision(recipe))
            save_image(grid, run_dir / "samples" / f"iter_{iteration:08d}.png")
            trackers.sample(iteration, grid)
            if on_sample:
                on_sample(iteration, grid)
        if t.val_every and (iteration % t.val_every == 0 or done):
            if world.is_main:
                record, best = validate_and_keep_best(validator, models, recipe, run_dir,
                                                      iteration, best, normalization, model)
                emit(record)
                if record.get("val_best"):
                    trackers.best(best)
                window_start += record["val_seconds"]  # it/s counts training only
            distributed.barrier(world)
        if iteration % t.checkpoint_every == 0 or done:
            save(iteration, history=True)
    stopped = distributed.any_rank(bool(stop), world, device)
    if stopped:
        save(iteration)
    return Outcome(iteration,
                   (stop[0] if stop else "a signal to another process") if stopped else None)

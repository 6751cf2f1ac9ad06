"""``p2p train``: parse, resolve the recipe and data, run the core loop, report."""

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from p2p.cli import console
from p2p.errors import P2PError, StoppedBeforeStart
from p2p.limits import MAX_COUNT, MAX_WORKERS


def train(
    recipe_path: Path | None = typer.Argument(None, metavar="RECIPE",
                                              help="Recipe YAML (see recipes/)."),
    data: str | None = typer.Option(None, "--data", help="Dataset name or folder (overrides "
                                    "data.path)."),
    out: Path | None = typer.Option(None, "--out", help="Run directory [default: runs/NAME]."),
    iters: int | None = typer.Option(None, "--iters", min=1, max=MAX_COUNT, help="Total "
                                     "iterations (overrides train.iters; with --resume, extends "
                                     "the run)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a recipe value, "
                                        "e.g. --set train.lr=1e-4 (repeatable)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the run in RUN_DIR "
                                       "from its latest checkpoint."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to TensorBoard, in "
                                     "RUN_DIR/tensorboard (sets train.tensorboard)."),
    log_to: list[str] = typer.Option([], "--log-to", metavar="NAME", help="Also log to NAME: "
                                     "tensorboard, mlflow or wandb (adds it to train.loggers; "
                                     "repeatable; with --resume too)."),
    nproc: int = typer.Option(1, "--nproc", min=1, max=MAX_WORKERS, help="Train in N "
                              "processes on this machine (one per GPU), launched with torchrun; "
                              "data.batch_size is the total over them."),
) -> None:
    """Train a pix2pix model from a YAML recipe; prints the run directory on stdout."""
    try:
        with contextlib.ExitStack() as held, _stopped_at_start_up() as start_up:
            _train(recipe_path, data, out, iters, overrides, resume, tensorboard, log_to, nproc,
                   held, start_up)
    except StoppedBeforeStart as exc:
        console.info(f"stopped by {exc} before training started: nothing was trained yet")
        raise typer.Exit(130) from None


def _train(recipe_path, data, out, iters, overrides, resume, tensorboard, log_to, nproc,
           held: contextlib.ExitStack, start_up: contextlib.ExitStack) -> None:
    """``held``: what stays held until the command ends (the run lock); ``start_up``: closed when
    training is over, or when torchrun takes over the signals."""
    # The core is imported here, not at the top, so `p2p --help` and completion skip torch.
    import p2p
    from p2p import distributed, run_lock
    from p2p.recipe import load_recipe
    from p2p.training import loop as core
    from p2p.training.run import Stopped

    world = distributed.world_from_env()
    if nproc > 1 and world.size > 1:
        raise P2PError("--nproc starts torchrun, but this process already runs under it",
                       "leave out --nproc under torchrun")
    assignments = [f"train.iters={iters}"] if iters is not None else []
    assignments += ["train.tensorboard=true"] if tensorboard else []
    assignments += [f"train.loggers+={name}" for name in log_to]
    if resume is not None:
        if recipe_path is not None or overrides or data or out:
            raise P2PError("--resume continues a run with its own recipe",
                           "pass only --resume RUN_DIR (and --iters N to extend it)")
        run_dir = resume
    else:
        if recipe_path is None:
            raise P2PError("no recipe given", "p2p train recipes/quickstart.yaml")
        assignments = [*overrides, *assignments, *([f"data.path={data}"] if data else [])]
    if nproc > 1:  # the launcher: it holds the run and refuses what the processes would
        recipe = (core.load_run(run_dir, assignments) if resume is not None
                  else load_recipe(recipe_path, assignments))
        run_dir = run_dir if resume is not None else out or Path("runs") / recipe.name
        held.enter_context(core.claimed(recipe, run_dir, nproc))
        if resume is None:
            core.check_new_run(run_dir)
        worker_args = ["train", "--resume", str(run_dir)] if resume is not None else [
            "train", str(recipe_path), "--out", str(run_dir),
            *[arg for o in overrides for arg in ("--set", o)]]
        worker_args += ["--data", data] if data is not None else []
        worker_args += ["--iters", str(iters)] if iters is not None else []
        worker_args += ["--tensorboard"] if tensorboard else []
        worker_args += [arg for name in log_to for arg in ("--log-to", name)]
        console.info(f"starting {nproc} training processes with torchrun")
        start_up.close()  # torchrun takes the signals and passes them to the processes
        with run_lock.lent_to_children():
            raise typer.Exit(distributed.launch(nproc, worker_args))

    # Until the loop takes the signals, one stops the command unsaved (StoppedBeforeStart).
    source = None if resume is not None else recipe_path
    target = resume if resume is not None else out
    if not world.is_main:  # the other ranks train quietly; rank 0 reports for all
        try:
            p2p.train(source, out=target, overrides=assignments, resume=resume is not None)
        except (StoppedBeforeStart, Stopped):
            raise typer.Exit(130) from None
        raise typer.Exit(0)

    bars = held.enter_context(console.BarsInTurn())
    training = None  # the bar of the iterations; without a terminal, a line per log record

    def started(recipe, data_root: Path, run_dir: Path, setting: str) -> None:
        nonlocal training
        processes = f" in {world.size} processes" if world.size > 1 else ""
        console.info(f"training {recipe.name}: {recipe.train.iters} iterations of {data_root} "
                     f"({recipe.data.direction}){processes} on {setting} -> {run_dir}")
        if sys.stderr.isatty():
            training = bars.bar("training", total=recipe.train.iters)

    try:
        run = p2p.train(source, out=target, overrides=assignments, resume=resume is not None,
                        progress=lambda record: _show(record, training),
                        on_load=bars.bar("loading data", unit="images"),
                        on_download=bars.bar("downloading", unit="bytes"), on_start=started)
    except Stopped as stopped:
        bars.close()
        console.info(f"stopped by {stopped} at iteration {stopped.iteration}; checkpoint saved. "
                     f"Continue with: p2p train --resume {stopped.run_dir}")
        print(stopped.run_dir)
        raise typer.Exit(130) from None
    finally:
        start_up.close()  # training is over: a signal now ends the command as usual
    bars.close()
    iteration = next((r["iteration"] for r in reversed(run.log) if "iteration" in r), 0)
    console.info(f"done: {iteration} iterations; samples and checkpoint in {run.path}")
    print(run.path)


def _log_line(record: dict) -> str:
    extra = "".join(f"{name} {record[key]:.3f}  " for key, name in
                    (("g_feat", "G_feat"), ("g_vgg", "G_VGG")) if key in record)
    return (f"iter {record['iteration']}  G_GAN {record['g_gan']:.3f}  G_L1 {record['g_l1']:.3f}  "
            f"{extra}D_real {record['d_real']:.3f}  D_fake {record['d_fake']:.3f}  "
            f"lr {record['lr']:.2e}  {record['it_per_s'] or 0:.2f} it/s")


def _val_line(record: dict) -> str:
    values = "  ".join(f"{key[4:]} {record[key]:.4f}" if record[key] is not None
                       else f"{key[4:]} -" for key in ("val_l1", "val_psnr", "val_ssim",
                                                       "val_lpips", "val_fid")
                       if key in record)
    best = "  (best so far: checkpoints/best.pt)" if record.get("val_best") else ""
    return (f"validation at iter {record['iteration']} on {record['val_images']} "
            f"{record['val_split']} images: {values}  ({record['val_seconds']:.1f} s){best}")


def _show(record: dict, update=None) -> None:
    """A log record on stderr: losses on the progress bar (or as a line without a terminal);
    validations and the fine-tuning source as lines."""
    if record.get("event") == "init_from":
        source = record["init_from"]
        console.info(f"generator initialized from {source} ({record['path']}, sha256 "
                     f"{record['sha256'][:12]}...)")
    elif "val_l1" in record:
        console.info(_val_line(record))
    elif update is not None:
        update(record["iteration"], description=_log_line(record))
    else:
        console.info(_log_line(record))


@contextlib.contextmanager
def _stopped_at_start_up() -> Iterator[contextlib.ExitStack]:
    """Until the training loop takes them over (closing the yielded stack), SIGINT and SIGTERM
    stop the command at once with StoppedBeforeStart: there is nothing to save yet. Without
    this, SIGTERM would kill the process without a word."""
    def stop(signum, frame):
        raise StoppedBeforeStart(signal.Signals(signum).name)

    with contextlib.ExitStack() as stack:
        for sig in (signal.SIGINT, signal.SIGTERM):
            stack.callback(signal.signal, sig, signal.signal(sig, stop))
        yield stack

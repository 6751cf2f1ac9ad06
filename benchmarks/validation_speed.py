"""The cost of validation during training (train.val_every), against the training it interrupts.

Builds a recipe's models (default: facades, unet_256 at 256x256, batch 1), reads its validation
split (default ../shared/data/facades: val/, 100 images) as training would, and alternates, in one
process: a timed validation of ``--images`` pairs (p2p.training.validation.validate: paper
mode, L1, PSNR, SSIM; no FID) and a timed window of ``--window`` training iterations. Reports the
medians over
``--repeats`` rounds: ms per validated image (wall and CPU), of which the metrics alone, s per
training iteration, and the share of a run's time that validation takes at ``--val-every``:

    share = T_val(all val images) / (val_every x T_iteration + T_val(all val images))

    python benchmarks/validation_speed.py [--recipe recipes/facades.yaml]
        [--data ../shared/data/facades] [--images 20] [--window 10] [--repeats 3]
        [--val-every 1000] [--json]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from p2p.memory import reuse_freed_memory  # noqa: E402
from p2p.metrics import similarity  # noqa: E402
from p2p.recipe import load_recipe  # noqa: E402
from p2p.training import loop as core  # noqa: E402
from p2p.training import validation  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "facades.yaml"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "facades"))
    parser.add_argument("--images", type=int, default=20, help="validated per timed round")
    parser.add_argument("--window", type=int, default=10, help="training iterations per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--val-every", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    recipe = load_recipe(args.recipe, [f"data.path={args.data}", "train.device=cpu"])
    device = torch.device("cpu")
    dataset = core.load_dataset(recipe, Path(args.data))
    models = core.build_models(recipe, device)
    model = core.inference_model(models, recipe, device)
    step = core.make_stepper(recipe, dataset, models, device)
    full = validation.prepare(recipe, Path(args.data), device)
    recipe.train.val_images = args.images
    subset = validation.prepare(recipe, Path(args.data), device)
    sources, targets = subset.dataset.get_many(list(range(len(subset.dataset))))
    load_before = os.getloadavg()[0]

    rounds = []
    with reuse_freed_memory(device):
        step(0)  # warm-up: oneDNN picks its kernels
        validation.validate(subset, model)
        iteration = 1
        for _ in range(args.repeats):
            val_wall, val_cpu = timed(lambda: validation.validate(subset, model))
            metrics_wall, _ = timed(lambda: similarity.all_metrics(targets, sources, 255))

            def train_window(start=iteration):
                for i in range(start, start + args.window):
                    step(i)
            train_wall, train_cpu = timed(train_window)
            iteration += args.window
            rounds.append({"val_ms_per_image": 1000 * val_wall / args.images,
                           "val_cpu_ms_per_image": 1000 * val_cpu / args.images,
                           "metrics_ms_per_image": 1000 * metrics_wall / args.images,
                           "s_per_iteration": train_wall / args.window,
                           "cpu_s_per_iteration": train_cpu / args.window})

    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    n_val = len(full.dataset)
    val_seconds = n_val * median["val_ms_per_image"] / 1000
    train_seconds = args.val_every * median["s_per_iteration"]
    result = {**{k: round(v, 4) for k, v in median.items()},
              "val_images": n_val, "val_split": full.split, "val_every": args.val_every,
              "val_seconds": round(val_seconds, 2),
              "share": round(val_seconds / (train_seconds + val_seconds), 5),
              "cpu_share": round(n_val * median["val_cpu_ms_per_image"] / 1000 / (
                  args.val_every * median["cpu_s_per_iteration"]
                  + n_val * median["val_cpu_ms_per_image"] / 1000), 5),
              "rounds": rounds, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(),
              "load_before": load_before, "load_after": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"validation: {median['val_ms_per_image']:.0f} ms per image "
          f"({median['val_cpu_ms_per_image']:.0f} CPU-ms; metrics alone "
          f"{median['metrics_ms_per_image']:.1f} ms); training: "
          f"{median['s_per_iteration'] * 1000:.0f} ms per iteration "
          f"({median['cpu_s_per_iteration'] * 1000:.0f} CPU-ms)")
    print(f"{n_val} {full.split} images every {args.val_every} iterations: {val_seconds:.1f} s "
          f"of validation, {100 * result['share']:.2f}% of the run's time "
          f"({100 * result['cpu_share']:.2f}% of its CPU time); "
          f"load average {load_before:.1f} -> {result['load_after']:.1f}")


if __name__ == "__main__":
    main()

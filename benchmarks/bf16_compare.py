"""CPU bf16 against fp32: the speed-up and the deviation, for translation and training.

  translate   unet_256 at batch 1 (eval mode), seconds per image, fp32 and bf16 autocast
              alternated in one process (medians of ``--repeats`` windows of ``--window`` images)
  deviation   PSNR of the bf16 output against the fp32 output (uint8, as saved) over the facades
              test split (106 label maps, BtoA), eval mode, one seeded random generator whose
              batch-norm running statistics are first set from ``--calibrate`` training images
  train       the facades recipe at batch 1 with ``train.amp`` false and true, two models from
              the same seed, windows alternated in one process
  curves      (``--curves N``) the same two models trained side by side for N iterations (the
              same batches): the mean losses of each tenth of the run, and the validation
              scores (``train.val_*``: L1, PSNR, SSIM of ``--val-images`` val pairs, as
              translate writes them) at each tenth

    python benchmarks/bf16_compare.py [--data ../shared/data/facades] [--repeats 5]
        [--curves 600 --val-images 50] [--skip-train] [--json]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine  # noqa: E402

from p2p.data.paired import PairedImages, to_float  # noqa: E402
from p2p.device import cpu_has_native_bf16  # noqa: E402
from p2p.images.eight_bit import to_uint8  # noqa: E402
from p2p.inference.generator import run_generator  # noqa: E402
from p2p.memory import reuse_freed_memory  # noqa: E402
from p2p.models import GeneratorConfig, UnetGenerator, init_weights  # noqa: E402
from p2p.recipe import load_recipe  # noqa: E402
from p2p.training import loop as core  # noqa: E402
from p2p.training import validation  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def seeded_generator(calibration: torch.Tensor) -> UnetGenerator:
    """unet_256 from seed 0; running statistics averaged over ``calibration`` in train mode, so
    that eval mode normalizes like a trained model instead of by the initial (0, 1)."""
    torch.manual_seed(0)
    generator = init_weights(UnetGenerator(GeneratorConfig()))
    for norm in generator.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.momentum = None  # a cumulative average
    with torch.no_grad():
        generator.train()
        for image in calibration:
            generator(image[None])
    return generator.eval()


def alternated_windows(runs: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each run, windows alternated A B, B A, ..."""
    seconds = {name: [] for name in runs}
    for fn, _ in runs.values():
        fn()  # warm-up: oneDNN builds its kernels for each precision on first use
    for repeat in range(repeats):
        for name in list(runs) if repeat % 2 == 0 else list(runs)[::-1]:
            fn, calls = runs[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            seconds[name].append((time.perf_counter() - start) / calls)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "facades"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--window", type=int, default=4, help="images or iterations per window")
    parser.add_argument("--calibrate", type=int, default=20)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--curves", type=int, default=0, metavar="N",
                        help="also train fp32 and bf16 side by side for N iterations")
    parser.add_argument("--val-images", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not cpu_has_native_bf16():
        raise SystemExit("this CPU has no native bf16 (avx512_bf16 or amx_bf16)")
    result: dict = {"machine": machine(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "load_before": load_average()}
    with reuse_freed_memory(CPU):
        train_images = PairedImages(args.data, "train", "BtoA", load_size=256)
        calibration = to_float(train_images.get_many(list(range(args.calibrate)))[0])
        generator = seeded_generator(calibration)
        test = PairedImages(args.data, "test", "BtoA", load_size=256)
        inputs = to_float(test.get_many(list(range(len(test))))[0])
        values = []
        for image in inputs:
            outputs = [to_uint8(run_generator(generator, image[None], False, precision)[0])
                       for precision in ("fp32", "bf16")]
            values.append(psnr(*outputs))
        result["psnr_bf16_vs_fp32_db"] = {"mean": statistics.mean(values), "min": min(values),
                                          "max": max(values), "images": len(values)}
        batch = inputs[:1]
        translate = alternated_windows(
            {precision: (lambda p=precision: run_generator(generator, batch, False, p),
                         args.window) for precision in ("fp32", "bf16")}, args.repeats)
        result["translate_s_per_image"] = translate
        if not args.skip_train:
            steppers = {}
            for amp in (False, True):
                recipe = load_recipe(ROOT / "recipes" / "facades.yaml",
                                     [f"train.amp={str(amp).lower()}"])
                dataset = core.load_dataset(recipe, Path(args.data))
                torch.manual_seed(0)
                steppers["bf16" if amp else "fp32"] = core.make_stepper(
                    recipe, dataset, core.build_models(recipe, CPU), CPU)
            counters = {name: iter(range(1, 10**6)) for name in steppers}
            result["train_s_per_iteration"] = alternated_windows(
                {name: (lambda n=name: steppers[n](next(counters[n])), args.window)
                 for name in steppers}, args.repeats)
        if args.curves:
            result["curves"] = curves(args.data, args.curves, args.val_images)
    result["load_after"] = load_average()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['machine']}, torch {result['torch']}, {result['threads']} threads, "
          f"load average {result['load_before']:.1f} before, {result['load_after']:.1f} after")
    p = result["psnr_bf16_vs_fp32_db"]
    print(f"PSNR of bf16 vs fp32 outputs (eval mode, {p['images']} facades test images): "
          f"mean {p['mean']:.1f} dB, min {p['min']:.1f}, max {p['max']:.1f}")
    for what, unit in (("translate_s_per_image", "s/image"), ("train_s_per_iteration", "s/it")):
        if what in result:
            fp32, bf16 = (statistics.median(result[what][k]) for k in ("fp32", "bf16"))
            print(f"{what}: fp32 {fp32:.3f} {unit}, bf16 {bf16:.3f} {unit}, bf16 "
                  f"{fp32 / bf16:.2f}x (medians of {args.repeats} alternated windows)")
    for row in result.get("curves", []):
        print(f"iterations {row['iterations']:5d}  " + "  ".join(
            f"{name}: " + " ".join(f"{k} {v:.4f}" for k, v in row[name].items())
            for name in ("fp32", "bf16")))


def curves(data: str, iterations: int, val_images: int) -> list[dict]:
    """fp32 and bf16 facades training side by side from one seed on the same batches: per
    tenth of the run, the mean losses and the validation scores at its end."""
    runs = {}
    for name, amp in (("fp32", "false"), ("bf16", "true")):
        recipe = load_recipe(ROOT / "recipes" / "facades.yaml",
                             [f"train.amp={amp}", f"train.val_images={val_images}"])
        torch.manual_seed(0)
        models = core.build_models(recipe, CPU)
        runs[name] = (core.make_stepper(recipe, core.load_dataset(recipe, Path(data)), models,
                                        CPU), core.inference_model(models, recipe, CPU),
                      validation.prepare(recipe, Path(data), CPU))
    rows, every = [], max(1, iterations // 10)
    rng = {name: torch.get_rng_state() for name in runs}  # the same dropout noise in both
    for start in range(0, iterations, every):
        row = {"iterations": min(start + every, iterations)}
        for name, (step, model, validator) in runs.items():
            torch.set_rng_state(rng[name])
            losses = [step(i) for i in range(start, row["iterations"])]
            rng[name] = torch.get_rng_state()
            row[name] = {key: statistics.mean(float(x[key]) for x in losses)
                         for key in losses[0]}
            row[name].update({f"val_{key}": value for key, value in
                              validation.validate(validator, model).items()})
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()

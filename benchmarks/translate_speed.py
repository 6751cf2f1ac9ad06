"""Translation speed of the full unet_256 on 256x256 inputs, at batch 1 and batch 16.

For each batch size, the median (and best) of ``--repeats`` timed runs after one warm-up, of:
  generator    ``run_generator`` on a ready tensor, paper mode (the default) and eval mode
  end to end   ``p2p.inference.translate`` over a folder of 256x256 JPEGs: decode, compute,
               encode, write
It also measures the generator's forward FLOPs per image (torch.utils.flop_counter) and the
machine's matmul GFLOP/s in the dtype the generator computes in (fp32 on CPU, bf16 autocast on
CUDA; the median of several runs), and the fraction of that roofline the median reaches.
Beside wall-clock figures it reports images per CPU-second of this process (all its threads) and
the matching fraction of the matmul's GFLOP per CPU-second: on a machine shared with other work
these stay put while wall-clock figures swing (on CUDA they only measure host overhead).

    python benchmarks/translate_speed.py [--repeats 3] [--images 32] [--threads N] [--json]

Timings on shared machines are noisy: other processes take cores away mid-run, and OpenMP's
multi-threaded kernels slow down far more than in proportion when one of their threads loses its
core, so compare --threads 1 figures there.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_gflops, matmul_gflops_per_cpu_second, timed  # noqa: E402

from p2p.device import pick_device
from p2p.inference.generator import run_generator
from p2p.inference.translate import TranslateOptions, load, plan_jobs
from p2p.inference.translate import translate as translate_jobs
from p2p.models import GeneratorConfig, UnetGenerator, init_weights
from p2p.weights.checkpoint import generator_state, save_checkpoint

SIZE = 256


def forward_flops(generator: torch.nn.Module) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        run_generator(generator, torch.zeros(1, 3, SIZE, SIZE), paper_mode=False)
    return counter.get_total_flops()


def write_inputs(folder: Path, count: int) -> None:
    """Smooth gradients with mild noise, saved as JPEG like the published datasets."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, SIZE, dtype=np.float32)
    for i in range(count):
        base = ramp[None, :, None] * rng.uniform(0.3, 1, 3) + ramp[:, None, None] * 0.2
        pixels = np.clip(base + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)


def row(what: str, paper_mode: bool, batch_size: int, images: int,
        times: tuple[list[float], list[float]]) -> dict:
    wall, cpu = times
    return {"what": what, "mode": "paper" if paper_mode else "eval", "batch": batch_size,
            "images_per_s": images / statistics.median(wall),
            "best_images_per_s": images / min(wall),
            "images_per_cpu_s": images / statistics.median(cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=32, help="images per end-to-end run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch threads [default: torch's choice]; "
                        "1 gives steady per-core figures on a busy machine")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    load_before = os.getloadavg()[0]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        generator = init_weights(UnetGenerator(GeneratorConfig()))  # unet_256, batch norm
        flops = forward_flops(generator)
        save_checkpoint(tmp / "unet_256.pt", generator_state(generator, "AtoB", SIZE))
        model = load(tmp / "unet_256.pt", device=str(device))
        (tmp / "in").mkdir()
        write_inputs(tmp / "in", args.images)

        rows = []
        for batch_size in args.batch_sizes:
            batch = torch.rand(batch_size, 3, SIZE, SIZE, device=device) * 2 - 1
            for paper_mode in (True, False):
                times = timed(lambda b=batch, p=paper_mode: run_generator(model.generator, b, p),
                              args.repeats, device)
                rows.append(row("generator", paper_mode, batch_size, batch_size, times))

            def end_to_end(b=batch_size) -> None:
                plan = plan_jobs(str(tmp / "in"), str(tmp / "out"), overwrite=True)
                translate_jobs(model, plan.jobs, TranslateOptions(batch_size=b))

            times = timed(end_to_end, args.repeats, device)
            rows.append(row("end to end", True, batch_size, args.images, times))
    matmul = (matmul_gflops(device, dtype, args.repeats + 2),
              matmul_gflops_per_cpu_second(dtype, args.repeats + 2))

    for r in rows:
        r["gflop_per_s"] = r["images_per_s"] * flops / 1e9
        r["roofline_fraction"] = r["gflop_per_s"] / matmul[0]
        r["gflop_per_cpu_s"] = r["images_per_cpu_s"] * flops / 1e9
        r["cpu_roofline_fraction"] = r["gflop_per_cpu_s"] / matmul[1]
    load_after, dtype_name = os.getloadavg()[0], str(dtype).removeprefix("torch.")
    result = {
        "device": str(device), "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "forward_gflop_per_image": flops / 1e9,
        f"matmul_{dtype_name}_gflop_per_s": matmul[0],
        f"matmul_{dtype_name}_gflop_per_cpu_s": matmul[1],
        "repeats": args.repeats, "load_average_before_after": [load_before, load_after],
        "rows": rows,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"device {device} ({result['processor']}), torch {torch.__version__}, "
          f"{result['threads']} threads, median of {args.repeats} runs, 1-min load average "
          f"{load_before:.1f} before and {load_after:.1f} after (others' work skews it)")
    print(f"unet_256 forward: {flops / 1e9:.2f} GFLOP per 256x256 image; {dtype_name} matmul: "
          f"{matmul[0]:.1f} GFLOP/s, {matmul[1]:.1f} GFLOP per CPU-second")
    print(f"{'what':<12}{'mode':<7}{'batch':>6}{'images/s':>10}{'(best)':>8}{'GFLOP/s':>9}"
          f"{'roofline':>10}{'img/CPU-s':>11}{'CPU roofline':>14}")
    for r in rows:
        print(f"{r['what']:<12}{r['mode']:<7}{r['batch']:>6}{r['images_per_s']:>10.2f}"
              f"{r['best_images_per_s']:>8.2f}{r['gflop_per_s']:>9.1f}"
              f"{r['roofline_fraction']:>10.0%}{r['images_per_cpu_s']:>11.2f}"
              f"{r['cpu_roofline_fraction']:>14.0%}")


if __name__ == "__main__":
    main()

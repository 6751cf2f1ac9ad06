"""Training speed of a recipe (default: facades, 256x256, batch 1) on this machine.

Runs the real training step (batch assembly, crop/flip, D step, G step, both Adam steps) for
``--warmup`` iterations, then ``--windows`` timed windows of ``--window`` iterations each, and
reports the median iterations/s, the GFLOP of one iteration (torch.utils.flop_counter), and the
fraction of the machine's measured matmul GFLOP/s that the training reaches. On CPU it also
reports the CPU-seconds (all threads of this process) per iteration and the matching fraction of
the matmul's GFLOP per CPU-second, which barely move when other processes take the cores.

    python benchmarks/train_speed.py [--recipe recipes/facades.yaml] [--data ../shared/data/facades]
        [--windows 5] [--window 5] [--set train.fused_adam=false ...] [--default-malloc] [--json]

Timings on shared machines are noisy: other processes take cores away mid-run (the 1-minute load
average before and after is printed; the best window shows what a quiet machine would give).
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_gflops, matmul_gflops_per_cpu_second, synchronize  # noqa: E402

from p2p.device import pick_device  # noqa: E402
from p2p.memory import reuse_freed_memory  # noqa: E402
from p2p.recipe import load_recipe  # noqa: E402
from p2p.training import loop as core  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with contextlib.ExitStack() as stack:
        measure(stack)


def measure(stack: contextlib.ExitStack) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "facades.yaml"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "facades"))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window", type=int, default=5, help="iterations per timed window")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc settings alone (p2p train keeps freed memory)")
    args = parser.parse_args()

    recipe = load_recipe(args.recipe, args.overrides)
    t, d = recipe.train, recipe.data
    device = pick_device(t.device, "train.device")
    dataset = core.load_dataset(recipe, Path(args.data))
    step = core.make_stepper(recipe, dataset, core.build_models(recipe, device), device)

    if not args.default_malloc:
        stack.enter_context(reuse_freed_memory(device))
    counter = FlopCounterMode(display=False)
    with counter:
        step(0)
    gflop = counter.get_total_flops() / 1e9
    iteration = 1
    load_before = os.getloadavg()[0]
    for _ in range(args.warmup):
        step(iteration)
        iteration += 1
    rates, cpu_seconds = [], []
    for _ in range(args.windows):
        synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(args.window):
            step(iteration)
            iteration += 1
        synchronize(device)
        rates.append(args.window / (time.perf_counter() - start))
        cpu_seconds.append((time.process_time() - start_cpu) / args.window)
    load_after = os.getloadavg()[0]
    dtype = core.training_dtype(recipe, device) or torch.float32
    dtype_name = str(dtype).removeprefix("torch.")
    matmul = matmul_gflops(device, dtype)
    its = statistics.median(rates)
    cpu = {}
    if device.type == "cpu":
        per_cpu_s = gflop / statistics.median(cpu_seconds)
        matmul_cpu = matmul_gflops_per_cpu_second(dtype)
        cpu = {"cpu_s_per_iteration": statistics.median(cpu_seconds),
               f"matmul_{dtype_name}_gflop_per_cpu_s": matmul_cpu,
               "cpu_roofline_fraction": per_cpu_s / matmul_cpu}
    result = {"recipe": recipe.name, "device": str(device),
              "processor": platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "batch_size": d.batch_size, "crop_size": d.crop_size,
              "overrides": args.overrides, "it_per_s": its, "best_it_per_s": max(rates),
              "window_it_per_s": rates, "gflop_per_iteration": gflop,
              "achieved_gflop_per_s": its * gflop, f"matmul_{dtype_name}_gflop_per_s": matmul,
              "roofline_fraction": its * gflop / matmul, **cpu,
              "load_average_before_after": [load_before, load_after]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{recipe.name} on {device} ({result['processor']}), torch {torch.__version__}, "
          f"{result['threads']} threads, batch {d.batch_size}, {d.crop_size}x{d.crop_size}, "
          f"1-min load average {load_before:.1f} before and {load_after:.1f} after")
    print(f"{gflop:.1f} GFLOP per iteration; median of {args.windows} windows of {args.window} "
          f"iterations: {its:.3f} it/s ({', '.join(f'{r:.3f}' for r in rates)})")
    print(f"achieved {its * gflop:.1f} GFLOP/s; matmul {matmul:.1f} GFLOP/s; "
          f"roofline fraction {its * gflop / matmul:.0%} "
          f"(best window {max(rates) * gflop / matmul:.0%})")
    if cpu:
        print(f"{cpu['cpu_s_per_iteration']:.3f} CPU-seconds per iteration: "
              f"{gflop / cpu['cpu_s_per_iteration']:.1f} GFLOP per CPU-second; matmul "
              f"{cpu[f'matmul_{dtype_name}_gflop_per_cpu_s']:.1f}; CPU roofline fraction "
              f"{cpu['cpu_roofline_fraction']:.0%}")


if __name__ == "__main__":
    main()

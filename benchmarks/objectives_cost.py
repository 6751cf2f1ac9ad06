"""Per-iteration cost of each objective of pix2pixHD and of resize upsampling on the facades
recipe (recipes/facades.yaml: unet_256, 256x256, batch 1, fp32), on this machine.

The variants, each one recipe key away from facades.yaml except the last:

    pix2pix          facades.yaml as it is
    d_scales 2       model.d_scales: 2 (a second PatchGAN, on the pair at 128x128)
    lambda_feat 10   train.lambda_feat: 10 (discriminator feature matching)
    lambda_vgg 10    train.lambda_vgg: 10 (the VGG19 loss)
    upsample resize  model.upsample: resize (nearest x2 + 3x3 convolutions in the decoder)
    facades_hd       all four: recipes/facades_hd.yaml

Each variant's networks are built once and run the real training step (batch assembly,
crop/flip, D step, G step, both Adam steps). After --warmup iterations each, windows of --window
iterations run alternated (A B C ..., then in reverse order, ...) --repeats times, so that load
that changes with time falls on every variant alike. The figure is the median seconds per
iteration over a variant's windows; the cost is the difference to pix2pix's median. Also given:
the median CPU-seconds (all threads of this process) per iteration, which move much less than
wall time when other processes take the cores, and the GFLOP of an iteration
(torch.utils.flop_counter).

The VGG19 loss reads torchvision's weights ($P2P_HOME/weights/vgg19-dcbb9e9d.pth, or
--vgg-weights FILE); where they are missing, VGG19 runs with random weights (the time does not
depend on the values) and the output says so.

    python benchmarks/objectives_cost.py [--data ../shared/data/facades] [--warmup 2]
        [--window 3] [--repeats 5] [--only NAME ...] [--vgg-weights FILE] [--threads N]
        [--json]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import vgg19

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine  # noqa: E402

from p2p.memory import reuse_freed_memory  # noqa: E402
from p2p.paths import weights_dir  # noqa: E402
from p2p.recipe import load_recipe  # noqa: E402
from p2p.training import loop as core  # noqa: E402
from p2p.training import vgg  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {  # name -> (recipe, overrides)
    "pix2pix": ("facades.yaml", []),
    "d_scales 2": ("facades.yaml", ["model.d_scales=2"]),
    "lambda_feat 10": ("facades.yaml", ["train.lambda_feat=10"]),
    "lambda_vgg 10": ("facades.yaml", ["train.lambda_vgg=10"]),
    "upsample resize": ("facades.yaml", ["model.upsample=resize"]),
    "facades_hd": ("facades_hd.yaml", []),
}


def random_vgg() -> nn.Module:
    """VGG19 up to relu5_1 with random weights: the same work as torchvision's."""
    with torch.device("meta"):
        layers = vgg19().features[:vgg.LAYERS[-1] + 1]
    layers = layers.to_empty(device="cpu")
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    return vgg.VGGFeatures(layers).eval().requires_grad_(False)


def stepper(name: str, data: Path, vgg_path: Path | None, device: torch.device,
            dataset=None) -> tuple[core.Stepper, object]:
    """The training step of a variant (and its dataset, shared by all variants)."""
    file, overrides = VARIANTS[name]
    recipe = load_recipe(ROOT / "recipes" / file, overrides)
    if dataset is None:
        dataset = core.load_dataset(recipe, data)
    t = recipe.train
    if t.lambda_vgg and vgg_path is None:
        # Built without the loss, then given a random VGG19: nothing to find or download.
        models = core.build_models(load_recipe(ROOT / "recipes" / file,
                                               [*overrides, "train.lambda_vgg=0"]), device)
        models.vgg = random_vgg().to(device)
    else:
        models = core.build_models(recipe, device, vgg_path)
    return core.make_stepper(recipe, dataset, models, device), dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "facades"))
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations per variant")
    parser.add_argument("--window", type=int, default=3, help="iterations per timed window")
    parser.add_argument("--repeats", type=int, default=5, help="windows per variant")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="variants to run (pix2pix is always run: the reference)")
    parser.add_argument("--vgg-weights", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: torch's, one per core); 1 keeps OpenMP "
                        "from spinning for a descheduled partner on a shared machine")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["pix2pix", *[n for n in args.only if n != "pix2pix"]]
    device = torch.device("cpu")
    default_vgg = weights_dir() / vgg.VGG19_WEIGHTS.filename
    vgg_path = args.vgg_weights or (default_vgg if default_vgg.is_file() else None)
    steps, gflop, dataset = {}, {}, None
    with reuse_freed_memory(device):  # as p2p train runs
        for name in names:
            steps[name], dataset = stepper(name, Path(args.data), vgg_path, device, dataset)
            counter = FlopCounterMode(display=False)
            with counter:
                steps[name](0)
            gflop[name] = counter.get_total_flops() / 1e9
            for iteration in range(1, args.warmup + 1):
                steps[name](iteration)
        load_before = load_average()
        seconds: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        iteration = args.warmup + 1
        for repeat in range(args.repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                start, start_cpu = time.perf_counter(), time.process_time()
                for _ in range(args.window):
                    steps[name](iteration)
                    iteration += 1
                seconds[name].append((time.perf_counter() - start) / args.window)
                cpu[name].append((time.process_time() - start_cpu) / args.window)
                if not args.json:
                    print(f"  {name}: {seconds[name][-1]:.3f} s/iteration "
                          f"(load {load_average():.1f})", file=sys.stderr)
        load_after = load_average()

    base = statistics.median(seconds["pix2pix"])
    rows = [{"variant": name, "seconds_per_iteration": statistics.median(seconds[name]),
             "added_ms": 1000 * (statistics.median(seconds[name]) - base),
             "relative": statistics.median(seconds[name]) / base, "gflop": gflop[name],
             "cpu_seconds_per_iteration": statistics.median(cpu[name]),
             "windows": seconds[name]} for name in names]
    result = {"machine": machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "window": args.window,
              "repeats": args.repeats, "vgg_weights": str(vgg_path) if vgg_path else "random",
              "load_average_before_after": [load_before, load_after], "variants": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['machine']}, torch {torch.__version__}, {result['threads']} threads, "
          f"1-min load average {load_before:.1f} before and {load_after:.1f} after")
    print(f"facades recipe, fp32, batch 1; median of {args.repeats} alternated windows of "
          f"{args.window} iterations; VGG19 weights: {result['vgg_weights']}")
    print("| variant | s/iteration | cost vs pix2pix | relative | CPU-s/iteration | "
          "GFLOP/iteration |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['variant']} | {row['seconds_per_iteration']:.3f} | "
              f"{row['added_ms']:+.0f} ms | {row['relative']:.2f}x | "
              f"{row['cpu_seconds_per_iteration']:.2f} | {row['gflop']:.1f} |")


if __name__ == "__main__":
    main()

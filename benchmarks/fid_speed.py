"""FID throughput: images/s of the FID Inception and of a whole folder -> statistics pass.

The median of ``--repeats`` timed runs after one warm-up, of:
  decode       reading and preprocessing a folder of 256x256 JPEGs in the thread pool, no network
  network      the FID Inception on a ready (B, 3, 299, 299) batch
  end to end   ``folder_statistics``: decode, preprocess, network, mean and covariance (no cache)
plus the time of one FID from statistics (2048x2048) by p2p's two symmetric eigendecompositions
and by scipy's sqrtm (the published code's), alternated, and the FID Inception's forward
GFLOP per image against the machine's matmul GFLOP/s. ``--invariance`` also computes FID of the
same fake folder at two batch sizes and prints their relative difference.

Seeded random weights of the published structure stand in for the real ones unless --weights is
given (speed does not depend on the values).

    python benchmarks/fid_speed.py [--images 16] [--batch-size 16] [--repeats 3] [--device auto]
"""

import argparse
import functools
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, load_average, matmul_gflops, median_seconds  # noqa: E402

from p2p.device import pick_device  # noqa: E402
from p2p.images.eight_bit import read_image
from p2p.images.files import list_images  # noqa: E402
from p2p.metrics import THREADS, frechet  # noqa: E402
from p2p.metrics.features import Settings, preprocessed_batches  # noqa: E402
from p2p.metrics.inception import FIDInception, fid_inception  # noqa: E402

SIZE = 256


def random_network(seed: int = 0) -> FIDInception:
    torch.manual_seed(seed)
    network = FIDInception()
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return network.eval().requires_grad_(False)


def write_inputs(folder: Path, count: int, seed: int) -> Path:
    """Smooth gradients with noise, saved as JPEG like the published datasets."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, SIZE, dtype=np.float32)
    for i in range(count):
        base = ramp[None, :, None] * rng.uniform(0.3, 1, 3) + ramp[:, None, None] * 0.2
        pixels = np.clip(base + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
    return folder


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def forward_gflop(network: FIDInception) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        network(torch.zeros(1, 3, 299, 299))
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images per folder pass")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=THREADS)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", help="the real FID Inception weights (default: random)")
    parser.add_argument("--invariance", action="store_true",
                        help="also compare FID at batch sizes 1 and --batch-size")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    device = pick_device(args.device)
    network = fid_inception(args.weights) if args.weights else random_network()
    gflop = forward_gflop(network)
    network.to(device)
    settings = Settings(device, args.batch_size, args.workers)

    with tempfile.TemporaryDirectory() as tmp:
        real = write_inputs(Path(tmp) / "real", args.images, seed=0)
        fake = write_inputs(Path(tmp) / "fake", args.images, seed=1)
        files = list_images(real)

        def decode() -> None:
            for _ in preprocessed_batches(files, lambda p: frechet.fid_input(read_image(p)),
                                          settings):
                pass

        batch = torch.rand(args.batch_size, 3, 299, 299, device=device) * 2 - 1

        def forward() -> None:
            with torch.inference_mode():
                network(batch)

        rows = [
            ("decode", args.images, median_seconds(decode, args.repeats, device)),
            ("network", args.batch_size, median_seconds(forward, args.repeats, device)),
            ("end to end", args.images,
             median_seconds(lambda: frechet.folder_statistics(real, network, settings),
                            args.repeats, device)),
        ]
        real_stats = frechet.folder_statistics(real, network, settings)
        fake_stats = frechet.folder_statistics(fake, network, settings)
        value = frechet.frechet_distance(real_stats, fake_stats)
        # The trace of sqrtm(S_fake S_real): p2p's symmetric route and scipy's sqrtm (the
        # published code's), alternated.
        routes = {"symmetric": frechet._trace_sqrt_product, "scipy": frechet._trace_sqrtm_scipy}
        sqrtm_seconds = {name: statistics.median(seconds) for name, seconds in alternate(
            {name: functools.partial(_seconds, route, fake_stats.sigma, real_stats.sigma)
             for name, route in routes.items()}, args.repeats, lambda line: None).items()}
        invariance = None
        if args.invariance:
            one = frechet.folder_statistics(fake, network, Settings(device, 1, args.workers))
            other = frechet.frechet_distance(real_stats, one)
            invariance = abs(other - value) / abs(value)

    matmul = matmul_gflops(device, torch.float32) if device.type == "cpu" else None
    result = {
        "device": str(device), "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "workers": args.workers, "batch_size": args.batch_size, "repeats": args.repeats,
        "forward_gflop_per_image": gflop, "matmul_fp32_gflop_per_s": matmul,
        "rows": [{"what": what, "images_per_s": n / seconds} for what, n, seconds in rows],
        "fid_seconds": sqrtm_seconds["symmetric"],
        "scipy_sqrtm_fid_seconds": sqrtm_seconds["scipy"], "fid_of_random_sets": value,
        "load_after": load_average(),
        "fid_relative_difference_batch_1_vs_batch": invariance,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"device {device} ({result['processor']}), torch {torch.__version__}, "
          f"{result['threads']} threads, {args.workers} decoding threads, batch "
          f"{args.batch_size}, median of {args.repeats} runs of {args.images} images")
    roofline = f"; fp32 matmul {matmul:.1f} GFLOP/s" if matmul else ""
    print(f"FID Inception forward: {gflop:.2f} GFLOP per 299x299 image{roofline}")
    print(f"{'what':<12}{'images/s':>10}{'GFLOP/s':>9}")
    for r in result["rows"]:
        flops = f"{r['images_per_s'] * gflop:>9.1f}" if r["what"] != "decode" else ""
        print(f"{r['what']:<12}{r['images_per_s']:>10.2f}{flops}")
    print(f"one FID from statistics (2048x2048): {sqrtm_seconds['symmetric']:.2f} s by two "
          f"eigh, {sqrtm_seconds['scipy']:.2f} s by scipy's sqrtm; load average "
          f"{result['load_after']:.1f}")
    if invariance is not None:
        print(f"FID at batch 1 vs batch {args.batch_size}: relative difference {invariance:.2e}")


if __name__ == "__main__":
    main()

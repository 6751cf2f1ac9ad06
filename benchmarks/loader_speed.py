"""Data loading from disk: JPEG decoders, and pairs/s of the training loader when a split does not
fit ``cache_gb`` (edges2shoes: 49,825 pairs, 19.6 GB decoded) and streams from disk.

  decoders   one 512x256 A|B JPEG to an RGB uint8 array, one thread, alternated: Pillow (what
             p2p.images uses), torchvision.io.decode_jpeg and simplejpeg (both libjpeg-turbo);
             whether each gives Pillow's pixels exactly
  loader     ``PairedImages(cache_gb=0).get_many`` at the recipe's batch over a folder of the
             edges2shoes sample repeated (symbolic links), with 1, 2 and 4 decoding threads,
             against the pairs/s a training step consumes (``--step-pairs-per-s``, e.g. a GPU's
             iterations/s x batch)

    python benchmarks/loader_speed.py [--data ../shared/data/edges2shoes-sample] [--copies 4]
        [--batch-size 4] [--repeats 5] [--json]
"""

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine  # noqa: E402

from p2p.data.paired import PairedImages, batch_indices  # noqa: E402
from p2p.images.files import list_images  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def torchvision_decode(data: bytes) -> np.ndarray:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensor = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                         ImageReadMode.RGB)
    return tensor.permute(1, 2, 0).numpy()


def simplejpeg_decode(data: bytes) -> np.ndarray:
    import simplejpeg

    return simplejpeg.decode_jpeg(data, colorspace="RGB")


DECODERS = {"pillow": pillow, "torchvision": torchvision_decode, "simplejpeg": simplejpeg_decode}


def decoders(files: list[Path], repeats: int) -> dict:
    blobs = [f.read_bytes() for f in files]
    available = {}
    for name, decode in DECODERS.items():
        try:
            decode(blobs[0])
            available[name] = decode
        except ImportError:
            print(f"{name}: not installed, skipped", file=sys.stderr)
    per_image: dict[str, list[float]] = {name: [] for name in available}
    for repeat in range(repeats):
        for name in list(available) if repeat % 2 == 0 else list(available)[::-1]:
            start = time.perf_counter()
            for blob in blobs:
                available[name](blob)
            per_image[name].append((time.perf_counter() - start) / len(blobs))
    reference = [pillow(blob) for blob in blobs]
    result = {}
    for name, decode in available.items():
        differences = [np.abs(decode(blob).astype(int) - ref).max()
                       for blob, ref in zip(blobs, reference, strict=True)]
        result[name] = {"ms_per_image": 1000 * statistics.median(per_image[name]),
                        "max_pixel_difference_vs_pillow": int(max(differences))}
    return result


def loader(files: list[Path], copies: int, batch_size: int, load_size: int,
           threads: list[int], batches: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "train"
        folder.mkdir()
        for copy in range(copies):
            for file in files:
                (folder / f"{copy}_{file.name}").symlink_to(file.resolve())
        datasets = {n: PairedImages(tmp, "train", load_size=load_size, cache_gb=0, workers=n)
                    for n in threads}
        rates: dict[int, list[float]] = {n: [] for n in threads}
        for repeat in range(repeats):
            for n in threads if repeat % 2 == 0 else threads[::-1]:
                dataset = datasets[n]
                start = time.perf_counter()
                for i in range(batches):
                    dataset.get_many(batch_indices(len(dataset), repeat * batches + i,
                                                   batch_size, seed=0))
                rates[n].append(batches * batch_size / (time.perf_counter() - start))
        return {str(n): statistics.median(r) for n, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=ROOT.parent / "shared/data/edges2shoes-sample")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--load-size", type=int, default=256)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--step-pairs-per-s", type=float,
                        help="what training consumes, to print the headroom")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files = list_images(args.data / "train")
    result = {"machine": machine(), "load_before": load_average(),
              "decoders": decoders(files, args.repeats),
              "loader_pairs_per_s_by_threads": loader(files, args.copies, args.batch_size,
                                                      args.load_size, args.threads,
                                                      args.batches, args.repeats),
              "load_after": load_average()}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['machine']}; load average {result['load_before']:.1f} before, "
          f"{result['load_after']:.1f} after")
    for name, r in result["decoders"].items():
        print(f"decode {name:<12} {r['ms_per_image']:.2f} ms per 512x256 JPEG, max pixel "
              f"difference from Pillow {r['max_pixel_difference_vs_pillow']}")
    for threads, rate in result["loader_pairs_per_s_by_threads"].items():
        headroom = (f" ({rate / args.step_pairs_per_s:.1f}x what training consumes)"
                    if args.step_pairs_per_s else "")
        print(f"loader from disk, {threads} thread(s), batch {args.batch_size}: "
              f"{rate:.0f} pairs/s{headroom}")


if __name__ == "__main__":
    main()

"""Peak memory and speed of ``p2p translate`` on large images: tiled against untiled.

Each case is one ``p2p translate`` of one image in a fresh process (unet_256, random weights,
batch norm, ``--eval-mode``), so its peak resident memory is its own: the process's ``VmHWM``
(/proc), written when it exits. Not ``ru_maxrss``: Linux carries the high-water mark of the
forking parent's memory across exec into it. Cases, per image size:
  resize     the default: resized to 256x256 and back (bicubic)
  keep-size  the whole image at once, reflect-padded to a multiple of 256
  tile       ``--tile 256 --overlap 64`` (or --tile/--overlap), tiles in batches of --batch-size
plus ``start``: a 256x256 image resized, the cost of starting Python and torch and loading the
model, which every other figure includes. Cases alternate within each repeat; the table shows
medians of wall seconds, of CPU seconds (all threads; on a machine shared with other work these
move far less than wall seconds) and of peak RSS. A process whose resident memory passes
--limit-gb is killed, so that an untiled giant cannot take the machine down, and reported so.

    python benchmarks/tile_memory.py [--sizes 3000x2000 8000x6000] [--repeats 3] [--json]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from p2p.models import GeneratorConfig, UnetGenerator, init_weights
from p2p.weights.checkpoint import generator_state, save_checkpoint

MODEL_SIZE = 256


def write_input(path: Path, width: int, height: int) -> None:
    """A smooth gradient with mild noise, as JPEG (a photo-like, compressible image)."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 180, width, dtype=np.float32)
    y = np.linspace(0, 60, height, dtype=np.float32)
    pixels = np.empty((height, width, 3), np.uint8)
    for c, gain in enumerate((1.0, 0.6, 0.3)):
        plane = x[None, :] * gain + y[:, None] + rng.normal(0, 8, (height, width))
        pixels[:, :, c] = np.clip(plane, 0, 255)
    Image.fromarray(pixels).save(path, quality=90)


# Runs p2p's CLI and, at exit, writes the process's peak resident memory (kB) to a file.
CHILD = """
import atexit, runpy, sys
report = sys.argv[1]
def peak():
    with open("/proc/self/status") as status, open(report, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(peak)
sys.argv = ["p2p", "translate", *sys.argv[2:]]
runpy.run_module("p2p", run_name="__main__")
"""


def memory_kb(pid: int) -> tuple[int, int]:
    """(resident, peak resident) kB of a running process."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def run_case(args: list[str], limit_bytes: int) -> dict:
    """One translate in a fresh process: wall and CPU seconds, peak RSS in MB, how it ended."""
    with tempfile.NamedTemporaryFile("r") as report:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", CHILD, report.name, *args],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed, seen_peak = False, 0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            try:
                resident, seen_peak = memory_kb(process.pid)
                if resident * 1024 > limit_bytes:
                    process.kill()
                    killed = True
            except (FileNotFoundError, ProcessLookupError, KeyError):
                pass  # starting or exiting: looked at again next time round
            time.sleep(0.02)
        wall = time.perf_counter() - start
        written = report.read().strip()
    code = os.waitstatus_to_exitcode(status)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": int(written or seen_peak) / 1024,
            "status": "ok" if code == 0 else "killed: over the memory limit" if killed else
            f"failed (exit {code})"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["3000x2000", "8000x6000"],
                        help="WIDTHxHEIGHT of the test images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--limit-gb", type=float, default=8.0,
                        help="resident memory at which a translate process is killed")
    parser.add_argument("--cases", nargs="+", default=["resize", "keep-size", "tile"])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    limit = int(args.limit_gb * 2**30)
    loads = [os.getloadavg()[0]]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        generator = init_weights(UnetGenerator(GeneratorConfig()))  # unet_256, batch norm
        model = tmp / "unet_256.pt"
        save_checkpoint(model, generator_state(generator, "AtoB", MODEL_SIZE))
        del generator
        images = {"start": (MODEL_SIZE, MODEL_SIZE)}
        for size in args.sizes:
            width, height = map(int, size.lower().split("x"))
            images[size] = (width, height)
        for name, (width, height) in images.items():
            write_input(tmp / f"{name}.jpg", width, height)
        modes = {"resize": [], "keep-size": ["--keep-size"],
                 "tile": ["--tile", str(args.tile), "--overlap", str(args.overlap)]}
        cases = [("start", "resize")] + [(size, case) for size in args.sizes
                                         for case in args.cases]
        results: dict[tuple[str, str], list[dict]] = {case: [] for case in cases}
        for _ in range(args.repeats):
            for size, case in cases:  # alternating: each repeat runs every case once
                out = tmp / f"{size}-{case}.png"
                results[(size, case)].append(run_case(
                    ["-c", str(model), str(tmp / f"{size}.jpg"), str(out), "--eval-mode",
                     "--overwrite", "-b", str(args.batch_size), *modes[case]], limit))
                out.unlink(missing_ok=True)
                loads.append(os.getloadavg()[0])

    rows = []
    for (size, case), runs in results.items():
        ok = [r for r in runs if r["status"] == "ok"]
        width, height = images[size]
        rows.append({
            "size": f"{width}x{height}", "case": case, "runs": len(runs), "ok": len(ok),
            "median_s": statistics.median(r["wall_s"] for r in ok) if ok else None,
            "median_cpu_s": statistics.median(r["cpu_s"] for r in ok) if ok else None,
            "images_per_s": 1 / statistics.median(r["wall_s"] for r in ok) if ok else None,
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
            "status": "ok" if len(ok) == len(runs) else runs[-1]["status"]})
    result = {"processor": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "torch": torch.__version__,
              "tile": args.tile, "overlap": args.overlap, "batch_size": args.batch_size,
              "limit_gb": args.limit_gb, "repeats": args.repeats,
              "load_average_min_max": [min(loads), max(loads)], "rows": rows}
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"{result['processor']}, {result['cpus']} CPUs, torch {torch.__version__}; unet_256 "
          f"eval mode, batch {args.batch_size}, tile {args.tile} overlap {args.overlap}; median "
          f"of {args.repeats}; 1-min load average {min(loads):.1f}-{max(loads):.1f}; "
          f"processes killed above {args.limit_gb:g} GiB resident")
    print(f"{'size':<11}{'case':<11}{'seconds':>9}{'images/s':>10}{'CPU s':>9}"
          f"{'peak RSS MB':>13}  status")
    for r in rows:
        seconds = f"{r['median_s']:.1f}" if r["median_s"] else "-"
        speed = f"{r['images_per_s']:.4f}" if r["images_per_s"] else "-"
        cpu = f"{r['median_cpu_s']:.1f}" if r["median_cpu_s"] else "-"
        print(f"{r['size']:<11}{r['case']:<11}{seconds:>9}{speed:>10}{cpu:>9}"
              f"{r['peak_rss_mb']:>13.0f}  {r['status']}")


if __name__ == "__main__":
    main()

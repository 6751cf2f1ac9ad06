"""Scale-out speed: `p2p translate` of unet_256 on 256x256 JPEGs in 1 and 2 processes on the CPU
and, where CUDA is present, on 1..N GPUs (``--nproc``, one process per GPU).

Each setting runs as whole commands over ``--many`` and ``--few`` images, alternated A B, B A,
...; images/s after start-up is the difference in images over the difference of the median
seconds (start-up, loading and the last writes cancel). On the CPU the cores are split evenly:
one process runs ``cores`` threads, two run ``cores / 2`` each (OMP_NUM_THREADS). Paper mode with
``--seed 0``. End to end, images/s over the ``--many`` images with start-up included is given
too. The machine and the load average are named in the output: on a machine shared with other
work, compare settings only from runs at a steady load.

    python benchmarks/scale_out.py [--many 128] [--few 8] [--repeats 3] [--batch-size 4] [--json]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, load_average, machine, run_process, subset  # noqa: E402

from p2p.models import GeneratorConfig, UnetGenerator, init_weights  # noqa: E402
from p2p.weights.checkpoint import generator_state, save_checkpoint  # noqa: E402

SIZE = 256


def write_inputs(folder: Path, count: int) -> list[Path]:
    """Smooth gradients with mild noise, saved as JPEG like the published datasets."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, SIZE, dtype=np.float32)
    paths = []
    for i in range(count):
        base = ramp[None, :, None] * rng.uniform(0.3, 1, 3) + ramp[:, None, None] * 0.2
        pixels = np.clip(base + rng.normal(0, 8, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        paths.append(folder / f"{i:05d}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def settings(cores: int) -> list[tuple[str, int, str, int]]:
    """(name, processes, device, threads per process) of every setting this machine has."""
    cpu = [("cpu x1", 1, "cpu", cores)] + ([("cpu x2", 2, "cpu", cores // 2)] if cores > 1
                                           else [])
    gpus = [(f"cuda x{n}", n, "cuda", max(1, cores // n))
            for n in range(1, torch.cuda.device_count() + 1)]
    return cpu + gpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--many", type=int, default=128)
    parser.add_argument("--few", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    names = {"cpu": machine()}
    if torch.cuda.is_available():
        names["cuda"] = f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
    print(f"machine: {names}", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        generator = init_weights(UnetGenerator(GeneratorConfig(num_downs=8, ngf=64)))
        checkpoint = root / "unet_256.pt"
        save_checkpoint(checkpoint, generator_state(generator, "AtoB", SIZE))
        files = write_inputs(root / "all", args.many)
        folders = {count: subset(files, count, root / f"in{count}")
                   for count in (args.few, args.many)}
        runs = {}
        for name, nproc, device, threads in settings(cores):
            for count, folder in folders.items():
                out = root / f"out {name} {count}"
                command = [sys.executable, "-m", "p2p", "translate", "-c", str(checkpoint),
                           str(folder), str(out), "--seed", "0", "-b", str(args.batch_size),
                           "--overwrite", "--device", device, "--nproc", str(nproc)]
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                runs[f"{name} {count}"] = (
                    lambda command=command, env=env: run_process(command, env)[0])
        seconds = alternate(runs, args.repeats, lambda line: print(line, file=sys.stderr))

    rows = []
    for name, nproc, device, threads in settings(cores):
        many = statistics.median(seconds[f"{name} {args.many}"])
        few = statistics.median(seconds[f"{name} {args.few}"])
        rows.append({"setting": name, "processes": nproc, "device": device,
                     "threads per process": threads, "machine": names[device],
                     "images/s": (args.many - args.few) / (many - few),
                     "images/s end to end": args.many / many,
                     f"seconds for {args.many}": many, f"seconds for {args.few}": few})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"load average {load_average():.1f}\n| setting | machine | threads per process "
          f"| images/s after start-up | images/s end to end | s for {args.many} "
          f"| s for {args.few} |\n| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['setting']} | {row['machine']} | {row['threads per process']} "
              f"| {row['images/s']:.2f} | {row['images/s end to end']:.2f} "
              f"| {row[f'seconds for {args.many}']:.1f} | {row[f'seconds for {args.few}']:.1f} |")


if __name__ == "__main__":
    main()

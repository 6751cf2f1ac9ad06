"""Timing helpers shared by the benchmark scripts: medians after warm-up, the matmul roofline."""

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], repeats: int, device: torch.device,
          warmup: int = 1) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of ``repeats`` runs of ``fn`` after ``warmup`` untimed runs.

    CPU seconds (all threads of this process) barely change when other processes take the
    cores, so on a shared machine they say more about the code than wall seconds do."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device,
                   warmup: int = 1) -> float:
    """The median wall time of ``fn`` over ``repeats`` runs, after ``warmup`` untimed runs."""
    return statistics.median(timed(fn, repeats, device, warmup)[0])


def matmul_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """The machine's measured dense matmul throughput: the roofline the figures are compared to."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats, device, warmup=2) / 1e9


def matmul_gflops_per_cpu_second(dtype: torch.dtype, repeats: int = 5) -> float:
    """The best GFLOP per CPU-second of this process (all threads) of the same CPU matmul.

    Other processes taking the cores stretch wall time but hardly CPU time, so on a shared
    machine this ratio says more about the code than the wall-clock one."""
    n = 2048
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    cpu = timed(lambda: a @ b, repeats, torch.device("cpu"))[1]
    return 2 * n**3 / min(cpu) / 1e9


# ---- whole processes, alternated ---------------------------------------------------------------

def machine() -> str:
    """The CPU as lscpu names it, with its family and model (AMD family 25 model 17 is Zen 4,
    family 26 Zen 5), the cores this process may use and whether it has native bf16."""
    info = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    bf16 = "avx512_bf16" in info.get("flags", "").split()
    return (f"{info.get('model name', platform.processor())} (family {info.get('cpu family')} "
            f"model {info.get('model')}), {len(os.sched_getaffinity(0))} cores"
            f"{', avx512_bf16' if bf16 else ''}")


def load_average() -> float:
    return os.getloadavg()[0]


def run_process(command: list[str], env: dict | None = None, cwd: str | None = None) -> tuple[
        float, str]:
    """Wall seconds and stdout of one whole process; its failure stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def alternate(runs: dict[str, Callable[[], float]], repeats: int,
              report: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Each of ``runs`` (name -> a function returning seconds) ``repeats`` times, alternating
    A B, B A, A B, ... so that load that changes with time falls on all of them alike."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            seconds[name].append(runs[name]())
            report(f"  {name}: {seconds[name][-1]:.2f} s (load {load_average():.1f})")
    return seconds


def ratio_line(reference: str, ours: str, seconds: dict[str, list[float]], unit: str) -> str:
    ref, mine = statistics.median(seconds[reference]), statistics.median(seconds[ours])
    return (f"{reference}: {ref:.3f} {unit}, {ours}: {mine:.3f} {unit}, "
            f"ratio {ref / mine:.2f}x (medians of {len(seconds[ours])})")


def subset(files: list[Path], count: int, folder: Path) -> Path:
    """``folder`` holding symbolic links to the first ``count`` of ``files``."""
    folder.mkdir(parents=True)
    for file in files[:count]:
        (folder / file.name).symlink_to(file.resolve())
    return folder


def per_item_seconds(seconds: dict[str, list[float]], tool: str, many: int, few: int) -> float:
    """Seconds per item after start-up: the difference of the medians of whole runs over
    ``many`` and ``few`` items, per item (start-up, loading and writing-out cancel)."""
    return (statistics.median(seconds[f"{tool} {many}"])
            - statistics.median(seconds[f"{tool} {few}"])) / (many - few)


def check_official(checkout: Path | None, script: str) -> None:
    """Say that the official code is skipped without a checkout; refuse a folder without
    ``script`` (train.py, test.py)."""
    if checkout is None:
        print(f"official {script}: skipped (no --official PATH; see the docstring)",
              file=sys.stderr)
    elif not (checkout / script).is_file():
        raise SystemExit(f"{checkout}: no {script} here; expected a checkout of "
                         "junyanz/pytorch-CycleGAN-and-pix2pix")

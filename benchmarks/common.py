"""Timing helpers shared by the benchmark scripts: medians after warm-up, the matmul roofline."""

import statistics
import time
from collections.abc import Callable

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

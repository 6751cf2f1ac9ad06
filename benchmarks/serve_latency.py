"""Latency of ``p2p serve``'s ``POST /api/translate`` at 1 and 16 concurrent clients.

Starts ``p2p serve`` as a real process on 127.0.0.1 (a free port) with a random-init unet_256
checkpoint (the weights do not change the work), waits for ``/healthz``, then alternates rounds
of the two loads, ``--rounds`` times: one client sending ``--requests`` images one after the
other, and 16 clients each sending ``--requests`` images at once. Every request is a 256x256
PNG translated in paper mode; latency is the client's wall time from sending to the last byte
of the PNG. It prints the median and p95 latency of each load over all rounds, requests per
second, the CPU and the load average (the machine may be shared: compare the figures of one run).
The server translates one image at a time (one model, one worker thread), so at 16 clients a
request waits for the ones ahead of it: its latency is about the queue length times one
translation.

    python benchmarks/serve_latency.py [--rounds 3] [--requests 4] [--clients 1 16] [--json]
"""

import argparse
import io
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import torch
from PIL import Image

from p2p.models import GeneratorConfig, UnetGenerator, init_weights
from p2p.weights.checkpoint import generator_state, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def start_server(checkpoint: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "p2p", "serve", "-c", str(checkpoint),
                                "--port", "0", "--device", "cpu"],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    match = re.search(r"serving (http://127\.0\.0\.1:\d+)/", line)
    if not match:
        process.kill()
        raise SystemExit(f"the server did not start: {line}{process.stderr.read()}")
    return process, match.group(1)


def one_request(url: str, body: bytes) -> float:
    started = time.perf_counter()
    response = requests.post(f"{url}/api/translate", data=body, timeout=600)
    response.raise_for_status()
    return time.perf_counter() - started


def run_load(url: str, body: bytes, clients: int, per_client: int) -> tuple[list[float], float]:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(lambda _: one_request(url, body), range(clients * per_client)))
    return latencies, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4, help="per client, per round")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buffer, "PNG")
    body = buffer.getvalue()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "unet_256.pt"
        torch.manual_seed(0)
        generator = init_weights(UnetGenerator(GeneratorConfig()))  # unet_256, 54.4M parameters
        save_checkpoint(checkpoint, generator_state(generator, "AtoB", 256))
        process, url = start_server(checkpoint)
        try:
            for _ in range(3):  # warm-up: first-call allocations and oneDNN kernel selection
                one_request(url, body)
            latencies = {c: [] for c in args.clients}
            seconds = {c: 0.0 for c in args.clients}
            load_before = os.getloadavg()
            for _ in range(args.rounds):  # alternate the loads so both see the same machine
                for clients in args.clients:
                    values, elapsed = run_load(url, body, clients, args.requests)
                    latencies[clients] += values
                    seconds[clients] += elapsed
            load_after = os.getloadavg()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)

    rows = [{"clients": c, "requests": len(latencies[c]),
             "median_s": statistics.median(latencies[c]), "p95_s": percentile(latencies[c], 95),
             "requests_per_s": len(latencies[c]) / seconds[c]} for c in args.clients]
    facts = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
             "load_average_before": load_before, "load_average_after": load_after,
             "rows": rows}
    if args.json:
        print(json.dumps(facts, indent=2))
        return
    print(f"p2p serve, unet_256, 256x256 PNG, paper mode, CPU: {facts['cpu']} "
          f"({facts['cores']} cores), torch {facts['torch']}")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1 min)")
    print("| clients | requests | median latency | p95 latency | requests/s |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['clients']} | {row['requests']} | {row['median_s'] * 1000:.0f} ms | "
              f"{row['p95_s'] * 1000:.0f} ms | {row['requests_per_s']:.2f} |")


if __name__ == "__main__":
    main()

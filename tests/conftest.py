"""Shared fixtures: the CLI run in-process, a local HTTP server, the shared data folder, a tiny
training recipe and seeded FID/IS weights. Shared helpers that are not fixtures live in
p2p_testing.py."""

import http.server
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("P2P_SHARED", ROOT.parent / "shared"))

# Tests are small; more threads than cores only adds contention on 2-core machines.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def skip_or_fail(reason: str, required_by: str) -> NoReturn:
    """Skip a test whose requirement is missing, or fail it where the environment variable
    ``required_by`` is set (CI sets ``CI=true`` and ``P2P_REQUIRE_SHARED=1``): CI installs every
    requirement, so a skip there would hide a test that never ran."""
    value = os.environ.get(required_by, "")
    if value.lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}, and {required_by}={value} requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        skip_or_fail(f"shared data folder missing: expected {SHARED} (set P2P_SHARED)",
                     "P2P_REQUIRE_SHARED")
    return SHARED / "data"


@pytest.fixture(autouse=True)
def p2p_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty P2P_HOME, so nothing leaks into ~/.cache."""
    home = tmp_path / "p2p_home"
    monkeypatch.setenv("P2P_HOME", str(home))
    monkeypatch.delenv("P2P_DATA_MIRROR", raising=False)
    return home


@dataclass
class CliResult:
    exit_code: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode()


@pytest.fixture
def cli(capfdbinary):
    """Run ``p2p ARGS`` through the real entry point (``main``), in-process."""
    from p2p.cli.app import main

    def run(*args: str) -> CliResult:
        capfdbinary.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capfdbinary.readouterr()
        return CliResult(code, captured.out, captured.err.decode(errors="replace"))

    return run


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    cut_after: int | None = None  # close the connection after this many body bytes (once)
    hits: int = 0
    ranges: list = field(default_factory=list)  # the Range headers received


class LocalHTTP:
    """An HTTP server on 127.0.0.1 in a daemon thread; ``answer(request, head)`` handles each GET
    (head False) and HEAD (head True). ``with`` starts and stops it."""

    def __init__(self, answer: Callable[[http.server.BaseHTTPRequestHandler, bool], None]):
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                answer(self, True)

            def do_GET(self):
                answer(self, False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class LocalServer(LocalHTTP):
    """Files served by path, with Range support and injectable faults."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        super().__init__(self.respond)

    def respond(self, request: http.server.BaseHTTPRequestHandler, head: bool) -> None:
        route = self.routes.get(request.path.split("?")[0])
        if route is None:
            request.send_error(404)
            return
        route.hits += 1
        route.ranges.append(request.headers.get("Range"))
        if route.status != 200:
            request.send_error(route.status)
            return
        body, start = route.body, 0
        range_header = request.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            start = int(range_header[6:].split("-")[0])
            if start >= len(body):
                request.send_response(416)
                request.send_header("Content-Range", f"bytes */{len(body)}")
                request.end_headers()
                return
            request.send_response(206)
            request.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            request.send_response(200)
        request.send_header("Content-Length", str(len(body) - start))
        request.send_header("Accept-Ranges", "bytes")
        request.end_headers()
        if head:
            return
        chunk = body[start:]
        if route.cut_after is not None:
            chunk = chunk[: route.cut_after]
            route.cut_after = None
            request.wfile.write(chunk)
            request.wfile.flush()
            request.close_connection = True
            return
        request.wfile.write(chunk)

    def add(self, path: str, body: bytes = b"", **kwargs) -> Route:
        self.routes[path] = Route(body=body, **kwargs)
        return self.routes[path]


@pytest.fixture
def http_server():
    """A LocalServer started for the test and stopped after it."""
    with LocalServer() as server:
        yield server


TINY_RECIPE = """
name: tiny
data: {{path: {data}, load_size: 36, crop_size: 32, batch_size: 2}}
model: {{num_downs: 5, ngf: 8, ndf: 8}}
train: {{iters: {iters}, log_every: 2, sample_every: 4, checkpoint_every: 4}}
"""


@pytest.fixture
def tiny(tmp_path):
    """A tiny recipe on 6 generated 32x32 pairs; returns a function (iters) -> recipe path.
    (test_distributed.py has its own, without batch norm.)"""
    import numpy as np

    from p2p.data.synthetic import make_pair

    rng = np.random.default_rng(0)
    (tmp_path / "data" / "train").mkdir(parents=True)
    for i in range(6):
        make_pair(rng, size=32).save(tmp_path / "data" / "train" / f"{i}.png")

    def recipe(iters: int = 8):
        path = tmp_path / f"tiny{iters}.yaml"
        path.write_text(TINY_RECIPE.format(data=tmp_path / "data", iters=iters))
        return path

    return recipe


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A folder holding both weights files (seeded random values, the published structure)."""
    from p2p_testing import random_fid_network  # late: p2p_testing imports conftest

    from p2p.metrics import inception

    folder = tmp_path_factory.mktemp("weights")
    torch.save(random_fid_network(3).state_dict(), folder / inception.FID_WEIGHTS.filename)
    torch.manual_seed(4)
    torch.save(inception.is_network().state_dict(), folder / inception.IS_WEIGHTS.filename)
    return folder

"""Helpers that more than one test module uses: tiny checkpoints, datasets and images, the serve
app in a thread, a report's self-containment check, TensorBoard events, seeded FID networks, the
published U-Net layouts and their files, and a local mirror of the Hugging Face Hub.

They live here so that no test module imports another (tests/test_lint.py checks it): a test
module imported for its helpers is fragile, and ``from tests.test_x import`` breaks wherever an
installed distribution ships a top-level ``tests`` package (torch-fidelity does). pytest puts
tests/ on sys.path for the rootdir conftest, so ``from p2p_testing import`` works as
``from conftest import`` does; the name is one no installed package uses. Fixtures live in
conftest.py, which imports from here only inside fixtures (this module imports conftest).
"""

import base64
import collections
import contextlib
import ctypes
import hashlib
import html.parser
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import torch
from conftest import ROOT, LocalHTTP, skip_or_fail
from PIL import Image
from torch import nn

from p2p import serve  # serve.py imports the web stack only where it is used
from p2p.models import GeneratorConfig, UnetGenerator, init_weights
from p2p.weights.checkpoint import generator_state, save_checkpoint

# ---- checkpoints, datasets, images -----------------------------------------------------------

def make_checkpoint(path: Path, direction: str = "AtoB", image_size: int = 32,
                    **config) -> Path:
    """A tiny seeded generator (num_downs 5, ngf 8 unless ``config`` says otherwise)."""
    torch.manual_seed(0)
    config = {"num_downs": 5, "ngf": 8, **config}
    generator = init_weights(UnetGenerator(GeneratorConfig(**config)))
    save_checkpoint(path, generator_state(generator, direction, image_size))
    return path


def size_of(path_or_bytes) -> tuple[int, int]:
    """(width, height) of an image file or of encoded image bytes."""
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with Image.open(source) as img:
        return img.size


def png(width: int, height: int, seed: int = 0, solid: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    array = (np.full((height, width, 3), 90, np.uint8) if solid
             else rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_dataset(folder: Path, pairs: int = 3) -> Path:
    """A tiny A|B dataset with a val split: A red-ish on the left, B blue-ish on the right."""
    for split in ("train", "val"):
        (folder / split).mkdir(parents=True)
        for i in range(pairs):
            pair = np.zeros((32, 64, 3), np.uint8)
            pair[:, :32, 0] = 200 + i
            pair[:, 32:, 2] = 200 + i
            Image.fromarray(pair).save(folder / split / f"{i}.png")
    return folder


def make_serve_checkpoint(path: Path, dataset: Path | str | None = None,
                          direction: str = "BtoA") -> Path:
    """A tiny generator (ngf 4) whose recipe, where ``dataset`` is given, names it: the page
    takes its examples from that dataset's val split."""
    torch.manual_seed(0)
    generator = init_weights(UnetGenerator(GeneratorConfig(num_downs=5, ngf=4)))
    state = generator_state(generator, direction, 32)
    if dataset is not None:
        state["recipe"] = {"data": {"path": str(dataset), "direction": direction}}
    save_checkpoint(path, state)
    return path


def write_images(folder: Path, count: int, size: tuple[int, int] = (40, 48), seed: int = 0,
                 ext: str = "png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        ramp = np.linspace(0, 255, size[1])[None, :, None] * rng.uniform(0.2, 1, size=3)
        noise = rng.integers(0, 60, size=(*size, 3))
        pixels = np.clip(ramp + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.{ext}")
    return folder


# ---- the serve app ---------------------------------------------------------------------------

def web_stack() -> None:
    try:
        import fastapi  # noqa: F401
        import gradio  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        skip_or_fail("the serve extra is not installed: pip install -e '.[serve]'", "CI")


@contextlib.contextmanager
def running(app, limits: serve.Limits = serve.Limits()):
    """``app`` served as ``p2p serve`` serves it, in a thread on a free port of 127.0.0.1."""
    sock = serve.bind("127.0.0.1", 0)
    server = serve.server(app, limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(60)


# ---- reports and TensorBoard -----------------------------------------------------------------

class Page(html.parser.HTMLParser):
    """Collects what a self-contained check needs: every tag with its attributes, and text."""

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse_self_contained(path):
    """Parse the report; assert it references nothing outside itself; return (page, images)
    where images are (mime, bytes) of every <img>."""
    source = path.read_text()
    page = Page()
    page.feed(source)
    page.close()
    tags = [tag for tag, _ in page.tags]
    assert tags[:2] == ["html", "head"] and "body" in tags
    assert not {"link", "script", "iframe", "object", "embed", "base"} & set(tags)
    assert "url(" not in source and "@import" not in source
    images = []
    for tag, attrs in page.tags:
        for key in ("href", "srcset", "poster", "background", "action"):
            assert key not in attrs, (tag, attrs)
        if "src" in attrs:
            assert tag == "img"
            head, _, payload = attrs["src"].partition(",")
            assert head.startswith("data:image/") and head.endswith(";base64"), head[:60]
            images.append((head[5:-7], base64.b64decode(payload, validate=True)))
    assert all(tag != "img" or "src" in attrs for tag, attrs in page.tags)
    for mime, data in images:
        if mime == "image/svg+xml":
            svg = ET.fromstring(data)  # well-formed
            for element in svg.iter():
                for key, value in element.attrib.items():
                    if key.endswith("href"):
                        assert value.startswith("#"), value  # only links inside the SVG
        else:
            Image.open(io.BytesIO(data)).verify()
    return page, images


def read_events(folder):
    """The TensorBoard events under ``folder``, loaded (tensorboard is an optional extra)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


# ---- FID -------------------------------------------------------------------------------------

def random_fid_network(seed: int = 0) -> torch.nn.Module:
    """The FID Inception (inception.FIDInception) with weights that keep activations O(1) through
    its 90-odd layers."""
    from p2p.metrics import inception  # imported here: torchvision takes seconds to import

    torch.manual_seed(seed)
    network = inception.FIDInception()
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return network.eval().requires_grad_(False)


# ---- published U-Nets (the official and mmagic layouts) and their files ----------------------

SMALL = {"num_downs": 6, "ngf": 8}
SIZE = 64  # 2**6: the innermost level is 1x1, as in unet_256 at 256


class ConvUnit(nn.Module):
    """An mmcv ConvModule with order (act, conv, norm): children ``conv`` and ``bn``."""

    def __init__(self, conv: nn.Module, act: nn.Module | None, norm: nn.Module | None):
        super().__init__()
        self.act, self.conv = act, conv
        if norm is not None:
            self.bn = norm

    def forward(self, x):
        x = self.conv(x if self.act is None else self.act(x))
        return self.bn(x) if hasattr(self, "bn") else x


class PublishedBlock(nn.Module):
    """One level of the published recursive U-Net: ``model`` = down, submodule, up, tail."""

    def __init__(self, layout, outer, inner, in_ch, sub, outermost=False, innermost=False,
                 dropout=False, norm="batch"):
        super().__init__()
        self.outermost = outermost
        # Instance norm has no shift of its own (no affine parameters), so the convs carry a bias.
        bias = norm == "instance"

        def norm_layer(c):
            return nn.BatchNorm2d(c) if norm == "batch" else nn.InstanceNorm2d(c)

        down_act = None if outermost else nn.LeakyReLU(0.2)
        down_conv = nn.Conv2d(in_ch, inner, 4, 2, 1, bias=bias)
        down_norm = None if outermost or innermost else norm_layer(inner)
        up_conv = nn.ConvTranspose2d(inner if innermost else inner * 2, outer, 4, 2, 1,
                                     bias=outermost or bias)
        up_norm = None if outermost else norm_layer(outer)
        tail = [nn.Tanh()] if outermost else [nn.Dropout(0.5)] if dropout else []
        middle = [] if innermost else [sub]
        if layout == "official":
            down = [m for m in (down_act, down_conv, down_norm) if m is not None]
            up = [m for m in (nn.ReLU(), up_conv, up_norm) if m is not None]
        else:
            down, up = [ConvUnit(down_conv, down_act, down_norm)], [ConvUnit(up_conv, nn.ReLU(),
                                                                              up_norm)]
        self.model = nn.Sequential(*down, *middle, *up, *tail)

    def forward(self, x):
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], 1)


class PublishedUnet(nn.Module):
    def __init__(self, layout, num_downs=8, ngf=64, in_ch=3, out_ch=3, norm="batch"):
        super().__init__()
        block = PublishedBlock(layout, ngf * 8, ngf * 8, ngf * 8, None, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = PublishedBlock(layout, ngf * 8, ngf * 8, ngf * 8, block, dropout=True,
                                   norm=norm)
        for mult in (4, 2, 1):
            block = PublishedBlock(layout, ngf * mult, ngf * mult * 2, ngf * mult, block,
                                   norm=norm)
        self.model = PublishedBlock(layout, out_ch, ngf, in_ch, block, outermost=True, norm=norm)

    def forward(self, x):
        return self.model(x)


def seeded(module: nn.Module, seed: int) -> nn.Module:
    """Random values in every tensor (biases and running statistics too), so nothing is neutral."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(123)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return module


def published_file(layout: str, *, seed=0, domain="photo", drop_batches_tracked=False,
                   mmengine=False, **shape) -> tuple[PublishedUnet, bytes]:
    source = seeded(PublishedUnet(layout, **{**SMALL, **shape}), seed)
    weights = source.state_dict()
    if drop_batches_tracked:  # as saved by PyTorch < 0.4.1
        weights = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}
    if layout == "mmagic":
        state_dict = {**{f"generators.{domain}.{k}": v for k, v in weights.items()},
                      "discriminators.photo.model.0.conv.weight":
                          torch.randn(8, 6, 4, 4, generator=torch.Generator().manual_seed(seed))}
        weights = {"meta": {"mmcv_version": "1.3.12", "iter": 80000}, "state_dict": state_dict}
        if mmengine:
            return source, mmengine_checkpoint(source, state_dict)
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    return source, buffer.getvalue()


@contextlib.contextmanager
def stand_in_modules(**classes):
    """Register modules named like mmengine's holding ``classes`` ({"module:Name": class}), so
    that pickle writes their names; they are gone again afterwards, as on a machine without
    mmengine."""
    names = {}
    for spec, cls in classes.items():
        module, name = spec.split(":")
        cls.__module__, cls.__qualname__ = module, name
        for depth in range(1, module.count(".") + 2):
            names.setdefault(".".join(module.split(".")[:depth]), {})
        names[module][name] = cls
    assert not set(names) & set(sys.modules)
    for module, members in names.items():
        sys.modules[module] = types.ModuleType(module)
        vars(sys.modules[module]).update(members)
    try:
        yield
    finally:
        for module in names:
            del sys.modules[module]


class HistoryBuffer:
    """Stands in for mmengine.logging.history_buffer.HistoryBuffer (its attributes, as pickled)."""

    def __init__(self, log_history, count_history, max_length=1000000):
        self.max_length = max_length
        self._log_history = np.array(log_history)
        self._count_history = np.array(count_history)


def mmengine_checkpoint(source: nn.Module, state_dict: dict) -> bytes:
    """An mmagic 1.x checkpoint as mmengine's Runner.save_checkpoint writes it: meta,
    state_dict, message_hub (HistoryBuffer objects, numpy arrays), optimizer, param_schedulers."""
    params = list(source.parameters())
    adam = {"state": {i: {"step": torch.tensor(80000.0), "exp_avg": torch.zeros_like(p),
                          "exp_avg_sq": torch.ones_like(p)} for i, p in enumerate(params)},
            "param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999), "eps": 1e-8,
                              "weight_decay": 0, "amsgrad": False,
                              "params": list(range(len(params)))}]}
    scalars = collections.OrderedDict(
        [("train/loss_pix", HistoryBuffer([12.5, 11.25], [1, 1])),
         ("train/lr", HistoryBuffer([2e-4], [1]))])
    checkpoint = {
        "meta": {"epoch": 0, "iter": 80000, "cfg": "model = dict(type='Pix2Pix')", "seed": 2022,
                 "experiment_name": "pix2pix_facades", "time": "20230406_120000",
                 "mmengine_version": "0.7.2", "dataset_meta": {}},
        "state_dict": collections.OrderedDict(state_dict),
        "message_hub": {"log_scalars": scalars,
                        "runtime_info": collections.OrderedDict(
                            [("iter", 80000), ("max_iters", 80000),
                             ("dataset_meta", {"classes": np.array(["photo", "mask"])})]),
                        "resumed_keys": collections.OrderedDict(
                            [("train/loss_pix", True), ("iter", True)])},
        "optimizer": {"generators": adam, "discriminators": adam},  # an OptimWrapperDict's
        "param_schedulers": {"generators": [{"by_epoch": False, "last_step": 80000,
                                             "base_values": [np.float64(2e-4)]}]},
    }
    buffer = io.BytesIO()
    with stand_in_modules(**{"mmengine.logging.history_buffer:HistoryBuffer": HistoryBuffer}):
        torch.save(checkpoint, buffer)
    return buffer.getvalue()


# ---- a local mirror of the Hugging Face Hub --------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubMirror(LocalHTTP):
    """The Hub's HTTP API as huggingface_hub's snapshot_download reads it, for one repository:
    repo info (/api/models/REPO/revision/REV), the file tree (/api/models/REPO/tree/REV), and
    HEAD/GET of /REPO/resolve/REV/FILE with X-Repo-Commit, ETag and Content-Length."""

    def __init__(self, repo: str, files: dict[str, bytes], revisions=("main",)):
        self.repo, self.files, self.known = repo, files, (*revisions, COMMIT)
        self.requests: list[str] = []
        super().__init__(self.answer)

    def answer(self, request: http.server.BaseHTTPRequestHandler, head: bool) -> None:
        repo, files, known = self.repo, self.files, self.known
        path = unquote(urlsplit(request.path).path)
        self.requests.append(f"{request.command} {path}")
        api = f"/api/models/{repo}/"
        if path.startswith(api + "revision/") and path[len(api) + 9:] in known:
            body = json.dumps({"id": repo, "sha": COMMIT, "siblings": [
                {"rfilename": name} for name in files]}).encode()
            return send(request, 200, body, {"Content-Type": "application/json"}, head)
        if path.startswith(api + "tree/") and path[len(api) + 5:] in known:
            body = json.dumps([{"type": "file", "path": name, "size": len(data),
                                "oid": hashlib.sha1(data).hexdigest()}
                               for name, data in files.items()]).encode()
            return send(request, 200, body, {"Content-Type": "application/json"}, head)
        for rev in known:
            prefix = f"/{repo}/resolve/{rev}/"
            if path.startswith(prefix) and path[len(prefix):] in files:
                data = files[path[len(prefix):]]
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                return send(request, 200, data, {"X-Repo-Commit": COMMIT, "ETag": etag}, head)
        send(request, 404, b'{"error": "Repository not found"}',
             {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"}, head)


def send(request: http.server.BaseHTTPRequestHandler, status: int, body: bytes,
         headers: dict[str, str], head: bool) -> None:
    request.send_response(status)
    for key, value in headers.items():
        request.send_header(key, value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if not head:
        request.wfile.write(body)


def p2p_process(args: list, env: dict) -> subprocess.CompletedProcess:
    # A fresh process: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported.
    return subprocess.run([sys.executable, "-m", "p2p", *map(str, args)], capture_output=True,
                          env=env, cwd=ROOT, timeout=300)


def seed_convolutions(layers: torch.nn.Module) -> None:
    """Seeded random weights for the convolutions of a torchvision ``features`` stack (AlexNet's,
    VGG19's): the structure of the published weights, which no test may download."""
    torch.manual_seed(0)
    for layer in layers.modules():
        if isinstance(layer, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(layer.weight)
            torch.nn.init.normal_(layer.bias, 0, 0.01)


# Linux capabilities that let root read and search any file whatever its mode.
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


@contextlib.contextmanager
def file_modes_apply():
    """File modes apply to this thread (and the threads it starts) even as root, whose
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH are taken out of the effective set meanwhile and
    given back after (they stay permitted). Other users need nothing: modes apply to them."""
    if getattr(os, "geteuid", lambda: -1)() != 0:  # not root (or not POSIX)
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    effective = data[0].effective
    data[0].effective &= ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH))
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    try:
        yield
    finally:
        data[0].effective = effective
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")

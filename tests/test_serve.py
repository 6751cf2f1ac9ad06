"""``p2p serve``: the HTTP API over one shared model (a real uvicorn server on 127.0.0.1), bad
uploads, limits, the bounded queue, 16 concurrent clients, the sketch canvas and its palette,
examples from the val split, and a real process stopped by SIGTERM and Ctrl-C."""

import contextlib
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from conftest import ROOT
from p2p_testing import make_dataset, make_serve_checkpoint, png, running, size_of, web_stack
from PIL import Image

from p2p import serve  # serve.py imports the web stack only where it is used
from p2p.inference import translate
from p2p.models import GeneratorConfig, UnetGenerator, init_weights
from p2p.weights.checkpoint import generator_state, save_checkpoint


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    dataset = make_dataset(root / "data")
    return {"dataset": dataset, "checkpoint": make_serve_checkpoint(root / "tiny.pt", dataset),
            "assets": Path(tmp_path_factory.mktemp("assets"))}


@pytest.fixture(scope="module")
def server(folders):
    web_stack()
    model = translate.load(folders["checkpoint"], device="cpu")
    translator = serve.Translator(model)
    app = serve.create_app(translator, folders["assets"])
    with running(app) as url:
        yield url, translator
    translator.close()


def test_translate_raw_body_and_multipart(server, folders):
    url, _ = server
    health = requests.get(f"{url}/healthz", timeout=60).json()
    assert health["status"] == "ok" and health["image_size"] == [32, 32]
    assert health["direction"] == "BtoA" and health["queue"] == serve.Limits().queue
    image = png(50, 30)
    r = requests.post(f"{url}/api/translate?mode=eval", data=image, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert size_of(r.content) == (50, 30)  # the input's size, not the model's
    # The same as `p2p translate` of the same bytes: the API adds no model code of its own.
    model = translate.load(folders["checkpoint"], device="cpu")
    report = translate.translate(model, [translate.Job(image, "x", None)],
                                 translate.TranslateOptions(paper_mode=False))
    assert r.content == report.output_bytes
    form = requests.post(f"{url}/api/translate?mode=eval", files={"image": ("x.png", image)},
                         timeout=60)
    assert form.status_code == 200 and form.content == r.content
    # Paper mode: dropout draws repeat with the seed.
    seeded = [requests.post(f"{url}/api/translate?seed=3", data=image, timeout=60).content
              for _ in range(2)]
    assert seeded[0] == seeded[1] and size_of(seeded[0]) == (50, 30)


@pytest.mark.parametrize("body, params, status, message", [
    (b"", {}, 400, "empty upload"),
    (b"hello, not an image", {}, 400, "not an image"),
    (png(40, 40)[:300], {}, 400, "truncated"),
    (png(20, 20), {"mode": "fast"}, 400, "unknown mode 'fast'"),
    (png(20, 20), {"seed": "x"}, 400, "seed"),
], ids=["empty", "text", "truncated", "mode", "seed"])
def test_bad_uploads_are_json_errors_and_the_server_goes_on(server, body, params, status,
                                                             message):
    url, translator = server
    r = requests.post(f"{url}/api/translate", data=body, params=params, timeout=60)
    assert r.status_code == status and message in r.json()["error"]
    assert requests.post(f"{url}/api/translate", data=png(20, 20), timeout=60).status_code == 200
    assert translator.pending == 0


def test_size_and_pixel_limits_give_413(server, monkeypatch):
    url, translator = server
    monkeypatch.setattr(translator, "limits", serve.Limits(max_bytes=5000, max_pixels=64 * 64))
    big = png(100, 100)  # ~30 kB of noise
    r = requests.post(f"{url}/api/translate", data=big, timeout=60)
    assert r.status_code == 413 and "over the limit of 5000" in r.json()["error"]
    r = requests.post(f"{url}/api/translate", files={"image": ("big.png", big)}, timeout=60)
    assert r.status_code == 413
    many_pixels = png(80, 80, solid=True)  # small file, 6400 pixels
    assert len(many_pixels) < 5000
    r = requests.post(f"{url}/api/translate", data=many_pixels, timeout=60)
    assert r.status_code == 413 and "80x80 pixels" in r.json()["error"]
    r = requests.post(f"{url}/api/translate", files={"other": ("x.png", png(8, 8))}, timeout=60)
    assert r.status_code == 400 and "field named 'image'" in r.json()["error"]
    assert requests.post(f"{url}/api/translate", data=png(20, 20), timeout=60).status_code == 200


def test_sixteen_concurrent_clients_share_one_model(server):
    url, translator = server
    threads_before = threading.active_count()

    def client(i: int) -> tuple[int, tuple[int, int], tuple[int, int]]:
        size = (20 + i, 40 - i)
        r = requests.post(f"{url}/api/translate", data=png(*size, seed=i),
                          params={"seed": i}, timeout=300)
        return r.status_code, size, size_of(r.content) if r.status_code == 200 else None

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(client, range(16)))
    assert [status for status, _, _ in results] == [200] * 16
    assert all(got == sent for _, sent, got in results)  # each answer is its own request's
    assert translator.pending == 0
    assert threading.active_count() <= threads_before + 1  # no thread per request left over


def test_a_full_queue_answers_503_at_once(server, monkeypatch):
    url, translator = server
    monkeypatch.setattr(translator, "limits", serve.Limits(queue=2))
    gate = threading.Event()
    translator.worker.submit(gate.wait)  # the generator's thread is busy until the gate opens
    with ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(requests.post, f"{url}/api/translate", data=png(16, 16),
                               timeout=300) for _ in range(2)]
        try:
            while translator.pending < 2:
                assert not any(f.done() for f in waiting)
                time.sleep(0.01)
            r = requests.post(f"{url}/api/translate", data=png(16, 16), timeout=60)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "busy" in r.json()["error"]
        finally:
            gate.set()
        assert [f.result().status_code for f in waiting] == [200, 200]


def test_models_the_page_cannot_show_are_refused(tmp_path):
    from p2p.errors import P2PError

    torch.manual_seed(0)
    generator = init_weights(UnetGenerator(GeneratorConfig(in_channels=4, num_downs=5, ngf=4)))
    save_checkpoint(tmp_path / "rgbn.pt", generator_state(generator, "AtoB", 32))
    model = translate.load(tmp_path / "rgbn.pt", device="cpu")
    with pytest.raises(P2PError, match="reads 4 channel"):
        serve.Translator(model)


def test_page_is_served(server):
    url, _ = server
    r = requests.get(f"{url}/", timeout=60)
    assert r.status_code == 200 and "<html" in r.text.lower()


# ---- the canvas and the examples -----------------------------------------------------------

def test_canvas_fits_the_task():
    labels = serve.canvas_for("facades", "BtoA", 256)
    assert labels.kind == "labels" and labels.background == "#0034fc"  # the facade class
    assert [name for name, _ in labels.legend][:3] == ["background", "facade", "window"]
    assert len(set(labels.colors)) == 12
    assert serve.canvas_for("/data/facades", "AtoB", 256).kind == "free"  # photo input
    edges = serve.canvas_for("edges2shoes", "AtoB", 256)
    assert (edges.kind, edges.background, edges.colors) == ("edges", "#ffffff", ["#000000"])
    assert serve.canvas_for(None, "AtoB", 32).kind == "free"


def test_facades_palette_is_the_datasets(shared):
    """Most pixels of the label maps (B, right half) are close to a palette colour (the rest:
    JPEG-blurred region borders), and every palette colour occurs."""
    palette = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)]
                        for _, c in serve.FACADES_PALETTE])
    close = total = 0
    used = set()
    for path in sorted((shared / "facades" / "val").glob("*.jpg"))[:10]:
        labels = np.asarray(Image.open(path).convert("RGB"), dtype=int)[:, 256:].reshape(-1, 3)
        distance = np.abs(labels[:, None, :] - palette[None]).max(axis=2)
        nearest = distance.argmin(axis=1)
        ok = distance.min(axis=1) <= 40  # JPEG noise; region borders are blurred
        close += ok.sum()
        total += len(labels)
        used |= set(np.unique(nearest[ok]).tolist())
    assert close / total > 0.8
    assert len(used) == 12  # and every colour of the palette occurs


def test_examples_are_the_input_halves_of_val(folders, tmp_path):
    examples = serve.example_inputs(str(folders["dataset"]), "BtoA", 3, tmp_path)
    assert len(examples) == 3
    with Image.open(examples[0]) as img:
        assert img.size == (32, 32) and img.getpixel((5, 5))[2] >= 200  # B: the blue half
    a_side = serve.example_inputs(str(folders["dataset"]), "AtoB", 3, tmp_path / "a")
    with Image.open(a_side[0]) as img:
        assert img.getpixel((5, 5))[0] >= 200
    assert serve.example_inputs(str(tmp_path / "nowhere"), "AtoB", 3, tmp_path) == []
    assert serve.example_inputs("facades", "BtoA", 3, tmp_path) == []  # not fetched here


def test_examples_from_a_and_b_folders_are_whole_images(tmp_path):
    for side, colour in (("A", (255, 0, 0)), ("B", (0, 0, 255))):
        (tmp_path / "data" / "val" / side).mkdir(parents=True)
        Image.new("RGB", (40, 24), colour).save(tmp_path / "data" / "val" / side / "x.png")
    examples = serve.example_inputs(str(tmp_path / "data"), "BtoA", 3, tmp_path / "out")
    assert len(examples) == 1
    with Image.open(examples[0]) as img:
        assert img.size == (40, 24) and img.getpixel((5, 5)) == (0, 0, 255)


# ---- the command ---------------------------------------------------------------------------

def test_help_imports_no_web_stack():
    code = ("import sys, p2p.cli.app; "
            "print([m for m in ('torch', 'gradio', 'fastapi', 'uvicorn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_without_the_extra_one_line_and_exit_2(cli, folders, monkeypatch):
    # (runs without the extra too: it removes gradio)
    monkeypatch.setitem(sys.modules, "gradio", None)
    r = cli("serve", "-c", folders["checkpoint"])
    assert r.exit_code == 2 and 'pip install "p2p-pix2pix[serve]"' in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("serve")
    assert r.exit_code == 2 and "exactly one" in r.stderr


def test_port_in_use_is_a_user_error(cli, folders):
    web_stack()
    with contextlib.closing(serve.bind("127.0.0.1", 0)) as taken:
        r = cli("serve", "-c", folders["checkpoint"], "--port", taken.getsockname()[1])
    assert r.exit_code == 2 and "cannot listen on 127.0.0.1:" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_real_process_serves_and_stops_cleanly(folders, stop):
    web_stack()
    process = subprocess.Popen(
        [sys.executable, "-m", "p2p", "serve", "-c", str(folders["checkpoint"]), "--port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()  # the first line says where it listens
        match = re.search(r"serving (http://127\.0\.0\.1:\d+)/", line)
        assert match, line + process.stderr.read()
        url = match.group(1)
        r = requests.post(f"{url}/api/translate", data=png(24, 16), timeout=120)
        assert r.status_code == 200 and size_of(r.content) == (24, 16)
        process.send_signal(stop)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "stopped"

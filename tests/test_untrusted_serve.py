"""The audit's class "untrusted clients of ``p2p serve``", kept as a growing module: every way a
client was found to reach a server file, or to make the server hold memory, connections or disk
beyond its limits, is tried here through the real app on a real uvicorn server on 127.0.0.1.
A new surface of the server gets its cases here, tried the same way.

- Files: a call naming a server path as an image input, ``/gradio_api/file=`` with a server
  path or a URL. Only files uploaded to the page are read; no answer names a server path.
- Connections: half a request line (header timeout), half a body (body timeout), more idle
  connections than the limit.
- Memory: the queue is checked before an upload's body is read; 30 stalled clients of a real
  ``p2p serve`` process stay within the documented bound.
- Disk: the page's uploads are capped in total, the oldest deleted first.
- Values: a seed beyond 64 bits is a 400 with JSON, never a 500.
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import ROOT
from p2p_testing import make_dataset, make_serve_checkpoint, png, running, size_of, web_stack

from p2p import serve
from p2p.inference import translate

SECRET = "p2p-test-secret-4d1f"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A served page and API over a tiny model, and a secret file beside it on the server."""
    web_stack()
    root = tmp_path_factory.mktemp("untrusted")
    dataset = make_dataset(root / "data")
    model = translate.load(make_serve_checkpoint(root / "tiny.pt", dataset), device="cpu")
    secret = root / "secret.txt"
    secret.write_text(SECRET)
    translator = serve.Translator(model)
    assets = root / "assets"
    assets.mkdir()
    app = serve.create_app(translator, assets)
    limits = serve.Limits(header_timeout=1.0, body_timeout=1.0, max_connections=16)
    with running(app, limits) as url:
        yield {"url": url, "app": app, "translator": translator, "assets": assets,
               "secret": secret, "image": dataset / "val" / "0.png", "limits": limits}
    translator.close()


def call(url: str, api_name: str, data: list) -> tuple[int, str]:
    """A call of the page's API as Gradio's client makes it: POST, then read the event stream.
    Returns the POST's status and the JSON or event text that answered."""
    r = requests.post(f"{url}/gradio_api/call/{api_name}", json={"data": data}, timeout=60)
    if r.status_code != 200:
        return r.status_code, r.text
    event = r.json()["event_id"]
    return 200, requests.get(f"{url}/gradio_api/call/{api_name}/{event}", timeout=60).text


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


def holds_secret(folder: Path) -> bool:
    return any(SECRET.encode() in path.read_bytes() for path in files_under(folder))


# ---- files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["secret", "passwd", "image", "url", "relative"])
def test_a_call_naming_a_server_file_reads_nothing(site, which):
    target = {"secret": str(site["secret"]), "passwd": "/etc/passwd",
              "image": str(site["image"]), "url": "http://127.0.0.1:9/x.png",
              "relative": "../../etc/passwd"}[which]
    before = files_under(site["assets"])
    for api_name, data in (("translate", [file_data(target), "eval", 0]),
                           ("translate_drawing", [{"background": None, "layers": [],
                                                   "composite": file_data(target)}, "eval", 0])):
        status, answer = call(site["url"], api_name, data)
        assert status == 400 and "uploaded to this page" in json.loads(answer)["error"]
        assert target not in answer and str(site["assets"]) not in answer
    # The same through Gradio's queue, which the page itself uses.
    r = requests.post(f"{site['url']}/gradio_api/queue/join", timeout=60, json={
        "data": [file_data(target), "eval", 0], "fn_index": 0, "session_hash": "probe"})
    assert r.status_code == 400 and target not in r.text
    assert files_under(site["assets"]) == before and not holds_secret(site["assets"])


def test_gradio_itself_refuses_server_files_behind_the_guard(site, tmp_path, monkeypatch):
    """The root fix: Gradio's own check is on (the page counts as launched), so the app
    refuses server paths even without PageGuard in front of it."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", os.environ["GRADIO_TEMP_DIR"])  # restored after
    translator = serve.Translator(site["translator"].model)
    guard = serve.create_app(translator, tmp_path)
    try:
        with running(guard.app) as url:  # the app alone, without the guard
            status, answer = call(url, "translate", [file_data(str(site["secret"])), "eval", 0])
    finally:
        translator.close()
    assert status == 200 and "event: error" in answer and "not uploaded by a user" in answer
    assert not holds_secret(tmp_path) and not holds_secret(Path("/tmp/gradio"))


@pytest.mark.parametrize("name", ["{secret}", "/etc/passwd", "{assets}/../secret.txt",
                                  "http://127.0.0.1:9/x.png", "secret.txt"])
def test_the_file_route_serves_only_the_page_s_own_files(site, name):
    name = name.format(secret=site["secret"], assets=site["assets"])
    for route in ("file=", "file/"):
        r = requests.get(f"{site['url']}/gradio_api/{route}{name}", timeout=60)
        assert r.status_code == 403 and SECRET not in r.text
        assert r.json() == {"error": "not a file of this page"}
    r = requests.get(f"{site['url']}/gradio_api/proxy=http://127.0.0.1:9/x", timeout=60)
    assert r.status_code == 403


def test_a_link_out_of_the_upload_folder_is_not_served(site):
    link = site["assets"] / "uploads" / "link.txt"
    link.symlink_to(site["secret"])
    try:
        r = requests.get(f"{site['url']}/gradio_api/file={link}", timeout=60)
        assert r.status_code == 403 and SECRET not in r.text
    finally:
        link.unlink()


def upload(url: str, data: bytes, name: str = "in.png") -> requests.Response:
    return requests.post(f"{url}/gradio_api/upload", files={"files": (name, data)}, timeout=60)


def test_an_uploaded_image_is_translated_and_its_output_served(site):
    r = upload(site["url"], png(20, 12))
    assert r.status_code == 200
    (path,) = r.json()
    assert Path(path).resolve().is_relative_to((site["assets"] / "uploads").resolve())
    status, answer = call(site["url"], "translate", [file_data(path), "eval", 0])
    assert status == 200 and "event: complete" in answer, answer
    output = json.loads(answer.split("data:", 1)[1])[0]
    r = requests.get(f"{site['url']}/gradio_api/file={output['path']}", timeout=60)
    assert r.status_code == 200 and size_of(r.content) == (20, 12)


def test_uploads_on_disk_are_capped_oldest_first(site, monkeypatch):
    uploads = site["assets"] / "uploads"
    guard = site["app"]
    kept = set(guard.keep)
    assert kept  # Gradio's copies of the canvas and the examples, there from the start
    monkeypatch.setattr(guard, "limits", serve.Limits(max_upload_storage=120_000))
    sent = []
    for i in range(8):
        r = upload(site["url"], png(100, 100, seed=i))  # ~30 kB of noise each
        assert r.status_code == 200
        sent.append(Path(r.json()[0]))
        user_files = files_under(uploads) - kept
        assert sum(path.stat().st_size for path in user_files) <= 120_000
    assert not sent[0].exists() and sent[-1].exists()  # the oldest went first
    assert all(path.exists() for path in kept)
    r = upload(site["url"], b"x" * 130_000)  # more than the whole store
    assert r.status_code in (413, 503) and "error" in r.json()


# ---- values ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [2**64, 2**70, -1])
def test_a_seed_out_of_range_is_a_400_with_json(site, seed):
    r = requests.post(f"{site['url']}/api/translate?seed={seed}", data=png(8, 8), timeout=60)
    assert r.status_code == 400 and "seed" in r.json()["error"]
    r = upload(site["url"], png(8, 8))
    status, answer = call(site["url"], "translate", [file_data(r.json()[0]), "paper", seed])
    assert status == 200 and "event: error" in answer and "seed" in answer
    assert site["translator"].pending == 0


# ---- connections -----------------------------------------------------------------------------

def raw_connection(url: str) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (reading what it says first)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_a_request_line_is_cut_off_by_the_header_timeout(site):
    with contextlib.closing(raw_connection(site["url"])) as sock:
        sock.sendall(b"GET /heal")
        started = time.monotonic()
        assert closed_within(sock, 10)
        assert 0.5 < time.monotonic() - started < 5  # header_timeout is 1 s here


def test_half_a_body_is_cut_off_by_the_body_timeout_and_frees_its_slot(site):
    with contextlib.closing(raw_connection(site["url"])) as sock:
        sock.sendall(b"POST /api/translate HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                     b"Content-Type: image/png\r\n\r\n" + png(8, 8)[:40])
        deadline = time.monotonic() + 5
        while site["translator"].pending != 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert closed_within(sock, 10)
    deadline = time.monotonic() + 5
    while site["translator"].pending:  # the handler saw the disconnect and let its slot go
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_idle_connections_beyond_the_limit_are_turned_away(site):
    limit = site["limits"].max_connections
    idle = [raw_connection(site["url"]) for _ in range(limit)]
    try:
        time.sleep(0.2)
        with contextlib.closing(raw_connection(site["url"])) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            extra.settimeout(10)
            answer = extra.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503") and b"too many open connections" in answer
        time.sleep(1.5)  # the idle ones pass the header timeout and are closed
        assert requests.get(f"{site['url']}/healthz", timeout=10).status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_full_queue_refuses_before_reading_the_body(site, monkeypatch):
    translator = site["translator"]
    monkeypatch.setattr(translator, "limits", serve.Limits(queue=1))
    with contextlib.ExitStack() as stack:
        holder = stack.enter_context(contextlib.closing(raw_connection(site["url"])))
        holder.sendall(b"POST /api/translate HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        deadline = time.monotonic() + 5
        while translator.pending != 1:  # the one slot, held while its body is awaited
            assert time.monotonic() < deadline
            time.sleep(0.01)
        late = stack.enter_context(contextlib.closing(raw_connection(site["url"])))
        late.sendall(b"POST /api/translate HTTP/1.1\r\nHost: x\r\nContent-Length: 15000000\r\n\r\n")
        late.settimeout(5)
        answer = late.recv(65536)  # answered with no byte of the 15 MB body sent
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower()


# ---- a real process under stalled clients ----------------------------------------------------

def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_a_real_process_under_stalled_uploads_and_probes(tmp_path):
    """30 clients each announce a 15 MB upload, send most of it and stall. With --queue 2 the
    server reads at most 2 bodies (2 x 15 MB, the documented queue x --max-upload-mb bound);
    the others are refused before their bodies; the body timeout then closes the two. User
    errors before that (EPS bytes, a huge seed, a server path) leave no traceback in its log."""
    web_stack()
    checkpoint = make_serve_checkpoint(tmp_path / "tiny.pt", make_dataset(tmp_path / "data"))
    process = subprocess.Popen(
        [sys.executable, "-m", "p2p", "serve", "-c", str(checkpoint), "--port", "0",
         "--queue", "2", "--max-upload-mb", "15", "--body-timeout", "3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        match = re.search(r"serving (http://127\.0\.0\.1:\d+)/", line)
        assert match, line + process.stderr.read()
        url = match.group(1)
        for _ in range(3):  # warm: the first requests load lazily imported code
            requests.post(f"{url}/api/translate", data=png(16, 16), timeout=120)
        # User errors the log must not show as tracebacks (checked at the end).
        eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
        assert requests.post(f"{url}/api/translate", data=eps, timeout=60).status_code == 400
        assert requests.post(f"{url}/api/translate?seed={2**70}", data=png(8, 8),
                             timeout=60).status_code == 400
        assert call(url, "translate", [file_data("/etc/passwd"), "eval", 0])[0] == 400
        path = upload(url, png(8, 8)).json()[0]
        assert "event: error" in call(url, "translate", [file_data(path), "paper", 1e300])[1]
        before = rss_mb(process.pid)
        body = os.urandom(14 * 1024 * 1024)
        peak = before
        refused = []

        def stalled_client() -> None:
            with contextlib.closing(raw_connection(url)) as sock:
                sock.sendall(b"POST /api/translate HTTP/1.1\r\nHost: x\r\nContent-Length: "
                             + str(15 * 1024 * 1024).encode() + b"\r\n\r\n")
                try:
                    sock.sendall(body)
                    sock.settimeout(15)
                    refused.append(sock.recv(64).startswith(b"HTTP/1.1 503"))
                except OSError:  # answered 503 and closed while we were still sending
                    refused.append(True)

        clients = [threading.Thread(target=stalled_client) for _ in range(30)]
        for client in clients:
            client.start()
        while any(client.is_alive() for client in clients):
            peak = max(peak, rss_mb(process.pid))
            time.sleep(0.05)
        assert refused.count(True) >= 28
        growth = peak - before
        print(f"30 stalled 15 MB uploads, --queue 2: RSS {before:.0f} MB, peak +{growth:.0f} MB")
        assert growth < 2 * 15 * 2 + 64, f"RSS grew {growth:.0f} MB over {before:.0f} MB"
        assert requests.get(f"{url}/healthz", timeout=10).json()["pending"] == 0
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in err, err

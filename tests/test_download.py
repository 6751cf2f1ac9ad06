"""p2p.download against a real HTTP server on 127.0.0.1, with the faults it must survive."""

import hashlib
import os
import socket
import uuid

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p import download as dl
from p2p.errors import P2PError

BODY = os.urandom(200_000)
DIGEST = hashlib.sha256(BODY).hexdigest()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_BASE", 0.0)


def test_success_full_and_prefix_digest_and_progress(http_server, tmp_path):
    http_server.add("/f.bin", BODY)
    calls = []
    dest = dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin", sha256=DIGEST,
                       size=len(BODY), progress=lambda done, total: calls.append((done, total)))
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "f.bin.part").exists()
    assert calls[0] == (0, len(BODY)) and calls[-1] == (len(BODY), len(BODY))
    dest.unlink()
    assert dl.download(f"{http_server.url}/f.bin", dest, sha256=DIGEST[:8].upper()) == dest
    assert dl.sha256_file(dest) == DIGEST


def test_complete_destination_is_not_downloaded_again(http_server, tmp_path):
    route = http_server.add("/f.bin", BODY)
    dest = tmp_path / "f.bin"
    dest.write_bytes(BODY)
    dl.download(f"{http_server.url}/f.bin", dest, sha256=DIGEST)
    assert route.hits == 0
    dest.write_bytes(b"stale")  # fails the check: fetched again
    dl.download(f"{http_server.url}/f.bin", dest, sha256=DIGEST)
    assert route.hits == 1 and dest.read_bytes() == BODY


def test_resume_after_connection_cut(http_server, tmp_path):
    route = http_server.add("/f.bin", BODY, cut_after=70_000)
    dest = dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin", sha256=DIGEST)
    assert dest.read_bytes() == BODY
    assert route.ranges[0] is None
    assert route.ranges[1:] == ["bytes=70000-"]  # resumed, with every byte received kept


def test_resume_of_part_left_by_an_earlier_run(http_server, tmp_path):
    route = http_server.add("/f.bin", BODY)
    (tmp_path / "f.bin.part").write_bytes(BODY[:12_345])
    dest = dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin", sha256=DIGEST)
    assert dest.read_bytes() == BODY
    assert route.ranges == ["bytes=12345-"]


def test_complete_part_is_verified_and_renamed(http_server, tmp_path):
    route = http_server.add("/f.bin", BODY)
    (tmp_path / "f.bin.part").write_bytes(BODY)
    dest = dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin", sha256=DIGEST)
    assert dest.read_bytes() == BODY and route.ranges == [f"bytes={len(BODY)}-"]


def test_part_longer_than_the_file_starts_over(http_server, tmp_path):
    http_server.add("/f.bin", BODY)
    (tmp_path / "f.bin.part").write_bytes(BODY + b"junk")
    dest = dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin")
    assert dest.read_bytes() == BODY


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path, monkeypatch):
    route = http_server.add("/f.bin", BODY)
    real_get = requests.get
    monkeypatch.setattr(dl.requests, "get", lambda url, headers, **kw: real_get(url, **kw))
    (tmp_path / "f.bin.part").write_bytes(b"x" * 5000)  # wrong bytes: must not be kept
    dest = dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin", sha256=DIGEST)
    assert dest.read_bytes() == BODY and route.hits == 1


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=len(BODY) - 1), keep=st.booleans())
def test_any_cut_point_gives_the_same_file(http_server, tmp_path, cut, keep):
    path = f"/{uuid.uuid4().hex}"
    http_server.add(path, BODY, cut_after=cut)
    dest = tmp_path / path[1:]
    dl.download(f"{http_server.url}{path}", dest, size=len(BODY) if keep else None,
                sha256=DIGEST)
    assert dest.read_bytes() == BODY


def test_404_fails_at_once_naming_the_url(http_server, tmp_path):
    with pytest.raises(P2PError) as err:
        dl.download(f"{http_server.url}/missing.tar.gz", tmp_path / "m.tar.gz")
    message = str(err.value)
    assert "HTTP 404" in message and f"{http_server.url}/missing.tar.gz" in message
    assert "\n" not in message
    assert not list(tmp_path.iterdir())


def test_500_is_retried_then_fails(http_server, tmp_path):
    route = http_server.add("/f.bin", BODY, status=500)
    with pytest.raises(P2PError, match=r"failed after 3 attempts: HTTP 500") as err:
        dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin", retries=2)
    assert route.hits == 3 and err.value.hint == dl.RETRY_HINT


def test_cut_without_retries_says_so_and_keeps_the_part(http_server, tmp_path):
    http_server.add("/f.bin", BODY, cut_after=1000)
    with pytest.raises(P2PError, match="after 1 attempt: connection broken mid-transfer"):
        dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin", retries=0)
    assert (tmp_path / "f.bin.part").read_bytes() == BODY[:1000]


def test_500_then_recovery(http_server, tmp_path, monkeypatch):
    route = http_server.add("/f.bin", BODY, status=500)
    real_sleep = dl.time.sleep

    def heal(seconds):
        route.status = 200
        real_sleep(seconds)

    monkeypatch.setattr(dl.time, "sleep", heal)
    assert dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin").read_bytes() == BODY
    assert route.hits == 2


def test_checksum_mismatch_deletes_the_part(http_server, tmp_path):
    http_server.add("/f.bin", BODY)
    wrong = "0" * 64
    with pytest.raises(P2PError) as err:
        dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin", sha256=wrong)
    message = str(err.value)
    assert f"{http_server.url}/f.bin" in message and wrong in message and DIGEST in message
    assert not list(tmp_path.iterdir())


def test_size_mismatch_is_caught_before_the_body(http_server, tmp_path):
    route = http_server.add("/f.bin", BODY)
    with pytest.raises(P2PError, match=f"server reports {len(BODY)} bytes, expected 10"):
        dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin", size=10)
    assert route.hits == 1 and not (tmp_path / "f.bin").exists()


def test_connection_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/f.bin"
    with pytest.raises(P2PError, match="connection failed") as err:
        dl.download(url, tmp_path / "f.bin", retries=1)
    assert url in str(err.value) and "2 attempts" in str(err.value)


def test_timeout(tmp_path):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/f.bin"
        with pytest.raises(P2PError, match=r"no answer within 0.2 s"):
            dl.download(url, tmp_path / "f.bin", retries=1, timeout=0.2)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full(http_server, tmp_path):
    http_server.add("/f.bin", BODY)
    (tmp_path / "f.bin.part").symlink_to("/dev/full")
    with pytest.raises(P2PError, match="cannot write .*no space left on device"):
        dl.download(f"{http_server.url}/f.bin", tmp_path / "f.bin")


def test_malformed_digest_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        dl.download("http://127.0.0.1:1/x", tmp_path / "x", sha256="xyz")

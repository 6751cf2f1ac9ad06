"""HTTP downloads that survive faults: stream, resume with Range, retry, verify, rename into place.

The bytes go to ``DEST.part``; a cut connection or a timeout leaves that file, and the next attempt
(or the next run) asks the server only for the missing tail. ``DEST`` itself appears only once the
whole file is there and its size and sha256 (where known) match.
"""

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3

from p2p.errors import P2PError
from p2p.paths import write_error

# Seconds before the first retry; doubled after each failed attempt (tests set it to 0).
BACKOFF_BASE = 1.0
CHUNK_SIZE = 1 << 16
RETRY_HINT = "check the network and run again to resume"

Progress = Callable[[int, int | None], None]


class _Transient(Exception):
    """A failure worth another attempt: connection trouble, timeout, 5xx, a short body."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_digest_form(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    expected = sha256.lower()
    if not 8 <= len(expected) <= 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"sha256 must be 8 to 64 hex digits, got {sha256!r}")
    return expected


def _verify(path: Path, url: str, size: int | None, sha256: str | None) -> None:
    """Raise P2PError (after deleting ``path``) if its size or digest is not the expected one."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        path.unlink(missing_ok=True)
        raise P2PError(f"download of {url} has {actual_size} bytes, expected {size}",
                       "the server's file differs; try another mirror")
    if sha256 is not None:
        actual = sha256_file(path)
        if not actual.startswith(sha256):
            path.unlink(missing_ok=True)
            raise P2PError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}",
                           "the file is corrupt or was changed on the server; try another mirror")


def _is_complete(path: Path, size: int | None, sha256: str | None) -> bool:
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or sha256_file(path).startswith(sha256)


def _attempt(url: str, part: Path, size: int | None, progress: Progress | None,
             timeout: float) -> None:
    """One request: append to ``part`` from where it ends. Returns when the body is complete."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
            status = response.status_code
            if status == 416 and offset:
                # Nothing past our offset: complete if the server's length is exactly ours.
                if response.headers.get("Content-Range", "") == f"bytes */{offset}":
                    return
                part.unlink()
                raise _Transient("partial file is longer than the server's file; starting over")
            if status >= 500 or status == 429:
                raise _Transient(f"HTTP {status} {response.reason}")
            if status not in (200, 206):
                raise P2PError(f"download of {url} failed: HTTP {status} {response.reason}",
                               "check the URL, or use another mirror")
            if status == 206 and not response.headers.get("Content-Range", "").startswith(
                    f"bytes {offset}-"):
                part.unlink()  # Resuming cannot be trusted here: start over.
                raise _Transient("server answered a different range than asked for")
            if status == 200:
                offset = 0  # Server ignored the Range header: start over.
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else size
            if size is not None and total is not None and total != size:
                raise P2PError(f"download of {url}: server reports {total} bytes, expected {size}",
                               "the server's file differs; try another mirror")
            done = offset
            if progress:
                progress(done, total)
            with open(part, "ab" if offset else "wb") as f:
                # The bytes as served: a server that labels a .tar.gz "Content-Encoding: gzip"
                # must not get it unpacked on the way (and Content-Length counts raw bytes).
                for chunk in response.raw.stream(CHUNK_SIZE, decode_content=False):
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            if total is not None and done < total:
                raise _Transient(f"connection closed after {done} of {total} bytes")
    except (requests.Timeout, urllib3.exceptions.TimeoutError):
        raise _Transient(f"no answer within {timeout:g} s") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise _Transient(_describe(exc)) from None


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection broken mid-transfer"
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else exc
        # urllib3 nests the useful part ("Connection refused") deep in its reason.
        text = str(getattr(reason, "reason", reason))
        return f"connection failed ({text.split(': ', 1)[-1]})"
    return f"{type(exc).__name__}: {exc}"


def download(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None,
             progress: Progress | None = None, retries: int = 4, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    ``sha256`` is the full hex digest or a prefix of it (at least 8 digits). A ``dest`` that
    already exists and passes the checks is returned without touching the network.
    ``progress(bytes_done, total_or_None)`` is called as bytes arrive. Up to ``retries`` further
    attempts follow a failed one, resuming the ``.part`` file with a Range request.
    Raises P2PError on every failure.
    """
    dest = Path(dest)
    expected = _check_digest_form(sha256)
    if _is_complete(dest, size, expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempts = retries + 1
    for attempt in range(attempts):
        if attempt:
            time.sleep(BACKOFF_BASE * 2 ** (attempt - 1))
        try:
            _attempt(url, part, size, progress, timeout)
        except _Transient as exc:
            last_error = str(exc)
            continue
        except OSError as exc:
            raise write_error(part, exc) from None
        _verify(part, url, size, expected)
        os.replace(part, dest)
        return dest
    tries = f"{attempts} attempts" if attempts > 1 else "1 attempt"
    raise P2PError(f"download of {url} failed after {tries}: {last_error}",
                   RETRY_HINT)

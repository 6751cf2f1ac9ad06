"""Where p2p keeps its files, and the one way it writes them (atomically).

A write that fails (full disk, read-only file system, a path under a regular file, no
permission) is a P2PError naming the path and the reason, and leaves no temporary file behind.
"""

import contextlib
import errno
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import BinaryIO

from p2p.errors import P2PError


def home() -> Path:
    """``$P2P_HOME``, default ``~/.cache/p2p``: holds datasets/, zoo/ and weights/."""
    return Path(os.environ.get("P2P_HOME") or Path.home() / ".cache" / "p2p").expanduser()


def datasets_dir() -> Path:
    return home() / "datasets"


def zoo_dir() -> Path:
    return home() / "zoo"


def weights_dir() -> Path:
    return home() / "weights"


# errno -> (reason, hint). EFBIG is what a full RLIMIT_FSIZE (or a file system's size limit) says.
_NO_SPACE = "free some disk space or write elsewhere"
_WRITE_FAILURES = {
    errno.ENOSPC: ("no space left on device", _NO_SPACE),
    errno.EDQUOT: ("disk quota exceeded", _NO_SPACE),
    errno.EFBIG: ("file too large: no space for it under the file size limit", _NO_SPACE),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.EACCES: ("permission denied", "choose a writable location"),
    errno.EPERM: ("permission denied", "choose a writable location"),
    errno.ENOTDIR: ("not a directory: a part of the path is a file", "choose another path"),
    errno.EISDIR: ("is a directory", "choose another path"),
    errno.EEXIST: ("a file of that name is in the way", "choose another path"),
    errno.EPIPE: ("broken pipe", None),
    errno.EXDEV: ("a hard link cannot cross file systems", "copy instead (--mode copy)"),
}


def write_error(path: str | os.PathLike, exc: OSError) -> P2PError:
    """The one-line error for a failed write of ``path``."""
    reason, hint = _WRITE_FAILURES.get(exc.errno, (exc.strerror or str(exc), None))
    return P2PError(f"cannot write {path}: {reason}", hint)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError raised inside the block into the P2PError of a failed write of ``path``."""
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc) from None


def _temp_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"


# What _temp_name makes: a file of a killed process may stay behind with such a name.
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    Readers never see a half-written file, and a failure (or Ctrl-C) leaves nothing behind. An
    OSError (full disk, read-only, ...) becomes a P2PError naming ``path``.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0666 so that the kernel applies the umask and the file gets the usual
        # permissions (mkstemp's 0600 would need the umask read, which is process-wide: racy
        # across threads).
        tmp = _temp_name(path)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class _KeepsWriteErrors:
    """An unbuffered binary file whose failed writes are remembered: torch.save reports them as
    a RuntimeError ("unexpected pos ...") that has lost the reason. Unbuffered: torch hands over
    whole tensors, which a buffer would only copy (that made checkpoints 2x slower to save)."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.error: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):  # a short write (disk full) is followed by one that fails
                done += self.file.write(view[done:])
        except OSError as exc:
            self.error = exc
            raise
        return done

    def flush(self) -> None:
        pass  # nothing buffered


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """An open binary file that becomes ``path`` when the block succeeds (see atomic_path).

    For writers that hide the OSError of a failed write (torch.save): it still names the reason.
    """
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=0) as raw:
        file = _KeepsWriteErrors(raw)
        try:
            yield file  # type: ignore[misc]
        except Exception as exc:
            if file.error is not None and not isinstance(exc, OSError):
                raise write_error(path, file.error) from None
            raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append to a log file (opened for each record, so a failure leaves no open file)."""
    with writing(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)


class StdoutClosed(Exception):
    """The reader of stdout has gone (``p2p ... | head``). Not an OSError, which click would
    turn into exit code 1."""


def write_stdout(data: bytes) -> None:
    """Write results to stdout; a full device or a closed pipe is a P2PError."""
    _to_stdout(lambda: (sys.stdout.buffer.write(data), sys.stdout.flush()))


def flush_stdout() -> None:
    """Flush stdout; what it cannot take (a full device, a closed pipe) is a P2PError."""
    _to_stdout(sys.stdout.flush)


def _to_stdout(write: Callable[[], object]) -> None:
    try:
        write()
    except OSError as exc:
        # What stays in the buffer would fail again when the interpreter exits: send it nowhere.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(exc, BrokenPipeError):  # the reader stopped (`| head`): no error to tell
            raise StdoutClosed from None
        raise write_error("to stdout", exc) from None


class _StdoutWriteErrors:
    """sys.stdout, whose failed writes and flushes are P2PErrors (print may write at once)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        written = []
        _to_stdout(lambda: written.append(self._stream.write(text)))
        return written[0]

    def flush(self) -> None:
        _to_stdout(self._stream.flush)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def stdout_write_errors() -> Iterator[None]:
    """While active, results that stdout cannot take (a full device, a closed pipe) raise a
    P2PError naming stdout, whether a write fails at once or when flushed at the end."""
    stream = sys.stdout
    sys.stdout = _StdoutWriteErrors(stream)
    try:
        yield
    finally:
        sys.stdout = stream
        flush_stdout()


def remove_temp_files(folder: str | os.PathLike,
                      targets: Collection[str] | None = None) -> list[Path]:
    """Remove what killed writers left in ``folder`` (not below it): only files named as
    atomic_path names its temporary files, and with ``targets`` only those of files of these
    names. Call it only while no other process can be writing there (the run lock is held, or
    the caller owns the targets). Returns what was removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for path in Path(folder).iterdir():
            if _TEMP_NAME.match(path.name) and path.is_file() and (
                    targets is None or path.name[1:].rsplit(".", 2)[0] in targets):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def link_atomic(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make ``path`` the same file as ``source`` (a hard link: no second write, no second copy
    on disk), replacing ``path`` atomically; a copy where the filesystem has no hard links."""
    path = Path(path)
    tmp = _temp_name(path)
    with writing(path):
        try:
            try:
                os.link(source, tmp)
            except OSError:  # EPERM, EXDEV, ENOTSUP...: no hard links here
                shutil.copyfile(source, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

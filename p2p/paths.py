"""Where p2p keeps its files, and the one way it writes them (atomically)."""

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def home() -> Path:
    """``$P2P_HOME``, default ``~/.cache/p2p``: holds datasets/, zoo/ and weights/."""
    return Path(os.environ.get("P2P_HOME") or Path.home() / ".cache" / "p2p").expanduser()


def datasets_dir() -> Path:
    return home() / "datasets"


def zoo_dir() -> Path:
    return home() / "zoo"


def weights_dir() -> Path:
    return home() / "weights"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    Readers never see a half-written file, and a failure (or Ctrl-C) leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0666 so that the kernel applies the umask and the file gets the usual permissions
    # (mkstemp's 0600 would need the umask read, which is process-wide: racy across threads).
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def link_atomic(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make ``path`` the same file as ``source`` (a hard link: no second write, no second copy
    on disk), replacing ``path`` atomically; a copy where the filesystem has no hard links."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        try:
            os.link(source, tmp)
        except OSError:  # EPERM, EXDEV, ENOTSUP...: no hard links here
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

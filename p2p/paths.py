"""Where p2p keeps its files, and the one way it writes them (atomically)."""

import contextlib
import os
import tempfile
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)

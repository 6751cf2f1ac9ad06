"""One writer per run directory (and per dataset being fetched): locks the kernel releases.

``RUN_DIR/.lock`` is locked with flock(2) by the training process; the kernel releases it when
the process ends, however it ends, so a killed run never blocks the next (the file of a killed
run stays, unlocked; the next holder takes it over). The holder writes its
PID into the file, so that a refused process can name it. Under ``--nproc`` the launcher holds
the lock for its torchrun workers: it passes its PID down in ``P2P_RUN_LOCK_HOLDER``, and rank 0
(the only process that writes) goes ahead when the holder is that launcher.
"""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from p2p.errors import P2PError
from p2p.paths import remove_temp_files, writing

LOCK_FILE = ".lock"
HOLDER_ENV = "P2P_RUN_LOCK_HOLDER"


@contextlib.contextmanager
def locked(path: Path, *, wait: bool) -> Iterator[bool]:
    """Hold an flock on ``path`` (created if needed, PID written in it) for the block.

    Yields True when held; False when another process holds it and ``wait`` is False. The file
    is removed on release, so nothing stays behind; a process that locked the file just before
    it went away tries again on the new one.
    """
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with writing(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        if _same_file(fd, path):
            break
        os.close(fd)  # locked a file its holder had already removed
    try:
        with writing(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield True
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: the next holder makes a fresh one
        os.close(fd)  # releases the lock


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def holder(path: Path) -> str | None:
    """The PID written in a lock file, if any."""
    try:
        pid = path.read_text().strip()
    except OSError:
        return None
    return pid if pid.isdigit() else None


@contextlib.contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold the run directory for writing, or raise P2PError naming the process that does.

    Once held, temporary files that killed writers left in the run (its top, checkpoints/ and
    samples/) are removed: no other process writes there.
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    lock_path = run_dir / LOCK_FILE
    try:
        with locked(lock_path, wait=False) as held:
            if held:  # where training writes atomically (not below: --out may be any folder)
                for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
                    remove_temp_files(folder)
            else:
                pid = holder(lock_path)
                if pid is None or pid != os.environ.get(HOLDER_ENV):
                    who = f"process {pid}" if pid else "another process"
                    raise P2PError(f"{run_dir}: {who} is training in this run directory",
                                   f"wait for it to finish, or stop it (kill -INT {pid})" if pid
                                   else "wait for it to finish, or choose another --out")
            yield
    finally:
        if created:  # a start that wrote nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                run_dir.rmdir()


@contextlib.contextmanager
def lent_to_children() -> Iterator[None]:
    """Processes started in the block (torchrun's workers) may write under the lock held here."""
    os.environ[HOLDER_ENV] = str(os.getpid())
    try:
        yield
    finally:
        os.environ.pop(HOLDER_ENV, None)

"""Safe extraction of .tar(.gz|.bz2|.xz) and .zip archives.

Archives from the network are untrusted: a member may be named ``/etc/x`` or ``../../x``, or be a
link or a device node that makes later writes land outside the destination. Every member is
checked before it is written and any such member rejects the whole archive. Extraction goes to a
temporary folder beside the destination, renamed into place only when everything is out, so a
failure (a bad member, a truncated download, a full disk) leaves nothing half-extracted.
"""

import errno
import gzip
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from p2p.errors import P2PError

Progress = Callable[[int, int | None], None]
CHUNK_SIZE = 1 << 20


def safe_member_path(name: str, archive: Path) -> PurePosixPath | None:
    """The relative path a member may be written to; None for the archive root itself."""
    if "\\" in name or "\0" in name:
        raise P2PError(f"{archive}: refusing member {name!r}: unusual characters in its name",
                       "the archive may be malicious; get it from a trusted source")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise P2PError(f"{archive}: refusing member {name!r}: absolute path",
                       "the archive may be malicious; get it from a trusted source")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise P2PError(f"{archive}: refusing member {name!r}: '..' leads outside the folder",
                       "the archive may be malicious; get it from a trusted source")
    return PurePosixPath(*parts) if parts else None


def _refuse(archive: Path, name: str, what: str) -> P2PError:
    return P2PError(f"{archive}: refusing member {name!r}: {what}",
                    "the archive may be malicious; get it from a trusted source")


def _write_member(source, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK_SIZE)


def _extract_tar(archive: Path, raw, into: Path, progress: Progress | None, total: int) -> None:
    with tarfile.open(fileobj=raw, mode="r:*") as tar:
        for member in tar:
            relative = safe_member_path(member.name, archive)
            if member.issym() or member.islnk():
                raise _refuse(archive, member.name, "links are not extracted")
            if member.ischr() or member.isblk() or member.isfifo():
                raise _refuse(archive, member.name, "device or special file")
            if not (member.isdir() or member.isreg()):
                raise _refuse(archive, member.name, "not a regular file or folder")
            if relative is None:
                continue
            if member.isdir():
                (into / relative).mkdir(parents=True, exist_ok=True)
            else:
                with tar.extractfile(member) as source:
                    _write_member(source, into / relative)
            if progress:
                progress(raw.tell(), total)


def _extract_zip(archive: Path, raw, into: Path, progress: Progress | None, total: int) -> None:
    with zipfile.ZipFile(raw) as zf:
        done = 0
        for info in zf.infolist():
            relative = safe_member_path(info.filename, archive)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise _refuse(archive, info.filename, "links are not extracted")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(archive, info.filename, "device or special file")
            done += info.compress_size
            if relative is None:
                continue
            if info.is_dir():
                (into / relative).mkdir(parents=True, exist_ok=True)
            else:
                with zf.open(info) as source:
                    _write_member(source, into / relative)
            if progress:
                progress(done, total)


def replace_directory(source: Path, dest: Path) -> None:
    """Move the folder ``source`` to ``dest``, replacing what is there only once ``source`` is."""
    if not dest.exists():
        os.replace(source, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(dest, old)
    try:
        os.replace(source, dest)
    except OSError:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def extract(archive: str | os.PathLike, dest: str | os.PathLike, *,
            progress: Progress | None = None) -> Path:
    """Extract ``archive`` (tar, tar.gz/bz2/xz or zip): its contents become the folder ``dest``.

    ``dest`` is replaced as a whole, and only if the whole archive came out.
    ``progress(archive_bytes_read, archive_size)`` is called as members are written.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise P2PError(f"{archive}: no such file")
    total = archive.stat().st_size
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
    work.chmod(0o755)  # mkdtemp makes it private; it becomes an ordinary folder
    try:
        with open(archive, "rb") as raw:
            if zipfile.is_zipfile(raw):
                raw.seek(0)
                _extract_zip(archive, raw, work, progress, total)
            else:
                raw.seek(0)
                _extract_tar(archive, raw, work, progress, total)
        replace_directory(work, dest)
    except P2PError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
            gzip.BadGzipFile) as exc:
        raise P2PError(f"{archive}: corrupt, truncated or not a tar/zip archive ({exc})",
                       "delete it and fetch it again") from None
    except RuntimeError as exc:  # zipfile: encrypted members
        raise P2PError(f"{archive}: cannot extract ({exc})") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise P2PError(f"no space left on the device while extracting {archive} "
                           f"to {dest.parent}", "free some disk space or use --root") from None
        raise P2PError(f"cannot extract {archive} to {dest}: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest

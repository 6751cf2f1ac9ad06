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
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from p2p.errors import P2PError, human_bytes

Progress = Callable[[int, int | None], None]
CHUNK_SIZE = 1 << 20


def _refusal(archive: Path, name: str, why: str) -> P2PError:
    return P2PError(f"{archive}: refusing member {name!r}: {why}",
                    "the archive may be malicious; get it from a trusted source")


def safe_member_path(name: str, archive: Path) -> PurePosixPath | None:
    """The relative path a member may be written to; None for the archive root itself."""
    if "\\" in name or "\0" in name:
        raise _refusal(archive, name, "unusual characters in its name")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _refusal(archive, name, "absolute path")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise _refusal(archive, name, "'..' leads outside the folder")
    return PurePosixPath(*parts) if parts else None


REFUSED_KINDS = {"link": "links are not extracted", "special": "device or special file"}


# Per member: name, kind (file, dir, link, special), opener, declared size, archive bytes read
# so far, and the declared size of all members when the archive tells it up front (zip).
Member = tuple[str, str, Callable[[], IO[bytes]], int, int, int | None]


def _tar_members(raw) -> Iterator[Member]:
    # A tar is read as a stream: sizes are known member by member, before each is written.
    with tarfile.open(fileobj=raw, mode="r:*") as tar:
        for member in tar:
            kind = ("link" if member.issym() or member.islnk() else "dir" if member.isdir()
                    else "file" if member.isreg() else "special")
            yield (member.name, kind, partial(tar.extractfile, member), member.size, raw.tell(),
                   None)


def _zip_members(raw) -> Iterator[Member]:
    with zipfile.ZipFile(raw) as zf:
        infos = zf.infolist()
        declared = sum(info.file_size for info in infos)  # from the central directory
        done = 0
        for info in infos:
            mode = stat.S_IFMT(info.external_attr >> 16)
            kind = ("link" if mode == stat.S_IFLNK else "dir" if info.is_dir()
                    else "file" if mode in (0, stat.S_IFREG) else "special")
            done += info.compress_size
            yield info.filename, kind, partial(zf.open, info), info.file_size, done, declared


def _check_size(archive: Path, declared: int, max_bytes: int | None, free: int) -> None:
    """Refuse before writing what would outgrow the expected contents or the free space."""
    if max_bytes is not None and declared > max_bytes:
        raise P2PError(f"{archive}: its members unpack to at least {human_bytes(declared)}, far "
                       f"beyond the {human_bytes(max_bytes)} its contents can take",
                       "the archive is not the expected one (or a decompression bomb); "
                       "get it from a trusted source")
    if declared > free:
        raise P2PError(f"{archive}: its members unpack to at least {human_bytes(declared)}, but "
                       f"only {human_bytes(free)} is free there",
                       "free some disk space or use --root")


def _copy_member(archive: Path, name: str, source: IO[bytes], out: IO[bytes],
                 size: int) -> None:
    """Copy at most the member's declared ``size`` bytes: a header that lies is refused."""
    written = 0
    while chunk := source.read(min(CHUNK_SIZE, size - written + 1)):
        written += len(chunk)
        if written > size:
            raise _refusal(archive, name, f"holds more data than the {size} bytes it declares")
        out.write(chunk)


def _write_members(archive: Path, members: Iterator[Member], into: Path,
                   progress: Progress | None, total: int, max_bytes: int | None) -> None:
    free = shutil.disk_usage(into).free
    declared_so_far = 0
    for name, kind, open_member, size, done, declared_in_all in members:
        relative = safe_member_path(name, archive)
        if kind in REFUSED_KINDS:
            raise _refusal(archive, name, REFUSED_KINDS[kind])
        if relative is None:
            continue
        if kind == "dir":
            (into / relative).mkdir(parents=True, exist_ok=True)
        else:
            declared_so_far += size
            # A zip declares all sizes up front: refused before its first file is written.
            _check_size(archive, declared_so_far if declared_in_all is None else declared_in_all,
                        max_bytes, free)
            (into / relative).parent.mkdir(parents=True, exist_ok=True)
            with open_member() as source, open(into / relative, "wb") as out:
                _copy_member(archive, name, source, out, size)
        if progress:
            progress(done, total)


def replaced_copy_pattern(name: str) -> re.Pattern:
    """The names ``replace_directory`` gives the copy of folder ``name`` that it replaces (left
    behind when a process dies between its two renames)."""
    return re.compile(re.escape(f".{name}.") + r"old-[0-9a-f]{8}")


def replace_directory(source: Path, dest: Path) -> None:
    """Move the folder ``source`` to ``dest``, replacing what is there only once ``source`` is."""
    if not dest.exists():
        os.replace(source, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")  # replaced_copy_pattern
    os.replace(dest, old)
    try:
        os.replace(source, dest)
    except OSError:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def extract(archive: str | os.PathLike, dest: str | os.PathLike, *,
            progress: Progress | None = None, max_bytes: int | None = None) -> Path:
    """Extract ``archive`` (tar, tar.gz/bz2/xz or zip): its contents become the folder ``dest``.

    ``dest`` is replaced as a whole, and only if the whole archive came out.
    ``progress(archive_bytes_read, archive_size)`` is called as members are written.
    Members whose declared sizes add up to more than ``max_bytes``, or than the free disk
    space, are refused before they are written.
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
            members = _zip_members if zipfile.is_zipfile(raw) else _tar_members
            raw.seek(0)
            _write_members(archive, members(raw), work, progress, total, max_bytes)
        if progress:
            progress(total, total)  # the archive's trailer is read but belongs to no member
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

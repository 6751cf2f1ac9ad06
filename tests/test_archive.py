"""p2p.archive: extraction of good archives, refusal of malicious ones, nothing half-extracted."""

import errno
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p import archive
from p2p.errors import P2PError

FILES = {"facades/train/1.jpg": b"one", "facades/val/2.jpg": b"two" * 1000,
         "facades/test/3.jpg": b""}


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def file_member(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, b""


def make_zip(path: Path, members: dict[str, bytes], modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            zf.writestr(info, data)
    return path


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


def assert_nothing_left(parent: Path, *allowed: str) -> None:
    assert sorted(p.name for p in parent.iterdir()) == sorted(allowed)


@pytest.mark.parametrize("mode,suffix", [("w:gz", ".tar.gz"), ("w", ".tar"),
                                         ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")])
def test_tar_flavours(tmp_path, mode, suffix):
    members = [(tarfile.TarInfo("facades"), b"")]
    members[0][0].type = tarfile.DIRTYPE
    members += [file_member(name, data) for name, data in FILES.items()]
    src = make_tar(tmp_path / f"a{suffix}", members, mode)
    out = tmp_path / "out"
    calls = []
    assert archive.extract(src, out, progress=lambda d, t: calls.append((d, t))) == out
    assert tree(out) == FILES
    assert calls and calls[-1][1] == src.stat().st_size
    assert_nothing_left(tmp_path, src.name, "out")


def test_zip_and_dot_prefixed_names(tmp_path):
    dotted = {"./facades/": b"", **{f"./{name}": data for name, data in FILES.items()}}
    src = make_zip(tmp_path / "a.zip", dotted)
    out = archive.extract(src, tmp_path / "out")
    assert tree(out) == FILES


def test_existing_destination_is_replaced_whole(tmp_path):
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    (out / "old" / "stale.txt").write_text("stale")
    archive.extract(make_zip(tmp_path / "a.zip", FILES), out)
    assert tree(out) == FILES
    assert_nothing_left(tmp_path, "a.zip", "out")


MALICIOUS_TAR = {
    "traversal": [file_member("facades/ok.jpg"), file_member("../evil.txt")],
    "nested traversal": [file_member("facades/../../evil.txt")],
    "absolute": [file_member("facades/ok.jpg"), file_member("/tmp/p2p-test-evil.txt")],
    "symlink": [special_member("facades/link", tarfile.SYMTYPE, "/etc/passwd"),
                file_member("facades/link", b"overwrite through the link")],
    "hardlink": [special_member("facades/hard", tarfile.LNKTYPE, "/etc/passwd")],
    "char device": [special_member("facades/dev", tarfile.CHRTYPE)],
    "block device": [special_member("facades/blk", tarfile.BLKTYPE)],
    "fifo": [special_member("facades/fifo", tarfile.FIFOTYPE)],
    "backslash": [file_member("..\\evil.txt")],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS_TAR))
def test_malicious_tar_is_refused_and_nothing_remains(tmp_path, case):
    src = make_tar(tmp_path / "bad.tar.gz", MALICIOUS_TAR[case])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(P2PError, match="refusing member") as err:
        archive.extract(src, work / "out")
    assert "\n" not in str(err.value)
    assert_nothing_left(work)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/p2p-test-evil.txt").exists()


@pytest.mark.parametrize("members,modes", [
    ({"ok.jpg": b"x", "../evil.txt": b"x"}, None),
    ({"/abs/evil.txt": b"x"}, None),
    ({"C:/evil.txt": b"x"}, None),
    ({"link": b"/etc/passwd"}, {"link": stat.S_IFLNK | 0o777}),
    ({"fifo": b""}, {"fifo": stat.S_IFIFO | 0o644}),
])
def test_malicious_zip_is_refused(tmp_path, members, modes):
    src = make_zip(tmp_path / "bad.zip", members, modes)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(P2PError, match="refusing member"):
        archive.extract(src, work / "out")
    assert_nothing_left(work)


@pytest.mark.parametrize("content", [b"", b"not an archive at all" * 100, "truncated"])
def test_corrupt_archives(tmp_path, content):
    if content == "truncated":
        whole = make_tar(tmp_path / "whole.tar.gz",
                         [file_member(f"d/{i}.bin", os.urandom(50_000)) for i in range(5)])
        content = whole.read_bytes()[:120_000]
        whole.unlink()
    src = tmp_path / "bad.tar.gz"
    src.write_bytes(content)
    with pytest.raises(P2PError, match="corrupt, truncated or not a tar/zip archive"):
        archive.extract(src, tmp_path / "out")
    assert_nothing_left(tmp_path, "bad.tar.gz")


def test_missing_archive(tmp_path):
    with pytest.raises(P2PError, match="no such file"):
        archive.extract(tmp_path / "nope.tar.gz", tmp_path / "out")


def test_disk_full_while_extracting(tmp_path, monkeypatch):
    src = make_zip(tmp_path / "a.zip", FILES)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive, "_copy_member", full)
    with pytest.raises(P2PError, match="no space left"):
        archive.extract(src, tmp_path / "out")
    assert_nothing_left(tmp_path, "a.zip")


PART = st.sampled_from(["a", "b", "..", ".", "", "/", "c.jpg"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.lists(PART, min_size=1, max_size=4).map("/".join).filter(bool),
                      min_size=1, max_size=4, unique=True))
def test_any_member_names_stay_inside_or_are_refused(tmp_path_factory, names):
    base = tmp_path_factory.mktemp("prop")
    src = make_zip(base / "a.zip", {name: name.encode() for name in names})
    out = base / "inner" / "out"
    try:
        archive.extract(src, out)
    except P2PError:
        assert_nothing_left(base / "inner")
        return
    written = [p.resolve() for p in base.rglob("*") if p.is_file() and p.name != "a.zip"]
    assert all(out.resolve() in p.parents for p in written)


BOMB = 8 << 20  # a member of zeros, far beyond max_bytes below (it compresses to ~8 kB)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_members_beyond_the_expected_size_are_refused_before_writing(tmp_path, monkeypatch,
                                                                    kind):
    members = {"facades/train/1.jpg": b"one", "facades/train/zeros.jpg": bytes(BOMB)}
    if kind == "zip":
        with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        src = tmp_path / "bomb.zip"
    else:
        src = make_tar(tmp_path / "bomb.tar.gz", [file_member(n, d) for n, d in members.items()])
    assert src.stat().st_size < 100_000
    written = []
    copy = archive._copy_member
    monkeypatch.setattr(archive, "_copy_member",
                        lambda a, name, *rest: (written.append(name), copy(a, name, *rest)))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(P2PError) as err:
        archive.extract(src, work / "out", max_bytes=1 << 20)
    message = str(err.value)
    assert "unpack to at least 8.0 MiB, far beyond the 1.0 MiB" in message and "\n" not in message
    # A zip lists every size up front: nothing is written. A tar is a stream: each member's size
    # is checked before it is written.
    assert written == ([] if kind == "zip" else ["facades/train/1.jpg"])
    assert_nothing_left(work)
    assert archive.extract(src, work / "out", max_bytes=BOMB + 3) == work / "out"  # fits


def test_archive_larger_than_the_free_space_is_refused(tmp_path, monkeypatch):
    src = make_zip(tmp_path / "a.zip", FILES)
    usage = archive.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(P2PError, match=r"but only 1 KiB is free there \(free some disk space"):
        archive.extract(src, tmp_path / "out")
    assert_nothing_left(tmp_path, "a.zip")


def test_a_member_larger_than_its_header_says_is_refused(tmp_path):
    # The zip's central directory says 3 bytes; the member holds 3000.
    src = make_zip(tmp_path / "liar.zip", {"facades/a.jpg": b"abc" * 1000})
    data = bytearray(src.read_bytes())
    central = data.rindex(b"PK\x01\x02")
    data[central + 24:central + 28] = (3).to_bytes(4, "little")  # uncompressed size
    src.write_bytes(bytes(data))
    with pytest.raises(P2PError):
        archive.extract(src, tmp_path / "out")
    assert_nothing_left(tmp_path, "liar.zip")
    # And whatever the archive library yields, no more than the declared size is written.
    out = io.BytesIO()
    with pytest.raises(P2PError, match="holds more data than the 10 bytes it declares"):
        archive._copy_member(src, "m", io.BytesIO(bytes(100)), out, 10)
    assert len(out.getvalue()) <= 10

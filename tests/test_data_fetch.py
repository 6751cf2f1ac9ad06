"""`p2p data fetch` and `p2p data list` end to end: a real HTTP server on 127.0.0.1 serving
small generated archives, with the faults a download meets."""

import dataclasses
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from p2p import download
from p2p.data import catalog
from p2p.errors import P2PError
from p2p.images.eight_bit import encode_image
from p2p.paths import datasets_dir

TINY = catalog.Dataset("tiny", "edges", "photo", {"train": 3, "val": 2}, "tiny.tar.gz")


@pytest.fixture(autouse=True)
def tiny_dataset(monkeypatch):
    monkeypatch.setitem(catalog.DATASETS, "tiny", TINY)
    monkeypatch.setattr(download, "BACKOFF_BASE", 0.0)


def png(i: int) -> bytes:
    # Noise, so the archive is large enough (~250 kB) for a cut to land after whole chunks.
    noise = np.random.default_rng(i).integers(0, 256, (3, 96, 192), dtype=np.uint8)
    return encode_image(torch.from_numpy(noise), "PNG")


def tar_gz(members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buffer.getvalue()


def layout(name: str = "tiny", splits: dict[str, int] | None = None) -> dict[str, bytes]:
    splits = splits or TINY.splits
    return {f"{name}/{split}/{i}.png": png(i) for split, n in splits.items()
            for i in range(1, n + 1)}


GOOD = tar_gz(layout())


def serve(http_server, body: bytes = GOOD, **kwargs):
    route = http_server.add("/mirror/tiny.tar.gz", body, **kwargs)
    os.environ["P2P_DATA_MIRROR"] = f"{http_server.url}/mirror/"
    return route


def datasets_listing() -> list[str]:
    folder = datasets_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_one_line_error(r, *fragments: str) -> None:
    assert r.exit_code == 2, r.stderr
    # Progress bars may come first; the error is one line, the last.
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], r.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_fetch_from_mirror_env_then_noop_then_force(cli, http_server):
    route = serve(http_server)
    r = cli("data", "fetch", "tiny")
    assert r.exit_code == 0, r.stderr
    target = datasets_dir() / "tiny"
    assert r.out.strip() == str(target)
    assert sorted(p.name for p in (target / "train").iterdir()) == ["1.png", "2.png", "3.png"]
    assert "3 train, 2 val images" in r.stderr
    assert datasets_listing() == ["tiny"]  # archive removed, no temporary folders left

    r = cli("data", "fetch", "tiny")
    assert r.exit_code == 0 and "already complete" in r.stderr and route.hits == 1

    r = cli("data", "fetch", "tiny", "--force", "--json")
    assert r.exit_code == 0 and route.hits == 2
    assert json.loads(r.out)["splits"] == {"train": 3, "val": 2}


def test_fetch_with_url_and_root(cli, http_server, tmp_path):
    route = http_server.add("/elsewhere/x.tar.gz", GOOD)
    r = cli("data", "fetch", "tiny", "--url", f"{http_server.url}/elsewhere/x.tar.gz",
            "--root", tmp_path / "mine")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "mine" / "tiny" / "val" / "2.png").is_file() and route.hits == 1


def test_resume_after_connection_cut(cli, http_server):
    route = serve(http_server, cut_after=len(GOOD) // 2)
    r = cli("data", "fetch", "tiny")
    assert r.exit_code == 0, r.stderr
    assert route.ranges[0] is None and route.ranges[1].startswith("bytes=")
    assert route.ranges[1] != "bytes=0-"


def test_partial_download_from_an_earlier_run_is_resumed(cli, http_server):
    route = serve(http_server)
    datasets_dir().mkdir(parents=True)
    (datasets_dir() / "tiny.tar.gz.part").write_bytes(GOOD[:1000])
    assert cli("data", "fetch", "tiny").exit_code == 0
    assert route.ranges == ["bytes=1000-"]


def test_404_names_url_and_suggests_from(cli, http_server):
    os.environ["P2P_DATA_MIRROR"] = f"{http_server.url}/nothing"
    r = cli("data", "fetch", "tiny")
    assert_one_line_error(r, "HTTP 404", f"{http_server.url}/nothing/tiny.tar.gz", "--from")
    assert datasets_listing() == []


def test_500_is_retried_then_fails(cli, http_server):
    route = serve(http_server, status=500)
    r = cli("data", "fetch", "tiny")
    assert_one_line_error(r, "failed after 5 attempts", "HTTP 500", "--from")
    assert route.hits == 5


def test_no_network(cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("data", "fetch", "tiny", "--url", f"http://127.0.0.1:{port}/tiny.tar.gz")
    assert_one_line_error(r, "connection failed", f"127.0.0.1:{port}", "--from")


def test_checksum_mismatch_and_match(cli, http_server, monkeypatch):
    serve(http_server)
    monkeypatch.setitem(catalog.DATASETS, "tiny", dataclasses.replace(TINY, sha256="ab" * 32))
    r = cli("data", "fetch", "tiny")
    actual = hashlib.sha256(GOOD).hexdigest()
    assert_one_line_error(r, "checksum mismatch", "ab" * 32, actual)
    assert datasets_listing() == []  # the .part is gone too

    monkeypatch.setitem(catalog.DATASETS, "tiny", dataclasses.replace(TINY, sha256=actual[:8]))
    assert cli("data", "fetch", "tiny").exit_code == 0


def link_member(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("body", [
    tar_gz({**layout(), "tiny/../../escaped.txt": b"x"}),
    tar_gz({**layout(), "/tmp/p2p-absolute-escape.txt": b"x"}),
    tar_gz(layout(), [link_member("tiny/train/evil.png", tarfile.SYMTYPE, "/etc/passwd")]),
    tar_gz(layout(), [link_member("tiny/train/hard.png", tarfile.LNKTYPE, "/etc/passwd")]),
], ids=["traversal", "absolute", "symlink", "hardlink"])
def test_malicious_archives_are_refused(cli, http_server, body, tmp_path):
    serve(http_server, body)
    r = cli("data", "fetch", "tiny")
    assert_one_line_error(r, "refusing member")
    assert datasets_listing() == []
    assert not Path("/tmp/p2p-absolute-escape.txt").exists()
    assert not (datasets_dir().parent / "escaped.txt").exists()


def test_wrong_image_counts(cli, http_server):
    serve(http_server, tar_gz(layout(splits={"train": 2, "val": 2})))
    r = cli("data", "fetch", "tiny")
    assert_one_line_error(r, "train/ has 2 images, expected 3")
    assert datasets_listing() == []


def test_corrupt_archive(cli, http_server):
    serve(http_server, GOOD[: len(GOOD) // 2] + b"garbage")
    r = cli("data", "fetch", "tiny")
    assert_one_line_error(r, "corrupt, truncated or not a tar/zip archive")
    assert datasets_listing() == []


def test_failed_force_keeps_the_complete_copy(cli, http_server):
    serve(http_server)
    assert cli("data", "fetch", "tiny").exit_code == 0
    serve(http_server, tar_gz(layout(splits={"train": 1, "val": 2})))
    r = cli("data", "fetch", "tiny", "--force")
    assert r.exit_code == 2
    assert len(list((datasets_dir() / "tiny" / "train").iterdir())) == 3
    assert datasets_listing() == ["tiny"]


def test_from_zip_without_top_folder(cli, tmp_path):
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in layout().items():
            zf.writestr(name.removeprefix("tiny/"), data)
    r = cli("data", "fetch", "tiny", "--from", archive)
    assert r.exit_code == 0, r.stderr
    assert (datasets_dir() / "tiny" / "train" / "3.png").is_file()
    assert archive.exists()  # the user's archive is left alone


def test_from_archive_with_other_content(cli, tmp_path):
    archive = tmp_path / "other.tar.gz"
    archive.write_bytes(tar_gz({"something/else.png": png(1)}))
    r = cli("data", "fetch", "tiny", "--from", archive)
    assert_one_line_error(r, "does not contain the expected folders", "tiny/train/")


def test_unknown_dataset_and_synthetic_options(cli):
    assert_one_line_error(cli("data", "fetch", "facade"), "unknown dataset 'facade'",
                          "did you mean 'facades'")
    assert_one_line_error(cli("data", "fetch", "synthetic", "--url", "http://x/y"),
                          "generated locally")


def test_list_shows_status(cli, http_server):
    serve(http_server)
    cli("data", "fetch", "tiny")
    (datasets_dir() / "maps" / "train").mkdir(parents=True)
    r = cli("data", "list", "--json")
    status = {row["name"]: row["status"] for row in json.loads(r.out)}
    assert status["tiny"] == "complete" and status["maps"] == "incomplete"
    assert status["facades"] == "absent"
    table = cli("data", "list").out.splitlines()
    assert table[0].split() == ["NAME", "A", "|", "B", "SPLITS", "DOWNLOAD", "LOCAL"]
    assert any(line.startswith("facades") and "train 400 val 100 test 106" in line
               for line in table)


def test_data_list_starts_without_torch(tmp_path):
    """Listing the catalog imports no torch (2.5 s of start-up on 2 cores, for a table)."""
    code = ("import sys; sys.argv = ['p2p', 'data', 'list']\n"
            "from p2p.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "P2P_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False"


def test_resolve_dataset(tmp_path):
    assert catalog.resolve_dataset(str(tmp_path)) == tmp_path
    with pytest.raises(P2PError, match="p2p data fetch facades"):
        catalog.resolve_dataset("facades")
    with pytest.raises(P2PError, match="did you mean 'maps'"):
        catalog.resolve_dataset("mapz")
    generated = catalog.resolve_dataset("synthetic", root=tmp_path / "root")
    assert generated == tmp_path / "root" / "synthetic"
    assert catalog.status(catalog.DATASETS["synthetic"], generated) == "complete"
    assert catalog.count_images(catalog.DATASETS["synthetic"], generated) == \
        catalog.DATASETS["synthetic"].splits


def test_official_urls():
    assert catalog.archive_url(catalog.DATASETS["facades"]) == \
        "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz"
    for dataset in catalog.DATASETS.values():
        assert dataset.archive in (None, f"{dataset.name}.tar.gz")


@pytest.mark.slow
def test_real_facades_from_official_layout_archive(cli, shared, tmp_path):
    archive = tmp_path / "facades.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "val", "test"):
            for path in sorted((shared / "facades" / split).glob("*.jpg")):
                tar.add(path, arcname=f"facades/{split}/{path.name}")
    r = cli("data", "fetch", "facades", "--from", archive)
    assert r.exit_code == 0, r.stderr
    assert "400 train, 100 val, 106 test images" in r.stderr
    target = datasets_dir() / "facades"
    recorded = (shared / "facades" / "val.sha256").read_text().split()
    digests = dict(zip(recorded[1::2], recorded[0::2], strict=True))
    some = sorted(digests)[:5]
    for name in some:
        on_disk = hashlib.sha256((target / "val" / Path(name).name).read_bytes()).hexdigest()
        assert on_disk == digests[name]
    assert "complete" in cli("data", "list").out.splitlines()[1]


def test_interrupted_extraction_keeps_the_download_for_the_next_run(http_server, monkeypatch):
    from p2p.data import fetch as fetch_module

    route = serve(http_server)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(fetch_module, "extract", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fetch_module.fetch("tiny")
    assert datasets_listing() == ["tiny.tar.gz"]
    result = fetch_module.fetch("tiny")
    assert route.hits == 1 and result.splits == TINY.splits
    assert datasets_listing() == ["tiny"]


def test_archive_far_beyond_the_catalogued_size_is_refused(cli, http_server, monkeypatch):
    # The images are 192x96: the catalogue's ceiling is 5 images at twice their raw size.
    monkeypatch.setitem(catalog.DATASETS, "tiny", dataclasses.replace(TINY, image_size=(96, 192)))
    assert catalog.DATASETS["tiny"].max_unpacked_bytes == 5 * 2 * 3 * 192 * 96
    serve(http_server, tar_gz({**layout(), "tiny/train/zeros.bin": bytes(8 << 20)}))
    r = cli("data", "fetch", "tiny")
    assert_one_line_error(r, "unpack to at least 8.", "far beyond the 540 KiB",
                          "decompression bomb")
    assert datasets_listing() == []
    serve(http_server)  # the real thing fits
    assert cli("data", "fetch", "tiny").exit_code == 0


def test_catalogued_sizes_hold_the_published_archives():
    facades = catalog.DATASETS["facades"]
    assert facades.max_unpacked_bytes > 10 * facades.approx_bytes  # 31 MB of JPEGs in fact
    published = ["facades", "cityscapes", "maps", "edges2shoes", "edges2handbags", "night2day"]
    assert all(catalog.DATASETS[name].max_unpacked_bytes for name in published)

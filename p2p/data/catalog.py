"""The known datasets: where they come from, what a complete copy holds, and where it lives.

The six published pix2pix datasets are the archives of the official dataset server (the names and
URLs of the reference download script); ``synthetic`` is generated locally. A dataset lives in
``$P2P_HOME/datasets/NAME`` (or ``ROOT/NAME``) and counts as complete when every split holds the
expected number of images; a marker file written on install saves recounting.
"""

import contextlib
import difflib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from p2p.archive import replace_directory, replaced_copy_pattern
from p2p.data import synthetic
from p2p.errors import P2PError
from p2p.paths import datasets_dir, write_bytes_atomic, writing
from p2p.run_lock import locked

OFFICIAL_BASE_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets"
MIRROR_ENV = "P2P_DATA_MIRROR"
MARKER = ".p2p-dataset.json"


@dataclass(frozen=True)
class Dataset:
    name: str
    a: str  # what the left half (A) of each image shows
    b: str  # and the right half (B)
    splits: dict[str, int]  # expected image count per split folder
    archive: str | None  # file name on the server; None: generated locally
    approx_bytes: int | None = None  # download size for display (server listing, rounded)
    size: int | None = None  # exact archive size in bytes, verified when known
    sha256: str | None = None  # archive digest (or prefix), verified when known
    note: str = ""
    image_size: tuple[int, int] | None = None  # (height, width) of every A|B image

    @property
    def max_unpacked_bytes(self) -> int | None:
        """A generous ceiling on what the archive unpacks to: every image at twice its raw RGB
        size (the published JPEGs are ~10x smaller), so only a wrong archive or a decompression
        bomb exceeds it. None where the image size is not known."""
        if self.image_size is None:
            return None
        height, width = self.image_size
        return sum(self.splits.values()) * 2 * 3 * height * width


MiB = 1 << 20  # the server's listing counts in powers of two
GiB = 1 << 30
# No sha256 or exact byte size of the official archives could be established from a source we
# trust, so downloads are checked by the server's Content-Length and, after extraction, by the
# image count of every split (counts: pix2pix paper and listings of the extracted archives).
# Image sizes: 256x256 per half, maps 600x600 (the archives' images, as in ../shared samples).
HALVES_256, HALVES_600 = (256, 512), (600, 1200)  # (height, width): two halves side by side
DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("facades", "photo", "label map", {"train": 400, "val": 100, "test": 106},
            "facades.tar.gz", 29 * MiB, note="CMP Facade Database; published run is BtoA",
            image_size=HALVES_256),
    Dataset("cityscapes", "photo", "label map", {"train": 2975, "val": 500},
            "cityscapes.tar.gz", 99 * MiB,
            note="Cityscapes license: the server may refuse it; build it from "
                 "cityscapes-dataset.com and use --from", image_size=HALVES_256),
    Dataset("maps", "aerial photo", "map", {"train": 1096, "val": 1098},
            "maps.tar.gz", 239 * MiB, image_size=HALVES_600),
    Dataset("edges2shoes", "edges", "photo", {"train": 49825, "val": 200},
            "edges2shoes.tar.gz", 2 * GiB, image_size=HALVES_256),
    Dataset("edges2handbags", "edges", "photo", {"train": 138567, "val": 200},
            "edges2handbags.tar.gz", 8 * GiB, image_size=HALVES_256),
    Dataset("night2day", "night", "day", {"train": 17823, "val": 10, "test": 2287},
            "night2day.tar.gz", 1900 * MiB, image_size=HALVES_256),
    Dataset("synthetic", "label map", "render", dict(synthetic.SPLITS), None,
            note="generated locally, no network"),
]}


def get(name: str) -> Dataset:
    if name not in DATASETS:
        raise P2PError(f"unknown dataset '{name}'{_did_you_mean(name)}",
                       f"known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, DATASETS, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def dataset_dir(name: str, root: Path | None = None) -> Path:
    return Path(root or datasets_dir()) / name


def archive_url(dataset: Dataset, url: str | None = None) -> str:
    """``url`` if given, else the archive under ``$P2P_DATA_MIRROR``, else the official server."""
    if url:
        return url
    base = os.environ.get(MIRROR_ENV) or OFFICIAL_BASE_URL
    return f"{base.rstrip('/')}/{dataset.archive}"


def count_images(dataset: Dataset, folder: Path) -> dict[str, int]:
    from p2p.images.files import (
        list_images,  # here: p2p.images imports torch, `data list` needs none
    )

    return {split: len(list_images(folder / split)) if (folder / split).is_dir() else 0
            for split in dataset.splits}


def _recorded_counts(folder: Path) -> dict[str, int] | None:
    try:
        return json.loads((folder / MARKER).read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def status(dataset: Dataset, folder: Path) -> str:
    """'complete', 'incomplete' (the folder is there, the counts are not) or 'absent'."""
    if not folder.is_dir():
        return "absent"
    counts = _recorded_counts(folder) or count_images(dataset, folder)
    return "complete" if counts == dataset.splits else "incomplete"


def verify(dataset: Dataset, folder: Path, label: str) -> dict[str, int]:
    """Raise P2PError unless every split of ``folder`` holds the expected number of images."""
    counts = count_images(dataset, folder)
    wrong = [f"{split}/ has {counts[split]} images, expected {expected}"
             for split, expected in dataset.splits.items() if counts[split] != expected]
    if wrong:
        raise P2PError(f"{label}: {'; '.join(wrong)}",
                       "the archive is incomplete or not the published one")
    return counts


def install(dataset: Dataset, folder: Path, target: Path, source: str) -> dict[str, int]:
    """Verify ``folder``, record it as complete and move it to ``target`` (replacing one there).
    """
    counts = verify(dataset, folder, source)
    record = {"name": dataset.name, "splits": counts, "source": source}
    write_bytes_atomic(folder / MARKER, json.dumps(record, indent=1).encode())
    folder.chmod(0o755)  # it may come from mkdtemp, which makes folders private
    replace_directory(folder, target)
    return counts


def generate_synthetic(target: Path) -> dict[str, int]:
    """Generate the built-in dataset beside ``target`` and install it there (call it while
    ``preparing`` the target)."""
    with (writing(target),
          tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as work):
        folder = synthetic.generate(Path(work) / target.name)
        return install(DATASETS["synthetic"], folder, target, "generated")


def _leftover_names(name: str) -> tuple[re.Pattern, re.Pattern]:
    """The hidden folders a dataset's preparation makes beside it: work folders (tempfile's
    names: 8 characters of [a-z0-9_]) and a replaced copy (archive.replace_directory)."""
    return re.compile(re.escape(f".{name}.") + r"[a-z0-9_]{8}"), replaced_copy_pattern(name)


@contextlib.contextmanager
def preparing(target: Path, *, wait: bool = True) -> Iterator[bool]:
    """Prepare (fetch, generate) the dataset folder ``target`` as its only preparer.

    Holds ``.NAME.lock`` beside it (waiting for another process that holds it, unless ``wait``
    is False: then yields False and does nothing). While held, no other process works on this
    dataset, so hidden work folders beside it are leftovers of killed processes: they are
    removed, and a replaced copy whose replacement never arrived is put back.
    """
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / f".{target.name}.lock", wait=wait) as held:
        if held:
            work, replaced = _leftover_names(target.name)
            for path in sorted(target.parent.iterdir()):
                if replaced.fullmatch(path.name) and not target.exists():
                    os.replace(path, target)
                elif work.fullmatch(path.name) or replaced.fullmatch(path.name):
                    shutil.rmtree(path, ignore_errors=True)
        yield held


def resolve_dataset(name_or_path: str, root: Path | None = None) -> Path:
    """A dataset folder from a path or a known name (generating ``synthetic`` on demand)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if name_or_path not in DATASETS:
        raise P2PError(f"{name_or_path}: no such folder, and not a known dataset"
                       f"{_did_you_mean(name_or_path)}",
                       f"known datasets: {', '.join(DATASETS)}")
    target = dataset_dir(name_or_path, root)
    if target.is_dir():
        with contextlib.suppress(P2PError), preparing(target, wait=False):
            pass  # removes what killed preparers left, unless one is at work (or read-only)
        return target
    if name_or_path == "synthetic":
        with preparing(target):
            if not target.is_dir():  # unless another process made it meanwhile
                generate_synthetic(target)
        return target
    where = f" --root {root}" if root else ""
    raise P2PError(f"dataset '{name_or_path}' is not here ({target}); "
                   f"fetch it with: p2p data fetch {name_or_path}{where}")

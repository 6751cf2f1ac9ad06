"""Getting a known dataset onto disk: download (or take a local archive), extract, verify, install.

Work happens in a hidden temporary folder beside the dataset's folder; the dataset's folder
appears (or is replaced, with ``force``) only once the archive is fully extracted and every split
holds the expected number of images.
"""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2p.archive import extract
from p2p.data import catalog
from p2p.download import download
from p2p.errors import P2PError
from p2p.paths import writing

# progress(stage, done, total): stage is a short description such as "download facades.tar.gz".
StageProgress = Callable[[str, int, int | None], None]


@dataclass
class FetchResult:
    name: str
    path: Path
    splits: dict[str, int]
    source: str  # the URL, the local archive, or "generated"
    already_present: bool = False


def _split_root(dataset: catalog.Dataset, content: Path, label: str) -> Path:
    """The folder holding train/ val/ ...: the archive's top, or its single top-level folder."""
    candidates = [content, content / dataset.name, *sorted(p for p in content.iterdir()
                                                            if p.is_dir())]
    for folder in candidates:
        if all((folder / split).is_dir() for split in dataset.splits):
            return folder
    expected = ", ".join(f"{dataset.name}/{split}/" for split in dataset.splits)
    raise P2PError(f"{label}: does not contain the expected folders ({expected})",
                   "is it the right archive?")


def _staged(progress: StageProgress | None, stage: str):
    return (lambda done, total: progress(stage, done, total)) if progress else None


def fetch(name: str, *, root: Path | None = None, url: str | None = None,
          archive: Path | None = None, force: bool = False,
          progress: StageProgress | None = None) -> FetchResult:
    """Make dataset ``name`` complete under ``root`` (default ``$P2P_HOME/datasets``).

    ``archive``: a local .tar.gz/.zip to use instead of downloading. ``url``: download from there
    instead of ``$P2P_DATA_MIRROR`` or the official server. A complete dataset is left alone
    unless ``force``. One process at a time fetches a dataset (another one waits, then finds it
    complete); what killed fetches left is removed first.
    """
    dataset = catalog.get(name)  # an unknown name is refused before anything is made
    target = catalog.dataset_dir(name, root)
    with catalog.preparing(target), writing(target):
        return _fetch(dataset, target, url=url, archive=archive, force=force, progress=progress)


def _fetch(dataset: catalog.Dataset, target: Path, *, url: str | None, archive: Path | None,
           force: bool, progress: StageProgress | None) -> FetchResult:
    """Under ``preparing(target)``, which made target's parent folder."""
    name = dataset.name
    if not force and catalog.status(dataset, target) == "complete":
        return FetchResult(name, target, dict(dataset.splits), str(target), already_present=True)
    if dataset.archive is None:
        if url or archive:
            raise P2PError(f"'{name}' is generated locally; --url and --from do not apply")
        return FetchResult(name, target, catalog.generate_synthetic(target), "generated")
    downloaded = archive is None
    source = catalog.archive_url(dataset, url) if downloaded else str(archive)
    if downloaded:
        local = target.parent / dataset.archive
        try:
            download(source, local, sha256=dataset.sha256, size=dataset.size,
                     progress=_staged(progress, f"download {dataset.archive}"))
        except P2PError as exc:
            retry = f"with the archive at hand: p2p data fetch {name} --from FILE"
            raise P2PError(exc.message, f"{exc.hint}; or, {retry}" if exc.hint else retry) from None
    else:
        local = Path(archive)
    try:
        with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=target.parent) as work:
            content = extract(local, Path(work) / "content",
                              progress=_staged(progress, f"extract {local.name}"),
                              max_bytes=dataset.max_unpacked_bytes)
            splits = catalog.install(dataset, _split_root(dataset, content, source), target, source)
    except P2PError:
        if downloaded:  # unusable; kept, the next run would reuse it instead of downloading
            local.unlink(missing_ok=True)
        raise
    # Interrupted (Ctrl-C) extraction keeps the download for the next run; success drops it.
    if downloaded:
        local.unlink()
    return FetchResult(name, target, splits, source)

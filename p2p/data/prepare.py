"""Your own data: pair A/ and B/ into A|B images, cut them back apart, split into train/val/test.

Every image is read through p2p.images, so a corrupt or unreadable file is reported by name and
skipped, never a crash half-way. Every file is written atomically.
"""

import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from p2p.errors import P2PError
from p2p.images.eight_bit import open_image, save_image
from p2p.images.files import images_by_name, list_images
from p2p.limits import MAX_PIXELS, MAX_SIDE
from p2p.paths import atomic_path, writing

Progress = Callable[[int, int | None], None]
EXTENSIONS = ("png", "jpg")
SPLIT_MODES = ("copy", "link", "move")


@dataclass
class Skipped:
    name: str
    reason: str


@dataclass
class Report:
    written: dict[str, int] = field(default_factory=dict)  # output folder -> files written
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.written.values())


# An image of at most this many colours is taken for a label map: resized without blending.
LABEL_MAP_COLOURS = 256


def _output_name(path: Path, folder: Path, ext: str | None) -> Path:
    relative = path.relative_to(folder)
    return relative.with_suffix(f".{ext}") if ext else relative


def _check_ext(ext: str | None) -> None:
    if ext is not None and ext not in EXTENSIONS:
        raise P2PError(f"unknown output format {ext!r}", f"use one of {', '.join(EXTENSIONS)}")


def _check_outputs(outputs: list[Path], inputs: list[Path]) -> None:
    """Refuse an output folder that is an input folder, holds one, or lies inside one: it would
    overwrite the inputs, or mix its results into them (read again by the next run)."""
    for output in outputs:
        out = output.resolve()
        for folder in inputs:
            source = Path(folder).resolve()
            relation = ("is" if out == source else "contains" if out in source.parents
                        else "is inside" if source in out.parents else None)
            if relation:
                raise P2PError(f"{output}: the output folder {relation} the input folder "
                               f"{folder}", "choose an output folder apart from the inputs")


def _width_at(img: Image.Image, height: int) -> int:
    """``img``'s width at ``height``, keeping its aspect ratio."""
    return img.width if img.height == height else max(1, round(img.width * height / img.height))


def pair(a_dir: Path, b_dir: Path, out_dir: Path, *, height: int | None = None,
         strict: bool = False, ext: str | None = "png",
         progress: Progress | None = None) -> Report:
    """Write ``A|B`` side-by-side images for every name present in both ``a_dir`` and ``b_dir``.

    Names match on the relative path without extension. With ``height`` both halves are resized
    (keeping their aspect ratio) to that height; without it, halves of different heights are
    skipped. Unmatched names are skipped and reported, or with ``strict`` fail before anything is
    written. The pairs are PNG unless ``ext`` says otherwise (None: A's format): a label map
    saved as JPEG gains hundreds of colours that are not labels. A side of few colours (a label
    map) is resized by nearest neighbour, for the same reason.
    """
    _check_ext(ext)
    if height is not None and not 1 <= height <= MAX_SIDE:
        raise P2PError(f"--height must be from 1 to {MAX_SIDE}, got {height}")
    _check_outputs([Path(out_dir)], [Path(a_dir), Path(b_dir)])
    a_files, b_files = images_by_name(a_dir), images_by_name(b_dir)
    unmatched = [Skipped(a_files[k].relative_to(a_dir).as_posix(), f"no match in {b_dir}")
                 for k in sorted(a_files.keys() - b_files.keys())]
    unmatched += [Skipped(b_files[k].relative_to(b_dir).as_posix(), f"no match in {a_dir}")
                  for k in sorted(b_files.keys() - a_files.keys())]
    if strict and unmatched:
        names = ", ".join(s.name for s in unmatched[:5])
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        raise P2PError(f"{len(unmatched)} files have no partner: {names}{more}",
                       "drop --strict to skip them")
    report = Report(written={str(out_dir): 0}, skipped=unmatched)
    keys = sorted(a_files.keys() & b_files.keys())
    for done, key in enumerate(keys, 1):
        a_path = a_files[key]
        dest = Path(out_dir) / _output_name(a_path, Path(a_dir), ext)
        problem = _pair_one(a_path, b_files[key], dest, height)
        if problem:
            report.skipped.append(Skipped(a_path.relative_to(a_dir).as_posix(), problem))
        else:
            report.written[str(out_dir)] += 1
        if progress:
            progress(done, len(keys))
    return report


def _pair_one(a_path: Path, b_path: Path, dest: Path, height: int | None) -> str | None:
    """Write one A|B image; return why not, if it cannot be made."""
    try:
        a_img, b_img = open_image(a_path), open_image(b_path)
    except P2PError as exc:
        return str(exc)
    if height is None and a_img.height != b_img.height:
        return f"heights differ ({a_img.height} vs {b_img.height}); use --height"
    height = height or a_img.height
    a_width, b_width = _width_at(a_img, height), _width_at(b_img, height)
    # Checked before resizing: a narrow image at a large --height grows without bound, and p2p
    # reads no image over MAX_PIXELS back.
    if (a_width + b_width) * height > MAX_PIXELS:
        return (f"the A|B image would be {a_width + b_width}x{height} pixels, more than "
                f"{MAX_SIDE}x{MAX_SIDE}; use a smaller --height")
    combined = Image.new("RGB", (a_width + b_width, height))
    for img, left, width in ((a_img, 0, a_width), (b_img, a_width, b_width)):
        if img.size != (width, height):
            labels = img.getcolors(LABEL_MAP_COLOURS) is not None
            img = img.resize((width, height), Image.Resampling.NEAREST if labels
                             else Image.Resampling.BICUBIC)
        combined.paste(img, (left, 0))
    save_image(combined, dest)
    return None


def unpair(ab_dir: Path, out_dir: Path, *, ext: str | None = None,
           progress: Progress | None = None) -> Report:
    """Cut every ``A|B`` image of ``ab_dir`` in half into ``out_dir/A`` and ``out_dir/B``."""
    _check_ext(ext)
    ab_dir, out_dir = Path(ab_dir), Path(out_dir)
    _check_outputs([out_dir / "A", out_dir / "B"], [ab_dir])
    files = list_images(ab_dir)
    report = Report(written={str(out_dir / "A"): 0, str(out_dir / "B"): 0})
    for done, path in enumerate(files, 1):
        problem = _unpair_one(path, out_dir / "A", out_dir / "B", _output_name(path, ab_dir, ext))
        if problem:
            report.skipped.append(Skipped(path.relative_to(ab_dir).as_posix(), problem))
        else:
            report.written[str(out_dir / "A")] += 1
            report.written[str(out_dir / "B")] += 1
        if progress:
            progress(done, len(files))
    return report


def _unpair_one(path: Path, a_dir: Path, b_dir: Path, relative: Path) -> str | None:
    try:
        img = open_image(path)
    except P2PError as exc:
        return str(exc)
    if img.width % 2:
        return f"odd width {img.width}: not two equal halves"
    half = img.width // 2
    save_image(img.crop((0, 0, half, img.height)), a_dir / relative)
    save_image(img.crop((half, 0, img.width, img.height)), b_dir / relative)
    return None


def _check_fractions(val: float, test: float) -> None:
    if val < 0 or test < 0 or val + test >= 1:
        raise P2PError(f"--val {val:g} and --test {test:g} must be >= 0 and leave some for train",
                       "for example --val 0.1 --test 0.1")


def assign_splits(names: list[str], val: float, test: float, seed: int) -> dict[str, str]:
    """Which split each name goes to: the same names, ratios and seed always give the same answer.

    The names are sorted, shuffled with ``seed``, and cut into val, test and train (the rest) with
    counts rounded from the ratios.
    """
    _check_fractions(val, test)
    order = sorted(names)
    random.Random(seed).shuffle(order)
    n_val, n_test = round(val * len(order)), round(test * len(order))
    return {name: "val" if i < n_val else "test" if i < n_val + n_test else "train"
            for i, name in enumerate(order)}


def _place(source: Path, dest: Path, mode: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "move":
        try:
            os.replace(source, dest)
            return
        except OSError:  # another file system: copy, then remove the original
            pass
    with atomic_path(dest) as tmp:
        if mode == "link":
            tmp.unlink()
            os.link(source, tmp)
        else:
            shutil.copyfile(source, tmp)
    if mode == "move":
        source.unlink()


def split(pairs_dir: Path, out_dir: Path, *, val: float = 0.1, test: float = 0.1, seed: int = 0,
          mode: str = "copy", progress: Callable[[str, int, int], None] | None = None) -> Report:
    """Distribute the images of ``pairs_dir`` into ``out_dir/train``, ``/val`` and ``/test``.

    ``mode`` is "copy" (default), "link" (hard links, same file system) or "move". Files already
    under ``out_dir`` are never inputs, so ``out_dir`` may be ``pairs_dir`` itself. Images that do
    not decode are reported and left where they are; the fractions apply to the others.
    ``progress(stage, done, total)``: stage "checking" (decoding each file), then "placing".
    """
    if mode not in SPLIT_MODES:
        raise P2PError(f"unknown mode {mode!r}", f"use one of {', '.join(SPLIT_MODES)}")
    _check_fractions(val, test)
    pairs_dir, out_dir = Path(pairs_dir), Path(out_dir)
    outputs = [(out_dir / s).resolve() for s in ("train", "val", "test")]
    files = {path.relative_to(pairs_dir).as_posix(): path for path in list_images(pairs_dir)
             if not any(o in path.resolve().parents for o in outputs)}
    if not files:
        raise P2PError(f"{pairs_dir}: no images to split")
    report = Report(written={str(out_dir / s): 0 for s in ("train", "val", "test")})
    # Decode every image first: the fractions are of the images that will be placed.
    placeable = []
    for done, name in enumerate(sorted(files), 1):
        try:
            open_image(files[name])
        except P2PError as exc:
            report.skipped.append(Skipped(name, str(exc)))
        else:
            placeable.append(name)
        if progress:
            progress("checking", done, len(files))
    assignment = assign_splits(placeable, val, test, seed)
    for done, (name, split_name) in enumerate(sorted(assignment.items()), 1):
        with writing(out_dir / split_name / name):  # P2PError naming it when it cannot
            _place(files[name], out_dir / split_name / name, mode)
        report.written[str(out_dir / split_name)] += 1
        if progress:
            progress("placing", done, len(assignment))
    return report

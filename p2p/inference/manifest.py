"""Input manifests (``p2p translate --list``): the images of a job named in a file.

A ``.csv`` file lists them in its ``path`` column (other columns are ignored); any other file
lists one path per line (blank lines and lines starting with ``#`` are skipped). Relative paths
are relative to the manifest's folder, so a manifest travels with its images. Outputs keep each
image's path relative to the common root of the listed images, as a folder's do.
"""

import csv
import io
import os
from pathlib import Path

from p2p.errors import P2PError
from p2p.images.files import IMAGE_EXTENSIONS, is_image_file, open_file

SHOWN = 5  # missing files named in the error before "and N more"
PATH_COLUMN = "path"


def read_manifest(manifest: Path) -> list[Path]:
    """The paths ``manifest`` lists, in its order, relative ones resolved from its folder."""
    with open_file(manifest, str(manifest)) as file:
        try:
            text = io.TextIOWrapper(file, encoding="utf-8-sig").read()
        except UnicodeDecodeError:
            raise P2PError(f"{manifest}: not a text file (UTF-8)",
                           "list one image path per line, or a CSV with a 'path' column") from None
    if manifest.suffix.lower() == ".csv":
        rows = csv.DictReader(io.StringIO(text))
        if PATH_COLUMN not in (rows.fieldnames or []):
            raise P2PError(f"{manifest}: no '{PATH_COLUMN}' column",
                           f"name the column of image paths '{PATH_COLUMN}'")
        names = [(row[PATH_COLUMN] or "").strip() for row in rows]
    else:
        names = [line.strip() for line in text.splitlines()]
    paths = [manifest.parent / name for name in names if name and not name.startswith("#")]
    if not paths:
        raise P2PError(f"{manifest}: lists no images")
    return [Path(os.path.normpath(path)) for path in paths]


def listed_images(manifest: Path, skip_missing: bool = False) -> tuple[Path, list[Path]]:
    """The common root of the images ``manifest`` lists, and the images. Names without an image
    extension are refused; missing files too, all named in one line, unless ``skip_missing``
    (the caller then reports each as a bad input)."""
    paths = read_manifest(manifest)
    for path in paths:
        if not is_image_file(path):
            raise P2PError(f"{manifest}: {path} is not an image file name",
                           f"image files end in {', '.join(sorted(IMAGE_EXTENSIONS))}")
    missing = [path for path in paths if not path.exists()]
    if missing and not skip_missing:
        more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        raise P2PError(f"{manifest}: {len(missing)} listed file(s) missing: "
                       f"{', '.join(map(str, missing[:SHOWN]))}{more}",
                       "fix the list, or add --skip-bad to translate the others")
    root = Path(os.path.commonpath([path.absolute().parent for path in paths]))
    return root, [path.absolute() for path in paths]

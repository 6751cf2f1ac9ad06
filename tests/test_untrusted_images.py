"""The audit's "untrusted image bytes" class (security issue 21): crafted files fed to every
reader of image bytes p2p has, through the real CLI where a user meets them.

Each crafted input is made here, small: a header declaring what the bytes do not hold. What is
checked is that the refusal is one P2PError line (exit 2 from the CLI) and comes before the
decoder or an allocation. Kept as a growing module: a new surface that reads images or arrays
gets its crafted inputs tried here the same way.
"""

import ast
import contextlib
import io
import os
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from p2p_testing import make_checkpoint
from PIL import EpsImagePlugin, Image

from p2p.errors import ImageTooLarge, P2PError
from p2p.images import eight_bit, files, raster
from p2p.metrics import frechet

ROOT = Path(__file__).resolve().parent.parent
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto " \
      b"stroke\nshowpage\n%%EOF\n"
TIFF_TAGS = {"width": 256, "height": 257, "samples": 277, "rows_per_strip": 278}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def one_error_line(r, *fragments: str) -> None:
    """A CLI result that is one ``error:`` line naming ``fragments``, exit 2, no traceback."""
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert all(fragment in r.stderr for fragment in fragments), r.stderr


def tiff_declaring(pages: int = 1, compression: str | None = None, **tags: int) -> bytes:
    """A TIFF of ``pages`` 2x2 gray pages whose ``tags`` (TIFF_TAGS) declare other values."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((pages, 2, 2), np.uint8), metadata=None,
                     compression=compression)
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    while ifd:  # every page's tags, each rewritten as one LONG
        count = struct.unpack_from("<H", data, ifd)[0]
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag = struct.unpack_from("<H", data, entry)[0]
            for name, value in tags.items():
                if TIFF_TAGS[name] == tag:
                    struct.pack_into("<HHII", data, entry, tag, 4, 1, value)
        ifd = struct.unpack_from("<I", data, ifd + 2 + 12 * count)[0]
    return bytes(data)


def looped_tiff() -> bytes:
    """200 pages whose last one points back to page 150: tifffile checks for loops only among
    the first 100 pages, so counting them would go on for 2^32 steps."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((200, 2, 2), np.uint8), metadata=None)
    data = bytearray(buffer.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        offsets = [page.offset for page in tif.pages]
    last = offsets[-1]
    struct.pack_into("<I", data, last + 2 + 12 * struct.unpack_from("<H", data, last)[0],
                     offsets[150])
    return bytes(data)


def npy_declaring(shape: tuple[int, ...], dtype: str = "|u1", data: bytes = b"") -> bytes:
    """An .npy header declaring ``shape`` of ``dtype``, and only ``data`` behind it."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def no_decoding(monkeypatch) -> list[str]:
    """What would decode: Pillow's Ghostscript, any subprocess, tifffile's pixel reads and
    np.load; each call is recorded (and refused) in the list returned."""
    calls: list[str] = []

    def refuse(name):
        def record(*args, **kwargs):
            calls.append(name)
            raise RuntimeError(f"{name} was reached")
        return record

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", refuse("Ghostscript"))
    monkeypatch.setattr(subprocess, "Popen", refuse("subprocess"))
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", refuse("tifffile"))
    monkeypatch.setattr(np, "load", refuse("np.load"))
    return calls


# ---- formats: an allow-list ------------------------------------------------------------------

def test_pillow_opens_only_the_allow_list_everywhere():
    assert {fmt for fmt in files.FORMATS.values() if fmt != "NPY"} <= set(files.PIL_FORMATS)
    assert not {"EPS", "PS", "PDF"} & set(files.PIL_FORMATS)
    for path in (ROOT / "p2p").rglob("*.py"):  # the code's calls, not the docs' examples
        for call in ast.walk(ast.parse(path.read_text())):
            if isinstance(call, ast.Call) and ast.unparse(call.func) == "Image.open":
                keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
                assert keywords.get("formats") == "PIL_FORMATS", f"{path}:{call.lineno}"


@pytest.mark.parametrize("name", ["x.png", "x.jpg"])
def test_eps_in_a_translate_folder_never_reaches_ghostscript(cli, checkpoint, tmp_path,
                                                           monkeypatch, name):
    calls = no_decoding(monkeypatch)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(EPS)
    r = cli("translate", "-c", checkpoint, tmp_path / "in", tmp_path / "out")
    one_error_line(r, name, "not an image")
    assert calls == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("read", [raster.read_raster, raster.decode_image, eight_bit.open_image,
                                  lambda data: eight_bit.declared_size(data, "<stdin>")])
def test_eps_bytes_are_not_an_image_to_any_reader(monkeypatch, read):
    calls = no_decoding(monkeypatch)
    with pytest.raises(P2PError, match="not an image"):
        read(EPS)
    assert calls == []


# ---- TIFF: pages, header bombs, strips -------------------------------------------------------

def test_pages_times_size_is_limited_before_decoding(monkeypatch):
    # 300 pages of 8x8 under a limit of 299 such pages: the real limit, 2 GiB, scaled down.
    monkeypatch.setattr(files, "MAX_DECODED_BYTES", 299 * 8 * 8)
    data = raster.encode_raster(np.zeros((8, 8, 300), np.uint8), "TIFF")
    calls = no_decoding(monkeypatch)
    with pytest.raises(ImageTooLarge, match=r"many.tif: 8x8 pixels of 300 uint8 channel\(s\)"):
        raster.read_raster(data, "many.tif")
    assert calls == []


@pytest.mark.parametrize("tags, message", [
    ({"width": 100_000, "height": 100_000}, "image size 100000x100000 is too large"),
    ({"pages": 9, "width": 16384, "height": 16384}, "of 9 uint8 channel(s) are 2.2 GiB decoded"),
    ({"samples": 65535, "width": 1000, "height": 1000}, "over the limit of 2.0 GiB"),
])
def test_tiff_header_bombs_are_too_large_before_allocating(cli, checkpoint, tmp_path, tags,
                                                           message):
    source = tmp_path / "bomb.tif"
    source.write_bytes(tiff_declaring(**tags))
    r = cli("translate", "-c", checkpoint, source, tmp_path / "out.tif")
    one_error_line(r, "bomb.tif", message)
    assert not (tmp_path / "out.tif").exists()


def test_a_loop_in_the_chain_of_pages_is_refused_at_once():
    limit = files.MAX_TIFF_PAGES
    with pytest.raises(ImageTooLarge, match=f"loop.tif: more than {limit} pages"):
        raster.read_raster(looped_tiff(), "loop.tif")


def test_rows_without_strips_are_refused_before_decoding(monkeypatch):
    # 100000 one-row strips declared, one present: tifffile would visit every missing one.
    data = tiff_declaring(compression="zlib", height=100_000, rows_per_strip=1)
    calls = no_decoding(monkeypatch)
    with pytest.raises(P2PError, match="fewer strips or tiles than its size needs"):
        raster.read_raster(data, "strips.tif")
    assert calls == []


# ---- .npy and .npz: shape headers ------------------------------------------------------------

def test_npy_shape_bomb_in_translate(cli, checkpoint, tmp_path):
    source = tmp_path / "bomb.npy"
    source.write_bytes(npy_declaring((100_000, 100_000, 3)))
    r = cli("translate", "-c", checkpoint, source, tmp_path / "out.npy")
    one_error_line(r, "bomb.npy", "image size 100000x100000 is too large")
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("header, message", [
    pytest.param(npy_declaring((16384, 16384, 4), "<f8"),
                 r"16384x16384 pixels of 4 float64 channel\(s\) are 8.0 GiB", id="channels"),
    pytest.param(npy_declaring((1000, 1000, 3)), r"truncated .npy array \(its header declares",
                 id="truncated"),
    pytest.param(npy_declaring((8, 8), "|O"), "values of type object are not pixels",
                 id="objects"),
    pytest.param(npy_declaring((8, 8, 3, 2)), r"array of shape \(8, 8, 3, 2\) is not an image",
                 id="4-d"),
    pytest.param(b"\x93NUMPY\x01\x00\x10\x00{'descr': (((\n", "not a readable .npy array",
                 id="header"),
])
def test_npy_headers_are_checked_before_loading(monkeypatch, header, message):
    calls = no_decoding(monkeypatch)
    with pytest.raises(P2PError, match=f"x.npy: {message}"):
        raster.read_raster(header, "x.npy")
    assert calls == []


def test_npz_shape_bomb_in_eval_fid(cli, tmp_path):
    rng = np.random.default_rng(0)
    frechet.save_statistics(frechet.statistics(rng.standard_normal((4, 3))), tmp_path / "real.npz")
    bomb = write_npz(tmp_path / "bomb.npz", {"mu": npy(np.zeros(3)),
                                             "sigma": npy_declaring((10**6, 10**6), "<f8")})
    r = cli("eval", "fid", tmp_path / "real.npz", bomb)
    one_error_line(r, "bomb.npz: sigma holds float64 of shape (1000000, 1000000)")


@pytest.mark.parametrize("sigma, message", [
    pytest.param(npy_declaring((9000, 9000), "<f8"),
                 r"sigma holds float64 of shape \(9000, 9000\), not 2 axes of at most 2048",
                 id="too-wide"),
    pytest.param(npy_declaring((3, 3), "|O"), "sigma holds object", id="objects"),
    pytest.param(npy(np.eye(3)) + bytes(10**6),
                 r"sigma declares \(3, 3\) float64 \(200 bytes\) but holds 1000200", id="size"),
])
def test_npz_members_are_checked_before_their_data_is_read(tmp_path, monkeypatch, sigma,
                                                           message):
    path = write_npz(tmp_path / "s.npz", {"mu": npy(np.zeros(3)), "sigma": sigma})
    members = []
    read_array = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array",
                        lambda file, **kw: members.append(file.name) or read_array(file, **kw))
    with pytest.raises(P2PError, match=f"s.npz: {message}"):
        frechet.load_statistics(path)
    assert "sigma.npy" not in members


# ---- files that are not regular files --------------------------------------------------------

def special_file(kind: str, path: Path) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(),
                    reason="needs FIFOs and /dev/zero")
@pytest.mark.parametrize("kind", ["dev_zero", "fifo"])
def test_devices_and_pipes_are_refused_unread(cli, checkpoint, tmp_path, kind):
    for name in ("x.png", "x.jpg", "x.tif", "x.npy"):
        source = special_file(kind, tmp_path / name)
        r = cli("translate", "-c", checkpoint, source, tmp_path / "out.png")
        one_error_line(r, name, "not a regular file")
    real = tmp_path / "real.npz"
    features = np.random.default_rng(0).standard_normal((4, 3))
    frechet.save_statistics(frechet.statistics(features), real)
    r = cli("eval", "fid", real, special_file(kind, tmp_path / "stats.npz"))
    one_error_line(r, "stats.npz: not a regular file")
    assert files.list_images(tmp_path) == []


# ---- data pair --height ----------------------------------------------------------------------

def test_pair_height_is_bounded_before_anything_is_allocated(cli, tmp_path):
    for side in ("A", "B"):
        (tmp_path / side).mkdir()
        Image.new("RGB", (100, 1)).save(tmp_path / side / "wide.png")
    r = cli("data", "pair", tmp_path / "A", tmp_path / "B", tmp_path / "out", "--height", 60000)
    one_error_line(r, "--height", "less than or equal to 16384")
    assert not (tmp_path / "out").exists()
    # Within the range, a 100x1 pair at height 16384 would be 3276800 pixels wide: skipped.
    r = cli("data", "pair", tmp_path / "A", tmp_path / "B", tmp_path / "out", "--height", 16384)
    assert r.exit_code == 1 and "the A|B image would be 3276800x16384 pixels" in r.stderr
    assert not any((tmp_path / "out").rglob("*.png"))


# ---- any damage to a valid file --------------------------------------------------------------

def _seed_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    stack = rng.integers(0, 65536, (3, 8, 8), dtype=np.uint16)
    tiffs = {}
    for compression in (None, "zlib"):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, stack, photometric="minisblack", compression=compression)
        tiffs[f"{compression}.tif"] = buffer.getvalue()  # three pages
    return {"rgb.png": raster.encode_raster(rgb, "PNG"),
            "rgb.jpg": raster.encode_raster(rgb, "JPEG"),
            "16bit.png": raster.encode_raster(rgb.astype(np.uint16) * 257, "PNG"),
            "rgb.npy": npy(rgb), **tiffs}


SEEDS = _seed_files()
READERS = [raster.read_raster, raster.decode_image, eight_bit.open_image,
           lambda source: eight_bit.declared_size(source, "x")]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SEEDS)), cut=st.none() | st.integers(0, 400),
       edits=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=4))
def test_damaged_headers_give_p2p_errors(tmp_path_factory, name, cut, edits):
    data = bytearray(SEEDS[name])
    for position, value in edits:
        if position < len(data):
            data[position] = value
    data = bytes(data[:cut])
    path = tmp_path_factory.mktemp("damaged") / name  # by extension, whatever the signature
    path.write_bytes(data)
    for read in READERS:
        for source in (data, path) if read is not READERS[-1] else (data,):
            with contextlib.suppress(P2PError):
                read(source)

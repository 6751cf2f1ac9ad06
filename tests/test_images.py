import io
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from p2p.errors import P2PError
from p2p.images.eight_bit import encode_image, read_image, save_image, to_uint8
from p2p.images.files import list_images


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_conversions_of_odd_modes():
    sixteen = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert read_image(png_bytes(sixteen), 1).unique().tolist() == [255]
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent -> white background
    assert read_image(png_bytes(rgba)).unique().tolist() == [255]
    palette = Image.new("P", (4, 4))
    palette.putpalette([10, 20, 30] * 256)
    assert read_image(png_bytes(palette))[:, 0, 0].tolist() == [10, 20, 30]
    gray = read_image(png_bytes(Image.new("RGB", (3, 2), (200, 200, 200))), 1)
    assert gray.shape == (1, 2, 3)


def test_bad_files_are_named(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(jpeg.getvalue()[:200])
    for path, fragment in [(empty, "empty file"), (text, "not an image"),
                           (truncated, "corrupt or truncated"), (tmp_path / "no.png", "no such")]:
        with pytest.raises(P2PError) as info:
            read_image(path)
        assert str(path) in str(info.value) and fragment in str(info.value)


def test_enormous_declared_dimensions_are_refused_before_decoding():
    # A valid PNG header declaring 100000 x 100000 pixels, with no real pixel data.
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    with pytest.raises(P2PError, match="bomb.png: declared image size is too large"):
        read_image(bomb, name="bomb.png")


def test_save_is_atomic_and_round_trips(tmp_path):
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    save_image(image, tmp_path / "sub" / "x.png")
    assert torch.equal(read_image(tmp_path / "sub" / "x.png"), image)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]
    with pytest.raises(P2PError, match="unknown image extension"):
        save_image(image, tmp_path / "x.gifx")
    assert list_images(tmp_path) == [tmp_path / "sub" / "x.png"]
    assert encode_image(image).startswith(b"\x89PNG")


@given(st.floats(-2, 2, allow_nan=False))
def test_to_uint8_truncates_like_the_published_code(value):
    expected = int((min(max(value, -1), 1) + 1) / 2 * 255)
    assert abs(to_uint8(torch.tensor([value])).item() - expected) <= 1
    assert to_uint8(torch.tensor([0.999])).item() == 254  # 254.87 truncates, never rounds


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        save_image(torch.zeros(3, 2, 2, dtype=torch.uint8), tmp_path / "x.png")
    finally:
        os.umask(mask)
    assert (tmp_path / "x.png").stat().st_mode & 0o777 == 0o644


def test_writes_from_many_threads_keep_the_umask(tmp_path):
    # translate saves from several threads; the permissions must never touch the process umask.
    import os
    from concurrent.futures import ThreadPoolExecutor

    from p2p.paths import write_bytes_atomic

    mask = os.umask(0o027)
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: write_bytes_atomic(tmp_path / f"{i}.bin", b"x"), range(400)))
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(mask)
    assert {(tmp_path / f"{i}.bin").stat().st_mode & 0o777 for i in range(400)} == {0o640}
    assert not list(tmp_path.glob(".*.tmp"))

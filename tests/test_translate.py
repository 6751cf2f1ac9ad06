"""``p2p translate`` through its real entry point: layouts, sizes, modes and bad inputs."""

import io
import os
import shlex
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from p2p_testing import file_modes_apply, make_checkpoint, size_of
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def write_image(path: Path, height: int, width: int, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, len(mode))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


def leftovers(folder: Path) -> list[Path]:
    """Temporary files an interrupted write would leave (atomic_path names them .NAME.*.tmp)."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---- layouts ---------------------------------------------------------------------------------

def test_folder_keeps_relative_names_and_sizes(cli, checkpoint, tmp_path):
    write_image(tmp_path / "in" / "a.png", 40, 50)
    write_image(tmp_path / "in" / "sub" / "b.jpg", 600, 1200, seed=1)
    write_image(tmp_path / "in" / "c.png", 32, 32, mode="L", seed=2)
    (tmp_path / "in" / "notes.txt").write_text("not an image, not listed")
    r = cli("translate", "--checkpoint", checkpoint, tmp_path / "in", tmp_path / "out", "-b", 2)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == b""
    outputs = sorted(p.relative_to(tmp_path / "out").as_posix()
                     for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert outputs == ["a.png", "c.png", "sub/b.png"]
    assert size_of(tmp_path / "out" / "a.png") == (50, 40)
    assert size_of(tmp_path / "out" / "sub" / "b.png") == (1200, 600)
    assert "translated 3 image(s)" in r.stderr


def test_folder_as_jpeg(cli, checkpoint, tmp_path):
    write_image(tmp_path / "in" / "a.png", 32, 32)
    r = cli("translate", "-c", checkpoint, tmp_path / "in", tmp_path / "out", "--ext", "jpg")
    assert r.exit_code == 0, r.stderr
    with Image.open(tmp_path / "out" / "a.jpg") as img:
        assert img.format == "JPEG"


def test_single_file_to_file_and_into_folder(cli, checkpoint, tmp_path):
    source = write_image(tmp_path / "x.jpg", 45, 70)
    r = cli("translate", "-c", checkpoint, source, tmp_path / "y.png")
    assert r.exit_code == 0, r.stderr
    assert size_of(tmp_path / "y.png") == (70, 45)
    (tmp_path / "results").mkdir()
    r = cli("translate", "-c", checkpoint, source, tmp_path / "results")
    assert r.exit_code == 0, r.stderr
    assert size_of(tmp_path / "results" / "x.png") == (70, 45)


def test_run_directory_as_checkpoint(cli, checkpoint, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, run / "checkpoints" / "latest.pt")
    source = write_image(tmp_path / "x.png", 32, 32)
    r = cli("translate", "-c", run, source, tmp_path / "y.png")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "y.png").is_file()


def test_stdin_to_stdout_writes_only_png(cli, checkpoint, tmp_path, monkeypatch):
    data = write_image(tmp_path / "x.png", 36, 52).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    r = cli("translate", "-c", checkpoint, "-", "-")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(PNG_SIGNATURE)
    assert size_of(r.stdout) == (52, 36)
    with Image.open(io.BytesIO(r.stdout)) as img:  # nothing after the image either
        img.load()
        assert r.stdout.endswith(b"IEND\xaeB`\x82")


def test_pipeline_in_a_real_process(checkpoint, tmp_path):
    source = write_image(tmp_path / "x.png", 40, 24)
    p2p = shutil.which("p2p")
    command = shlex.quote(p2p) if p2p else f"{shlex.quote(sys.executable)} -m p2p"
    result = subprocess.run(
        f"cat {shlex.quote(str(source))} | {command} translate --checkpoint "
        f"{shlex.quote(str(checkpoint))} - - > {shlex.quote(str(tmp_path / 'y.png'))}",
        shell=True, capture_output=True, text=True, timeout=120,
        env={**os.environ, "P2P_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    assert size_of(tmp_path / "y.png") == (24, 40)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_paired_side_by_side_takes_the_direction_half(cli, tmp_path, direction):
    checkpoint = make_checkpoint(tmp_path / "m.pt", direction)
    left = np.full((32, 40, 3), 10, np.uint8)
    right = np.full((32, 40, 3), 240, np.uint8)
    Image.fromarray(np.concatenate([left, right], axis=1)).save(tmp_path / "pair.png")
    r = cli("translate", "-c", checkpoint, "--paired", "--side-by-side", tmp_path / "pair.png",
            tmp_path / "out.png")
    assert r.exit_code == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (32, 120, 3)  # input | output | target, each 40 wide
    source, target = (left, right) if direction == "AtoB" else (right, left)
    assert np.array_equal(out[:, :40], source)
    assert np.array_equal(out[:, 80:], target)
    r = cli("translate", "-c", checkpoint, "--paired", tmp_path / "pair.png",
            tmp_path / "only.png")
    assert r.exit_code == 0, r.stderr
    assert size_of(tmp_path / "only.png") == (40, 32)


def test_pairs_without_paired_get_a_warning_naming_the_option(cli, checkpoint, tmp_path):
    pairs = tmp_path / "pairs"
    write_image(pairs / "a.png", 32, 64)  # twice as wide as tall; the model is 32x32
    write_image(pairs / "b.png", 32, 64, seed=1)
    r = cli("translate", "-c", checkpoint, pairs, tmp_path / "whole")
    assert r.exit_code == 0, r.stderr  # translated as asked, but told
    assert "a.png is twice as wide as tall, like an A|B pair" in r.stderr
    assert r.stderr.count("--paired") == 1
    for args in (["--paired"], ["--tile", "32", "--eval-mode"], []):
        source = pairs if args else write_image(tmp_path / "plain" / "c.png", 32, 40)
        r = cli("translate", "-c", checkpoint, *args, source, tmp_path / f"out{len(args)}")
        assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr


def test_side_by_side_without_pairs(cli, checkpoint, tmp_path):
    source = write_image(tmp_path / "x.png", 30, 20)
    r = cli("translate", "-c", checkpoint, "--side-by-side", source, tmp_path / "y.png")
    assert r.exit_code == 0, r.stderr
    assert size_of(tmp_path / "y.png") == (40, 30)


def test_keep_size_on_an_odd_size(cli, checkpoint, tmp_path):
    source = write_image(tmp_path / "big.png", 432, 1072)
    small = write_image(tmp_path / "small.png", 5, 3, seed=1)  # smaller than the padding
    for image in (source, small):
        r = cli("translate", "-c", checkpoint, "--keep-size", "--eval-mode", image,
                tmp_path / "out")
        assert r.exit_code == 0, r.stderr
    assert size_of(tmp_path / "out" / "big.png") == (1072, 432)
    assert size_of(tmp_path / "out" / "small.png") == (3, 5)
    r = cli("translate", "-c", checkpoint, "--eval-mode", source, tmp_path / "resized.png")
    assert r.exit_code == 0, r.stderr
    kept = np.asarray(Image.open(tmp_path / "out" / "big.png"))
    resized = np.asarray(Image.open(tmp_path / "resized.png"))
    assert kept.shape == resized.shape and not np.array_equal(kept, resized)


def test_one_channel_model_reads_and_writes_one_channel(cli, tmp_path):
    checkpoint = make_checkpoint(tmp_path / "gray.pt", in_channels=1, out_channels=1)
    source = write_image(tmp_path / "rgb.png", 32, 32)
    r = cli("translate", "-c", checkpoint, source, tmp_path / "y.png")
    assert r.exit_code == 0, r.stderr
    with Image.open(tmp_path / "y.png") as img:
        assert img.mode == "L"


# ---- modes -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dropout_checkpoint(tmp_path_factory) -> Path:
    # num_downs=6 is the smallest U-Net with a dropout level.
    return make_checkpoint(tmp_path_factory.mktemp("model") / "dropout.pt", image_size=64,
                           num_downs=6)


def test_eval_mode_is_deterministic_and_paper_mode_repeats_with_seed(cli, dropout_checkpoint,
                                                                     tmp_path):
    source = write_image(tmp_path / "x.png", 64, 64)

    def run(name: str, *options) -> bytes:
        r = cli("translate", "-c", dropout_checkpoint, *options, source, tmp_path / name)
        assert r.exit_code == 0, r.stderr
        return (tmp_path / name).read_bytes()

    evaluated = run("e1.png", "--eval-mode")
    assert run("e2.png", "--eval-mode") == evaluated
    seeded = run("s1.png", "--seed", "3")
    assert run("s2.png", "--seed", "3") == seeded
    assert run("s3.png", "--seed", "4") != seeded  # other dropout masks
    assert seeded != evaluated


# ---- existing outputs ------------------------------------------------------------------------

def test_existing_outputs_need_overwrite(cli, checkpoint, tmp_path):
    write_image(tmp_path / "in" / "a.png", 32, 32)
    write_image(tmp_path / "in" / "b.png", 32, 32, seed=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"mine")
    r = cli("translate", "-c", checkpoint, tmp_path / "in", tmp_path / "out")
    assert r.exit_code == 1
    assert "not overwritten" in r.stderr and "a.png" in r.stderr
    assert (tmp_path / "out" / "a.png").read_bytes() == b"mine"
    assert (tmp_path / "out" / "b.png").is_file()
    r = cli("translate", "-c", checkpoint, tmp_path / "in", tmp_path / "out", "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "out" / "a.png").read_bytes().startswith(PNG_SIGNATURE)


# ---- bad inputs ------------------------------------------------------------------------------

def png_declaring(width: int, height: int) -> bytes:
    """A PNG header that declares a huge image, with no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def truncated_jpeg(tmp_path: Path) -> bytes:
    data = write_image(tmp_path / "full.jpg", 64, 64).read_bytes()
    return data[: len(data) // 2]


BAD = {
    "empty.png": lambda tmp: b"",
    "text.png": lambda tmp: b"hello, I am not an image\n",
    "truncated.jpg": truncated_jpeg,
    "huge.png": lambda tmp: png_declaring(100_000, 100_000),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_stops_with_its_name(cli, checkpoint, tmp_path, name):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(BAD[name](tmp_path))
    r = cli("translate", "-c", checkpoint, tmp_path / "in", tmp_path / "out")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and name in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_missing_input_is_reported(cli, checkpoint, tmp_path):
    r = cli("translate", "-c", checkpoint, tmp_path / "nope.png", tmp_path / "y.png")
    assert r.exit_code == 2 and "nope.png" in r.stderr and "no such file" in r.stderr


def test_unreadable_input_is_reported(cli, checkpoint, tmp_path):
    source = write_image(tmp_path / "locked.png", 32, 32)
    source.chmod(0)
    with file_modes_apply():  # as root too (CI)
        r = cli("translate", "-c", checkpoint, source, tmp_path / "y.png")
    assert r.exit_code == 2 and "locked.png" in r.stderr
    assert not (tmp_path / "y.png").exists()


def write_convertible(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 65536, (32, 32), dtype=np.uint16)).save(folder / "deep.png")
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(folder / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")


def test_convertible_inputs_translate(cli, checkpoint, tmp_path):
    write_convertible(tmp_path / "in")
    with Image.open(tmp_path / "in" / "deep.png") as img:
        assert img.mode.startswith("I")  # really a 16-bit PNG
    r = cli("translate", "-c", checkpoint, tmp_path / "in", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    for name in ("alpha.png", "deep.png", "palette.png"):
        with Image.open(tmp_path / "out" / name) as img:
            assert img.mode == "RGB" and img.size == (32, 32)


def test_skip_bad_goes_on_and_exits_1_with_a_count(cli, checkpoint, tmp_path):
    folder = tmp_path / "in"
    write_image(folder / "a.png", 32, 32)
    write_image(folder / "z.png", 40, 40, seed=1)
    for name, make in BAD.items():
        (folder / name).write_bytes(make(tmp_path))
    r = cli("translate", "-c", checkpoint, folder, tmp_path / "out", "--skip-bad", "-b", 3)
    assert r.exit_code == 1
    assert f"{len(BAD)} bad input(s) skipped" in r.stderr
    for name in BAD:
        assert name in r.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a.png", "z.png"]
    assert "Traceback" not in r.stderr and not leftovers(tmp_path / "out")


# ---- usage errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    ((), "exactly one"),
    (("--checkpoint", "c.pt", "--task", "facades"), "exactly one"),
    (("--checkpoint", "missing.pt"), "missing.pt"),
    (("--task", "no-such-model"), "no-such-model"),
])
def test_model_choice_errors(cli, tmp_path, args, message):
    source = write_image(tmp_path / "x.png", 32, 32)
    r = cli("translate", *args, source, tmp_path / "y.png")
    assert r.exit_code == 2 and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_folder_cannot_go_to_stdout(cli, checkpoint, tmp_path):
    write_image(tmp_path / "in" / "a.png", 32, 32)
    r = cli("translate", "-c", checkpoint, tmp_path / "in", "-")
    assert r.exit_code == 2 and r.stdout == b"" and "stdout" in r.stderr


def test_task_uses_the_zoo_checkpoint(cli, checkpoint, tmp_path, monkeypatch):
    import p2p.weights.zoo

    asked = []

    def checkpoint_path(name, progress=None):
        asked.append(name)
        return checkpoint

    monkeypatch.setattr(p2p.weights.zoo, "checkpoint_path", checkpoint_path)
    source = write_image(tmp_path / "x.png", 32, 32)
    r = cli("translate", "--task", "facades", source, tmp_path / "y.png")
    assert r.exit_code == 0, r.stderr
    assert asked == ["facades"] and (tmp_path / "y.png").is_file()


def test_bf16_on_a_cpu_without_it_is_refused_before_any_output(cli, checkpoint, tmp_path,
                                                                 monkeypatch):
    from p2p import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    source = write_image(tmp_path / "x.png", 32, 32)
    r = cli("translate", "-c", checkpoint, "--precision", "bf16", source, tmp_path / "out")
    assert r.exit_code == 2 and "no native bf16" in r.stderr and "--precision fp32" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    for precision in ("auto", "fp32"):  # auto falls back to fp32 there
        r = cli("translate", "-c", checkpoint, "--precision", precision, source,
                tmp_path / f"{precision}.png")
        assert r.exit_code == 0, r.stderr
    assert (tmp_path / "auto.png").read_bytes() == (tmp_path / "fp32.png").read_bytes()

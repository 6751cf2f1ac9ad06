"""The audit's "untrusted models, configs and numbers" class (security issue 21).

A model folder (its config.json and the safetensors header), a checkpoint, a published file for
``zoo import`` or a number on the command line can be crafted to crash p2p with a traceback or to
make it allocate without bound. Each must end in one ``error: ...`` line and exit code 2, before
anything larger than the check needs is allocated, with nothing written half-way.

A growing module: the next surface of this class is tried the same way, with a crafted input made
inside the test (small and fast), run through the real CLI where a user would meet it.
"""

import contextlib
import io
import json
import os
import re
import resource
import shutil
import signal
import stat
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import skip_or_fail
from p2p_testing import SMALL, HubMirror, PublishedUnet, p2p_process, seeded
from PIL import Image

from p2p.errors import P2PError
from p2p.export import export_folder
from p2p.models import GeneratorConfig, UnetGenerator, init_weights, state_shapes
from p2p.recipe import recipe_from_dict
from p2p.weights import checkpoint, hub, load_checkpoint, load_generator, safe_pickle, zoo

CONFIG = GeneratorConfig(num_downs=5, ngf=4)  # a 32x32 U-Net of ~70k parameters


def tiny_state(image_size=32) -> dict:
    torch.manual_seed(0)
    return checkpoint.generator_state(init_weights(UnetGenerator(CONFIG)), "AtoB", image_size)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A model folder as `p2p zoo export --format hf` writes it (made once; tests copy it)."""
    root = tmp_path_factory.mktemp("exported")
    checkpoint.save_checkpoint(root / "tiny.pt", tiny_state())
    return export_folder(str(root / "tiny.pt"), root / "tiny")


@pytest.fixture
def folder(exported, tmp_path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "model"))


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (90, 30, 200)).save(path)
    return path


def edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def one_line_error(r, *fragments: str) -> str:
    """The result is exit 2 with one `error: ...` line holding every fragment."""
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    return lines[0]


@contextlib.contextmanager
def memory_limit(extra: int):
    """At most ``extra`` more bytes of data for this process (RLIMIT_DATA, which covers malloc
    and anonymous mmap), so that code that would allocate gigabytes fails fast instead."""
    status = Path("/proc/self/status")
    if not status.is_file():
        pytest.skip("needs Linux's /proc/self/status")
    used = int(re.search(r"VmData:\s+(\d+) kB", status.read_text())[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (used + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


# ---- model folders and checkpoints: every recorded fact --------------------------------------

def _set(path: str, value):
    """A change to config.json: ``path`` is dotted (``preprocess.crop_size``)."""
    def change(config):
        *parents, leaf = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[leaf] = value
    return change


def _range(value):
    return _set("normalization.source", {"dtype": "uint8", "range": value, "explicit": True})


BAD_VALUES = [
    # tracebacks before
    (_set("image_size", 32.5), "image_size is one number or [height, width]"),
    (_set("image_size", [32, 32, 32]), "image_size is one number or [height, width]"),
    (_set("preprocess", {}), "preprocess is {mode, load_size, crop_size}"),
    (_set("preprocess", "none"), "preprocess is {mode, load_size, crop_size}"),
    (_set("preprocess.crop_size", -32), "preprocess.crop_size must be positive"),
    (_set("preprocess.crop_size", 0), "preprocess.crop_size must be positive"),
    (_set("normalization", {}), "normalization.source is {dtype"),
    (_set("normalization", "uint8"), "normalization.source is {dtype"),
    (_range("0..255"), "normalization.source is {dtype"),
    (_set("generator_config.num_downs", 8.0), "generator_config.num_downs must be an integer"),
    (_set("generator_config.norm", "group"), "generator_config.norm must be one of"),
    (_set("generator_config.width", 4), "generator_config is a mapping of"),
    # accepted before
    (_set("image_size", "32"), "image_size is one number or [height, width]"),  # read as 3x2
    (_set("preprocess.mode", "zoom"), "mode one of resize_and_crop"),
    (_range([1.0, 1.0]), "range: [low, high] with low < high"),  # a division by zero
    (_range([-1e308, 1e308]), "range: [low, high] with low < high"),  # a width of infinity
    (_set("normalization.target.dtype", "float64"), "normalization.target is {dtype"),
    (_set("normalization.target.explicit", "yes"), "normalization.target is {dtype"),
    (_set("direction", "sideways"), "direction must be one of AtoB, BtoA"),
    # MemoryError before: a 100000^2 resize (translate), a 60000^2 canvas (serve)
    (_set("preprocess.crop_size", 100000), "preprocess.crop_size must be at most 16384"),
    (_set("image_size", 60000), "image_size must be at most 16384 per side"),
    (_set("image_size", [16384, 16384 + 1]), "image_size must be at most 16384 per side"),
]


@pytest.mark.parametrize("change,message", BAD_VALUES,
                         ids=[message[:40] + f" {i}" for i, (_, message) in enumerate(BAD_VALUES)])
def test_bad_config_values_are_one_line_errors(cli, folder, image, tmp_path, change, message):
    edit_config(folder, change)
    with memory_limit(512 << 20):  # a 100000^2 resize would need 120 GB
        r = cli("translate", "-c", folder, image, tmp_path / "out.png")
    one_line_error(r, str(folder), message)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("generator_config,message", [
    ({"num_downs": 1000000}, "num_downs must be between 5 and 9"),  # allocated until stopped
    ({"num_downs": 1e6}, "num_downs must be an integer"),
    ({"architecture": "resnet", "blocks": 10**9}, "blocks must be between 1 and 64"),
    ({"ngf": 1 << 40}, "ngf must be between 1 and 1024"),
    # Within the bounds (13 GiB for this U-Net), but not the file's tensors: refused before
    # anything is built, from the shapes in the safetensors header.
    ({"ngf": 512, "num_downs": 8}, "(36 missing, 0 unexpected)"),
])
def test_generator_config_bombs_are_refused_before_building(cli, folder, image, tmp_path,
                                                            generator_config, message):
    edit_config(folder, lambda config: config["generator_config"].update(generator_config))
    with memory_limit(512 << 20):
        r = cli("translate", "-c", folder, image, tmp_path / "out.png")
    line = one_line_error(r, message)
    assert "allocate" not in line


def test_checkpoint_files_share_the_checks(cli, image, tmp_path):
    # The same validator reads a .pt checkpoint's recorded facts ...
    state = tiny_state()
    checkpoint.save_checkpoint(tmp_path / "big.pt", {**state, "image_size": 60000})
    with memory_limit(512 << 20):
        r = cli("translate", "-c", tmp_path / "big.pt", image, tmp_path / "out.png")
    one_line_error(r, "image_size must be at most 16384")
    # ... and a config that matches tensors which the pickle makes overlap: every tensor of this
    # 13 GiB U-Net reads one stored number (stride 0), in a file of a few kilobytes.
    config = GeneratorConfig(num_downs=8, ngf=512)
    overlapping = {name: torch.zeros(()).expand(shape) for name, shape
                   in state_shapes(config).items()}
    checkpoint.save_checkpoint(tmp_path / "overlap.pt", {**state, "generator": overlapping,
                                                         "generator_config": asdict(config)})
    assert (tmp_path / "overlap.pt").stat().st_size < 100_000
    with memory_limit(512 << 20):
        r = cli("translate", "-c", tmp_path / "overlap.pt", image, tmp_path / "out.png")
    one_line_error(r, "its tensors overlap")
    assert not (tmp_path / "out.png").exists()
    # Every kind of fact p2p itself records still passes: sizes as [height, width], explicit
    # float ranges, 16-bit and float sides, a ResNet (whose num_downs is not used).
    state = {**tiny_state(image_size=[32, 64]), "normalization": {
        "source": {"dtype": "uint16", "range": [0.0, 65535.0], "explicit": False},
        "target": {"dtype": "float32", "range": [-2.5, 7.0], "explicit": True}},
        "preprocess": {"mode": "scale_width", "load_size": [64, 64], "crop_size": [32, 32]}}
    checkpoint.save_checkpoint(tmp_path / "any.pt", state)
    assert load_generator(tmp_path / "any.pt")[1]["image_size"] == [32, 64]
    assert GeneratorConfig(architecture="resnet", num_downs=100, blocks=6).checked()


def test_oversized_or_deep_config_json(cli, folder, image, tmp_path):
    for text in (" " * (hub.MAX_CONFIG_BYTES + 1), "[" * 100_000, "1" * 5000):
        (folder / "config.json").write_text(text)
        r = cli("translate", "-c", folder, image, tmp_path / "out.png")
        one_line_error(r, "config.json")


# ---- checkpoint zip bombs ---------------------------------------------------------------------

def deflated(data: bytes) -> bytes:
    """A torch.save file with its storage records deflated, which torch.save never does."""
    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            kind = zipfile.ZIP_DEFLATED if "/data/" in info.filename else zipfile.ZIP_STORED
            archive.writestr(info.filename, source.read(info.filename), compress_type=kind)
    return out.getvalue()


def test_compressed_records_are_refused_before_loading(cli, tmp_path, monkeypatch):
    # 1 MB of zeros deflates to 1 KB: the published sizes scale this to 1 GB in 1 MB.
    buffer = io.BytesIO()
    torch.save({"model.model.0.weight": torch.zeros(256, 1024)}, buffer)
    bomb = tmp_path / "latest_net_G.pth"
    bomb.write_bytes(deflated(buffer.getvalue()))
    assert bomb.stat().st_size < 10_000
    loads = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args))
    r = cli("zoo", "import", bomb, "--format", "official", "--name", "bomb")
    one_line_error(r, str(bomb), "record archive/data/0 is compressed")
    assert loads == []  # refused from the zip directory, before torch.load inflated anything
    # The reader of other tools' training checkpoints checks the same.
    with pytest.raises(safe_pickle.RefusedRecord):
        safe_pickle.load(bomb)


# ---- zoo import --------------------------------------------------------------------------------

def _published(change) -> dict:
    tensors = dict(seeded(PublishedUnet("official", **SMALL), 0).state_dict())
    change(tensors)
    return tensors


FIRST = "model.model.0.weight"


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.parametrize("change,message", [
    (lambda t: t.update({5: torch.zeros(1)}), "a tensor is named 5, not by text"),
    (lambda t: t.update({FIRST: t[FIRST].to_sparse()}), "is a sparse_coo tensor"),
    (lambda t: t.update({FIRST: torch.empty(t[FIRST].shape, device="meta")}),
     "is a meta tensor"),
    (lambda t: t.update({k: torch.zeros(()).expand(v.shape) for k, v in t.items()}),
     "its tensors overlap"),
], ids=["int key", "sparse", "meta", "overlapping"])
def test_zoo_import_of_odd_tensors(cli, tmp_path, change, message):
    path = tmp_path / "latest_net_G.pth"
    torch.save(_published(change), path)
    r = cli("zoo", "import", path, "--format", "official", "--name", "odd")
    one_line_error(r, str(path), message)


@pytest.mark.parametrize("size", ["0", "-5", "16385"])
def test_zoo_import_refuses_image_sizes_no_model_runs_at(cli, tmp_path, size):
    path = tmp_path / "latest_net_G.pth"
    torch.save(_published(lambda t: None), path)
    r = cli("zoo", "import", path, "--format", "official", "--name", "sized", "--image-size", size)
    one_line_error(r, "--image-size")
    assert not zoo.converted_path("sized").exists()
    with pytest.raises(P2PError, match="--image-size must be"):  # the API checks it the same way
        zoo.import_file(path, "official", "sized", image_size=int(size))


# ---- numbers on the command line ---------------------------------------------------------------

HUGE = str(2**70)


@pytest.mark.parametrize("args", [
    ["translate", "-c", "x.pt", "in.png", "out.png", "--seed", HUGE],  # OverflowError before
    ["translate", "-c", "x.pt", "in.png", "out.png", "--seed", "-1"],
    ["translate", "-c", "x.pt", "in.png", "out.png", "--tile", HUGE],
    ["translate", "-c", "x.pt", "in.png", "out.png", "--tile", "64", "--overlap", HUGE],
    ["translate", "-c", "x.pt", "in.png", "out.png", "--batch-size", HUGE],
    ["eval", "run", "--task", "facades", "--seed", HUGE],
    ["eval", "run", "--task", "facades", "--batch-size", HUGE],
    ["eval", "is", "fake", "--splits", HUGE],
    ["eval", "is", "fake", "--workers", HUGE],
    ["report", "run", "--max-samples", HUGE],
    ["train", "recipe.yaml", "--iters", HUGE],
    ["train", "recipe.yaml", "--nproc", HUGE],
    ["zoo", "import", "f.pth", "--format", "official", "--name", "n", "--image-size", HUGE],
], ids=lambda args: " ".join(a for a in args if a != HUGE and "." not in a)[:40])
def test_numbers_out_of_range_are_usage_errors(cli, args):
    option = next(a for a, value in zip(args, args[1:], strict=False)
                  if value in (HUGE, "-1"))
    one_line_error(cli(*args), f"invalid value for '{option}'")


# ---- zoo export --format hf --------------------------------------------------------------------

@contextlib.contextmanager
def file_size_limit(size: int):
    """Writes beyond ``size`` bytes fail with EFBIG, as on a full disk."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_hf_export_that_cannot_be_written(cli, exported, tmp_path):
    (tmp_path / "file").write_text("in the way")
    under_a_file = tmp_path / "file" / "model"
    r = cli("zoo", "export", exported, under_a_file, "--format", "hf")
    one_line_error(r, f"cannot write {under_a_file}: ")

    full = tmp_path / "full"
    with file_size_limit(100_000):  # model.safetensors has 270 KB
        r = cli("zoo", "export", exported, full, "--format", "hf")
    one_line_error(r, f"cannot write {full}: file too large")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing half-written


def test_hf_export_is_readable_by_others(cli, exported, tmp_path):
    umask = os.umask(0o022)
    try:
        assert cli("zoo", "export", exported, tmp_path / "shared", "--format", "hf").exit_code == 0
    finally:
        os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "shared").iterdir()}
    assert modes == {"README.md": 0o644, "config.json": 0o644, "model.safetensors": 0o644}


# ---- recipes: model.init_from and the sizes each preprocessing mode uses -----------------------

@pytest.fixture
def data(tmp_path) -> Path:
    """4 pairs of 40x24 (width x height): no multiple of a U-Net's stride."""
    rng = np.random.default_rng(0)
    (tmp_path / "data" / "train").mkdir(parents=True)
    for i in range(4):
        pair = rng.integers(0, 256, (24, 80, 3), dtype=np.uint8)
        Image.fromarray(pair).save(tmp_path / "data" / "train" / f"{i}.png")
    return tmp_path / "data"


def tiny_recipe(path: Path, pairs: Path, **sections) -> Path:
    values = {"name": "tiny", "data": {"path": str(pairs), "load_size": 36, "crop_size": 32,
                                       "batch_size": 2},
              "model": {"num_downs": 5, "ngf": 4, "ndf": 4},
              "train": {"iters": 1, "log_every": 1, "sample_every": 100,
                        "checkpoint_every": 100}}
    for section, changes in sections.items():
        values[section] = {**values[section], **changes}
    path.write_text(json.dumps(values))  # JSON is YAML
    return path


def test_init_from_a_model_folder(cli, exported, data, tmp_path):
    recipe = tiny_recipe(tmp_path / "tune.yaml", data, model={"init_from": str(exported)})
    r = cli("train", recipe, "--out", tmp_path / "tuned")
    assert r.exit_code == 0, r.stderr
    record = load_checkpoint(tmp_path / "tuned")["init_from"]
    from p2p.download import sha256_file

    assert record["path"] == str(exported.resolve())
    assert record["sha256"] == sha256_file(exported / "model.safetensors")


def test_modes_that_do_not_crop_ignore_the_crop_size_stride(cli, data, tmp_path):
    for mode in ("none", "scale_width"):  # crop_size 48: no multiple of 32
        recipe_from_dict({"data": {"preprocess": mode, "load_size": 40, "crop_size": 48},
                          "model": {"num_downs": 5}})
    with pytest.raises(P2PError, match="not a multiple of 32"):  # the crop modes still check
        recipe_from_dict({"data": {"preprocess": "crop", "crop_size": 48},
                          "model": {"num_downs": 5}})
    # Trained at the data's own 40x24, rounded to the stride: 32x32.
    recipe = tiny_recipe(tmp_path / "none.yaml", data,
                         data={"preprocess": "none", "crop_size": 48, "load_size": 48})
    r = cli("train", recipe, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    assert load_checkpoint(tmp_path / "run")["preprocess"]["mode"] == "none"



def test_a_thin_image_under_a_scale_width_model_is_too_large_not_allocated(cli, tmp_path):
    """scale_width scales an input to the training width: a 1-pixel-wide image 16384 tall would
    become 32 wide and 524288 tall for this model, and a real one's width of 256 gives a billion
    pixels. It is refused by its size before anything is resized."""
    state = tiny_state()
    state["preprocess"] = {"mode": "scale_width", "load_size": [32, 2048],
                           "crop_size": [32, 32]}
    checkpoint.save_checkpoint(tmp_path / "wide.pt", state)
    Image.new("RGB", (1, 16384), (90, 30, 200)).save(tmp_path / "thin.png")
    with memory_limit(512 << 20):
        r = cli("translate", "-c", tmp_path / "wide.pt", tmp_path / "thin.png",
                tmp_path / "out.png", "--eval-mode")
    one_line_error(r, "thin.png", "scaled to width 2048", "over the limit")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow
def test_init_from_an_hf_reference(exported, data, tmp_path):
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        skip_or_fail("the hf extra is not installed: pip install -e '.[hf]'", "CI")
    files = {name: (exported / name).read_bytes() for name in ("config.json", "model.safetensors")}
    recipe = tiny_recipe(tmp_path / "tune.yaml", data, model={"init_from": "hf:someone/tiny@v1"})
    with HubMirror("someone/tiny", files, revisions=("main", "v1")) as mirror:
        env = {**os.environ, "HF_ENDPOINT": mirror.url, "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_HUB_OFFLINE", None)
        done = p2p_process(["train", recipe, "--out", tmp_path / "tuned"], env)
    assert done.returncode == 0, done.stderr.decode()
    record = load_checkpoint(tmp_path / "tuned")["init_from"]
    from p2p.download import sha256_file

    assert record["sha256"] == sha256_file(exported / "model.safetensors")

"""The zoo: fake published checkpoints in both key layouts, served locally, pulled and converted.

The "published" generators here are built by a small recursive U-Net written for these tests
(PublishedUnet in p2p_testing.py) from the published module trees (official: one Sequential per
level; mmagic: ConvModule-like units with ``conv`` and ``bn`` children), so the conversion is
checked against an independent implementation: same outputs, not only same keys.
"""

import dataclasses
import functools
import hashlib
import importlib.util
import io
import json
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import skip_or_fail
from hypothesis import given, settings
from hypothesis import strategies as st
from p2p_testing import (
    SIZE,
    SMALL,
    HistoryBuffer,
    PublishedUnet,
    published_file,
    seeded,
    stand_in_modules,
)
from torch import nn

from p2p import export
from p2p.errors import P2PError
from p2p.models import GeneratorConfig, UnetGenerator
from p2p.weights import checkpoint, load_checkpoint, load_generator, zoo


def serve(http_server, monkeypatch, name: str, body: bytes, full_hash=False) -> zoo.ZooEntry:
    """Point registry entry ``name`` at the local server, with the checksum of ``body``."""
    digest = hashlib.sha256(body).hexdigest()
    path = f"/{name}.pth"
    http_server.add(path, body)
    entries = [dataclasses.replace(e, url=http_server.url + path,
                                   sha256=digest if full_hash else digest[:8], image_size=SIZE)
               if e.name == name else e for e in zoo.ENTRIES]
    monkeypatch.setattr(zoo, "ENTRIES", entries)
    return zoo.find_entry(name)


def flip(x: torch.Tensor) -> torch.Tensor:
    return x[:, [2, 1, 0]]


def assert_same_function(ours: nn.Module, source: nn.Module, bgr: bool = False) -> None:
    """Equal outputs in eval mode and in paper mode (batch statistics, seeded dropout)."""
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def run_source(v):
        return flip(source(flip(v))) if bgr else source(v)

    with torch.no_grad():
        for train in (False, True):
            ours.train(train)
            source.train(train)
            torch.manual_seed(5)
            expected = run_source(x)
            torch.manual_seed(5)
            actual = ours(x)
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


# --- layout facts at full size ------------------------------------------------------------------

@pytest.mark.parametrize("layout", zoo.LAYOUTS)
def test_full_unet_256_keys_and_shapes_match_published_layout(layout):
    with torch.device("meta"):
        published = PublishedUnet(layout).state_dict()
        ours = UnetGenerator(GeneratorConfig()).state_dict()
    config = zoo.infer_config(published, layout, "test")
    assert config == GeneratorConfig()
    names = zoo.published_names(config, layout)
    assert len(names) == len(ours) == len(published) == 82
    assert set(names.values()) == set(published)
    for key, theirs in names.items():
        assert published[theirs].shape == ours[key].shape, key
    if layout == "official":
        assert names["down.2.conv.weight"] == "model.model.1.model.3.model.1.weight"
        assert names["up.0.conv.bias"] == "model.model.3.bias"
    else:
        assert names["down.1.norm.running_var"] == "model.model.1.model.0.bn.running_var"
        assert names["up.0.conv.weight"] == "model.model.2.conv.weight"


def test_registry_facts():
    names = [e.name for e in zoo.ENTRIES]
    assert len(set(names)) == len(names) == 9
    for e in zoo.ENTRIES:
        assert e.direction in ("AtoB", "BtoA") and e.layout in zoo.LAYOUTS
        if e.layout == "mmagic":
            assert e.url.startswith("https://download.openmmlab.com/mmediting/pix2pix/refactor/")
            assert e.url.endswith(f"-{e.sha256}.pth") and len(e.sha256) == 8
            assert e.domain
        # Every mmagic pix2pix generator is BGR (facades included); the official ones are RGB.
        assert e.bgr == (e.layout == "mmagic")


# --- pull -----------------------------------------------------------------------------------

# Every mmagic generator reads and writes BGR (facades: an mmgen run on OpenCV's BGR arrays; the
# other three converted to BGR), so each is checked against its source on flipped channels.
@pytest.mark.parametrize("name,layout,extra,bgr", [
    ("facades", "mmagic", {}, True),
    ("aerial2maps", "mmagic", {"domain": "map"}, True),
    ("maps2aerial", "mmagic", {"domain": "aerial"}, True),
    ("edges2shoes", "mmagic", {"domain": "photo"}, True),
    ("official-sat2map", "official", {}, False),
    ("official-day2night", "official", {"drop_batches_tracked": True}, False),
])
def test_pull_converts_to_the_same_function(cli, http_server, monkeypatch, p2p_home, name,
                                            layout, extra, bgr):
    source, body = published_file(layout, **extra)
    entry = serve(http_server, monkeypatch, name, body)
    r = cli("zoo", "pull", name)
    assert r.exit_code == 0, r.stderr
    path = pathlib.Path(r.out.strip())
    assert path == p2p_home / "zoo" / name / "generator.pt"
    assert sorted(p.name for p in path.parent.iterdir()) == ["generator.pt"]  # download removed
    assert f"sha256 verified: {hashlib.sha256(body).hexdigest()}" in r.stderr
    generator, state = load_generator(path)
    assert state["direction"] == entry.direction and state["zoo_name"] == name
    assert state["generator_config"] == {"in_channels": 3, "out_channels": 3, **SMALL,
                                         "norm": "batch", "dropout": True,
                                         "architecture": "unet", "blocks": 9}
    assert state["source"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert state["source"]["bgr"] == bgr
    assert_same_function(generator, source, bgr=bgr)
    if bgr:  # the flip matters: unflipped, the two differ
        x = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
        with torch.no_grad():
            assert not torch.allclose(generator.eval()(x), source.eval()(x), atol=1e-2)


def test_hash_mismatch_deletes_the_download_and_exits_2(cli, http_server, p2p_home):
    _, body = published_file("mmagic")
    http_server.add("/mirror.pth", body)
    # The real registry checksum (c0958d50...) cannot match this file.
    r = cli("zoo", "pull", "facades", "--url", f"{http_server.url}/mirror.pth")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[-1].startswith("error: checksum mismatch for http://127.0.0.1")
    assert list((p2p_home / "zoo" / "facades").iterdir()) == []


class Payload:
    """Unpickling this calls Path.touch(marker): what a malicious checkpoint could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_malicious_pickle_is_refused(cli, http_server, monkeypatch, tmp_path, p2p_home):
    marker = tmp_path / "code-ran"
    buffer = io.BytesIO()
    torch.save({"model.model.0.weight": Payload(marker)}, buffer)
    serve(http_server, monkeypatch, "official-map2sat", buffer.getvalue())
    r = cli("zoo", "pull", "official-map2sat")
    assert r.exit_code == 2 and "refused to load" in r.stderr, r.stderr
    assert not marker.exists()
    assert list((p2p_home / "zoo" / "official-map2sat").iterdir()) == []
    (tmp_path / "evil.pth").write_bytes(buffer.getvalue())
    r = cli("zoo", "import", tmp_path / "evil.pth", "--format", "official", "--name", "evil")
    assert r.exit_code == 2 and "refused to load" in r.stderr
    assert not marker.exists() and not zoo.converted_path("evil").exists()


def test_restricted_reader_builds_numpy_only_as_numpy_checks_it(tmp_path):
    """numpy's own unpickling trusts its input: an ndarray called on raw bytes with an object
    dtype, or a dtype state saying an object dtype holds no objects, would make objects of
    arbitrary bytes. Arrays are rebuilt; those are refused."""
    from p2p.weights import safe_pickle

    arrays = {"f8": np.arange(5.0), "objects": np.array([1, "x", None], dtype=object),
              "text": np.array(["ab", "c"]), "days": np.array(["2020-01-01"], dtype="M8[D]"),
              "scalar": np.float32(2.5), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3))}
    torch.save(arrays, tmp_path / "arrays.pt")
    loaded = safe_pickle.load(tmp_path / "arrays.pt")
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype and (loaded[key] == value).all(), key
    for attack in (calls(np.ndarray, (1,), "O", b"\x10" * 8),
                   type("D", (), {"__reduce__": lambda self: (
                       np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 0))})()):
        torch.save({"x": attack}, tmp_path / "attack.pt")
        with pytest.raises(pickle.UnpicklingError):
            safe_pickle.load(tmp_path / "attack.pt")


def calls(function, *args):
    """An object that unpickling turns into the call ``function(*args)``."""
    return type("Call", (), {"__reduce__": lambda self: (function, args)})()


def touch_command(marker) -> str:
    return f"{sys.executable} -c \"import pathlib; pathlib.Path({str(marker)!r}).touch()\""


@pytest.mark.parametrize("make_payload", [
    lambda marker: calls(os.system, touch_command(marker)),
    lambda marker: calls(eval, f"__import__('pathlib').Path({str(marker)!r}).touch()"),
    lambda marker: calls(subprocess.call, touch_command(marker), True),
    lambda marker: calls(functools.partial(os.system, touch_command(marker))),
    lambda marker: calls(pathlib.Path.touch, marker),
], ids=["os.system", "eval", "subprocess.call", "functools.partial", "Path.touch"])
def test_malicious_mmengine_checkpoint_is_refused(cli, tmp_path, make_payload):
    """The mmagic format reads other classes as placeholders, but calls nothing: a pickle that
    would call a function is refused before anything runs."""
    from p2p.weights import safe_pickle

    _, plain = published_file("mmagic")
    raw = torch.load(io.BytesIO(plain), weights_only=True)
    marker = tmp_path / "code-ran"
    # A HistoryBuffer first, so that the restricted reader (not only torch's) meets the call.
    raw["message_hub"] = {"log_scalars": {"loss": HistoryBuffer([1.0], [1]),
                                          "lr": make_payload(marker)}}
    with stand_in_modules(**{"mmengine.logging.history_buffer:HistoryBuffer": HistoryBuffer}):
        torch.save(raw, tmp_path / "evil.pth")
    with pytest.raises(safe_pickle.RefusedGlobal):
        safe_pickle.load(tmp_path / "evil.pth")
    r = cli("zoo", "import", tmp_path / "evil.pth", "--format", "mmagic", "--name", "evil")
    assert r.exit_code == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "refused to load" in lines[0]
    assert "could run code" in lines[0] and "weights_only" not in lines[0]
    assert not marker.exists() and not zoo.converted_path("evil").exists()


def saved_generator(tmp_path) -> bytes:
    path = tmp_path / "real.pt"
    generator = UnetGenerator(GeneratorConfig(num_downs=5, ngf=4))
    checkpoint.save_checkpoint(path, checkpoint.generator_state(generator, "AtoB", 32))
    return path.read_bytes()


def legacy_cut_in_a_name(_) -> bytes:
    """A file of the format before PyTorch 1.6, cut inside a global's name: torch reports a
    global it does not allow ("torch._utils._rebuil"), one that cannot exist."""
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer, _use_new_zipfile_serialization=False)
    body = buffer.getvalue()
    return body[:body.index(b"_rebuild_tensor_v2") + 8]


@pytest.mark.parametrize("corrupt", [
    lambda real: np.random.default_rng(0).bytes(5000),
    lambda real: real[: len(real) // 2],
    lambda real: real[:-1],
    lambda real: b"",
    lambda real: b"not a checkpoint\n" * 10,
    legacy_cut_in_a_name,
], ids=["random bytes", "truncated", "last byte missing", "empty", "text", "legacy cut"])
@pytest.mark.parametrize("command", ["import", "translate"])
def test_corrupt_files_are_not_readable_checkpoints(cli, tmp_path, corrupt, command):
    file = tmp_path / "bad.pth"
    file.write_bytes(corrupt(saved_generator(tmp_path)))
    if command == "import":
        r = cli("zoo", "import", file, "--format", "mmagic", "--name", "bad")
    else:
        r = cli("translate", "-c", file, file, tmp_path / "out.png")
    assert r.exit_code == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [f"error: {file}: not a readable checkpoint (corrupt, truncated or not a "
                     "PyTorch file) (check its size and checksum, or download it again)"]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 4000))
def test_any_bytes_are_a_user_error(data, cut):
    """Garbage, or a cut checkpoint followed by garbage, never escapes as another exception."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        real = pathlib.Path(folder) / "real.pt"
        torch.save({"w": torch.arange(4.0), "meta": {"iter": 1}}, real)
        file = pathlib.Path(folder) / "x.pth"
        file.write_bytes(real.read_bytes()[:cut] + data)
        for inert in (False, True):
            try:
                checkpoint.load_weights_only(file, inert_classes=inert)
            except P2PError as exc:
                assert "weights_only" not in str(exc) and "arbitrary" not in str(exc)


def test_pull_from_file_checks_and_keeps_it(cli, http_server, monkeypatch, tmp_path):
    source, body = published_file("mmagic")
    serve(http_server, monkeypatch, "edges2shoes", body, full_hash=True)
    file = tmp_path / "downloaded.pth"
    file.write_bytes(body)
    r = cli("zoo", "pull", "edges2shoes", "--from", file)
    assert r.exit_code == 0, r.stderr
    assert file.read_bytes() == body and http_server.routes["/edges2shoes.pth"].hits == 0
    generator, _ = load_generator(r.out.strip())
    assert_same_function(generator, source, bgr=True)
    file.write_bytes(body + b"x")
    r = cli("zoo", "pull", "edges2shoes", "--from", file)
    assert r.exit_code == 2 and "checksum mismatch" in r.stderr and file.exists()


def test_checkpoint_path_pulls_once_and_suggests_names(http_server, monkeypatch):
    _, body = published_file("mmagic")
    serve(http_server, monkeypatch, "facades", body)
    calls = []
    path = zoo.checkpoint_path("facades", progress=lambda done, total: calls.append(done))
    assert path.is_file() and calls[-1] == len(body)
    assert zoo.checkpoint_path("facades") == path
    assert http_server.routes["/facades.pth"].hits == 1
    with pytest.raises(P2PError) as err:
        zoo.checkpoint_path("facade")
    assert "did you mean facades" in str(err.value)
    with pytest.raises(P2PError) as err:
        zoo.checkpoint_path("sat2map")
    assert "official-sat2map" in str(err.value)
    with pytest.raises(P2PError, match="unknown zoo model"):
        zoo.checkpoint_path("../facades")


def test_translate_task_pulls_on_first_use(cli, http_server, monkeypatch, tmp_path):
    from PIL import Image

    _, body = published_file("mmagic")
    serve(http_server, monkeypatch, "facades", body)
    Image.new("RGB", (SIZE, SIZE), (200, 40, 90)).save(tmp_path / "labels.png")
    for out in ("a.png", "b.png"):
        r = cli("translate", "--task", "facades", tmp_path / "labels.png", tmp_path / out)
        assert r.exit_code == 0, r.stderr
        assert Image.open(tmp_path / out).size == (SIZE, SIZE)
    assert http_server.routes["/facades.pth"].hits == 1


# --- import and strictness --------------------------------------------------------------------

def test_import_official_run_and_list(cli, tmp_path):
    source, body = published_file("official", seed=3)
    file = tmp_path / "latest_net_G.pth"
    file.write_bytes(body)
    r = cli("zoo", "import", file, "--format", "official", "--name", "my-facades",
            "--direction", "BtoA")
    assert r.exit_code == 0, r.stderr
    assert zoo.checkpoint_path("my-facades") == pathlib.Path(r.out.strip())
    generator, state = load_generator(r.out.strip())
    assert state["direction"] == "BtoA"
    assert_same_function(generator, source)

    r = cli("zoo", "list", "--json")
    rows = {row["name"]: row for row in json.loads(r.out)}
    assert len(rows) == len(zoo.ENTRIES) + 1
    assert rows["my-facades"]["source"] == "imported" and rows["my-facades"]["present"]
    assert rows["my-facades"]["direction"] == "BtoA"
    assert not rows["facades"]["present"] and rows["facades"]["source"] == "mmagic"
    assert {name: row["channels"] for name, row in rows.items()} == {
        **{e.name: "BGR" if e.layout == "mmagic" else "RGB" for e in zoo.ENTRIES},
        "my-facades": "RGB"}
    r = cli("zoo", "list")
    assert r.exit_code == 0 and "official-facades_label2photo" in r.out and "my-facades" in r.out
    channels = {line.split()[1]: line for line in r.out.splitlines() if line.startswith("│")}
    assert "BGR -> RGB" in channels["facades"] and "BGR" not in channels["my-facades"]

    r = cli("zoo", "import", file, "--format", "mmagic", "--name", "x")
    assert r.exit_code == 2 and "try --format official" in r.stderr
    r = cli("zoo", "import", file, "--format", "official", "--name", "facades")
    assert r.exit_code == 2 and "registry model" in r.stderr


def test_format_and_direction_are_choices_that_match_the_core(cli, tmp_path):
    from p2p.cli import zoo as zoo_cli
    from p2p.data.paired import DIRECTIONS

    assert tuple(zoo_cli.Layout) == zoo.LAYOUTS
    assert tuple(zoo_cli.Direction) == DIRECTIONS
    assert tuple(zoo_cli.ExportFormat) == export.EXPORT_FORMATS
    file = tmp_path / "latest_net_G.pth"
    file.write_bytes(b"never read: the options are refused first")
    for args, choices in ((["--format", "junyanz"], "'official', 'mmagic'"),
                          (["--format", "official", "--direction", "A2B"], "'AtoB', 'BtoA'")):
        r = cli("zoo", "import", file, "--name", "x", *args)
        assert r.exit_code == 2 and f"is not one of {choices}" in r.stderr, r.stderr
    r = cli("zoo", "export", "facades", tmp_path / "out", "--format", "tflite")
    assert r.exit_code == 2 and "'onnx', 'torchscript', 'hf'" in r.stderr
    assert "Value error" not in r.stderr


def test_import_official_instance_norm_gray_to_color(cli, tmp_path):
    """A CycleGAN-style run (--norm instance): biased convs, no norm tensors; 1 -> 3 channels."""
    source, body = published_file("official", seed=5, norm="instance", in_ch=1)
    file = tmp_path / "latest_net_G.pth"
    file.write_bytes(body)
    r = cli("zoo", "import", file, "--format", "official", "--name", "colorize")
    assert r.exit_code == 0, r.stderr
    generator, state = load_generator(r.out.strip())
    assert state["generator_config"]["norm"] == "instance"
    assert state["generator_config"]["in_channels"] == 1
    x = torch.rand(2, 1, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(generator.eval()(x), source.eval()(x), atol=1e-5, rtol=1e-4)


def test_import_mmagic_bgr(cli, tmp_path):
    source, body = published_file("mmagic", domain="aerial", seed=4)
    file = tmp_path / "maps.pth"
    file.write_bytes(body)
    r = cli("zoo", "import", file, "--format", "mmagic", "--name", "m2a", "--bgr")
    assert r.exit_code == 0, r.stderr
    generator, _ = load_generator(r.out.strip())
    assert_same_function(generator, source, bgr=True)
    rows = {row["name"]: row for row in json.loads(cli("zoo", "list", "--json").out)}
    assert rows["m2a"]["channels"] == "BGR"


def test_import_mmengine_checkpoint_without_mmengine(cli, tmp_path):
    """An mmagic 1.x / mmengine training checkpoint imports and translates exactly like the plain
    {meta, state_dict} file of the same tensors, with mmengine absent and nothing of it run."""
    from PIL import Image

    _, plain = published_file("mmagic", seed=6)
    _, full = published_file("mmagic", seed=6, mmengine=True)
    assert b"mmengine.logging.history_buffer" in full and b"message_hub" in full
    with pytest.raises(pickle.UnpicklingError):  # what weights-only loading alone does with it
        torch.load(io.BytesIO(full), weights_only=True)
    Image.new("RGB", (SIZE, SIZE), (200, 40, 90)).save(tmp_path / "labels.png")
    converted, outputs = {}, {}
    for name, body in (("plain", plain), ("engine", full)):
        (tmp_path / f"{name}.pth").write_bytes(body)
        r = cli("zoo", "import", tmp_path / f"{name}.pth", "--format", "mmagic", "--name", name,
                "--bgr")
        assert r.exit_code == 0, r.stderr
        converted[name] = load_checkpoint(r.out.strip())["generator"]
        r = cli("translate", "--task", name, tmp_path / "labels.png", tmp_path / f"{name}.png",
                "--seed", 0)
        assert r.exit_code == 0, r.stderr
        outputs[name] = (tmp_path / f"{name}.png").read_bytes()
    assert "mmengine" not in sys.modules
    assert converted["engine"].keys() == converted["plain"].keys()
    assert all(torch.equal(converted["engine"][k], v) for k, v in converted["plain"].items())
    assert outputs["engine"] == outputs["plain"]


def test_mmengine_objects_are_read_as_inert_placeholders(tmp_path):
    """Classes the file names are never looked up or called, even where they exist: a reduce of
    one yields a placeholder holding its arguments and state."""
    from p2p.weights import safe_pickle

    marker = tmp_path / "code-ran"

    class Trap:
        def __init__(self, *args):
            marker.touch()

        def __reduce__(self):
            return Trap, (str(marker),), {"state": 1}

        def __setstate__(self, state):
            marker.touch()

    class ConfigDict(dict):
        pass

    config = ConfigDict(lr=2e-4)
    config.extra = "x"
    file = tmp_path / "objects.pth"
    with stand_in_modules(**{"mmengine.trap:Trap": Trap, "mmengine.config:ConfigDict": ConfigDict}):
        torch.save({"trap": object.__new__(Trap), "cfg": config, "w": torch.arange(3.0)}, file)
        marker.unlink(missing_ok=True)
        sys.modules["mmengine.trap"].Trap = Trap  # even present, it is not used
        loaded = checkpoint.load_weights_only(file, inert_classes=True)
    assert not marker.exists()
    trap, cfg = loaded["trap"], loaded["cfg"]
    assert isinstance(trap, safe_pickle.Placeholder) and not isinstance(trap, Trap)
    assert (trap.module, trap.name, trap.args, trap.state) == (
        "mmengine.trap", "Trap", (str(marker),), {"state": 1})
    assert (cfg.module, cfg.name, cfg.items, cfg.state) == (
        "mmengine.config", "ConfigDict", {"lr": 2e-4}, {"extra": "x"})
    assert torch.equal(loaded["w"], torch.arange(3.0))
    with pytest.raises(P2PError, match="refused to load: it needs mmengine.trap.Trap"):
        checkpoint.load_weights_only(file)  # only where the caller asks for placeholders


def tampered(change):
    source = seeded(PublishedUnet("official", **SMALL), 0)
    tensors = dict(source.state_dict())
    change(tensors)
    return tensors


@pytest.mark.parametrize("change,message", [
    (lambda t: t.update({"extra.weight": torch.zeros(1)}), "1 unexpected (extra.weight)"),
    (lambda t: t.pop("model.model.1.model.2.running_mean"), "1 missing"),
    (lambda t: t.update({"model.model.1.model.2.bias": torch.zeros(5)}), "has shape (5,)"),
    (lambda t: t.pop("model.model.3.weight"), "not a official pix2pix U-Net"),
    (lambda t: t.update({"model.model.0.weight": "text"}), "is not a tensor"),
])
def test_conversion_is_strict(change, message):
    tensors = tampered(change)
    with pytest.raises(P2PError) as err:
        zoo.convert(zoo.generator_tensors(tensors, "official", "f.pth"), "official", "f.pth")
    assert message in str(err.value)


# --- export ---------------------------------------------------------------------------------

@pytest.fixture
def small_checkpoint(tmp_path):
    generator = seeded(UnetGenerator(GeneratorConfig(num_downs=5, ngf=8)), 7)
    path = tmp_path / "small.pt"
    checkpoint.save_checkpoint(path, checkpoint.generator_state(generator, "AtoB", 32))
    return generator.eval(), path


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_export_torchscript_dynamic_batch(cli, small_checkpoint, tmp_path):
    generator, path = small_checkpoint
    out = tmp_path / "g.ts"
    r = cli("zoo", "export", path, out, "--format", "torchscript")
    assert r.exit_code == 0, r.stderr
    assert "checked with torchscript" in r.stderr and r.out.strip() == str(out)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), generator(x), atol=1e-5,
                                   rtol=1e-4)


def test_export_onnx(cli, small_checkpoint, tmp_path):
    for module in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            skip_or_fail(f"{module} is not installed (the onnx extra)", "CI")
    import onnxruntime as ort

    generator, path = small_checkpoint
    out = tmp_path / "g.onnx"
    r = cli("zoo", "export", path, out, "--format", "onnx")
    assert r.exit_code == 0, r.stderr
    assert "checked with onnxruntime" in r.stderr
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    y = ort.InferenceSession(str(out)).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), generator(x), atol=1e-5, rtol=1e-4)


def test_export_failures_write_nothing(cli, small_checkpoint, tmp_path, monkeypatch):
    _, path = small_checkpoint
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    r = cli("zoo", "export", path, tmp_path / "g.onnx", "--format", "onnx")
    assert r.exit_code == 2 and 'pip install "p2p-pix2pix[onnx]"' in r.stderr
    monkeypatch.setattr(export, "EXPORT_TOLERANCE", -1.0)  # any difference fails the check
    r = cli("zoo", "export", path, tmp_path / "g.ts", "--format", "torchscript")
    assert r.exit_code == 2 and "nothing was written" in r.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(("g.", ".g."))] == []


@pytest.mark.parametrize("foreign", [
    b"",  # empty
    b"a text file, not a checkpoint\n",
    [1, 2],  # saved with torch.save from here on: a list
    {"generator": {}},  # a mapping without source or direction
    {"source": "x", "direction": "AtoB"},  # a source that is not a mapping
])
def test_list_shows_a_foreign_file_as_unreadable(cli, tmp_path, foreign):
    source, body = published_file("official", seed=3)
    file = tmp_path / "latest_net_G.pth"
    file.write_bytes(body)
    assert cli("zoo", "import", file, "--format", "official", "--name", "mine").exit_code == 0
    stray = zoo.zoo_dir() / "stray" / zoo.CHECKPOINT_NAME
    stray.parent.mkdir()
    if isinstance(foreign, bytes):
        stray.write_bytes(foreign)
    else:
        torch.save(foreign, stray)

    r = cli("zoo", "list", "--json")
    assert r.exit_code == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.out)}
    assert len(rows) == len(zoo.ENTRIES) + 2
    assert rows["mine"]["present"] and rows["mine"]["problem"] is None
    assert rows["stray"]["task"] == "unreadable" and not rows["stray"]["present"]
    assert str(stray) in rows["stray"]["problem"]
    r = cli("zoo", "list")
    assert r.exit_code == 0 and "mine" in r.out and "stray" in r.out and "unreadable" in r.out
    assert r.stderr.count("\n") == 1 and f"stray is unreadable: {stray}" in r.stderr

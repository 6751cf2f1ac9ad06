"""Hugging Face model folders: export from a run or the zoo, load with -c, fetch hf: from a local
mirror of the Hub's HTTP API (HF_ENDPOINT), offline reuse, and the failures."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import skip_or_fail
from p2p_testing import HubMirror, p2p_process, published_file
from PIL import Image

from p2p.models import GeneratorConfig, UnetGenerator, init_weights
from p2p.weights import hub
from p2p.weights.checkpoint import generator_state, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def tiny_generator(seed: int = 0) -> UnetGenerator:
    torch.manual_seed(seed)
    return init_weights(UnetGenerator(GeneratorConfig(num_downs=5, ngf=4)))


def make_run(run_dir: Path, metrics: bool = True) -> Path:
    """A run directory as `p2p train` and `p2p eval run` leave it (a tiny facades run)."""
    recipe = {"data": {"path": "facades", "direction": "BtoA", "crop_size": 32},
              "model": {"num_downs": 5, "ngf": 4}, "train": {"iters": 7}}
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    state = generator_state(tiny_generator(), "BtoA", 32)
    save_checkpoint(run_dir / "checkpoints" / "latest.pt",
                    {**state, "iteration": 7, "recipe": recipe})
    (run_dir / "samples").mkdir()
    for iteration in (5, 7):
        Image.new("RGB", (96, 32), (iteration * 30, 0, 0)).save(
            run_dir / "samples" / f"iter_{iteration:08d}.png")
    if metrics:
        (run_dir / "metrics.json").write_text(json.dumps(
            {"fid": 201.5, "is": 1.25, "is_std": 0.1, "split": "test", "task": "facades"}))
    return run_dir


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def write_image(path: Path, size=(40, 24)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_export_run_writes_a_hub_model_folder(cli, tmp_path):
    run = make_run(tmp_path / "runs" / "tiny")
    out = tmp_path / "tiny-facades"
    r = cli("zoo", "export", run, out, "--format", "hf")
    assert r.exit_code == 0, r.stderr
    assert r.out.strip() == str(out) and "checked with p2p" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "model.safetensors", "sample.png"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left

    config = json.loads((out / "config.json").read_text())
    assert config["format"] == hub.FORMAT and config["direction"] == "BtoA"
    assert config["image_size"] == 32 and config["in_channels"] == config["out_channels"] == 3
    assert config["generator_config"]["num_downs"] == 5 and config["generator_config"]["ngf"] == 4
    assert config["test_time_mode"] == "paper"
    assert config["normalization"]["source"] == {"dtype": "uint8", "range": [0.0, 255.0],
                                                 "explicit": False}
    assert config["preprocess"]["mode"] == "resize_and_crop"
    assert config["dataset"] == "facades" and config["iteration"] == 7

    from safetensors.torch import load_file
    tensors = load_file(out / "model.safetensors")
    for key, value in tiny_generator().state_dict().items():
        assert torch.equal(tensors[key], value), key

    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["pipeline_tag"] == "image-to-image" and meta["library_name"] == "p2p"
    assert {"pix2pix", "image-to-image", "facades"} <= set(meta["tags"]) and "license" in meta
    assert "label map -> photo" in card and "| iterations | 7 |" in card
    assert "201.500" in card and "124.977" in card and "119.135" in card  # ours beside published
    assert "![samples](sample.png)" in card and "crop_size: 32" in card
    assert "hf upload OWNER/tiny-facades" in card and "--task hf:OWNER/tiny-facades" in card
    assert (out / "sample.png").read_bytes() == (run / "samples" / "iter_00000007.png").read_bytes()


def test_folder_translates_like_the_checkpoint(cli, tmp_path):
    run = make_run(tmp_path / "run", metrics=False)
    out = tmp_path / "model"
    assert cli("zoo", "export", run, out, "--format", "hf").exit_code == 0
    assert "## Scores" in (out / "README.md").read_text()  # published ones, for facades BtoA
    image = write_image(tmp_path / "in.png")
    results = []
    for source in (run, out):
        r = cli("translate", "-c", source, image, "-", "--eval-mode")
        assert r.exit_code == 0, r.stderr
        results.append(r.stdout)
    assert results[0] == results[1]
    # A model folder re-exports (a copy keeps the facts) and exports to TorchScript too.
    assert cli("zoo", "export", out, tmp_path / "again", "--format", "hf").exit_code == 0
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["dataset"] == "facades" and again["iteration"] == 7
    assert cli("zoo", "export", out, tmp_path / "g.ts", "--format", "torchscript").exit_code == 0


def test_export_replaces_only_a_model_folder(cli, tmp_path):
    run = make_run(tmp_path / "run", metrics=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    r = cli("zoo", "export", run, busy, "--format", "hf")
    assert r.exit_code == 2 and "not a p2p model folder" in r.stderr
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    out = tmp_path / "model"
    assert cli("zoo", "export", run, out, "--format", "hf").exit_code == 0
    (out / "model.safetensors").write_bytes(b"old")
    assert cli("zoo", "export", run, out, "--format", "hf").exit_code == 0  # replaced whole
    assert len((out / "model.safetensors").read_bytes()) > 1000


def test_converted_zoo_model_exports_with_its_license(cli, tmp_path):
    # A generator in the official layout, imported into the zoo, exported as a folder.
    (tmp_path / "latest_net_G.pth").write_bytes(published_file("official", seed=3)[1])
    r = cli("zoo", "import", tmp_path / "latest_net_G.pth", "--format", "official",
            "--name", "mine", "--direction", "BtoA", "--image-size", "32")
    assert r.exit_code == 0, r.stderr
    r = cli("zoo", "export", "mine", tmp_path / "mine-hf", "--format", "hf")
    assert r.exit_code == 0, r.stderr
    config = json.loads((tmp_path / "mine-hf" / "config.json").read_text())
    assert config["source"]["layout"] == "official" and config["direction"] == "BtoA"
    assert front_matter((tmp_path / "mine-hf" / "README.md").read_text())["license"] == "other"


def test_broken_folders_are_one_line_errors(cli, tmp_path):
    run = make_run(tmp_path / "run", metrics=False)
    out = tmp_path / "model"
    assert cli("zoo", "export", run, out, "--format", "hf").exit_code == 0
    image = write_image(tmp_path / "in.png")
    (out / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    r = cli("translate", "-c", out, image, tmp_path / "o.png")
    assert r.exit_code == 2 and "not a readable safetensors file" in r.stderr
    assert "Traceback" not in r.stderr
    (out / "config.json").write_text("{}")
    r = cli("translate", "-c", out, image, tmp_path / "o.png")
    assert r.exit_code == 2 and "not a p2p model config" in r.stderr


# ---- hf: through a local mirror of the Hub -----------------------------------------------

@pytest.fixture
def exported(cli, tmp_path) -> Path:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        skip_or_fail("the hf extra is not installed: pip install -e '.[hf]'", "CI")
    out = tmp_path / "model"
    assert cli("zoo", "export", make_run(tmp_path / "run"), out, "--format", "hf").exit_code == 0
    return out


@pytest.mark.slow
def test_hf_reference_downloads_from_mirror_then_works_offline(cli, exported, tmp_path):
    files = {name: (exported / name).read_bytes() for name in
             ("config.json", "model.safetensors", "README.md", "sample.png")}
    image = write_image(tmp_path / "in.png")
    with HubMirror("someone/tiny-facades", files, revisions=("main", "v1")) as mirror:
        env = {**os.environ, "HF_ENDPOINT": mirror.url, "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(ROOT)}
        env.pop("HF_HUB_OFFLINE", None)
        r = p2p_process(["translate", "--task", "hf:someone/tiny-facades@v1", image, "-",
                         "--eval-mode"], env)
        assert r.returncode == 0, r.stderr.decode()
        expected = cli("translate", "-c", exported, image, "-", "--eval-mode").stdout
        assert r.stdout == expected and expected.startswith(b"\x89PNG")
        fetched = [line for line in mirror.requests if "/resolve/" in line]
        assert any("model.safetensors" in line for line in fetched)
        assert not any("README.md" in line or "sample.png" in line for line in fetched)
        assert list((tmp_path / "hf" / "hub").glob("models--someone--tiny-facades/snapshots/*/"
                                                   "model.safetensors"))
        r = p2p_process(["translate", "--task", "hf:someone/missing", image, "-"], env)
        assert r.returncode == 2 and b"hf:someone/missing: cannot download" in r.stderr
        assert b"Traceback" not in r.stderr
    # The mirror is gone: offline mode reads the cache, and without the cache says so.
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    r = p2p_process(["translate", "--task", "hf:someone/tiny-facades@v1", image, "-",
                     "--eval-mode"], offline)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == expected
    r = p2p_process(["translate", "--task", "hf:someone/other", image, "-"], offline)
    assert r.returncode == 2 and b"not in the Hugging Face cache" in r.stderr


def test_bad_references_and_missing_extra(cli, tmp_path, monkeypatch):
    image = write_image(tmp_path / "in.png")
    r = cli("translate", "--task", "hf:no-owner", image, "-")
    assert r.exit_code == 2 and "write hf:OWNER/NAME" in r.stderr
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    r = cli("translate", "--task", "hf:someone/model", image, "-")
    assert r.exit_code == 2 and 'pip install "p2p-pix2pix[hf]"' in r.stderr

"""Validation during training, the checkpoint history, best.pt, RUN_DIR@ selectors and
fine-tuning (model.init_from)."""

import dataclasses
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from p2p.data.synthetic import make_pair
from p2p.errors import P2PError
from p2p.weights import checkpoint as ckpt
from p2p.weights import load_checkpoint, resolve, run_directory

RECIPE = """
name: tiny
data: {{path: {data}, load_size: 36, crop_size: 32, batch_size: 2}}
model: {{num_downs: 5, ngf: 4, ndf: 4{model}}}
train: {{iters: {iters}, log_every: 2, sample_every: 100, checkpoint_every: 2{train}}}
"""


@pytest.fixture
def recipe(tmp_path):
    """6 train and 3 val pairs of 32x32; returns (iters, train=..., model=...) -> recipe path."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 3)):
        (tmp_path / "data" / split).mkdir(parents=True)
        for i in range(count):
            make_pair(rng, size=32).save(tmp_path / "data" / split / f"{i}.png")
    made = []

    def write(iters: int = 8, train: str = "", model: str = "") -> os.PathLike:
        path = tmp_path / f"recipe{len(made)}.yaml"
        path.write_text(RECIPE.format(data=tmp_path / "data", iters=iters,
                                      train=f", {train}" if train else "",
                                      model=f", {model}" if model else ""))
        made.append(path)
        return path

    return write


def log_records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def assert_same_training_state(a: dict, b: dict) -> None:
    for key in ("generator", "discriminator"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs"
    for key in ("optimizer_g", "optimizer_d"):
        for index, state in a[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(value, b[key]["state"][index][name]), f"{key} differs"
    assert torch.equal(a["rng_cpu"], b["rng_cpu"])


def test_validation_leaves_the_weights_bit_identical_and_keeps_history_and_best(
        cli, recipe, tmp_path):
    plain, validated = tmp_path / "plain", tmp_path / "validated"
    assert cli("train", recipe(7), "--out", plain).exit_code == 0
    r = cli("train", recipe(7, train="val_every: 3, keep_checkpoints: 2"), "--out", validated)
    assert r.exit_code == 0, r.stderr
    assert "validation at iter 3 on 3 val images" in r.stderr
    assert_same_training_state(load_checkpoint(plain), load_checkpoint(validated))

    records = [r for r in log_records(validated) if "val_l1" in r]
    assert [r["iteration"] for r in records] == [3, 6, 7]  # every 3, and at the end
    for record in records:
        assert 0 < record["val_l1"] < 1 and 0 < record["val_ssim"] < 1 and record["val_psnr"] > 0
        assert record["val_images"] == 3 and record["val_split"] == "val"
    best_record = min(records, key=lambda r: r["val_l1"])
    best = ckpt.best_metrics(validated)
    assert best["iteration"] == best_record["iteration"] and best["metric"] == "l1"
    assert best["metrics"]["l1"] == pytest.approx(best_record["val_l1"], abs=1e-6)
    assert [r["iteration"] for r in records if r.get("val_best")][-1] == best["iteration"]

    # The newest 2 of iter_2, 4, 6, 7 are kept; latest.pt is the same file as iter_7.
    assert ckpt.history(validated) == [6, 7]
    latest = validated / "checkpoints" / "latest.pt"
    assert latest.read_bytes() == ckpt.history_path(validated, 7).read_bytes()
    assert ckpt.history(plain) == [4, 6, 7]  # the default keeps 3


def test_validation_numbers_are_eval_pairs_on_what_translate_writes(cli, recipe, tmp_path):
    """Validation = p2p translate --paired (paper mode, seed = train.seed, batch 1) of the val
    split with the best checkpoint, then p2p eval pairs against the targets."""
    from PIL import Image

    run = tmp_path / "run"
    assert cli("train", recipe(4, train="val_every: 2"), "--out", run).exit_code == 0
    best = ckpt.best_metrics(run)
    targets = tmp_path / "targets"
    targets.mkdir()
    for path in sorted((tmp_path / "data" / "val").iterdir()):
        pair = Image.open(path)
        pair.crop((32, 0, 64, 32)).save(targets / path.name)  # B, the target of AtoB
    out = tmp_path / "out"
    r = cli("translate", "-c", f"{run}@best", "--paired", "--seed", "0", "-b", "1",
            tmp_path / "data" / "val", out)
    assert r.exit_code == 0, r.stderr
    scored = json.loads(cli("eval", "pairs", targets, out, "--json").out)
    assert scored["n"] == 3
    for key in ("l1", "psnr", "ssim"):
        assert scored[key] == pytest.approx(best["metrics"][key], abs=1e-9), key


def test_best_selection_is_exact_across_resumes(cli, recipe, tmp_path):
    train = "val_every: 2, best_metric: ssim"
    assert cli("train", recipe(4, train=train), "--out", tmp_path / "full").exit_code == 0
    assert cli("train", recipe(2, train=train), "--out", tmp_path / "split").exit_code == 0
    r = cli("train", "--resume", tmp_path / "split", "--iters", "4")
    assert r.exit_code == 0, r.stderr
    full, split = ckpt.best_metrics(tmp_path / "full"), ckpt.best_metrics(tmp_path / "split")
    assert full == split and full["metric"] == "ssim"
    assert_same_training_state(load_checkpoint(tmp_path / "full"),
                               load_checkpoint(tmp_path / "split"))

    # The best so far comes from best.pt: one that cannot be beaten stays, whatever comes next.
    best_file = tmp_path / "split" / "checkpoints" / "best.pt"
    state = load_checkpoint(best_file)
    ckpt.save_checkpoint(best_file, {**state, "metrics": {**state["metrics"], "ssim": 2.0}})
    assert cli("train", "--resume", tmp_path / "split", "--iters", "6").exit_code == 0
    assert ckpt.best_metrics(tmp_path / "split")["metrics"]["ssim"] == 2.0
    assert not any(r.get("val_best") for r in log_records(tmp_path / "split")
                   if r["iteration"] == 6 and "val_l1" in r)


def test_selectors_pick_checkpoints_and_name_what_exists(cli, recipe, tmp_path):
    run = tmp_path / "run"
    assert cli("train", recipe(4, train="val_every: 3"), "--out", run).exit_code == 0
    folder = run / "checkpoints"
    assert resolve(f"{run}@latest") == folder / "latest.pt"
    assert resolve(f"{run}@best") == folder / "best.pt"
    assert resolve(f"{run}@4") == folder / "iter_00000004.pt"
    assert load_checkpoint(f"{run}@2")["iteration"] == 2
    assert run_directory(f"{run}@2") == run and run_directory(folder / "best.pt") is None
    with pytest.raises(P2PError, match=r"@5: no such checkpoint in this run.*it has: latest, "
                                       r"best, 2, 4"):
        resolve(f"{run}@5")
    with pytest.raises(P2PError, match="unknown selector 'newest'"):
        resolve(f"{run}@newest")
    with pytest.raises(P2PError, match="no such checkpoint file or run directory"):
        resolve(f"{tmp_path / 'nowhere'}@best")
    # Through the CLI of translate and zoo export: one line, exit 2.
    for args in (("translate", "-c", f"{run}@7", tmp_path / "data" / "val", tmp_path / "o"),
                 ("zoo", "export", f"{run}@7", tmp_path / "g.pt", "--format", "torchscript")):
        r = cli(*args)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "it has: latest, best, 2, 4" in r.stderr
    r = cli("zoo", "export", f"{run}@best", tmp_path / "g.pt", "--format", "torchscript")
    assert r.exit_code == 0, r.stderr


def test_fine_tuning_starts_from_the_weights_records_them_and_resumes_without_them(
        cli, recipe, tmp_path):
    source = tmp_path / "source"
    assert cli("train", recipe(2), "--out", source).exit_code == 0
    spec = f"{source}@2"
    tune = recipe(2, model=f"init_from: '{spec}'", train="lr: 0.00005, log_every: 1")

    # The generator starts as the source's, D and the optimizers fresh.
    from p2p.recipe import load_recipe
    from p2p.training.distributed import World
    from p2p.training.loop import build_models, init_generator

    models = build_models(load_recipe(tune), torch.device("cpu"))
    fresh_d = {k: v.clone() for k, v in models.discriminator.state_dict().items()}
    record = init_generator(models.generator, spec, World())
    loaded = load_checkpoint(spec)["generator"]
    assert all(torch.equal(v, loaded[k]) for k, v in models.generator.state_dict().items())
    assert all(torch.equal(v, fresh_d[k]) for k, v in models.discriminator.state_dict().items())
    assert record["source_iteration"] == 2 and record["init_from"] == spec
    from p2p.download import sha256_file
    assert record["sha256"] == sha256_file(ckpt.history_path(source, 2))

    full = tmp_path / "full"
    r = cli("train", tune, "--out", full)
    assert r.exit_code == 0, r.stderr
    assert "generator initialized from" in r.stderr
    assert f"init_from: {spec}" in (full / "recipe.yaml").read_text()
    assert load_checkpoint(full)["init_from"] == record
    assert log_records(full)[0] == {"event": "init_from", **record,
                                    "time": log_records(full)[0]["time"]}

    # A fine-tune resumes from its own checkpoint: the source is not needed any more.
    split = tmp_path / "split"
    assert cli("train", recipe(1, model=f"init_from: '{spec}'",
                      train="lr: 0.00005, log_every: 1"), "--out", split).exit_code == 0
    for path in (source / "checkpoints").iterdir():
        path.unlink()
    r = cli("train", "--resume", split, "--iters", "2")
    assert r.exit_code == 0, r.stderr
    assert_same_training_state(load_checkpoint(full), load_checkpoint(split))
    assert load_checkpoint(split)["init_from"] == record


def test_fine_tuning_from_a_zoo_name_and_its_errors(cli, recipe, tmp_path, p2p_home):
    source = tmp_path / "source"
    assert cli("train", recipe(2), "--out", source).exit_code == 0
    state = load_checkpoint(source)
    zoo_file = p2p_home / "zoo" / "mine" / "generator.pt"  # as `p2p zoo import` stores it
    ckpt.save_checkpoint(zoo_file, {k: state[k] for k in (
        "generator_config", "generator", "direction", "image_size")})
    r = cli("train", recipe(2, model="init_from: mine"), "--out", tmp_path / "tuned")
    assert r.exit_code == 0, r.stderr
    recorded = load_checkpoint(tmp_path / "tuned")["init_from"]
    assert recorded["path"] == str(zoo_file) and recorded["source_iteration"] is None

    wider = recipe(2, model="init_from: mine, ngf: 8")
    r = cli("train", wider, "--out", tmp_path / "wider")
    assert r.exit_code == 2 and r.stderr.splitlines()[-1].startswith("error: model.init_from")
    assert "Traceback" not in r.stderr
    assert "tensor 'down.0.conv.weight' has shape (4, 3, 4, 4) there but (8, 3, 4, 4)" in r.stderr
    assert not (tmp_path / "wider").exists()  # nothing written
    r = cli("train", recipe(2, model="init_from: mien"), "--out", tmp_path / "typo")
    assert r.exit_code == 2 and "model.init_from: unknown zoo model 'mien'" in r.stderr
    assert "mine" in r.stderr


def test_val_fid_fails_before_training_without_the_fid_inception_weights(
        cli, recipe, tmp_path, http_server, monkeypatch):
    from p2p.metrics import inception

    monkeypatch.setattr(inception, "FID_WEIGHTS", dataclasses.replace(
        inception.FID_WEIGHTS, url=f"{http_server.url}/missing.pth"))
    fid_recipe = recipe(2, train="val_every: 2, val_fid: true, best_metric: fid")
    r = cli("train", fid_recipe, "--out", tmp_path / "nofid")
    assert r.exit_code == 2 and "FID Inception weights are not in" in r.stderr  # as p2p eval
    assert "Traceback" not in r.stderr and not (tmp_path / "nofid").exists()


class ChannelMeans(torch.nn.Module):
    """A stand-in for the FID Inception (whose 2048-d sqrtm takes minutes on 2 cores): the
    per-channel means as 3-d features."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_val_fid_compares_the_float_outputs_with_the_cached_real_statistics(
        cli, recipe, tmp_path, p2p_home, monkeypatch):
    from p2p.inference.generator import run_generator
    from p2p.metrics import frechet, inception
    from p2p.recipe import load_recipe
    from p2p.training import validation
    from p2p.training.loop import build_models, inference_model

    monkeypatch.setattr(inception, "fid_inception", lambda weights, progress: ChannelMeans())
    fid_recipe = recipe(2, train="val_every: 1, val_fid: true, best_metric: fid")
    r = cli("train", fid_recipe, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    records = [r for r in log_records(tmp_path / "run") if "val_l1" in r]
    assert [r["iteration"] for r in records] == [1, 2] and all(r["val_fid"] for r in records)
    best = ckpt.best_metrics(tmp_path / "run")
    assert best["metric"] == "fid" and best["metrics"]["fid"] == pytest.approx(
        min(r["val_fid"] for r in records), abs=1e-6)
    cached = list((p2p_home / "fid-stats").iterdir())
    assert len(cached) == 1  # the real side, computed once for both validations

    # The same number by hand: FID of the float outputs (seeded paper mode) against the targets.
    loaded = load_recipe(fid_recipe)
    models = build_models(loaded, torch.device("cpu"))
    validator = validation.prepare(loaded, tmp_path / "data", torch.device("cpu"))
    assert list((p2p_home / "fid-stats").iterdir()) == cached
    targets = torch.stack([validator.dataset[i][1] for i in range(3)])
    torch.manual_seed(0)
    outputs = torch.cat([run_generator(models.generator, validator.dataset.get_many([i])[0]
                                       .float() / 127.5 - 1) for i in range(3)])
    expected = frechet.frechet_distance(
        frechet.statistics(ChannelMeans()(torch.stack([frechet.fid_input(t) for t in targets]))
                       .double().numpy()),
        frechet.statistics(ChannelMeans()(outputs).double().numpy()))
    model = inference_model(models, loaded, torch.device("cpu"))
    assert validation.validate(validator, model)["fid"] == pytest.approx(expected)


def test_recipe_checks_the_new_values(recipe):
    from p2p.recipe import load_recipe

    with pytest.raises(P2PError, match="best_metric fid needs train.val_fid"):
        load_recipe(recipe(2, train="val_every: 2, best_metric: fid"))
    with pytest.raises(P2PError, match="keep_checkpoints must be between 0 and"):
        load_recipe(recipe(2, train="keep_checkpoints: -1"))
    with pytest.raises(P2PError, match="'psnr2' is not one of"):
        load_recipe(recipe(2, train="best_metric: psnr2"))


def test_keep_checkpoints_zero_and_missing_validation_split(cli, recipe, tmp_path):
    run = tmp_path / "run"
    assert cli("train", recipe(4, train="keep_checkpoints: 0"), "--out", run).exit_code == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest.pt"]
    r = cli("train", recipe(2, train="val_every: 1, val_split: holdout"), "--out", tmp_path / "x")
    assert r.exit_code == 2 and "no 'holdout' split folder" in r.stderr
    for path in (tmp_path / "data" / "val").iterdir():
        path.unlink()
    (tmp_path / "data" / "val").rmdir()
    r = cli("train", recipe(2, train="val_every: 1"), "--out", tmp_path / "y")
    assert r.exit_code == 2 and "no val/ or test/ split folder" in r.stderr
    assert not (tmp_path / "y").exists()


def test_report_and_tensorboard_show_validation_and_the_best_checkpoint(cli, recipe, tmp_path):
    from p2p_testing import parse_self_contained

    from p2p.training.report import read_log

    run = tmp_path / "run"
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    args = ["--tensorboard"] if tensorboard else []
    r = cli("train", recipe(4, train="val_every: 2"), "--out", run, *args)
    assert r.exit_code == 0, r.stderr
    merged = {rec["iteration"]: rec for rec in read_log(run / "log.jsonl")}
    assert {"g_l1", "val_l1", "val_ssim"} <= set(merged[4])  # losses and validation of iter 4
    with open(run / "log.jsonl", "a") as log:  # a line being written right now
        log.write('{"iteration": 6, "val_l1": 0.')
    assert cli("report", run).exit_code == 0
    page, images = parse_self_contained(run / "report.html")
    text = " ".join(page.text)
    best = ckpt.best_metrics(run)
    assert f"iteration {best['iteration']}, best by l1" in text and "run@best" in text.replace(
        str(run), "run")
    assert "iter_NNNNNNNN.pt" in text and "2, 4" in text
    if importlib.util.find_spec("matplotlib") is not None:
        assert [mime for mime, _ in images].count("image/svg+xml") == 2  # losses, validation
    if tensorboard:
        from p2p_testing import read_events

        events = read_events(run / "tensorboard")
        for tag in ("val/L1", "val/PSNR", "val/SSIM"):
            assert [e.step for e in events.Scalars(tag)] == [2, 4], tag


def test_the_facades_fine_tune_recipe_fits_the_published_facades_generator():
    from pathlib import Path

    from p2p.recipe import load_recipe
    from p2p.weights import zoo

    recipes = Path(__file__).resolve().parent.parent / "recipes"
    tune = load_recipe(recipes / "facades_finetune.yaml")
    published = load_recipe(recipes / "facades.yaml")
    entry = zoo.find_entry(tune.model.init_from)
    assert entry.dataset == "facades" and entry.direction == tune.data.direction
    assert tune.generator_config() == published.generator_config()  # strict loading will fit
    assert tune.data.crop_size == entry.image_size
    assert tune.train.lr < published.train.lr and tune.train.iters < published.train.iters
    assert tune.train.val_every > 0 and tune.train.keep_checkpoints > 0


def test_history_is_written_once_and_copied_where_there_are_no_hard_links(tmp_path, monkeypatch):
    def save(run, iteration, keep):
        ckpt.save_training_checkpoint(run, {"iteration": iteration, "w": torch.arange(3.0)}, keep)

    for i in (1, 2, 3):
        save(tmp_path / "linked", i, keep=2)
    latest = tmp_path / "linked" / "checkpoints" / "latest.pt"
    assert latest.stat().st_ino == ckpt.history_path(tmp_path / "linked", 3).stat().st_ino
    assert ckpt.history(tmp_path / "linked") == [2, 3]

    def no_links(*args):
        raise PermissionError("no hard links on this filesystem")

    monkeypatch.setattr(os, "link", no_links)
    for i in (1, 2):
        save(tmp_path / "copied", i, keep=1)
    folder = tmp_path / "copied" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["iter_00000002.pt", "latest.pt"]
    assert (folder / "latest.pt").read_bytes() == (folder / "iter_00000002.pt").read_bytes()
    assert load_checkpoint(folder / "latest.pt")["iteration"] == 2

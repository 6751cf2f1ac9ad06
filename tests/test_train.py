import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from p2p.weights import load_checkpoint, load_generator


def test_train_writes_a_complete_run(cli, tiny, tmp_path):
    run = tmp_path / "run"
    r = cli("train", tiny(6), "--out", run)
    assert r.exit_code == 0, r.stderr
    assert r.out.strip() == str(run)  # stdout carries the result only
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    # The first record names what this session trains on, as the CLI's first line does.
    first = records[0]
    assert first["precision"] in ("bf16", "fp32") and first["device"] == (
        f"cpu, {torch.get_num_threads()} threads x 1")
    assert f"on {first['device']}, {first['precision']}" in r.stderr.splitlines()[0]
    assert [rec["iteration"] for rec in records] == [2, 4, 6]
    assert {"g_gan", "g_l1", "d_real", "d_fake", "lr", "it_per_s"} <= set(records[0])
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "iter_00000004.png", "iter_00000006.png"]
    state = load_checkpoint(run)
    assert state["iteration"] == 6 and state["direction"] == "AtoB" and state["image_size"] == 32
    generator, _ = load_generator(run)
    assert generator(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    # A second run into the same directory must not clobber it.
    again = cli("train", tiny(6), "--out", run)
    assert again.exit_code == 2 and "--resume" in again.stderr


def test_resume_is_bit_identical(cli, tiny, tmp_path):
    assert cli("train", tiny(8), "--out", tmp_path / "full").exit_code == 0
    assert cli("train", tiny(4), "--out", tmp_path / "split").exit_code == 0
    r = cli("train", "--resume", tmp_path / "split", "--iters", "8")
    assert r.exit_code == 0, r.stderr
    full, split = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    assert split["iteration"] == 8
    for key in ("generator", "discriminator"):
        for name, tensor in full[key].items():
            assert torch.equal(tensor, split[key][name]), f"{key}.{name} differs"
    for key in ("optimizer_g", "optimizer_d"):
        for index, state in full[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(value, split[key]["state"][index][name])


def test_user_errors_are_one_line_exit_2(cli, tiny, tmp_path):
    cases = [
        ("train", tmp_path / "missing.yaml"),
        ("train", tiny(4), "--set", "train.itres=3"),
        ("train", tiny(4), "--data", tmp_path / "nowhere"),
        ("train", "--resume", tmp_path),
        ("train",),
    ]
    for args in cases:
        r = cli(*args)
        assert r.exit_code == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert "did you mean 'iters'" in cli("train", tiny(4), "--set", "train.itres=3").stderr


def test_p2p_data_path_name_resolves_the_synthetic_set(cli, tiny, tmp_path, p2p_home):
    r = cli("train", tiny(2), "--data", "synthetic", "--out", tmp_path / "run",
            "--set", "data.load_size=64", "--set", "data.crop_size=64")
    assert r.exit_code == 0, r.stderr
    assert (p2p_home / "datasets" / "synthetic" / "train" / "1.png").is_file()


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_resume_continues(tiny, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "p2p", "train", str(tiny(100_000)),
                             "--out", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.time() + 120
    while not (run / "log.jsonl").exists() or not (run / "log.jsonl").read_text():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err and "Traceback" not in err
    assert out.strip() == str(run)
    stopped_at = load_checkpoint(run)["iteration"]
    assert 0 < stopped_at < 100_000
    result = subprocess.run([sys.executable, "-m", "p2p", "train", "--resume", str(run),
                             "--iters", str(stopped_at + 2)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(run)["iteration"] == stopped_at + 2


def test_incomplete_or_foreign_checkpoints_are_user_errors(tmp_path):
    from p2p.errors import P2PError
    from p2p.weights.checkpoint import FORMAT, save_checkpoint

    save_checkpoint(tmp_path / "partial.pt", {"generator": {}})
    with pytest.raises(P2PError, match="incomplete p2p checkpoint .no generator_config"):
        load_generator(tmp_path / "partial.pt")
    save_checkpoint(tmp_path / "wrong.pt", {"generator_config": {"num_downs": 5, "ngf": 8},
                                            "generator": {"down.0.conv.weight": torch.zeros(1)},
                                            "direction": "AtoB", "image_size": 32})
    with pytest.raises(P2PError, match="does not load"):
        load_generator(tmp_path / "wrong.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(P2PError, match="not a p2p checkpoint"):
        load_generator(tmp_path / "other.pt")
    assert FORMAT.startswith("p2p-checkpoint")


@pytest.mark.parametrize("log_every", [1, 100])  # the loss check, and the check before saving
def test_divergence_keeps_the_last_finite_checkpoint(cli, tiny, tmp_path, log_every):
    run = tmp_path / "run"
    r = cli("train", tiny(6), "--out", run, "--set", "train.lr=1e8", "--set",
            f"train.log_every={log_every}", "--set", "train.checkpoint_every=1")
    assert r.exit_code == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: training diverged at iteration")
    latest = run / "checkpoints" / "latest.pt"
    if latest.exists():  # every checkpoint written holds numbers, so --resume can work
        state = load_checkpoint(run)
        for key in ("generator", "discriminator"):
            assert all(torch.isfinite(t).all() for t in state[key].values()
                       if t.is_floating_point()), key


@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_non_finite_learning_rate_trains_nothing(cli, tiny, tmp_path, value):
    r = cli("train", tiny(4), "--out", tmp_path / "run", "--set", f"train.lr={value}")
    assert r.exit_code == 2 and "train.lr must be a finite number > 0" in r.stderr
    assert not (tmp_path / "run").exists()


def test_a_recipe_that_cannot_fit_in_memory_is_refused_before_allocating(cli, tiny, tmp_path):
    # ngf 1024 at batch 65536: exabytes of feature maps; no machine has that, so the real probe
    # of available memory answers.
    run = tmp_path / "run"
    r = cli("train", tiny(4), "--out", run, "--set", "model.ngf=1024",
            "--set", "data.batch_size=65536")
    assert r.exit_code == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: recipe needs at least ") and " is free " in lines[-1]
    assert "lower model.ngf" in lines[-1] and not (run / "checkpoints").exists()


@pytest.mark.parametrize(("amp", "native"),
                         [(True, True), (False, True), ("auto", True), ("auto", False),
                          (False, False)])
def test_amp_is_bf16_autocast_where_the_cpu_has_native_bf16(amp, native, tiny, monkeypatch):
    """auto (the default) and true: bf16 autocast on CPUs with native bf16; false: fp32."""
    from pathlib import Path

    from p2p import device
    from p2p.recipe import load_recipe
    from p2p.training import loop as train

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    recipe = load_recipe(tiny(2), [f"train.amp={str(amp).lower()}"])
    assert recipe.train.amp == amp
    cpu = torch.device("cpu")
    models = train.build_models(recipe, cpu)
    step = train.make_stepper(recipe, train.load_dataset(recipe, Path(recipe.data.path)),
                              models, cpu)
    seen = []
    models.generator.down[1].conv.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    losses = step(0)
    assert seen == [torch.bfloat16 if amp is not False and native else torch.float32]
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_amp_true_without_native_bf16_is_refused_before_anything_is_written(
        cli, tiny, tmp_path, monkeypatch):
    from p2p import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    run = tmp_path / "run"
    r = cli("train", tiny(2), "--out", run, "--set", "train.amp=true")
    assert r.exit_code == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: train.amp: true asks for bf16") and "train.amp: auto" in line
    assert not run.exists()


def test_a_recipe_the_dataset_cannot_validate_is_refused_before_loading_it(cli, tiny, tmp_path):
    run = tmp_path / "run"
    r = cli("train", tiny(2), "--out", run, "--set", "train.val_every=1")
    assert r.exit_code == 2, r.stderr
    assert "no val/ or test/ split folder" in r.stderr.strip().splitlines()[-1]
    assert "loading data" not in r.stderr and not run.exists()


def test_a_run_directory_with_a_checkpoint_is_refused_before_loading_data(cli, tiny, tmp_path):
    run = tmp_path / "run"
    assert cli("train", tiny(1), "--out", run).exit_code == 0
    r = cli("train", tiny(1), "--out", run)
    assert r.exit_code == 2 and "already has a checkpoint" in r.stderr
    assert "loading data" not in r.stderr and "training " not in r.stderr

import sys

import pytest
import torch
from p2p_testing import parse_self_contained, read_events

pytest.importorskip("tensorboard")

from p2p.training.loggers import open_tensorboard  # noqa: E402
from p2p.training.tracking import SAMPLE_TAG, SCALAR_TAGS  # noqa: E402


def test_train_logs_scalars_and_samples_then_reports(cli, tiny, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    r = cli("train", tiny(6), "--out", run, "--tensorboard")
    assert r.exit_code == 0, r.stderr
    assert "tensorboard: true" in (run / "recipe.yaml").read_text()  # --resume keeps logging
    events = read_events(run / "tensorboard")
    # Not the losses of train.lambda_feat and train.lambda_vgg, off in this run.
    training = {tag for key, tag in SCALAR_TAGS.items()
                if not key.startswith("val_") and key not in ("g_feat", "g_vgg")}
    assert set(events.Tags()["scalars"]) == training  # no validation in this run
    for tag in training:
        assert [e.step for e in events.Scalars(tag)] == [2, 4, 6], tag
    images = events.Images(SAMPLE_TAG)
    assert [e.step for e in images] == [4, 6]
    assert (images[0].width, images[0].height) == (3 * 32, 4 * 32)  # input|output|target x 4

    # The same real run, reported.
    r = cli("report", run)
    assert r.exit_code == 0, r.stderr
    page, images = parse_self_contained(run / "report.html")
    text = " ".join(page.text)
    assert "finished: 6 iterations." in text and "Latest checkpoint written" in text
    assert sorted(mime for mime, _ in images) == ["image/png"] * 3 + (
        ["image/svg+xml"] if "matplotlib" in sys.modules else [])


def test_recipe_field_turns_it_on_and_resume_continues(cli, tiny, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    assert cli("train", tiny(4), "--out", run, "--set", "train.tensorboard=true").exit_code == 0
    r = cli("train", "--resume", run, "--iters", "8")
    assert r.exit_code == 0, r.stderr
    steps = [e.step for e in read_events(run / "tensorboard").Scalars("loss/G_L1")]
    assert steps == [2, 4, 6, 8]


def test_a_resumed_session_hides_what_a_crashed_one_logged_past_its_checkpoint(tmp_path):
    crashed = open_tensorboard(tmp_path)
    for step in (2, 4, 6, 8):
        crashed.log({"iteration": step, "g_l1": 1.0, "it_per_s": None})
    crashed.close()
    resumed = open_tensorboard(tmp_path)  # the checkpoint was at 4
    for step in (6, 8, 10):
        resumed.log({"iteration": step, "g_l1": 0.5})
    resumed.sample(10, torch.zeros(3, 8, 24))
    resumed.close()
    events = read_events(tmp_path / "tensorboard")
    assert [(e.step, e.value) for e in events.Scalars("loss/G_L1")] == [
        (2, 1.0), (4, 1.0), (6, 0.5), (8, 0.5), (10, 0.5)]
    assert "train/it_per_s" not in events.Tags()["scalars"]  # None is not logged


def test_missing_tensorboard_is_a_clear_error_before_training(cli, tiny, tmp_path,  # noqa: F811
                                                              monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    r = cli("train", tiny(4), "--out", tmp_path / "run", "--tensorboard")
    assert r.exit_code == 2
    assert r.stderr.strip() == ('error: TensorBoard logging needs the tensorboard package '
                                '(pip install "p2p-pix2pix[tensorboard]")')
    assert not (tmp_path / "run").exists()

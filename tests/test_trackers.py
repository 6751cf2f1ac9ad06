"""MLflow and Weights & Biases: what a run logs there, resumed, stopped, failed, and a tracker
that fails or hangs. MLflow writes to a local store, W&B runs offline: no network."""

import glob
import hashlib
import importlib.util
import json
import logging
import os
import signal
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import skip_or_fail
from p2p_testing import make_checkpoint, read_events
from PIL import Image

import p2p
from p2p.errors import P2PError
from p2p.recipe import recipe_from_dict
from p2p.training import background, loop, tracking
from p2p.training.background import Background
from p2p.training.mlflow_logger import MLflowLog
from p2p.training.run import Stopped
from p2p.training.tracking import Logger
from p2p.version import __version__


@pytest.fixture(autouse=True)
def no_loss_curves(monkeypatch):
    """report.html without its matplotlib curves: they take seconds to draw, and the trackers
    get the page all the same."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def require(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        skip_or_fail(f'{package} is missing: pip install "p2p-pix2pix[{package}]"', "CI")


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A file store under tmp_path as MLFLOW_TRACKING_URI; returns a client of it."""
    require("mlflow")
    from mlflow import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 prefers a database
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(uri)


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    require("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR",
                     "WANDB_ARTIFACT_DIR"):  # nothing of W&B's outside tmp_path
        monkeypatch.setenv(variable, str(tmp_path / "wandb_home"))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)


def with_validation(recipe_path):
    """The tiny recipe's data with a val/ split (the train pairs), for best.pt."""
    data = recipe_path.parent / "data"
    (data / "val").mkdir(exist_ok=True)
    for image in (data / "train").iterdir():
        (data / "val" / image.name).write_bytes(image.read_bytes())
    return recipe_path


def mlflow_run(run_dir, client):
    run_id = json.loads((run_dir / "mlflow" / "run.json").read_text())["run_id"]
    return client.get_run(run_id)


def steps(client, run_id, key="loss/G_L1"):
    return [m.step for m in sorted(client.get_metric_history(run_id, key),
                                   key=lambda m: m.step)]


def artifacts(client, run_id, path=None):
    found = []
    for entry in client.list_artifacts(run_id, path):
        found += artifacts(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return sorted(found)


def test_mlflow_records_the_run_and_a_resume_continues_it(tiny, mlflow_store, tmp_path):
    from mlflow.artifacts import download_artifacts, load_dict

    run_dir = tmp_path / "run"
    overrides = {"train.loggers": "[mlflow]", "train.log_checkpoints": True,
                 "train.val_every": 2, "train.val_images": 2, "train.experiment": "facades-l1"}
    p2p.train(with_validation(tiny(4)), out=run_dir, overrides=overrides)

    run = mlflow_run(run_dir, mlflow_store)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert mlflow_store.get_experiment(run.info.experiment_id).name == "facades-l1"
    params = run.data.params
    assert params["name"] == "tiny" and params["model.ngf"] == "8"
    assert params["data.path"] == str(tmp_path / "data")
    assert params["train.loggers"] == '["mlflow"]' and params["train.val_fid"] == "false"
    assert run.data.tags["p2p.version"] == __version__
    assert run.data.tags.get("p2p.git_commit") == tracking.git_commit()
    history = mlflow_store.get_metric_history(run.info.run_id, "loss/G_L1")
    logged = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [(m.step, m.value) for m in history] == [
        (r["iteration"], r["g_l1"]) for r in logged if "g_l1" in r]
    assert set(run.data.metrics) == {"loss/G_GAN", "loss/G_L1", "loss/D_real", "loss/D_fake",
                                     "train/lr", "train/it_per_s", "val/L1", "val/PSNR",
                                     "val/SSIM"}
    assert steps(mlflow_store, run.info.run_id, "val/L1") == [2, 4]
    assert artifacts(mlflow_store, run.info.run_id) == [
        "checkpoints/best.json", "checkpoints/best.pt", "checkpoints/iter_00000004.pt",
        "report.html", "samples/iter_00000004.png"]
    sample = download_artifacts(f"{run.info.artifact_uri}/samples/iter_00000004.png",
                                dst_path=str(tmp_path / "download"))
    assert np.array_equal(np.asarray(Image.open(sample)),
                          np.asarray(Image.open(run_dir / "samples" / "iter_00000004.png")))
    best = load_dict(f"{run.info.artifact_uri}/checkpoints/best.json")
    assert best == tracking.finite_best(p2p.Run(run_dir).best)
    assert set(best["metrics"]) == {"l1", "psnr", "ssim"}
    assert not list((run_dir / "mlflow" / "pending").iterdir())  # uploaded, then let go

    # Resumed: the same MLflow run, its curves continued.
    p2p.train(out=run_dir, resume=True, overrides={"train.iters": 6})
    assert mlflow_run(run_dir, mlflow_store).info.run_id == run.info.run_id
    assert steps(mlflow_store, run.info.run_id) == [2, 4, 6]
    assert mlflow_run(run_dir, mlflow_store).info.status == "FINISHED"
    assert len(mlflow_store.search_runs([run.info.experiment_id])) == 1


def test_a_stopped_run_is_killed_and_a_failed_one_failed(tiny, mlflow_store, tmp_path):
    source = make_checkpoint(tmp_path / "source.pt")  # the tiny recipe's generator

    def interrupt(record):
        os.kill(os.getpid(), signal.SIGINT)  # the loop stops after this iteration

    stopped = tmp_path / "stopped"
    with pytest.raises(Stopped):
        p2p.train(tiny(4), out=stopped, progress=interrupt,
                  overrides={"train.loggers": "[mlflow]", "model.init_from": str(source)})
    run = mlflow_run(stopped, mlflow_store)
    assert run.info.status == "KILLED"
    assert run.data.tags["p2p.init_from"] == str(source)
    assert run.data.tags["p2p.init_from_sha256"] == hashlib.sha256(
        source.read_bytes()).hexdigest()
    assert "report.html" in artifacts(mlflow_store, run.info.run_id)

    def fail(record):
        raise RuntimeError("a bug in a callback")

    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError):
        p2p.train(tiny(4), out=failed, progress=fail, overrides={"train.loggers": "[mlflow]"})
    assert mlflow_run(failed, mlflow_store).info.status == "FAILED"


def test_a_tracker_that_hangs_and_fails_never_stops_or_slows_training(tiny, mlflow_store,
                                                                      tmp_path, monkeypatch,
                                                                      caplog):
    release = threading.Event()

    def hang_then_fail(self, record):
        release.wait(30)
        raise ConnectionError("server down")

    monkeypatch.setattr(MLflowLog, "log", hang_then_fail)

    def progress(record):
        if record.get("iteration") == 4:  # the last: the loop never waited for the tracker
            assert not release.is_set()
            release.set()

    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        p2p.train(tiny(4), out=run_dir, progress=progress,
                  overrides={"train.loggers": "[mlflow]"})
    assert release.is_set()
    warnings = [r.getMessage() for r in caplog.records if r.name == background.__name__]
    assert warnings == ["MLflow logging failed (ConnectionError: server down); training goes "
                        "on, and later MLflow problems are not reported"]
    assert mlflow_run(run_dir, mlflow_store).info.status == "FINISHED"  # the rest got through


def test_close_waits_a_bounded_time_for_a_tracker_that_hangs(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(background, "CLOSE_WAIT_S", 0.2)
    stuck = threading.Event()

    class Hanging(Logger):
        name = "Tracker"

        def log(self, record):
            stuck.wait(30)

    logger = Background(Hanging(), tmp_path / "pending")
    for iteration in (2, 4, 6):
        logger.log({"iteration": iteration})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        logger.close()
    assert time.monotonic() - started < 5
    assert [r.getMessage() for r in caplog.records] == [
        "Tracker did not send everything within 0.2 s of the run's end; the rest is not sent; "
        "training goes on, and later Tracker problems are not reported"]
    stuck.set()
    logger.thread.join(5)
    assert not logger.thread.is_alive()  # it stops once the hung call returns


def test_log_to_mlflow_from_the_command_line_uses_a_store_in_the_run(cli, tiny, tmp_path,
                                                                      monkeypatch):
    require("mlflow")
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "run"
    r = cli("train", tiny(4), "--out", run_dir, "--log-to", "mlflow")
    assert r.exit_code == 0, r.stderr
    assert "loggers:\n  - mlflow" in (run_dir / "recipe.yaml").read_text()  # resume keeps it
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}")
    run = mlflow_run(run_dir, client)
    assert steps(client, run.info.run_id) == [2, 4] and run.info.status == "FINISHED"
    assert str(run_dir / "mlflow" / "artifacts") in run.info.artifact_uri


def wandb_records(run_dir) -> list:
    """The records of the offline W&B runs in ``run_dir``, oldest first (W&B's .wandb files:
    a 7-byte header, then records in 32 KiB blocks, each as a 7-byte header and its bytes)."""
    from wandb.proto import wandb_internal_pb2

    records = []
    for path in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        data, position, chunks = Path(path).read_bytes(), 7, b""
        while position + 7 <= len(data):
            room = 32768 - position % 32768
            _, length, kind = struct.unpack("<IHB", data[position:position + 7])
            if room < 7 or (length == 0 and kind == 0):  # the rest of the block is padding
                position += room
                continue
            chunks += data[position + 7:position + 7 + length]
            position += 7 + length
            if kind in (1, 4):  # a whole record, or the last piece of one
                record = wandb_internal_pb2.Record()
                record.ParseFromString(chunks)
                records.append(record)
                chunks = b""
    return records


def history(records) -> list[dict]:
    return [{item.nested_key[0] if item.nested_key else item.key: json.loads(item.value_json)
             for item in record.history.item}
            for record in records if record.WhichOneof("record_type") == "history"]


def test_wandb_offline_through_the_command_line_and_resumed(cli, tiny, tmp_path, wandb_offline):
    require("tensorboard")  # added on resume
    run_dir = tmp_path / "run"
    r = cli("train", tiny(4), "--out", run_dir, "--log-to", "wandb", "--set",
            "train.log_checkpoints=true")
    assert r.exit_code == 0, r.stderr
    assert r.out.strip() == str(run_dir)  # W&B printed nothing on stdout
    assert not [line for line in r.stderr.splitlines() if line.startswith("wandb")]  # nor there
    run_id = json.loads((run_dir / "wandb" / "run.json").read_text())["run_id"]
    records = wandb_records(run_dir)
    kinds = [record.WhichOneof("record_type") for record in records]
    first = next(record.run for record in records if record.WhichOneof("record_type") == "run")
    assert first.run_id == run_id and first.project == "tiny" and first.display_name == "run"
    config = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):
            updates = record.run.config.update if kind == "run" else record.config.update
            config.update({item.key: json.loads(item.value_json) for item in updates})
    assert config["model.ngf"] == 8 and config["p2p.version"] == __version__
    logged = history(records)
    assert [(h["_step"], h["loss/G_L1"]) for h in logged if "loss/G_L1" in h] == [
        (r["iteration"], r["g_l1"]) for r in p2p.Run(run_dir).log]
    assert [h["_step"] for h in logged if "samples" in h] == [4]
    artifacts = [record.artifact for record in records
                 if record.WhichOneof("record_type") == "artifact"]
    assert [sorted(a.aliases) for a in artifacts] == [["iter_00000004", "latest"]]
    saved = [f.path for record in records if record.WhichOneof("record_type") == "files"
             for f in record.files.files]
    assert "report.html" in saved
    assert kinds[-1] == "exit" and records[-1].exit.exit_code == 0

    # Resumed, it keeps logging to W&B, to the same run; --log-to adds TensorBoard.
    r = cli("train", "--resume", run_dir, "--iters", "6", "--log-to", "tensorboard")
    assert r.exit_code == 0, r.stderr
    resumed = wandb_records(run_dir)[len(records):]
    assert {record.run.run_id for record in resumed
            if record.WhichOneof("record_type") == "run"} == {run_id}
    assert [h["_step"] for h in history(resumed) if "loss/G_L1" in h] == [6]
    assert [e.step for e in read_events(run_dir / "tensorboard").Scalars("loss/G_L1")] == [6]


@pytest.mark.parametrize("package, line", [
    ("mlflow", 'MLflow logging needs the mlflow package (pip install "p2p-pix2pix[mlflow]")'),
    ("wandb", 'Weights & Biases logging needs the wandb package '
              '(pip install "p2p-pix2pix[wandb]")')])
def test_a_missing_extra_is_one_line_naming_the_pip_command(cli, tiny, tmp_path, monkeypatch,
                                                             package, line):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    r = cli("train", tiny(4), "--out", tmp_path / "run", "--log-to", package)
    assert r.exit_code == 2
    assert r.stderr.strip() == f"error: {line}"
    assert not (tmp_path / "run").exists()


def test_loggers_in_the_recipe_tensorboard_flag_and_log_to():
    def loggers(train, overrides=()):
        return recipe_from_dict({"train": train}, list(overrides)).train.logger_names()

    assert loggers({}) == []
    assert loggers({"tensorboard": True}) == ["tensorboard"]
    assert loggers({"tensorboard": True, "loggers": ["mlflow", "tensorboard"]}) == [
        "mlflow", "tensorboard"]
    assert loggers({"loggers": ["mlflow"]}, ["train.loggers+=wandb", "train.loggers+=mlflow"]
                   ) == ["mlflow", "wandb"]
    with pytest.raises(P2PError, match="train.loggers: 'comet' is not one of tensorboard, "
                       "mlflow, wandb"):
        loggers({}, ["train.loggers+=comet"])
    with pytest.raises(P2PError, match="train.experiment ' ' is not a name"):
        loggers({"experiment": " "})
    assert "train.loggers" in loop.RESUME_OVERRIDES  # --resume --log-to NAME adds one

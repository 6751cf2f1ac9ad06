"""MLflow (``train.loggers: [mlflow]``): the run's params, tags, metrics and artifacts.

The tracking server is ``MLFLOW_TRACKING_URI``; without it, a local store in ``RUN_DIR/mlflow``
(``mlflow.db`` and ``artifacts/``), which needs no server:
``mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow/mlflow.db``. The experiment is
``train.experiment``, else the recipe's name. ``RUN_DIR/mlflow/run.json`` records the MLflow
run, so that a resumed run continues it and its curves go on where they stopped.

It runs on a thread of its own (background.py); the training loop never waits for it.
"""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from p2p.images.eight_bit import to_uint8
from p2p.paths import write_bytes_atomic
from p2p.training.tracking import Logger, Start, as_text, finite_best, import_extra, scalars

TRACKING_URI = "MLFLOW_TRACKING_URI"
FOLDER = "mlflow"  # in the run directory
RUN_FILE = "run.json"  # {"tracking_uri": the variable's value or null (local), "run_id": ...}
BATCH = 100  # params or tags per request: MLflow's limit


def client_class() -> type:
    """MLflow's client; fails before training starts when the extra is missing."""
    return import_extra("mlflow", "MLflow", "mlflow").MlflowClient


@dataclass
class MLflowLog(Logger):
    folder: Path  # RUN_DIR/mlflow
    client_class: type
    client: Any = None
    run_id: str | None = None

    name = "MLflow"
    wants_report = True

    def start(self, run: Start) -> None:
        from mlflow.entities import Param, RunTag

        uri = os.environ.get(TRACKING_URI) or None
        self.folder.mkdir(parents=True, exist_ok=True)
        local = f"sqlite:///{(self.folder / 'mlflow.db').resolve()}"
        self.client = self.client_class(uri or local)
        saved = _read(self.folder / RUN_FILE)
        tags = dict(run.tags)
        if "p2p.git_commit" in tags:  # where MLflow's UI looks for it
            tags["mlflow.source.git.commit"] = tags["p2p.git_commit"]
        if run.resumed and saved and saved.get("tracking_uri") == uri:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            params = []  # MLflow keeps a run's params as first logged; they cannot change
        else:
            created = self.client.create_run(self._experiment(run, uri), run_name=run.run_dir.name)
            self.run_id = created.info.run_id
            write_bytes_atomic(self.folder / RUN_FILE, json.dumps(
                {"tracking_uri": uri, "run_id": self.run_id}).encode())
            params = [Param(key, as_text(value)) for key, value in run.params.items()]
        tags = [RunTag(key, value) for key, value in tags.items()]
        for i in range(0, max(len(params), len(tags)), BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + BATCH],
                                  tags=tags[i:i + BATCH])

    def _experiment(self, run: Start, uri: str | None) -> str:
        name = run.recipe.train.experiment or run.recipe.name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        # The local store keeps artifacts beside it, not under the working directory.
        location = None if uri else (self.folder / "artifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def log(self, record: dict) -> None:
        from mlflow.entities import Metric

        values = scalars(record)
        if "iteration" not in record or not values:  # an event (the fine-tuning source)
            return
        when = int(record.get("time", time.time()) * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(tag, float(value), when, record["iteration"]) for tag, value in values.items()])

    def sample(self, iteration: int, grid: torch.Tensor) -> None:
        self.client.log_image(self.run_id, to_uint8(grid).permute(1, 2, 0).numpy(),
                              artifact_file=f"samples/iter_{iteration:08d}.png")

    def best(self, best: dict) -> None:
        self.client.log_dict(self.run_id, finite_best(best), "checkpoints/best.json")

    def checkpoint(self, path: Path, name: str) -> None:
        self.client.log_artifact(self.run_id, str(path), "checkpoints")

    def end(self, status: str, report: Path | None) -> None:
        if report is not None:
            self.client.log_artifact(self.run_id, str(report))
        self.client.set_terminated(self.run_id, status)


def _read(path: Path) -> dict | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and isinstance(saved.get("run_id"), str) else None

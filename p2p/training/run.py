"""A run directory from Python: ``train`` makes (or continues) one, ``Run`` reads one.

A run directory holds ``recipe.yaml``, ``log.jsonl``, ``samples/`` and ``checkpoints/``
(``latest.pt``, ``best.pt`` with validation, ``iter_N.pt``), and ``metrics.json`` once
``p2p eval run`` scored it (see loop.py). ``p2p train`` runs ``train`` in one process; under
``--nproc`` it starts torchrun, whose processes each run the training loop.
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2p import weights
from p2p.errors import P2PError
from p2p.metrics import METRICS_FILE
from p2p.recipe import Recipe, load_recipe, recipe_from_dict
from p2p.weights import checkpoint


@dataclass(frozen=True)
class Run:
    """A run directory: its recipe, log, checkpoints and scores.

    >>> run = p2p.Run("runs/quickstart")  # doctest: +SKIP
    >>> run.history, run.log[-1]["g_l1"]  # doctest: +SKIP
    >>> photo = run.load("best")(image)  # doctest: +SKIP
    """

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))
        if not (self.path / "recipe.yaml").is_file():
            raise P2PError(f"{self.path}: not a run directory (no recipe.yaml)",
                           "train one with p2p train RECIPE --out DIR")

    @property
    def recipe(self) -> Recipe:
        return load_recipe(self.path / "recipe.yaml")

    @property
    def history(self) -> list[int]:
        """The iterations whose checkpoints the run keeps (``checkpoints/iter_N.pt``)."""
        return checkpoint.history(self.path)

    @property
    def log(self) -> list[dict]:
        """The records of ``log.jsonl``, one per logged iteration (losses, lr, it/s, and the
        ``val_*`` metrics of that iteration's validation)."""
        from p2p.training.report import read_log

        return read_log(self.path / "log.jsonl")

    @property
    def metrics(self) -> dict | None:
        """The scores ``p2p eval run`` stored (FID, IS and the published ones), or None."""
        path = self.path / METRICS_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise P2PError(f"{path}: unreadable ({exc})", "run p2p eval run again") from None

    @property
    def best(self) -> dict | None:
        """What ``checkpoints/best.pt`` records (iteration, metric, metrics), or None."""
        return checkpoint.best_metrics(self.path)

    def checkpoint(self, selector: str | int = "latest") -> Path:
        """The file of checkpoint ``selector``: ``"latest"``, ``"best"`` or an iteration."""
        return weights.resolve(f"{self.path}@{selector}")

    def load(self, selector: str | int = "latest", **options):
        """The generator of checkpoint ``selector`` as a ``p2p.Model`` (``options``: those of
        ``p2p.load``)."""
        from p2p.inference.translate import load

        return load(f"{self.path}@{selector}", **options)


def train(recipe: str | os.PathLike | dict | Recipe | None = None, *,
          out: str | os.PathLike | None = None, overrides: dict | list[str] | None = None,
          resume: bool = False, progress: Callable[[dict], None] | None = None,
          on_sample=None, on_download=None, on_load=None, on_start=None) -> Run:
    """Train a recipe (a YAML file, a dict of its sections or a ``Recipe``) into ``out``
    (default ``runs/NAME``), or with ``resume`` continue the run in ``out`` with its own recipe
    (``overrides`` may then set ``train.iters``, ``train.tensorboard`` and ``train.loggers``
    only). Returns the ``Run``. The recipe's loggers (``train.loggers``: TensorBoard, MLflow,
    W&B) log too; ``"train.loggers+=mlflow"`` adds one.

    ``overrides`` are what ``--set`` takes: ``{"train.iters": 2}`` or ``["train.iters=2"]``.
    ``progress`` receives each record written to ``log.jsonl``; ``on_sample`` each sample grid
    (iteration, (3, H, W) tensor in [-1, 1]), ``on_download`` and ``on_load`` the progress of a
    download and of decoding the data (done, total); ``on_start(recipe, data_root, run_dir,
    setting)`` is called once the run directory is held, before the data is decoded (``setting``:
    device, threads, processes and precision, as ``loop.training_setting``). Ctrl-C or SIGTERM saves
    a checkpoint and raises ``Stopped``.

    >>> run = p2p.train("recipes/quickstart.yaml", out="runs/qs",
    ...                 overrides={"train.iters": 200})  # doctest: +SKIP
    """
    from p2p.training import loop as core

    assignments = ([f"{key}={value}" for key, value in overrides.items()]
                   if isinstance(overrides, dict) else list(overrides or []))
    if resume:
        if out is None:
            raise P2PError("resume needs the run directory", "train(..., out=RUN_DIR, resume=True)")
        loaded = core.load_run(Path(out), assignments)
    elif isinstance(recipe, Recipe):
        loaded = recipe_from_dict(recipe.to_dict(), assignments) if assignments else recipe
    elif recipe is None:
        raise P2PError("no recipe given", "train('recipes/quickstart.yaml')")
    elif isinstance(recipe, dict):
        loaded = recipe_from_dict(recipe, assignments)
    else:
        loaded = load_recipe(recipe, assignments)
    run_dir = Path(out) if out is not None else Path("runs") / loaded.name
    with core.claimed(loaded, run_dir, processes=1) as data_root:
        if not resume:  # refused before the data is decoded, not after
            core.check_new_run(run_dir)
        if on_start:
            on_start(loaded, data_root, run_dir, core.training_setting(loaded))
        dataset = core.load_dataset(loaded, data_root, progress=on_load)
        outcome = core.train(loaded, dataset, run_dir, resume, on_log=progress,
                             on_sample=on_sample, on_download=on_download)
    if outcome.stopped_by:
        raise Stopped(outcome.stopped_by, outcome.iteration, run_dir)
    return Run(run_dir)


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after ``iteration``; a checkpoint was saved, so
    ``train(..., out=run_dir, resume=True)`` continues. (Before the first iteration it is
    ``p2p.errors.StoppedBeforeStart``: nothing was saved.)"""

    def __init__(self, signal_name: str, iteration: int, run_dir: Path):
        super().__init__(signal_name)
        self.iteration = iteration
        self.run_dir = run_dir

"""Translation as a Ray Data pipeline (``p2p translate --engine ray``, extra ``p2p-pix2pix[ray]``).

The stages, each a Ray Data operation:

1. read the file list: the jobs in chunks of ``batch_size`` consecutive jobs, one row each;
2. decode, with p2p's own decoder (``translate.decode_job``: any depth and channel count), in
   Ray tasks that hold the model's facts but not its weights;
3. generate: ``map_batches`` with ``TranslateWorker``, a model actor class, on an actor pool of
   ``workers`` (``ActorPoolStrategy``), each with ``gpus_per_worker`` GPUs (none: the CPU);
4. write: each output encoded and written atomically (``translate.finish``), in Ray tasks.

A chunk's images are batched as ``translate`` batches them and draw their dropout masks from the
run's seed and their keys, so every output is byte for byte the one process's. A worker that
dies is replaced by Ray and its chunk run again; a write either happened whole or not at all.
Rows carry pickled Python objects (jobs, decoded images, outputs): Ray's columns hold bytes.
"""

import pickle
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from p2p.cluster import joined
from p2p.errors import P2PError
from p2p.inference.translate import (
    Job,
    Model,
    Progress,
    Report,
    TranslateOptions,
    batches,
    check_options,
    check_outputs,
    decode_job,
    finish,
    generate,
    with_seed,
)
from p2p.models import build_generator


def translate_on_ray(model: Model, jobs: list[Job], options: TranslateOptions, *,
                     address: str | None = None, workers: int = 1, gpus_per_worker: float = 0,
                     progress: Progress | None = None) -> Report:
    """Translate ``jobs`` (with output files) on the Ray cluster at ``address`` (None: an
    embedded one); the report of the whole run, its bad inputs in job order. A bad input stops
    the run with its P2PError unless ``options.skip_bad``."""
    if any(job.target is None for job in jobs):
        raise P2PError("--engine ray writes files", "give an output folder or file, not -")
    check_options(model, options)
    options = with_seed(options)
    check_outputs(model, jobs, options)
    chunks = [jobs[i:i + options.batch_size] for i in range(0, len(jobs), options.batch_size)]
    facts = _without_weights(model)
    report, bad = Report(), {}
    with joined(address) as ray:
        rows = [{"chunk": i, "data": pickle.dumps(chunk)} for i, chunk in enumerate(chunks)]
        pipeline = (
            ray.data.from_items(rows, override_num_blocks=len(rows))
            .map(_stage(_decode, facts, options))
            .map_batches(TranslateWorker, batch_size=1,
                         fn_constructor_kwargs={"model": [ray.put(model)], "options": options},
                         compute=ray.data.ActorPoolStrategy(size=workers),
                         num_gpus=gpus_per_worker)
            .map(_stage(_write, facts, options)))
        for row in pipeline.iter_rows():
            translated, messages = pickle.loads(row["data"])
            if messages and not options.skip_bad:
                raise P2PError(messages[0])
            report.translated += translated
            bad[row["chunk"]] = messages
            if progress:
                progress(report.translated + sum(map(len, bad.values())), len(jobs))
    report.bad = [message for chunk in sorted(bad) for message in bad[chunk]]
    return report


class TranslateWorker:
    """The model actor: a chunk's decoded images through the generator on this worker's device
    (a GPU when Ray gave it one)."""

    def __init__(self, model: list, options: TranslateOptions):
        import ray

        device = torch.device("cuda" if ray.get_gpu_ids() else "cpu")
        self.model = ray.get(model[0]).on(device)  # a reference, so Ray keeps one copy
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        data = np.empty(len(batch["data"]), dtype=object)
        for i, payload in enumerate(batch["data"]):
            items = pickle.loads(payload)
            outputs = {id(item): output for group in batches(items, self.options)
                       for item, output in zip(group, generate(self.model, group, self.options),
                                               strict=True)}
            data[i] = pickle.dumps([(item, outputs.get(id(item))) for item in items])
        return {"chunk": batch["chunk"], "data": data}


def _stage(fn: Callable, model: Model, options: TranslateOptions) -> Callable[[dict], dict]:
    """A row function of Ray Data: ``fn(payload, model, options)`` on the row's pickled data."""
    def run(row: dict) -> dict:
        return {"chunk": row["chunk"], "data": pickle.dumps(fn(pickle.loads(row["data"]), model,
                                                               options))}
    return run


def _decode(chunk: list[Job], model: Model, options: TranslateOptions) -> list:
    # A P2PError keeps only its line through pickle (its hint is an __init__ argument).
    return [item if not isinstance(item, P2PError) else P2PError(str(item))
            for item in (decode_job(job, model, options) for job in chunk)]


def _write(pairs: list, model: Model, options: TranslateOptions) -> tuple[int, list[str]]:
    """(images written, messages of the bad inputs) of a chunk."""
    bad = [str(item) for item, _ in pairs if isinstance(item, P2PError)]
    for item, output in pairs:
        if not isinstance(item, P2PError):
            finish(item, output, options, model)
    return len(pairs) - len(bad), bad


def _without_weights(model: Model) -> Model:
    """What decoding and writing need of a model (sizes, channels, value ranges), without its
    weights: a generator of the same configuration on the meta device, which holds no data."""
    with torch.device("meta"):
        generator = build_generator(model.generator.config)
    return replace(model, generator=generator, device=torch.device("cpu"))

"""p2p: paired image-to-image translation (pix2pix, Isola et al., CVPR 2017).

The Python API::

    import p2p
    from PIL import Image

    model = p2p.load("facades")  # a zoo name, hf:OWNER/NAME, a model folder, a checkpoint, RUN@best
    photo = model(Image.open("labels.png"))  # PIL, numpy and torch inputs; lists of them
    model.translate("labels/", "photos/")  # files and folders, as `p2p translate` does
    run = p2p.train("recipes/quickstart.yaml", out="runs/qs", overrides={"train.iters": 200})
    p2p.Run("runs/qs").load("latest")(Image.open("mask.png")).save("out.png")
    p2p.metrics.fid("photos/", "translated/").fid  # also inception_score, pairs

``load``, ``Model``, ``train`` and ``Run`` are imported on first use, so that ``import p2p``
(and the CLI's ``p2p --help``) does not import torch.
"""

from typing import TYPE_CHECKING, Any

from p2p.version import __version__

__all__ = ["Model", "Run", "__version__", "load", "metrics", "train"]
_HOMES = {"Model": "p2p.inference.translate", "load": "p2p.inference.translate",
          "Run": "p2p.training.run", "train": "p2p.training.run"}

if TYPE_CHECKING:
    from p2p import metrics
    from p2p.inference.translate import Model, load
    from p2p.training.run import Run, train


def __getattr__(name: str) -> Any:
    import importlib

    if name == "metrics":  # the package: fid, inception_score, pairs
        return importlib.import_module("p2p.metrics")
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'p2p' has no attribute {name!r}")

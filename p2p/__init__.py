"""p2p: paired image-to-image translation (pix2pix, Isola et al., CVPR 2017).

The Python API::

    import p2p
    from PIL import Image

    model = p2p.load("facades")  # a zoo name, hf:OWNER/NAME, a model folder, a checkpoint, RUN@best
    photo = model(Image.open("labels.png"))  # PIL, numpy and torch inputs; lists of them
    model.translate("labels/", "photos/")  # files and folders, as `p2p translate` does

``load`` and ``Model`` are imported on first use, so that ``import p2p`` (and the CLI's
``p2p --help``) does not import torch.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Model", "load"]

if TYPE_CHECKING:
    from p2p.translate import Model, load


def __getattr__(name: str) -> Any:
    if name in __all__:
        from p2p import translate

        return getattr(translate, name)
    raise AttributeError(f"module 'p2p' has no attribute {name!r}")

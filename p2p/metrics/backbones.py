"""torchvision's ImageNet classifiers whose convolutional features other networks read: AlexNet
(LPIPS's backbone, perceptual.py) and VGG19 (the VGG loss of training, p2p.training.vgg).

Their weights are torchvision's published files, found or downloaded as the Inception weights
are (``inception.locate_weights``). torchvision names each file with the first 8 hex digits of
its sha256 (``vgg19-dcbb9e9d.pth``) and checks a download against that prefix
(``torch.hub.load_state_dict_from_url(check_hash=True)``); p2p checks it the same way, as no
full digest is published.

Only the ``features.*`` tensors are read: the classifier (most of each file) is not needed.
"""

from pathlib import Path

from torch import nn

from p2p.errors import P2PError
from p2p.metrics.inception import WeightsFile
from p2p.weights.checkpoint import load_weights_only

TORCHVISION_URL = "https://download.pytorch.org/models/"


def _torchvision_file(what: str, filename: str) -> WeightsFile:
    return WeightsFile(what, filename, TORCHVISION_URL + filename,
                       filename.rsplit("-", 1)[1].removesuffix(".pth"))


ALEXNET_WEIGHTS = _torchvision_file("AlexNet weights (torchvision ImageNet, for LPIPS)",
                                    "alexnet-owt-7be5be79.pth")
VGG19_WEIGHTS = _torchvision_file("VGG19 weights (torchvision ImageNet, for train.lambda_vgg)",
                                  "vgg19-dcbb9e9d.pth")


def feature_tensors(path: Path, spec: WeightsFile) -> dict:
    """The ``features.*`` tensors of a torchvision classifier's weights file, keyed by what
    follows ``features.`` (``"0.weight"``: the first convolution's)."""
    state = load_weights_only(path)
    if not isinstance(state, dict):
        raise P2PError(f"{path}: not a state dict", f"expected the {spec.what}")
    return {key.removeprefix("features."): value for key, value in state.items()
            if isinstance(key, str) and key.startswith("features.")}


def load_features(module: nn.Module, tensors: dict, path: Path, spec: WeightsFile,
                  names: dict[str, str] | None = None) -> nn.Module:
    """Load ``tensors`` (``feature_tensors``) into ``module`` strictly: every tensor of the
    module, of its shape. ``names`` maps the module's keys to the file's where they differ."""
    names = names or {key: key for key in module.state_dict()}
    missing = [theirs for theirs in names.values() if theirs not in tensors]
    if missing:
        raise P2PError(f"{path}: not the {spec.what}: no features.{missing[0]} "
                       f"({len(missing)} tensors missing)", f"download {spec.url}")
    try:
        module.load_state_dict({ours: tensors[theirs] for ours, theirs in names.items()},
                               strict=True)
    except RuntimeError as exc:  # names the wrongly shaped tensors
        detail = " ".join(str(exc).split())
        raise P2PError(f"{path}: not the {spec.what}: {detail[:300]}",
                       f"download {spec.url}") from None
    return module

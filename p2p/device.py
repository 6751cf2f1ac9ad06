"""Which device a command runs on: ``auto`` is CUDA when present, else the CPU."""

import torch

from p2p.errors import P2PError


def pick_device(name: str = "auto", setting: str = "--device") -> torch.device:
    """The device called ``name``; ``setting`` names where the value came from, for messages."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise P2PError(f"{setting} {name!r} is not a device", "use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise P2PError(f"{setting} {name!r}: CUDA is not available here",
                       "use auto or cpu instead")
    return device

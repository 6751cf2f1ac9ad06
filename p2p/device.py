"""Which device a command runs on: ``auto`` is CUDA when present, else the CPU."""

import functools

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


# ---- precision ---------------------------------------------------------------------------------

PRECISIONS = ("auto", "fp32", "bf16")
# CPU flags of native bf16 arithmetic (AVX512-BF16 dot products, AMX tiles): without them bf16
# is emulated and slower than fp32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
@functools.cache  # read once: translate asks for every batch
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux's /proc/cpuinfo flags; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in BF16_CPU_FLAGS)
    except OSError:
        pass
    return False


def autocast_dtype(precision: str, device: torch.device, setting: str = "--precision",
                   asked: str | None = None, instead: str | None = None) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``, None for fp32.

    ``auto``: bf16 on CUDA and on CPUs with native bf16, else fp32 (the speed and deviation
    that decided it: benchmarks/README.md, "CPU bf16").
    ``bf16`` on a device without native bf16 is refused rather than emulated (slower than fp32);
    the message quotes ``asked`` (how bf16 was asked for) and suggests ``instead``, by default
    in ``setting``'s words."""
    if precision not in PRECISIONS:
        raise P2PError(f"{setting} {precision!r} is not a precision",
                       f"use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16
    native = device.type == "cpu" and cpu_has_native_bf16()
    if precision == "bf16" and not native:
        raise P2PError(f"{asked or setting + ' bf16'} asks for bf16, and this {device.type} has "
                       f"no native bf16 ({' or '.join(BF16_CPU_FLAGS)}): emulated, it is slower "
                       "than fp32", f"use {instead or setting + ' fp32 or auto'}")
    return torch.bfloat16 if native else None

"""How the process hands freed memory back to the kernel while networks run on CPU.

Each training iteration or inference batch frees and reallocates the same large buffers
(gradients, activations, oneDNN scratch space: ~220 MB per facades iteration, more at batch 16).
glibc's malloc returns large blocks with munmap, so each reuse costs a page fault per 4 KiB to map
and zero them again: ~50,000 faults and ~15% of a facades training iteration on 2 cores, ~20% of
batch-16 translation (measured in benchmarks/README.md). While ``reuse_freed_memory`` is active,
freed memory stays in the process instead.
"""

import contextlib
import ctypes
import threading
from collections.abc import Iterator

import torch

# glibc malloc's mallopt parameters and their defaults (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
KEPT_BYTES = 1 << 30  # freed heap kept mapped, at most

_lock = threading.Lock()
_active = 0  # nesting depth: the settings apply process-wide, so the outermost use owns them


@contextlib.contextmanager
def reuse_freed_memory(device: torch.device) -> Iterator[None]:
    """Keep freed memory in the process while networks run on ``device``: on CPU with glibc's
    malloc; elsewhere (CUDA, macOS, Windows, musl) this does nothing."""
    libc = _glibc() if device.type == "cpu" else None
    if libc is None:
        yield
        return
    global _active
    with _lock:
        _active += 1
        if _active == 1:
            libc.mallopt(M_MMAP_MAX, 0)  # large blocks come from the heap, not fresh mappings
            libc.mallopt(M_TRIM_THRESHOLD, KEPT_BYTES)  # and freed heap stays mapped
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # no C library to open by None (Windows)
        return None
    if all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return libc
    return None

"""Ray, for ``--engine ray``: joining a cluster by address, or starting an embedded one.

The address is ``--ray-address``, else ``RAY_ADDRESS``; without either Ray starts embedded in
this process's machine (no servers to run first) and stops with the command. An address that
cannot be reached is one line naming it after at most ``CONNECT_TIMEOUT`` seconds, rather than
Ray's own retries. Every node of a cluster needs p2p installed (``INSTALL_HINT``) and the job's
input and output paths (a shared file system).
"""

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from types import ModuleType
from urllib.parse import urlsplit

from p2p.errors import P2PError, install_extra

INSTALL_HINT = install_extra("ray")
CONNECT_TIMEOUT = 10.0  # seconds to open a connection to a cluster's address
DEFAULT_PORT = 6379  # a Ray head node's GCS port when an address names none
LOCAL = (None, "auto", "local")  # addresses that need no connection check


def ray_module() -> ModuleType:
    """``ray``, or a P2PError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise P2PError("--engine ray needs Ray, which is not installed", INSTALL_HINT) from None
    return ray


def address_from(option: str | None) -> str | None:
    """The cluster to join: ``--ray-address``, else ``RAY_ADDRESS``; None: an embedded Ray."""
    return option or os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def joined(address: str | None) -> Iterator[ModuleType]:
    """``ray``, joined to the cluster at ``address`` (``address_from``) or to an embedded one
    started here, while active; a Ray already initialized in this process is used as it is."""
    ray = ray_module()
    # The command shows its own progress: not Ray Data's bars, nor its log of each stage, nor
    # its warning that the bars are off.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    if ray.is_initialized():
        yield ray
        return
    if address not in LOCAL:
        check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "an embedded Ray"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise P2PError(f"cannot join {where}: {reason}",
                       "check the address, or leave it out for an embedded Ray") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse ``address`` (``HOST[:PORT]`` or ``ray://HOST[:PORT]``) unless a connection to it
    opens within ``timeout`` seconds."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = parts.hostname, parts.port or DEFAULT_PORT
    except ValueError:
        host = port = None
    if not host:
        raise P2PError(f"Ray address {address!r} names no host",
                       "use HOST:PORT, e.g. 10.0.0.1:6379")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise P2PError(f"cannot reach the Ray cluster at {address} ({reason} after trying for "
                       f"at most {timeout:g} s)",
                       "start it with 'ray start --head', or check --ray-address and "
                       "RAY_ADDRESS") from None

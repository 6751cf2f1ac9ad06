"""FID and Inception Score with the protocol of the published pix2pix table (mmagic's TransFID
and TransIS, ``inception_style='PyTorch'``): the networks, the statistics, the table itself.

The defaults (defaults.py) are free of torch, so that the CLI can show them in ``--help`` without
importing the networks."""

import os

from p2p.metrics.defaults import (  # re-exported: the CLI shows them in --help
    GENERATOR_BATCH,
    INCEPTION_BATCH,
    METRICS_FILE,
    SPLITS,
    THREADS,
)

__all__ = ["GENERATOR_BATCH", "INCEPTION_BATCH", "METRICS_FILE", "SPLITS", "THREADS", "fid",
           "fid_statistics", "inception_score", "pairs", "settings"]

# ---- the Python API: what `p2p eval` prints, as numbers -----------------------------------
# The networks are imported when a function is called (frechet.py, class_scores.py,
# similarity.py), so that importing this package stays light. Under torchrun, fid,
# fid_statistics and inception_score share the images out over the processes (features.py).

def fid(real: str | os.PathLike, fake: str | os.PathLike, *, weights=None,
        device: str = "auto", batch_size: int = INCEPTION_BATCH, workers: int = THREADS,
        progress=None, download_progress=None):
    """The FID of two image sets, each a folder of images or a statistics file (``.npz``), as
    ``p2p eval fid`` computes it; a result with ``fid``, ``n_real`` and ``n_fake``. A real
    folder's statistics are cached under ``$P2P_HOME/fid-stats/``.

    >>> p2p.metrics.fid("photos/", "translated/").fid  # doctest: +SKIP
    """
    from pathlib import Path

    from p2p.metrics import frechet
    from p2p.metrics.features import joined_settings

    with joined_settings(device, batch_size, workers) as running:
        return frechet.compute_fid(Path(real), Path(fake), running, weights, progress,
                                   download_progress)


def fid_statistics(folder: str | os.PathLike, out: str | os.PathLike, *, weights=None,
                   device: str = "auto", batch_size: int = INCEPTION_BATCH,
                   workers: int = THREADS, progress=None, download_progress=None):
    """A folder's FID statistics (mean and covariance of its features), saved to ``out``
    (``.npz``), as ``p2p eval stats`` writes them; returns them (``mu``, ``sigma``, ``n``)."""
    from pathlib import Path

    from p2p.metrics import frechet
    from p2p.metrics.features import joined_settings

    with joined_settings(device, batch_size, workers) as running:
        return frechet.compute_statistics(Path(folder), Path(out), running, weights, progress,
                                          download_progress)


def inception_score(images: str | os.PathLike, *, splits: int = SPLITS, weights=None,
                    device: str = "auto", batch_size: int = INCEPTION_BATCH,
                    workers: int = THREADS, progress=None, download_progress=None):
    """The Inception Score of a folder of images, as ``p2p eval is`` computes it; a result
    with ``inception_score``, ``std`` and ``n``."""
    from pathlib import Path

    from p2p.metrics import class_scores
    from p2p.metrics.features import joined_settings

    with joined_settings(device, batch_size, workers) as running:
        return class_scores.compute_is(Path(images), running, splits, weights, progress,
                                       download_progress)


def pairs(real: str | os.PathLike, fake: str | os.PathLike, *, lpips: bool = False,
          weights=None, progress=None, download_progress=None):
    """L1, PSNR and SSIM of each image of ``fake`` against the image of the same name in
    ``real``, averaged, as ``p2p eval pairs`` computes them; a result with ``l1``, ``psnr``,
    ``ssim``, ``n`` and the names without a partner (``only_real``, ``only_fake``). With
    ``lpips``, also ``lpips`` (v0.1, AlexNet; needs the lpips extra), whose AlexNet weights are
    ``weights`` (the file or a folder holding it) or found in, or downloaded to,
    ``$P2P_HOME/weights/``."""
    from p2p.metrics import similarity

    network = None
    if lpips:
        from p2p.metrics import perceptual

        network = perceptual.lpips_network(weights, download_progress)
    return similarity.score_folders(real, fake, progress, network)


def settings(device: str = "auto", batch_size: int = INCEPTION_BATCH, workers: int = THREADS):
    """How the Inception networks run: device, batch size, decoding threads."""
    from p2p.device import pick_device
    from p2p.metrics.features import Settings

    return Settings(pick_device(device), batch_size, workers)

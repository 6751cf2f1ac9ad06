"""FID of two folders, side by side: ``p2p eval fid`` vs pytorch-fid's calculate_fid_given_paths.

Whole processes (start-up, weight loading, decoding, the network, the distance), alternated
A B B A ..., medians of ``--repeats``; each p2p run gets an empty P2P_HOME, so the real folder's
statistics are never read from the cache. Both load the SAME weights: the real FID Inception
file with ``--weights``, else seeded random weights of its structure (our network has exactly
pytorch-fid's keys), handed to pytorch-fid by replacing its download function. The two FIDs must
agree to ``--tolerance`` (relative); the benchmark stops otherwise.

    pip install pytorch-fid
    python benchmarks/fid_compare.py [--real ../shared/data/facades/test]
        [--fake ../shared/data/facades/val] [--weights FILE] [--repeats 3] [--json]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, load_average, machine, run_process  # noqa: E402
from fid_speed import random_network  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "facades"


def reference_fid(real: str, fake: str, weights: str, batch_size: int, workers: int) -> None:
    """Run in a child process: pytorch-fid as its command line does, with our weights."""
    from pytorch_fid import fid_score, inception

    inception.load_state_dict_from_url = lambda *args, **kwargs: torch.load(
        weights, map_location="cpu", weights_only=True)
    device = torch.device("cpu")
    print(fid_score.calculate_fid_given_paths([real, fake], batch_size, device, 2048, workers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", default=str(SHARED / "test"))
    parser.add_argument("--fake", default=str(SHARED / "val"))
    parser.add_argument("--weights", help="the FID Inception weights (default: seeded random)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50, help="both tools' default")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="pytorch-fid's loader processes (its command line's default)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--reference-run", nargs=3, metavar=("REAL", "FAKE", "WEIGHTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_run:
        reference_fid(*args.reference_run, args.batch_size, args.workers)
        return
    try:
        import pytorch_fid  # noqa: F401
    except ImportError:
        raise SystemExit("pytorch-fid is not installed: pip install pytorch-fid") from None

    values: dict[str, list[float]] = {"pytorch-fid": [], "p2p": []}
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            weights = str(Path(tmp) / "fid-inception-random.pth")
            torch.save(random_network().state_dict(), weights)

        def reference() -> float:
            seconds, out = run_process([sys.executable, __file__, "--batch-size",
                                        str(args.batch_size), "--workers", str(args.workers),
                                        "--reference-run", args.real, args.fake, weights])
            values["pytorch-fid"].append(float(out.split()[-1]))
            return seconds

        def ours() -> float:
            with tempfile.TemporaryDirectory(dir=tmp) as home:
                seconds, out = run_process(
                    [sys.executable, "-m", "p2p", "eval", "fid", args.real, args.fake,
                     "--weights", weights, "--batch-size", str(args.batch_size), "--json"],
                    env={**os.environ, "P2P_HOME": home})
            values["p2p"].append(json.loads(out)["fid"])
            return seconds

        print(f"{machine()}, load {load_average():.1f}", file=sys.stderr)
        seconds = alternate({"pytorch-fid": reference, "p2p": ours}, args.repeats,
                            lambda line: print(line, file=sys.stderr))
    reference_value, our_value = values["pytorch-fid"][0], values["p2p"][0]
    difference = abs(our_value - reference_value) / abs(reference_value)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    result = {"machine": machine(), "load_after": load_average(), "real": args.real,
              "fake": args.fake, "random_weights": args.weights is None,
              "seconds": seconds, "median_seconds": medians,
              "ratio": medians["pytorch-fid"] / medians["p2p"],
              "fid": {"pytorch-fid": reference_value, "p2p": our_value},
              "relative_difference": difference}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['machine']}; load average {result['load_after']:.1f} after")
        print(f"FID {args.real} vs {args.fake}: pytorch-fid {reference_value:.6f}, "
              f"p2p {our_value:.6f} (relative difference {difference:.1e})")
        print(f"whole process, median of {args.repeats}: pytorch-fid "
              f"{medians['pytorch-fid']:.1f} s, p2p {medians['p2p']:.1f} s, "
              f"{result['ratio']:.2f}x")
    if difference > args.tolerance:
        raise SystemExit(f"the FIDs differ by {difference:.1e} (> {args.tolerance:g})")


if __name__ == "__main__":
    main()

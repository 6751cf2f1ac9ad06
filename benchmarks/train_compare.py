"""Training side by side: ``p2p train`` (facades recipe) vs the official pix2pix ``train.py``.

Facades, batch 1, BtoA, both tools' defaults otherwise; whole processes alternated, medians of
``--repeats``. Per iteration after start-up = the difference of the medians of runs over the
first ``--many`` and the first ``--few`` training images (one epoch each, so as many iterations
as images), per iteration. No checkpoints, samples or HTML pages in between (the official run
with ``--display_id -1 --no_html``, p2p with its sample and checkpoint intervals above the run).

The official code is not on the package registries: give a checkout of
junyanz/pytorch-CycleGAN-and-pix2pix with ``--official PATH`` (it needs ``pip install dominate``,
and ``visdom`` for some versions of util/visualizer.py). Without it only p2p is measured.

    python benchmarks/train_compare.py [--official PATH] [--data ../shared/data/facades]
        [--many 60] [--few 20] [--repeats 3] [--with-amp] [--json]

``--with-amp`` also times p2p with ``train.amp=true`` (bf16 autocast on CUDA and on CPUs with
native bf16; the published recipes train in fp32).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    alternate,
    check_official,
    load_average,
    machine,
    per_item_seconds,
    run_process,
    subset,
)

from p2p.images.files import list_images  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, help="a checkout of the official code")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/facades")
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "facades.yaml")
    parser.add_argument("--many", type=int, default=60)
    parser.add_argument("--few", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="a p2p recipe override, e.g. train.amp=true")
    parser.add_argument("--with-amp", action="store_true",
                        help="also time p2p with train.amp=true (bf16 autocast where supported)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    check_official(args.official, "train.py")
    files = list_images(args.data / "train")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        roots = {n: subset(files, n, tmp / f"facades{n}" / "train").parent
                 for n in (args.many, args.few)}
        # No decay (as the official run's --n_epochs_decay 0), logs, samples or checkpoints.
        quiet = ["train.decay_iters=0"] + [f"train.{key}={10**9}" for key in (
            "log_every", "sample_every", "checkpoint_every")]

        def ours(count: int, overrides: list[str]):
            def run() -> float:
                out = tmp / f"p2p-run-{count}"
                seconds = run_process(
                    [sys.executable, "-m", "p2p", "train", str(args.recipe), "--data",
                     str(roots[count]), "--out", str(out), "--iters", str(count),
                     *(arg for o in quiet + overrides for arg in ("--set", o))])[0]
                run_process(["rm", "-rf", str(out)])
                return seconds
            return run

        def official(count: int):
            return lambda: run_process(
                [sys.executable, "train.py", "--dataroot", str(roots[count]), "--name",
                 f"facades{count}", "--model", "pix2pix", "--direction", "BtoA", "--gpu_ids",
                 "-1", "--n_epochs", "1", "--n_epochs_decay", "0", "--display_id", "-1",
                 "--no_html", "--print_freq", str(10**9), "--save_latest_freq", str(10**9),
                 "--save_epoch_freq", str(10**9), "--checkpoints_dir",
                 str(tmp / "checkpoints")], cwd=str(args.official))[0]

        variants = {"p2p": args.overrides}
        if args.with_amp:
            variants["p2p amp"] = args.overrides + ["train.amp=true"]
        runs = {f"{tool} {n}": ours(n, overrides) for tool, overrides in variants.items()
                for n in (args.many, args.few)}
        if args.official:
            runs.update({f"official {n}": official(n) for n in (args.many, args.few)})
        print(f"{machine()}, load {load_average():.1f}", file=sys.stderr)
        seconds = alternate(runs, args.repeats, lambda line: print(line, file=sys.stderr))
    tools = (["official"] if args.official else []) + list(variants)
    per_iteration = {tool: per_item_seconds(seconds, tool, args.many, args.few)
                     for tool in tools}
    ratios = ({tool: per_iteration["official"] / per_iteration[tool] for tool in variants}
              if args.official else None)
    result = {"machine": machine(), "load_after": load_average(), "many": args.many,
              "few": args.few, "overrides": args.overrides, "seconds": seconds,
              "per_iteration_s": per_iteration, "ratio": ratios}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['machine']}; load average {result['load_after']:.1f} after")
    line = ", ".join(f"{tool} {s:.3f} s" for tool, s in per_iteration.items())
    ratio = (", " + ", ".join(f"{tool} {r:.2f}x" for tool, r in ratios.items()) if ratios
             else " (official: not measured)")
    print(f"per iteration after start-up (facades, batch 1): {line}{ratio}")


if __name__ == "__main__":
    main()

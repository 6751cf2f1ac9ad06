"""Translation side by side: ``p2p translate`` vs the official pix2pix ``test.py``.

The facades test split (A|B pairs, BtoA, unet_256, both tools' defaults: the paper's test-time
mode), whole processes alternated, medians of ``--repeats``. Per image after start-up = the
difference of the medians over all images and over the first ``--few``, per image. Both
generators hold seeded random weights (the speed does not depend on them); the official one is
built with its own ``networks.define_G`` in its checkout.

The official code is not on the package registries: give a checkout of
junyanz/pytorch-CycleGAN-and-pix2pix with ``--official PATH`` (it needs ``pip install dominate``,
and ``visdom`` for some versions of util/visualizer.py). Without it only p2p is measured.

    python benchmarks/translate_compare.py [--official PATH] [--data ../shared/data/facades]
        [--few 10] [--repeats 3] [--json]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

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
from p2p.models import GeneratorConfig, UnetGenerator, init_weights  # noqa: E402
from p2p.weights.checkpoint import generator_state, save_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL_GENERATOR = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from models import networks
torch.manual_seed(0)
net = networks.define_G(3, 3, 64, 'unet_256', 'batch', False, 'normal', 0.02, [])
torch.save(net.state_dict(), sys.argv[2])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, help="a checkout of the official code")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/facades")
    parser.add_argument("--few", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    check_official(args.official, "test.py")
    files = list_images(args.data / "test")
    many = len(files)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        roots = {many: args.data, args.few: subset(files, args.few, tmp / "few" / "test").parent}
        checkpoint = tmp / "unet_256.pt"
        torch.manual_seed(0)
        save_checkpoint(checkpoint, generator_state(
            init_weights(UnetGenerator(GeneratorConfig())), "BtoA", 256))

        def ours(count: int):
            return lambda: run_process(
                [sys.executable, "-m", "p2p", "translate", "-c", str(checkpoint), "--paired",
                 "--overwrite", str(roots[count] / "test"), str(tmp / "p2p-out")])[0]

        def official(count: int):
            return lambda: run_process(
                [sys.executable, "test.py", "--dataroot", str(roots[count]), "--name",
                 "facades_pix2pix", "--model", "pix2pix", "--direction", "BtoA", "--gpu_ids",
                 "-1", "--num_test", str(count), "--checkpoints_dir", str(tmp / "checkpoints"),
                 "--results_dir", str(tmp / "official-out")], cwd=str(args.official))[0]

        runs = {f"p2p {n}": ours(n) for n in (many, args.few)}
        if args.official:
            weights = tmp / "checkpoints" / "facades_pix2pix" / "latest_net_G.pth"
            weights.parent.mkdir(parents=True)
            run_process([sys.executable, "-c", OFFICIAL_GENERATOR, str(args.official.resolve()),
                         str(weights)])
            runs.update({f"official {n}": official(n) for n in (many, args.few)})
        print(f"{machine()}, load {load_average():.1f}", file=sys.stderr)
        seconds = alternate(runs, args.repeats, lambda line: print(line, file=sys.stderr))
    tools = ["official", "p2p"] if args.official else ["p2p"]
    per_image = {tool: per_item_seconds(seconds, tool, many, args.few) for tool in tools}
    result = {"machine": machine(), "load_after": load_average(), "images": many,
              "few": args.few, "seconds": seconds, "per_image_s": per_image,
              "ratio": per_image["official"] / per_image["p2p"] if args.official else None}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['machine']}; load average {result['load_after']:.1f} after")
    line = ", ".join(f"{tool} {1000 * s:.0f} ms" for tool, s in per_image.items())
    ratio = f", {result['ratio']:.2f}x" if result["ratio"] else " (official: not measured)"
    print(f"per image after start-up ({many} facades test pairs): {line}{ratio}")


if __name__ == "__main__":
    main()

"""Make the site's pictures in docs/images/ from real runs, not drawings:

- quickstart-samples.png: train recipes/quickstart.yaml with ``p2p.train`` (its 600 iterations,
  validating every 100) and take the last sample grid (input | output | target rows), scaled 2x;
- report-curves.png: ``p2p report`` of that run, opened in Chromium, its curves cut out;
- serve-page.png: ``p2p serve`` of that run in Chromium, a test label map uploaded and
  translated;
- tile-memory.png: peak memory of whole-image and tiled ``p2p translate`` against the image size,
  measured by benchmarks/tile_memory.py on this machine, which the picture names.

    python docs/make_pictures.py                       # all four (about 10 minutes on 2 cores)
    python docs/make_pictures.py --only serve --run RUN_DIR   # one, from an existing run
    python docs/make_pictures.py --only tiles --tile-json tile.json   # a saved measurement

Needs the report, serve and browser extras and Debian's chromium (apt-get install chromium),
which Playwright drives as tests/test_serve_browser.py does. Each picture is kept under 200 kB
(tests/test_docs.py checks it).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
MAX_BYTES = 200_000
TILE_SIZES = ["1024x768", "2048x1536", "3000x2000", "4096x3072"]
PICTURES = ("samples", "report", "serve", "tiles")


def save_small(image: Image.Image, path: Path, colours: int | None = None) -> None:
    """Save as PNG: in a palette of ``colours`` (plots and screenshots need few), or in full
    colour."""
    if colours is not None:
        image = image.convert("RGB").quantize(colours, dither=Image.Dither.NONE)
    image.save(path, optimize=True)
    size = path.stat().st_size
    print(f"{path.relative_to(ROOT)}: {image.width}x{image.height}, {size / 1000:.0f} kB")
    if size > MAX_BYTES:
        raise SystemExit(f"{path}: {size} bytes, over {MAX_BYTES}")


def machine() -> str:
    """The CPU as lscpu names it, with its family and model: "AMD EPYC (family 25 model 17)"."""
    try:
        fields = dict(line.split(":", 1) for line in
                      subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                      if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        return (f"{fields.get('Model name', platform.processor())} (family "
                f"{fields.get('CPU family', '?')} model {fields.get('Model', '?')})")
    except OSError:
        return platform.processor() or platform.machine()


@contextmanager
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def train_quickstart(run_dir: Path) -> None:
    import p2p

    started = time.perf_counter()
    run = p2p.train(ROOT / "recipes" / "quickstart.yaml", out=run_dir,
                    overrides={"train.val_every": 100})
    last = run.log[-1]
    print(f"trained {run_dir} in {time.perf_counter() - started:.0f} s "
          f"(load average {os.getloadavg()[0]:.1f}); last record: {last}")


def samples(run_dir: Path) -> None:
    grid = sorted((run_dir / "samples").glob("iter_*.png"))[-1]
    with Image.open(grid) as image:
        image = image.convert("RGB")
        scaled = image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST)
    save_small(scaled, IMAGES / "quickstart-samples.png")


def as_shown(run_dir: Path) -> tuple[Path, str]:
    """(folder to run in, the run's name there): ``runs/NAME`` as a reader's run is named, so
    that pages which show the name do not show a temporary folder."""
    if run_dir.parent.name == "runs":
        return run_dir.parent.parent, f"runs/{run_dir.name}"
    return run_dir.parent, run_dir.name


def report(run_dir: Path, chromium) -> None:
    """The report's curves: the losses, and under them the validation scores."""
    out = run_dir / "report.html"
    folder, name = as_shown(run_dir)
    subprocess.run([sys.executable, "-m", "p2p", "report", name], check=True, cwd=folder)
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    page.goto(out.as_uri())
    page.wait_for_selector("img.curves", timeout=60_000)
    shots = []
    for index, curves in enumerate(page.query_selector_all("img.curves")):
        shots.append(Path(tempfile.mkdtemp()) / f"curves{index}.png")
        curves.screenshot(path=str(shots[-1]))
    page.close()
    images = [Image.open(shot).convert("RGB") for shot in shots]
    width = max(image.width for image in images)
    stacked = Image.new("RGB", (width, sum(image.height for image in images)), "white")
    top = 0
    for image in images:
        stacked.paste(image, (0, top))
        top += image.height
    scale = min(1.0, 800 / width)
    stacked = stacked.resize((round(stacked.width * scale), round(stacked.height * scale)),
                             Image.Resampling.LANCZOS)
    save_small(stacked, IMAGES / "report-curves.png", colours=128)


def serve(run_dir: Path, chromium) -> None:
    # A test pair's label map (its left half: the quickstart is AtoB), enlarged to be seen.
    home = Path(os.environ.get("P2P_HOME", Path.home() / ".cache" / "p2p"))
    pair = sorted((home / "datasets" / "synthetic" / "test").glob("*.png"))[0]
    upload = Path(tempfile.mkdtemp()) / "labels.png"
    with Image.open(pair) as image:
        half = image.convert("RGB").crop((0, 0, image.width // 2, image.height))
        half.resize((256, 256), Image.Resampling.NEAREST).save(upload)

    folder, name = as_shown(run_dir)
    server = subprocess.Popen([sys.executable, "-m", "p2p", "serve", "-c", f"{name}@best",
                               "--port", "0", "--device", "cpu"],
                              stderr=subprocess.PIPE, text=True, cwd=folder)
    try:
        url = None
        deadline = time.monotonic() + 180
        while url is None and time.monotonic() < deadline:
            line = server.stderr.readline()
            if not line:
                raise SystemExit(f"p2p serve exited with {server.wait()}")
            found = re.search(r"serving (http://\S+)", line)
            url = found and found.group(1).rstrip("/")
        if url is None:
            raise SystemExit("p2p serve did not say where it serves within 3 minutes")
        page = chromium.new_page(viewport={"width": 1200, "height": 820})
        page.goto(url + "/")
        page.wait_for_selector("#translate-upload", state="visible", timeout=120_000)
        page.set_input_files("#upload input[type=file]", str(upload))
        page.wait_for_selector("#upload img", timeout=60_000)
        page.click("#translate-upload")
        page.wait_for_function(
            """() => { const img = document.querySelector('#output img');
                       return img && img.complete && img.naturalWidth > 0; }""",
            timeout=120_000)
        page.wait_for_timeout(500)
        shot = Path(tempfile.mkdtemp()) / "serve.png"
        page.screenshot(path=str(shot))
        page.close()
    finally:
        server.send_signal(signal.SIGINT)  # a graceful stop
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    with Image.open(shot) as image:
        save_small(image.convert("RGB"), IMAGES / "serve-page.png", colours=128)


def measure_tiles() -> dict:
    print(f"measuring tiled and whole-image memory at {', '.join(TILE_SIZES)} (minutes)")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tile_memory.py"), "--sizes", *TILE_SIZES,
         "--cases", "keep-size", "tile", "--repeats", "1", "--json"],
        check=True, capture_output=True, text=True, cwd=ROOT)
    failed = [f"{row['size']} {row['case']}: {row['status']}"
              for row in json.loads(result.stdout)["rows"] if row["status"].startswith("failed")]
    if failed:
        raise SystemExit("p2p translate failed in benchmarks/tile_memory.py: " + "; ".join(failed))
    saved = Path(tempfile.mkdtemp()) / "tile_memory.json"
    saved.write_text(result.stdout)
    print(f"measurement saved to {saved} (--tile-json redraws from it)")
    return json.loads(result.stdout)


def tiles(measured: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    labels = {"keep-size": "whole image (--keep-size)",
              "tile": f"tiles (--tile {measured['tile']} --overlap {measured['overlap']})"}
    for case, style in (("keep-size", "o-"), ("tile", "s-")):
        rows = [r for r in measured["rows"] if r["case"] == case and r["status"] == "ok"]
        pixels = [pixel_count(r["size"]) / 1e6 for r in rows]
        peaks = [r["peak_rss_mb"] / 1000 for r in rows]
        axes.plot(pixels, peaks, style, label=labels[case])
        below = case == "tile"  # the lines start together: label one above, one below
        for x, y in zip(pixels, peaks, strict=True):
            axes.annotate(f"{y:.1f} GB", (x, y), textcoords="offset points", fontsize=8,
                          xytext=(4, -12 if below else 6))
    axes.set_xlabel("image size (megapixels)")
    axes.set_ylabel("peak resident memory (GB)")
    highest = max(r["peak_rss_mb"] for r in measured["rows"]) / 1000
    axes.set_ylim(0, highest * 1.15)  # room for the labels above the points
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=9)
    axes.set_title(f"p2p translate, unet_256, eval mode, batch {measured['batch_size']}",
                   fontsize=10)
    figure.text(0.01, 0.01, f"{measured['machine']}, {measured['cpus']} cores, torch "
                f"{measured['torch']}, {measured['date']}", fontsize=7, color="#555")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    out = Path(tempfile.mkdtemp()) / "tiles.png"
    figure.savefig(out)
    plt.close(figure)
    with Image.open(out) as image:
        save_small(image.convert("RGB"), IMAGES / "tile-memory.png", colours=64)


def pixel_count(size: str) -> int:
    width, height = map(int, size.split("x"))
    return width * height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=PICTURES, default=list(PICTURES))
    parser.add_argument("--run", type=Path, help="an existing quickstart run directory "
                        "(default: train one in a temporary folder)")
    parser.add_argument("--tile-json", type=Path, help="the --json output of "
                        "benchmarks/tile_memory.py on this machine (default: measure now)")
    args = parser.parse_args(argv)
    IMAGES.mkdir(parents=True, exist_ok=True)

    if "tiles" in args.only:
        measured = (json.loads(args.tile_json.read_text()) if args.tile_json
                    else measure_tiles())
        measured.setdefault("machine", machine())
        measured.setdefault("date", datetime.date.today().isoformat())
        tiles(measured)
    run_pictures = [name for name in args.only if name != "tiles"]
    if not run_pictures:
        return 0
    run_dir = args.run
    if run_dir is None:
        run_dir = Path(tempfile.mkdtemp(prefix="p2p-pictures-")) / "runs" / "quickstart"
        train_quickstart(run_dir)
    if "samples" in run_pictures:
        samples(run_dir)
    if {"report", "serve"} & set(run_pictures):
        with browser() as chromium:
            if "report" in run_pictures:
                report(run_dir, chromium)
            if "serve" in run_pictures:
                serve(run_dir, chromium)
    return 0


if __name__ == "__main__":
    sys.exit(main())

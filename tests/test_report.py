import importlib.util
import json
import shutil
import subprocess
import sys

import torch
from conftest import skip_or_fail
from hypothesis import given
from hypothesis import strategies as st
from p2p_testing import parse_self_contained
from PIL import Image

from p2p.images.eight_bit import save_image
from p2p.recipe import dump_recipe, recipe_from_dict
from p2p.training import report

ITERS = 100


def make_run(root, logged=range(10, 60, 10), samples=(20, 40), metrics=None, name="demo"):
    """A run directory as p2p train leaves it after ``logged`` iterations of ITERS (written
    directly, without training, for speed)."""
    run = root / name
    run.mkdir()
    recipe = recipe_from_dict({"name": name, "train": {"iters": ITERS}})
    (run / "recipe.yaml").write_text(dump_recipe(recipe))
    records = [{"iteration": i, "g_gan": 0.7 + i / 100, "g_l1": 0.5 - i / 400, "d_real": 0.6,
                "d_fake": 0.55, "lr": 2e-4, "it_per_s": 4.0, "time": 1.8e9 + i}
               for i in logged]
    if records:
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for i in samples:
        ramp = torch.linspace(-1, 1, 128 * 96).reshape(128, 96) * (i % 7 / 7)
        grid = torch.stack([ramp, -ramp, torch.full_like(ramp, -1)])  # colourful
        save_image(grid, run / "samples" / f"iter_{i:08d}.png")
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run







def test_report_is_one_self_contained_file(cli, tmp_path):
    metrics = {"fid": 101.5, "is": {"mean": 1.71, "std": 0.05}, "split": "val"}
    run = make_run(tmp_path, samples=range(10, 60, 5), metrics=metrics)
    r = cli("report", run, "--max-samples", "4")
    assert r.exit_code == 0, r.stderr
    out = run / "report.html"
    assert r.out.strip() == str(out)
    page, images = parse_self_contained(out)
    text = " ".join(page.text)
    mimes = [mime for mime, _ in images]
    assert mimes.count("image/svg+xml") == 1  # the loss curves
    assert mimes.count("image/png") == 1 + 4  # the latest grid, then 4 of 10 over time
    captions = [t for t in page.text if t.startswith("iteration ")]
    assert captions == ["iteration 10", "iteration 25", "iteration 40", "iteration 55"]
    assert "4 of 10 sample grids" in text
    assert "101.5" in text and "is.mean" in text and "val" in text  # metrics.json, flattened
    assert "demo" in text and "lambda_l1: 100.0" in text  # the recipe
    assert "50 of 100 iterations logged" in text and "p2p train --resume" in text
    assert "50 of 100 iterations logged; 4 of 10 sample grids shown" in r.stderr
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temp files


def test_out_option_and_finished_run(cli, tmp_path):
    run = make_run(tmp_path, logged=range(10, 101, 10))
    target = tmp_path / "elsewhere" / "r.html"
    r = cli("report", run, "--out", target)
    assert r.exit_code == 0, r.stderr
    assert r.out.strip() == str(target) and not (run / "report.html").exists()
    page, _ = parse_self_contained(target)
    assert "finished: 100 iterations." in " ".join(page.text)


def test_running_run_with_a_half_written_line_and_a_resumed_iteration(tmp_path):
    run = make_run(tmp_path, logged=[10, 20, 30])
    with open(run / "log.jsonl", "a") as log:
        # A crashed session's record for 30 is logged again after resuming; the later one counts.
        log.write(json.dumps({"iteration": 30, "g_gan": 9.0, "it_per_s": 2.0, "time": 1.9e9})
                  + "\n")
        log.write('{"iteration": 40, "g_gan": 0.8')  # being written right now
    records = report.read_log(run / "log.jsonl")
    assert [r["iteration"] for r in records] == [10, 20, 30]
    assert records[-1]["g_gan"] == 9.0
    page_html, result = report.build_report(run)
    assert result.iteration == 30 and result.total == ITERS
    assert "30 of 100 iterations logged" in page_html
    assert "time left at the latest speed" in page_html  # 70 iterations at 2 it/s
    assert "1 min" in page_html


def test_run_that_has_only_started(cli, tmp_path):
    run = make_run(tmp_path, logged=[], samples=[])
    r = cli("report", run)
    assert r.exit_code == 0, r.stderr
    page, images = parse_self_contained(run / "report.html")
    text = " ".join(page.text)
    assert images == []
    assert "no iteration logged yet" in text and "No sample grids yet" in text
    assert "No checkpoint yet" in text and "No FID and IS of the published protocol yet" in text


def test_without_eval_run_the_note_points_at_the_validation_scores(cli, tmp_path):
    run = make_run(tmp_path)
    with (run / "log.jsonl").open("a") as log:
        log.write(json.dumps({"iteration": 50, "val_l1": 0.2, "val_psnr": 20.0, "val_ssim": 0.5,
                              "val_images": 3, "val_split": "val", "val_seconds": 1.0}) + "\n")
    assert cli("report", run).exit_code == 0
    text = " ".join(parse_self_contained(run / "report.html")[0].text)
    assert "No FID and IS of the published protocol yet" in text
    assert "validation scores are under" in text


def test_interrupted_run_with_unreadable_files(cli, tmp_path):
    run = make_run(tmp_path, samples=(20, 40))
    (run / "samples" / "iter_00000060.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (run / "metrics.json").write_text("{not json")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "latest.pt").write_bytes(b"")
    r = cli("report", run)
    assert r.exit_code == 0, r.stderr
    assert "left out: iter_00000060.png" in r.stderr and "left out: metrics.json" in r.stderr
    page, images = parse_self_contained(run / "report.html")
    text = " ".join(page.text)
    assert "Latest checkpoint written" in text and "Left out" in text
    assert "latest samples (iteration 40)" in text.lower()


def test_large_samples_are_inlined_as_jpeg(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    monkeypatch.setattr(report, "INLINE_PNG_MAX", 100)
    report.write_report(run)
    _, images = parse_self_contained(run / "report.html")
    assert {mime for mime, _ in images} == {"image/jpeg", "image/svg+xml"}


def test_without_matplotlib_the_page_keeps_a_table(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    run = make_run(tmp_path)
    r = cli("report", run)
    assert r.exit_code == 0, r.stderr
    assert 'pip install "p2p-pix2pix[report]"' in r.stderr
    page, images = parse_self_contained(run / "report.html")
    assert "image/svg+xml" not in [mime for mime, _ in images]
    text = " ".join(page.text)
    assert "Curves need matplotlib" in text and "0.375" in text  # g_l1 at iteration 50


def test_not_a_run_directory_is_a_user_error(cli, tmp_path):
    for args in [("report", tmp_path), ("report", tmp_path / "missing")]:
        r = cli(*args)
        assert r.exit_code == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "recipe.yaml" in lines[0]


@given(st.integers(0, 500), st.integers(1, 40))
def test_spread_keeps_first_and_last(n, k):
    picked = report.spread(n, k)
    assert picked == sorted(set(picked)) and all(0 <= i < n for i in picked)
    assert len(picked) == min(n, k)
    if n and k > 1:
        assert picked[0] == 0 and picked[-1] == n - 1
    if n and k == 1:
        assert picked == [n - 1]


CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


def test_report_renders_in_headless_chromium(tmp_path):
    if CHROMIUM is None:
        skip_or_fail("chromium is not installed (apt-get install chromium)", "CI")
    if importlib.util.find_spec("matplotlib") is None:
        skip_or_fail("matplotlib is not installed (the report extra)", "CI")
    run = make_run(tmp_path)
    result = report.write_report(run)
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1000,2600",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    result.path.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 2600)
    # The sample grids (colour gradients) and the curves (blue lines) were drawn: a blank or
    # broken page is white and grey text only.
    colours = image.resize((250, 650)).getcolors(maxcolors=250 * 650)
    saturated = sum(count for count, (r, g, b) in colours if max(r, g, b) - min(r, g, b) > 60)
    assert saturated > 2000, saturated

"""Translation and evaluation at scale: several processes (torchrun, gloo on the CPU, through
``--nproc 2`` of the real commands) and Ray Data on a local Ray of 2 CPUs give one process's
results; manifests; reruns after a kill; the shares, the per-image dropout and the bad input.
"""

import csv
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import skip_or_fail
from hypothesis import given
from hypothesis import strategies as st
from p2p_testing import make_checkpoint, write_images

from p2p import distributed
from p2p.cli.processes import worker_args
from p2p.inference.generator import dropout_seed, run_generator
from p2p.metrics import class_scores, frechet
from p2p.metrics.features import Settings
from p2p.models import GeneratorConfig, UnetGenerator, init_weights

RELATIVE = 1e-9  # statistics of several processes against one process's


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory) -> Path:
    # num_downs=6 is the smallest U-Net with a dropout level: paper mode's masks matter.
    return make_checkpoint(tmp_path_factory.mktemp("model") / "dropout.pt", image_size=64,
                           num_downs=6)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """11 images in a folder and a subfolder, of two sizes (so batches break on size)."""
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 8, size=(64, 64))
    write_images(folder / "sub", 3, size=(48, 40), seed=3)
    return folder


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One thread per process, here and in the processes the tests start (torchrun's default).
    Byte-identical outputs need the same thread count per process: on CPUs the convolutions'
    float rounding depends on how their work is split over threads."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_close(statistics: frechet.Statistics, expected: frechet.Statistics) -> None:
    """Equal within RELATIVE of the largest value: the sums of x and x x^T against np.cov."""
    for name in ("mu", "sigma"):
        a, b = getattr(statistics, name), getattr(expected, name)
        assert np.abs(a - b).max() <= RELATIVE * np.abs(b).max(), name


def translated(cli, model: Path, source: Path, out: Path, *options) -> dict[str, bytes]:
    r = cli("translate", "-c", model, source, out, *options)
    assert r.exit_code == 0, r.stderr
    return files(out)


# ---- the pieces ------------------------------------------------------------------------------

@given(count=st.integers(0, 40), chunk=st.integers(1, 6), size=st.integers(1, 4))
def test_shares_are_whole_chunks_that_cover_the_list_once(count, chunk, size):
    shares = [distributed.share_indices(count, chunk, distributed.World(r, size))
              for r in range(size)]
    assert sorted(i for s in shares for i in s) == list(range(count))
    for indices in shares:  # chunk-aligned: a rank batching its share forms one process's batches
        assert all(i % chunk == 0 for k, i in enumerate(indices) if k % chunk == 0)
    items = [f"item {i}" for i in range(count)]
    parts = [distributed.share(items, chunk, distributed.World(r, size)) for r in range(size)]
    assert distributed.in_order(parts, chunk) == items


def test_an_images_dropout_follows_its_seed_not_its_batch_or_layout():
    torch.manual_seed(0)
    generator = init_weights(UnetGenerator(GeneratorConfig(num_downs=6, ngf=8)))
    batch = torch.rand(3, 3, 64, 64) * 2 - 1
    seeds = [dropout_seed(7, key) for key in ("a", "b", "sub/c")]
    together = run_generator(generator, batch, precision="fp32", dropout_seeds=seeds)
    alone = torch.cat([run_generator(generator, batch[i:i + 1], precision="fp32",
                                     dropout_seeds=seeds[i:i + 1]) for i in range(3)])
    contiguous = run_generator(generator, batch, precision="fp32", dropout_seeds=seeds,
                               memory_format=torch.contiguous_format)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together, contiguous, rtol=1e-5, atol=1e-5)
    other = run_generator(generator, batch, precision="fp32",
                          dropout_seeds=[dropout_seed(8, "a"), *seeds[1:]])
    assert (other[0] - together[0]).abs().max() > 1e-2  # another seed, other masks
    torch.testing.assert_close(other[1:], together[1:], rtol=1e-5, atol=1e-5)
    assert all("forward" not in vars(m) for m in generator.modules())  # restored


def test_without_a_seed_each_run_draws_one_from_torch(dropout_model):
    import p2p

    model = p2p.load(dropout_model, device="cpu", precision="fp32")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    torch.manual_seed(1)
    first = model(image)
    torch.manual_seed(1)
    assert np.array_equal(model(image), first)  # torch's seed repeats it
    assert not np.array_equal(model(image), first)  # the next run draws another


def test_worker_args_are_the_command_as_parsed_without_nproc():
    import typer

    from p2p.cli.translate import translate

    app = typer.Typer()
    app.command("translate")(translate)
    click_command = typer.main.get_command(app)
    ctx = click_command.make_context(
        "translate", ["in", "out", "-c", "m.pt", "--seed", "3", "--eval-mode", "--nproc", "2",
                      "-b", "2", "--precision", "fp32"])
    assert worker_args(ctx) == ["--checkpoint", "m.pt", "--eval-mode", "--seed", "3",
                                "--batch-size", "2", "--precision", "fp32", "--", "in", "out"]


# ---- manifests -------------------------------------------------------------------------------

def test_a_list_of_lines_or_a_csv_translates_as_its_folder_would(cli, dropout_model, images,
                                                                 tmp_path):
    folder = translated(cli, dropout_model, images, tmp_path / "folder", "--seed", "3")
    names = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))
    (tmp_path / "lines.txt").write_text(
        "# the images\n" + "\n".join(str(images / n) for n in names) + "\n\n")
    with open(tmp_path / "list.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["label", "path"])
        writer.writeheader()
        writer.writerows({"label": i, "path": images / n} for i, n in enumerate(names))
    for manifest in ("lines.txt", "list.csv"):
        out = tmp_path / manifest
        assert translated(cli, dropout_model, tmp_path / manifest, out.with_suffix(""), "--list",
                          "--seed", "3") == folder
    # Only the subfolder's images: their common root is the subfolder.
    (tmp_path / "sub.txt").write_text("\n".join(str(images / n) for n in names if "/" in n))
    assert set(translated(cli, dropout_model, tmp_path / "sub.txt", tmp_path / "sub", "--list",
                          "--seed", "3")) == {"000.png", "001.png", "002.png"}


def test_missing_listed_files_are_named_then_skipped_with_skip_bad(cli, dropout_model,
                                                                   tmp_path):
    write_images(tmp_path / "in", 2)  # listed relative to the list's folder
    (tmp_path / "list.txt").write_text("in/000.png\ngone.png\nin/001.png\n")
    r = cli("translate", "-c", dropout_model, "--list", tmp_path / "list.txt", tmp_path / "out")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert f"1 listed file(s) missing: {tmp_path / 'gone.png'}" in r.stderr
    assert "--skip-bad" in r.stderr and not (tmp_path / "out").exists()
    r = cli("translate", "-c", dropout_model, "--list", tmp_path / "list.txt", tmp_path / "out",
            "--skip-bad")
    assert r.exit_code == 1
    assert f"skipped: {tmp_path / 'gone.png'}: no such file" in r.stderr
    assert sorted(files(tmp_path / "out")) == ["in/000.png", "in/001.png"]  # root: tmp_path
    (tmp_path / "bad.csv").write_text("file\nx.png\n")
    r = cli("translate", "-c", dropout_model, "--list", tmp_path / "bad.csv", tmp_path / "out")
    assert r.exit_code == 2 and "no 'path' column" in r.stderr


# ---- options that do not go together ---------------------------------------------------------

def test_nproc_with_ray_and_an_unreachable_ray_are_one_line(cli, dropout_model, images, tmp_path):
    r = cli("translate", "-c", dropout_model, images, tmp_path / "out", "--engine", "ray",
            "--nproc", "2")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: --nproc starts torchrun processes; --engine ray")
    r = cli("eval", "stats", images, tmp_path / "s.npz", "--engine", "ray", "--nproc", "2")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--engine ray" in r.stderr
    r = cli("translate", "-c", dropout_model, images, tmp_path / "out", "--workers", "2")
    assert r.exit_code == 2 and "--workers is an option of --engine ray" in r.stderr
    _ray()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    started = time.monotonic()
    r = cli("translate", "-c", dropout_model, images, tmp_path / "out", "--engine", "ray",
            "--ray-address", address)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: cannot reach the Ray cluster at {address} (")
    assert time.monotonic() - started < 30 and not (tmp_path / "out").exists()


def test_nproc_under_torchrun_is_refused(cli, dropout_model, images, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = cli("translate", "-c", dropout_model, images, tmp_path / "out", "--nproc", "2")
    assert r.exit_code == 2 and "already runs under it" in r.stderr


# ---- two processes ---------------------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_write_one_process_outputs(cli, dropout_model, images, tmp_path):
    """Paper mode with a seed (a folder), and eval mode (a CSV manifest): byte for byte."""
    paper = translated(cli, dropout_model, images, tmp_path / "paper1", "--seed", "5", "-b", "3")
    r = cli("translate", "-c", dropout_model, images, tmp_path / "paper2", "--seed", "5", "-b",
            "3", "--nproc", "2")
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("translated 11 image(s) in 2 processes") == 1  # rank 0 alone reports
    assert files(tmp_path / "paper2") == paper
    assert translated(cli, dropout_model, images, tmp_path / "paper3", "--seed", "5", "-b",
                      "5") == paper  # nor does the batch size change them

    (tmp_path / "list.csv").write_text(
        "path\n" + "".join(f"{p}\n" for p in sorted(images.rglob("*.png"))))
    evaluated = translated(cli, dropout_model, images, tmp_path / "eval1", "--eval-mode")
    r = cli("translate", "-c", dropout_model, "--list", tmp_path / "list.csv",
            tmp_path / "eval2", "--eval-mode", "--nproc", "2")
    assert r.exit_code == 0, r.stderr
    assert files(tmp_path / "eval2") == evaluated


@pytest.mark.slow
def test_a_rerun_after_a_kill_finishes_the_job_as_one_run(cli, dropout_model, tmp_path):
    source = write_images(tmp_path / "in", 120, size=(128, 128))
    reference = translated(cli, dropout_model, source, tmp_path / "reference", "--seed", "9")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "p2p", "translate", "-c", str(dropout_model), str(source),
               str(out), "--seed", "9", "-b", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.glob("*.png"))):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = files(out)
    assert 0 < len([n for n in done if n.endswith(".png")]) < 120
    for name, data in done.items():  # what is there under its name is whole
        assert name.startswith(".") or data == reference[name], name
    # What a kill in the middle of a write leaves: the rerun removes it.
    (out / ".119.png.0123456789abcdef.tmp").write_bytes(b"half")
    r = cli("translate", "-c", dropout_model, source, out, "--seed", "9")
    assert r.exit_code == 1  # existing outputs kept, as for any rerun
    kept = len([n for n in done if not n.startswith(".")])
    assert f"translated {120 - kept} image(s)" in r.stderr
    assert f"{kept} existing output(s) kept" in r.stderr
    assert files(out) == reference  # nothing else: no temporary files


@pytest.fixture(scope="module")
def is_weights(tmp_path_factory) -> Path:
    """IS weights whose class probabilities differ from image to image (the default random
    ones give every image the same, and a score of exactly 1)."""
    from p2p.metrics import inception

    folder = tmp_path_factory.mktemp("is_weights")
    torch.manual_seed(5)
    network = inception.is_network()
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(network.state_dict(), folder / inception.IS_WEIGHTS.filename)
    return folder


@pytest.mark.slow
def test_statistics_fid_and_is_of_two_processes(cli, tmp_path, weights, is_weights, p2p_home):
    """Batches of 2: the real folder's 2 images are shared 2 + 0 (a process with no share),
    the fake folder's 4 images 2 + 2; IS in batches of 1: images 0, 2 and 1, 3."""
    real = write_images(tmp_path / "real", 2, size=(32, 32), seed=1)
    fake = write_images(tmp_path / "fake", 4, size=(32, 32), seed=2)
    network = frechet.fid_inception(weights)
    one = {name: frechet.folder_statistics(folder, network, Settings(batch_size=2))
           for name, folder in (("real", real), ("fake", fake))}

    r = cli("eval", "stats", real, tmp_path / "real.npz", "--weights", weights, "-b", "2",
            "--nproc", "2", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.out) == {"n": 2, "out": str(tmp_path / "real.npz")}  # one report
    two = frechet.load_statistics(tmp_path / "real.npz")
    assert two.n == 2
    assert_close(two, one["real"])
    key = frechet.cache_key(network, (frechet.folder_item(real, f) for f in sorted(
        real.iterdir())))  # one process's key
    assert [p.stem for p in (p2p_home / "fid-stats").glob("*.npz")] == [key]

    r = cli("eval", "fid", real, fake, "--weights", weights, "-b", "2", "--nproc", "2",
            "--json")
    assert r.exit_code == 0, r.stderr
    values = json.loads(r.out)
    assert (values["n_real"], values["n_fake"]) == (2, 4)
    expected = frechet.frechet_distance(one["real"], one["fake"])
    assert values["fid"] == pytest.approx(expected, rel=1e-6)

    r = cli("eval", "is", fake, "--splits", "2", "--weights", is_weights, "-b", "1", "--nproc",
            "2", "--json")
    assert r.exit_code == 0, r.stderr
    single = class_scores.compute_is(fake, Settings(batch_size=1), 2, is_weights)
    assert single.inception_score > 1  # images that differ in class
    assert json.loads(r.out) == {"is": single.inception_score, "is_std": single.std, "n": 4}


# ---- Ray -------------------------------------------------------------------------------------

def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        skip_or_fail('Ray is not installed (pip install "p2p-pix2pix[ray]")', "CI")
    return ray


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for the module; the commands join it as they would a cluster."""
    import logging

    ray = _ray()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_writes_one_process_outputs(cli, local_ray, dropout_model, images, tmp_path):
    paper = translated(cli, dropout_model, images, tmp_path / "one", "--seed", "5", "-b", "3")
    r = cli("translate", "-c", dropout_model, images, tmp_path / "ray", "--seed", "5", "-b", "3",
            "--engine", "ray", "--workers", "2")
    assert r.exit_code == 0, r.stderr
    assert "translated 11 image(s) -> " in r.stderr
    assert files(tmp_path / "ray") == paper


@pytest.mark.slow
def test_ray_statistics_are_one_process_statistics(cli, local_ray, tmp_path, weights):
    real = write_images(tmp_path / "real", 5, size=(32, 32), seed=1)
    one = frechet.folder_statistics(real, frechet.fid_inception(weights), Settings(batch_size=2))
    r = cli("eval", "stats", real, tmp_path / "real.npz", "--weights", weights, "-b", "2",
            "--engine", "ray", "--json")
    assert r.exit_code == 0, r.stderr
    ray_stats = frechet.load_statistics(tmp_path / "real.npz")
    assert ray_stats.n == 5
    assert_close(ray_stats, one)


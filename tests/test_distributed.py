"""Multi-process training on CPU with gloo: processes spawned by the tests, through torchrun
(``p2p train --nproc 2``) or directly with the variables torchrun would set."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from p2p import distributed
from p2p.data.paired import augment
from p2p.data.synthetic import make_pair
from p2p.errors import P2PError
from p2p.recipe import recipe_from_dict
from p2p.training import distributed as data_parallel
from p2p.weights import load_checkpoint

# fp32 (amp: false, whatever the default): the comparisons below hold to float32 rounding, which
# bf16 autocast would exceed.
TINY = """
name: tiny
data: {{path: {data}, load_size: 36, crop_size: 32, batch_size: 2}}
model: {{num_downs: 5, ngf: 8, ndf: 8, norm: {norm}, d_norm: {norm}, dropout: false}}
train: {{iters: {iters}, log_every: 2, sample_every: 4, checkpoint_every: 4, amp: false}}
"""


@pytest.fixture
def tiny(tmp_path):
    """A tiny recipe on 6 generated pairs, without batch norm by default (across processes it
    needs GPUs); returns a function (iters, norm) -> recipe path."""
    import numpy as np

    rng = np.random.default_rng(0)
    (tmp_path / "data" / "train").mkdir(parents=True)
    for i in range(6):
        make_pair(rng, size=32).save(tmp_path / "data" / "train" / f"{i}.png")

    def recipe(iters: int, norm: str = "none") -> Path:
        path = tmp_path / f"tiny{iters}{norm}.yaml"
        path.write_text(TINY.format(data=tmp_path / "data", iters=iters, norm=norm))
        return path

    return recipe


@pytest.fixture
def one_thread(monkeypatch):
    # What torchrun would set for its processes anyway; set here, so it does not leak out.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run)
    return {f"{part}.{name}": t for part in ("generator", "discriminator")
            for name, t in state[part].items()}


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:  # the same sums, reduced in another order: equal to float rounding
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_training_moves_between_one_and_two_processes(cli, tiny, tmp_path, one_thread):
    """Batch 2 in one process = 2 processes x 1: a run resumed across world sizes (1 -> 2 -> 1)
    ends where the single-process run ends."""
    recipe = tiny(4)
    single, moved = tmp_path / "single", tmp_path / "moved"
    assert cli("train", recipe, "--out", single).exit_code == 0
    assert cli("train", recipe, "--out", moved, "--iters", "2").exit_code == 0

    r = cli("train", "--resume", moved, "--iters", "4", "--nproc", "2")
    assert r.exit_code == 0, r.stderr
    assert r.out == f"{moved}\n"  # rank 0 alone reports
    assert r.stderr.count("in 2 processes") == 1 and "Traceback" not in r.stderr
    records = [json.loads(line) for line in (moved / "log.jsonl").read_text().splitlines()]
    assert [rec["iteration"] for rec in records] == [2, 4]  # one writer
    assert load_checkpoint(moved)["iteration"] == 4
    assert (moved / "samples" / "iter_00000004.png").is_file()
    _assert_close(_weights(single), _weights(moved))

    # ... and the 2-process checkpoint goes on in one process.
    assert cli("train", "--resume", moved, "--iters", "6").exit_code == 0
    assert cli("train", "--resume", single, "--iters", "6").exit_code == 0
    _assert_close(_weights(single), _weights(moved))


WORKER = """
import contextlib, sys, time
from datetime import timedelta
from pathlib import Path
import torch
from p2p import distributed
from p2p.training import distributed as data_parallel
from p2p.errors import P2PError
from p2p.recipe import recipe_from_dict
from p2p.training.loop import build_models, train_step

out = Path(sys.argv[1])
recipe = recipe_from_dict({"data": {"batch_size": 2, "crop_size": 32, "load_size": 32},
                           "model": {"num_downs": 5, "ngf": 8, "ndf": 8, "norm": "instance",
                                     "d_norm": "none", "dropout": False}})
world, device = distributed.world_from_env(), torch.device("cpu")
batch = torch.rand(2, 6, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
share = batch[data_parallel.rank_share(2, world)]
started = time.monotonic()
try:
    with distributed.process_group(world, device, timeout=timedelta(seconds=5)):
        models = build_models(recipe, device)
        train_step(models, share[:, :3], share[:, 3:], recipe, contextlib.nullcontext(),
                   data_parallel.parallel(models.generator, device),
                   data_parallel.parallel(models.discriminator, device))
        torch.save({f"{part}.{name}": p.grad for part, module in
                    (("generator", models.generator), ("discriminator", models.discriminator))
                    for name, p in module.named_parameters()}, out / f"grads{world.rank}.pt")
        # Then rank 1 goes silent without leaving; rank 0 must not wait for it forever.
        if world.rank == 1:
            while not (out / "error.txt").exists() and time.monotonic() < started + 60:
                time.sleep(0.1)
        else:
            started = time.monotonic()
            distributed.barrier(world)
except P2PError as exc:
    (out / "error.txt").write_text(f"{time.monotonic() - started:.1f} {exc}")
# gloo's worker threads left after the group is gone (they must not outlive the interpreter).
threads = [t.read_text().strip() for t in Path("/proc/self/task").glob("*/comm")]
(out / f"gloo_threads{world.rank}.txt").write_text(str(sum("gloo" in t for t in threads)))
"""


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """Runs WORKER as ranks 0 and 1 of a gloo job; returns the folder of what they wrote."""
    out = tmp_path_factory.mktemp("ranks")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(
        [sys.executable, "-c", WORKER, str(out)], stderr=subprocess.PIPE, text=True,
        env={**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
        for rank in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return out


@pytest.mark.slow
def test_two_ranks_of_batch_1_get_the_gradients_of_one_rank_of_batch_2(two_ranks):
    import contextlib

    from p2p.training.loop import build_models, train_step

    recipe = recipe_from_dict({"data": {"batch_size": 2, "crop_size": 32, "load_size": 32},
                               "model": {"num_downs": 5, "ngf": 8, "ndf": 8, "norm": "instance",
                                         "d_norm": "none", "dropout": False}})
    batch = torch.rand(2, 6, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    models = build_models(recipe, torch.device("cpu"))
    train_step(models, batch[:, :3], batch[:, 3:], recipe, contextlib.nullcontext())
    whole = {f"{part}.{name}": p.grad for part, module in
             (("generator", models.generator), ("discriminator", models.discriminator))
             for name, p in module.named_parameters()}
    rank0 = torch.load(two_ranks / "grads0.pt", weights_only=True)
    rank1 = torch.load(two_ranks / "grads1.pt", weights_only=True)
    for name in whole:
        assert torch.equal(rank0[name], rank1[name]), name  # DDP gave both the average
    _assert_close(whole, rank0)


@pytest.mark.slow
def test_a_rank_that_goes_silent_ends_the_wait_with_a_clear_error(two_ranks):
    waited, message = (two_ranks / "error.txt").read_text().split(" ", 1)
    assert 4 <= float(waited) < 30
    assert message.startswith("rank 0 of 2: lost contact with the other training processes")
    assert "Timed out" in message


@pytest.mark.slow
def test_leaving_the_process_group_joins_its_threads(two_ranks):
    # Otherwise a gloo thread can still be releasing a collective while the interpreter shuts
    # down, which aborts the process at exit (1 run in 15-60 under load, before the fix).
    for rank in (0, 1):
        assert (two_ranks / f"gloo_threads{rank}.txt").read_text() == "0"


@pytest.mark.slow
def test_a_failed_rank_stops_the_job_with_a_clear_error(tiny, tmp_path):
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "p2p", "train", str(tiny(100_000)), "--out", str(run),
         "--nproc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (run / "log.jsonl").exists() or not (run / "log.jsonl").read_text():
        assert launcher.poll() is None and time.time() < deadline, launcher.stderr.read()
        time.sleep(0.2)
    workers = {_rank_of(pid): pid for pid in _children(launcher.pid)}
    assert sorted(workers) == [0, 1]
    os.kill(workers[1], signal.SIGKILL)  # as the out-of-memory killer would
    out, err = launcher.communicate(timeout=90)
    assert launcher.returncode == 2, err
    assert err.strip().splitlines()[-1] == (
        "error: training process rank 1 of 2 was killed by SIGKILL; the others were stopped "
        "(its own messages are above)")
    assert out == ""
    assert not Path(f"/proc/{workers[0]}").exists() or _is_zombie(workers[0])


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _rank_of(pid: int) -> int:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in env if v.startswith(b"RANK=")).split(b"=", 1)[1])


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_user_errors_of_multi_process_runs_are_said_once_before_launching(cli, tiny, tmp_path):
    run = tmp_path / "run"
    r = cli("train", tiny(4), "--out", run, "--nproc", "2", "--set", "data.batch_size=3")
    assert r.exit_code == 2
    assert r.stderr.strip() == ("error: recipe: data.batch_size 3 (the global batch) does not "
                                "split evenly over 2 processes (use a multiple of 2, e.g. --set "
                                "data.batch_size=2)")
    r = cli("train", tiny(4, norm="batch"), "--out", run, "--nproc", "2")  # on CPU
    assert r.exit_code == 2 and "needs CUDA GPUs" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not run.exists()


def test_nproc_under_torchrun_is_refused(cli, tiny, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = cli("train", tiny(4), "--nproc", "2")
    assert r.exit_code == 2 and "already runs under it" in r.stderr


def test_world_comes_from_the_torchrun_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.world_from_env() == distributed.World(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = distributed.world_from_env()
    assert world == distributed.World(3, 4, 1) and not world.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(P2PError, match="outside WORLD_SIZE"):
        distributed.world_from_env()


@given(world_size=st.integers(1, 4), share=st.integers(1, 3))
def test_rank_shares_cover_the_global_batch_once(world_size, share):
    batch = world_size * share
    slices = [data_parallel.rank_share(batch, distributed.World(r, world_size))
              for r in range(world_size)]
    assert [i for s in slices for i in range(batch)[s]] == list(range(batch))


@given(seed=st.integers(0, 1000), iteration=st.integers(0, 1000), flip=st.booleans(),
       first=st.integers(0, 3), count=st.integers(1, 3))
def test_a_share_is_augmented_as_in_the_whole_batch(seed, iteration, flip, first, count):
    images = torch.arange(6 * 3 * 9 * 9, dtype=torch.uint8).reshape(6, 3, 9, 9)
    whole = augment(images, images, 6, flip, seed, iteration)[0]
    part = augment(images[first:first + count], images[first:first + count], 6, flip, seed,
                   iteration, first=first)[0]
    assert torch.equal(whole[first:first + count], part)


def test_check_accepts_one_process_and_batch_norm_on_gpus():
    recipe = recipe_from_dict({"data": {"batch_size": 3}})
    data_parallel.check(recipe, 1, "cpu")
    with pytest.raises(P2PError, match="does not split evenly"):
        data_parallel.check(recipe, 2, "cuda")
    data_parallel.check(recipe_from_dict({"data": {"batch_size": 4}}), 2, "cuda")

"""Failures a trusted tool must survive: unwritable outputs, full disks, damaged checkpoints,
two writers of one run, leftovers of killed processes, and signals during start-up."""

import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from p2p_testing import published_file, write_images

from p2p.data import catalog
from p2p.data.synthetic import make_pair
from p2p.models import GeneratorConfig, UnetGenerator
from p2p.weights import checkpoint, load_checkpoint

P2P = [sys.executable, "-m", "p2p"]


def _leftover_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


def _assert_one_error_line(result_code: int, stderr: str, *names: str) -> str:
    assert result_code == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def pairs(tmp_path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    folder = tmp_path / "pairs"
    folder.mkdir()
    for i in range(4):
        make_pair(rng, size=32).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def generator_file(tmp_path) -> Path:
    generator = UnetGenerator(GeneratorConfig(num_downs=5, ngf=4))
    path = tmp_path / "g.pt"
    checkpoint.save_checkpoint(path, checkpoint.generator_state(generator, "AtoB", 32))
    return path


# --- 1. output that cannot be written --------------------------------------------------------

def test_every_command_names_a_path_under_a_regular_file(cli, tiny, pairs, generator_file,  # noqa: F811
                                                         tmp_path, weights, monkeypatch):  # noqa: F811
    """A path under a regular file (NotADirectoryError) is one error line naming the path and
    the reason, in every command that writes. (Tests run as root, for whom chmod makes nothing
    read-only: this is the unwritable path that every machine can make.)"""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    under = blocker / "out"
    images = write_images(tmp_path / "images", 2)
    _, published = published_file("official")
    (tmp_path / "published.pth").write_bytes(published)
    commands = [
        ("train", tiny(2), "--out", under),
        ("data", "pair", images, images, under),
        ("data", "unpair", pairs, under),
        ("data", "split", pairs, under),
        ("data", "fetch", "synthetic", "--root", under),
        ("eval", "stats", images, under / "real.npz", "--weights", weights),
        ("zoo", "export", generator_file, under / "g.ts", "--format", "torchscript"),
        *([("zoo", "export", generator_file, under / "g.onnx", "--format", "onnx")]
          if importlib.util.find_spec("onnx") else []),  # the onnx extra
        ("translate", "--checkpoint", generator_file, pairs / "0.png", under / "x.png"),
    ]
    for command in commands:
        r = cli(*command)
        _assert_one_error_line(r.exit_code, r.stderr, str(under), "not a directory")
    run = tmp_path / "run"
    assert cli("train", tiny(2), "--out", run).exit_code == 0
    r = cli("report", run, "--out", under / "report.html")
    _assert_one_error_line(r.exit_code, r.stderr, str(under), "not a directory")
    monkeypatch.setenv("P2P_HOME", str(under))  # the zoo lives there
    r = cli("zoo", "import", tmp_path / "published.pth", "--format", "official", "--name", "mine")
    _assert_one_error_line(r.exit_code, r.stderr, str(under), "not a directory")
    assert _leftover_temp_files(tmp_path) == []


def _run_with_file_size_limit(args: list, limit: int, **kwargs) -> subprocess.CompletedProcess:
    """``python -m p2p ARGS`` with files limited to ``limit`` bytes: a full disk, without root.
    Python ignores SIGXFSZ, so a write past the limit fails with EFBIG."""
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return subprocess.run([*P2P, *map(str, args)], capture_output=True, text=True,
                          preexec_fn=limit_file_size, timeout=300, **kwargs)


def test_a_full_disk_during_training_is_one_line_and_leaves_no_temporary_file(tiny, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    # The recipe, the log and the samples fit; the first checkpoint does not.
    result = _run_with_file_size_limit(["train", tiny(4), "--out", run], 64 * 1024)
    # The state is written once, as the history file that latest.pt then links to.
    line = _assert_one_error_line(result.returncode, result.stderr,
                                  str(run / "checkpoints" / "iter_00000004.pt"), "file too large")
    assert "free some disk space" in line
    assert (run / "samples" / "iter_00000004.png").is_file()
    assert list((run / "checkpoints").glob("*.pt")) == []
    assert _leftover_temp_files(tmp_path) == []


def test_a_full_disk_during_a_torchscript_export_does_not_abort(generator_file, tmp_path):
    out = tmp_path / "g.ts"
    result = _run_with_file_size_limit(
        ["zoo", "export", generator_file, out, "--format", "torchscript"], 16 * 1024)
    _assert_one_error_line(result.returncode, result.stderr, str(out), "file too large")
    assert not out.exists() and _leftover_temp_files(tmp_path) == []


@pytest.mark.parametrize("command", [["translate", "--checkpoint", "G", "IMAGE", "-"],
                                     ["--version"]])  # an image; a line printed by any command
def test_results_to_a_full_stdout_are_one_line(generator_file, pairs, command):
    args = [{"G": str(generator_file), "IMAGE": str(pairs / "0.png")}.get(a, a) for a in command]
    with open("/dev/full", "wb") as full:
        result = subprocess.run([*P2P, *args], stdout=full, stderr=subprocess.PIPE, text=True,
                                timeout=300)
    _assert_one_error_line(result.returncode, result.stderr, "stdout", "no space left on device")


# --- 3. checkpoints given to --resume ----------------------------------------------------------

def _damage(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def test_resume_names_what_is_wrong_with_the_checkpoint(cli, tiny, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    assert cli("train", tiny(2), "--out", run).exit_code == 0
    latest = run / "checkpoints" / "latest.pt"
    good = latest.read_bytes()
    other = UnetGenerator(GeneratorConfig(num_downs=5, ngf=4)).state_dict()  # the run has ngf 8
    cases = [
        (lambda s: s.pop("optimizer_d"), "no optimizer_d"),
        (lambda s: [s.pop("rng_cpu"), s.pop("iteration")], "no iteration, rng_cpu"),
        (lambda s: s.update(iteration="7"), "'iteration' is a str"),
        (lambda s: s.update(discriminator=[1, 2]), "'discriminator' is a list"),
        (lambda s: s.update(rng_cpu=torch.zeros(3)), "random number generator state"),
        (lambda s: s.update(generator=other), "its 'generator' does not fit"),
        (lambda s: s["optimizer_g"]["param_groups"].clear(), "its 'optimizer_g' does not fit"),
    ]
    for change, expected in cases:
        latest.write_bytes(good)
        _damage(latest, change)
        r = cli("train", "--resume", run, "--iters", "4")
        _assert_one_error_line(r.exit_code, r.stderr, str(latest), expected)
    latest.write_bytes(good)
    assert cli("train", "--resume", run, "--iters", "4").exit_code == 0


# --- 4 and 5. one writer per run; leftovers of killed processes --------------------------------

def _start_training(recipe: Path, run: Path) -> subprocess.Popen:
    """A training process that holds ``run``, returned once it has saved a checkpoint."""
    proc = subprocess.Popen([*P2P, "train", str(recipe), "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stderr:
        if line.startswith("iter 6 "):  # the checkpoint of iteration 4 is on disk
            return proc
    raise AssertionError(f"training did not start: {proc.wait()}")


def test_a_run_in_training_has_one_writer_and_a_killed_one_blocks_nothing(cli, tiny, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    first = _start_training(tiny(100_000), run)
    try:
        for args in [("train", tiny(4), "--out", run), ("train", "--resume", run)]:
            r = cli(*args)
            _assert_one_error_line(r.exit_code, r.stderr, str(run),
                                   f"process {first.pid} is training")
        # What a kill -9 during a checkpoint write leaves, beside files that are not ours.
        checkpoints = run / "checkpoints"
        leftover = checkpoints / ".latest.pt.0123456789abcdef.tmp"
        leftover.write_bytes(b"half a checkpoint")
        kept = [checkpoints / ".latest.pt.notours.tmp", run / "notes.tmp", run / "notes.txt"]
        for path in kept:
            path.write_text("mine")
        assert leftover.exists()  # the running process does not touch what is not its own
    finally:
        first.kill()
        first.wait()
    saved = load_checkpoint(run)["iteration"]
    r = cli("train", "--resume", run, "--iters", str(saved + 2))
    assert r.exit_code == 0, r.stderr
    assert not leftover.exists()
    assert all(path.read_text() == "mine" for path in kept)
    assert not (run / ".lock").exists()  # released and removed when the run ended


# --- 5. leftovers of killed dataset preparations ------------------------------------------------

def test_dataset_leftovers_are_removed_by_the_next_command_unless_their_process_lives(
        cli, p2p_home):
    datasets = p2p_home / "datasets"
    assert cli("data", "fetch", "synthetic").exit_code == 0
    work = datasets / ".synthetic.k2x_9q0a"  # a fetch's work folder (tempfile's name)
    replaced = datasets / ".synthetic.old-0123abcd"  # the copy a --force fetch replaces
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_DATASET, str(datasets / "synthetic")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        # The folders of a live preparer stay: the command finds the dataset locked, moves on.
        (work / "content" / ".content.abc.extracting").mkdir(parents=True)
        (work / "content" / "1.png").write_bytes(b"half")
        replaced.mkdir()
        assert catalog.resolve_dataset("synthetic") == datasets / "synthetic"
        assert work.exists() and replaced.exists()
    finally:
        holder.kill()  # as kill -9 would: its folders stay behind
        holder.wait()
    kept = [datasets / ".synthetic.keep", datasets / ".other.k2x_9q0a", datasets / "mine"]
    for path in kept:
        path.mkdir()
    r = cli("data", "fetch", "synthetic")
    assert r.exit_code == 0, r.stderr
    assert not work.exists() and not replaced.exists()
    assert all(path.is_dir() for path in kept)
    assert not (datasets / ".synthetic.lock").exists()


HOLD_DATASET = """
import sys
from pathlib import Path
from p2p.data import catalog
with catalog.preparing(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_process_waits_for_the_one_generating_the_dataset(tmp_path):
    # Two ranks of a distributed run resolve 'synthetic' at once: one generates it, the other
    # waits and takes that copy instead of generating (or downloading) a second time.
    target = tmp_path / "synthetic"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THEN_GENERATE, str(target)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        resolved = []
        waiting = threading.Thread(
            target=lambda: resolved.append(catalog.resolve_dataset("synthetic", root=tmp_path)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # waits for the lock
        holder.stdin.close()
        waiting.join()
    finally:
        holder.stdin.close()
        holder.wait()
    assert resolved == [target] and (target / "theirs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]


HOLD_THEN_GENERATE = """
import sys
from pathlib import Path
from p2p.data import catalog
target = Path(sys.argv[1])
with catalog.preparing(target):
    print("held", flush=True)
    sys.stdin.read()
    catalog.generate_synthetic(target)
    (target / "theirs").write_text("")
"""


# --- 6. signals at start-up -------------------------------------------------------------------

# The real CLI, with one start-up step made to wait for a line on stdin after saying so.
STALLED_START = """
import sys
from p2p.training import loop as train
step = getattr(train, sys.argv[1])

def stalled(*args, **kwargs):
    print("stalled", file=sys.stderr, flush=True)
    sys.stdin.readline()
    return step(*args, **kwargs)

setattr(train, sys.argv[1], stalled)
from p2p.cli.app import main
main(sys.argv[2:])
"""


@pytest.mark.parametrize(("step", "sig"), [("load_dataset", signal.SIGTERM),
                                          ("build_models", signal.SIGINT)])
def test_a_signal_before_training_stops_with_130_and_the_run_starts_cleanly(
        cli, tiny, tmp_path, step, sig):  # noqa: F811
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", STALLED_START, step, "train", str(tiny(2)),
                             "--out", str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line == "stalled\n":
            break
    proc.send_signal(sig)
    out, err = proc.communicate("go on\n", timeout=120)  # a recorded signal acts at the loop
    assert proc.returncode == 130, err
    assert f"stopped by {sig.name} before training started: nothing was trained yet" in err
    assert "Traceback" not in err and out == ""
    assert not (run / "checkpoints").exists()
    assert not (run / "log.jsonl").exists() or not (run / "log.jsonl").read_text()
    # Left from an earlier start without a checkpoint: not a run to protect, overwritten.
    run.mkdir(exist_ok=True)
    (run / "recipe.yaml").write_text("name: stale\n")
    (run / "log.jsonl").write_text('{"iteration": 99}\n')
    r = cli("train", tiny(2), "--out", run)
    assert r.exit_code == 0, r.stderr
    assert "name: tiny" in (run / "recipe.yaml").read_text()
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [record["iteration"] for record in records] == [2]


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`p2p ... | head`: a closed pipe is no error to report; exit 141 as a shell's tools."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        writer = subprocess.run([sys.executable, "-m", "p2p", "zoo", "list", "--json"],
                                stdout=write_end, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    assert writer.returncode == 141, writer.stderr
    assert writer.stderr == b""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "completions"))
import generate  # noqa: E402  (completions/generate.py)


def test_help_lists_the_command_groups(cli):
    r = cli("--help")
    assert r.exit_code == 0
    for group in ("data", "train", "translate", "eval", "zoo"):
        assert f" {group} " in r.out, group
    assert cli("--version").out.startswith("p2p ")


def test_console_script_and_module_entry_points():
    exe = shutil.which("p2p")
    assert exe, "the p2p console script is not on PATH: pip install -e ."
    for command in ([exe, "--version"], [sys.executable, "-m", "p2p", "--version"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stdout.startswith("p2p "), result.stderr
    bad = subprocess.run([exe, "train", "no-such-recipe.yaml"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "error: no-such-recipe.yaml: no such recipe file (see recipes/ for examples)"]


@pytest.mark.parametrize("shell", sorted(generate.SCRIPTS))
def test_completion_scripts_match_the_app(shell):
    committed = (ROOT / "completions" / generate.SCRIPTS[shell]).read_text()
    assert committed == generate.script_for(shell), "run: python completions/generate.py"


@pytest.mark.skipif(not shutil.which("bash"), reason="bash not installed")
def test_bash_completes_tr_to_train_and_translate():
    assert shutil.which("p2p"), "the p2p console script is not on PATH: pip install -e ."
    script = f"""
source {ROOT / 'completions' / 'p2p.bash'}
COMP_WORDS=(p2p tr); COMP_CWORD=1
_p2p_completion p2p
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["train", "translate"]


def test_help_and_completion_do_not_import_torch():
    # Completion runs `p2p` on every TAB: the app must stay light (the core is imported inside
    # the commands).
    code = "import sys, p2p.cli.app; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize("args, line", [
    (["train", "--itres", "3"],
     "error: no such option: --itres (did you mean --iters or --resume? see 'p2p train --help')"),
    (["train", "r.yaml", "--iters", "abc"],
     "error: invalid value for '--iters': "),
    (["data", "pair", "a"], "error: missing argument 'B_DIR' (see 'p2p data pair --help')"),
    (["data", "split", "a", "b", "--mode", "zip"], "error: invalid value for '--mode': "),
    (["nosuch"], "error: no such command 'nosuch' (see 'p2p --help')"),
    (["translate", "a", "b", "--device"], "error: option '--device' requires an argument"),
])
def test_usage_errors_are_one_line(cli, args, line):
    r = cli(*args)
    assert r.exit_code == 2 and r.out == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), r.stderr
    assert "╭" not in r.stderr and "Usage:" not in r.stderr


def test_help_version_and_no_arguments_keep_their_behaviour(cli):
    for args in (["--help"], ["train", "-h"], ["data", "split", "--help"]):
        r = cli(*args)
        assert r.exit_code == 0 and "Usage:" in r.out and r.stderr == "", args
    assert cli("--version").exit_code == 0
    for args in ([], ["data"], ["zoo"]):  # a group without a command shows its help
        r = cli(*args)
        assert r.exit_code == 2 and "Usage:" in r.out + r.stderr, args
        assert "error:" not in r.stderr


def test_exit_codes_of_commands_and_interrupts_pass_through(cli, tmp_path, monkeypatch):
    from p2p.data import prepare

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"not an image")
    (tmp_path / "b" / "x.png").write_bytes(b"not an image")
    r = cli("data", "pair", tmp_path / "a", tmp_path / "b", tmp_path / "out")
    assert r.exit_code == 1 and "skipped x.png" in r.stderr  # typer.Exit(1) from the command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(prepare, "pair", interrupted)
    r = cli("data", "pair", tmp_path / "a", tmp_path / "b", tmp_path / "out")
    assert r.exit_code == 130 and "Traceback" not in r.stderr


def test_usage_error_through_the_console_script():
    exe = shutil.which("p2p")
    assert exe, "the p2p console script is not on PATH: pip install -e ."
    result = subprocess.run([exe, "zoo", "list", "--jsn"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: no such option: --jsn (did you mean --json? see 'p2p zoo list --help')"]

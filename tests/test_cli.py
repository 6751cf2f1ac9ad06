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

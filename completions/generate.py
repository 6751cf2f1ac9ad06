"""Regenerate the shell completion scripts from the app: python completions/generate.py

The scripts call back into `p2p` at completion time, so new commands and options complete without
regenerating; regenerate when the completion mechanism itself changes (a test checks they match).
"""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {"bash": "p2p.bash", "zsh": "_p2p", "fish": "p2p.fish"}


def script_for(shell: str) -> str:
    env = {**os.environ, "_P2P_COMPLETE": f"source_{shell}"}
    code = "from p2p.cli.app import main; main()"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            check=True)
    # The app is invoked as `p2p`, whatever the interpreter's argv[0] was.
    return result.stdout.strip() + "\n"


if __name__ == "__main__":
    for shell, name in SCRIPTS.items():
        (HERE / name).write_text(script_for(shell))
        print(HERE / name)

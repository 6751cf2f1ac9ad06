"""The documentation stays true to the code.

- The generated reference pages (docs/reference/cli.md, recipe.md) equal what
  docs/gen_reference.py makes now; every recipe key has a documented range and meaning, and the
  integer ranges stated hold.
- Every ``p2p ...`` command line in docs/, README.md and CONTRIBUTING.md names a command that
  exists, with options it has and no more arguments than it takes.
- Python blocks marked ``<!-- runnable -->`` in the guides run.
- ``mkdocs build --strict`` builds the site.
- examples/quickstart.ipynb is stored without outputs, and runs top to bottom.

The site's tools (the ``docs`` extra) are skipped with the reason where missing, and required
where CI=true (tests/conftest.py).
"""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
PAGES = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
SHELL_FENCES = {"bash", "sh", "shell", "console", ""}
RUNNABLE = "<!-- runnable -->"


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---- generated reference pages ------------------------------------------------------------------

def test_reference_pages_are_current():
    stale = load_generator().stale_pages()
    assert not stale, (f"{', '.join(relative(p) for p in stale)} differ from what the code gives "
                       "now: run python docs/gen_reference.py and commit the result")


def test_every_recipe_key_has_a_range_and_meaning():
    generator = load_generator()
    keys = [key for key, *_ in generator.recipe_fields()]
    assert sorted(set(keys) - set(generator.FIELDS)) == [], "add these to FIELDS"
    assert sorted(set(generator.FIELDS) - set(keys)) == [], "these are no recipe keys any more"
    assert all(field.meaning for field in generator.FIELDS.values())


def nested(assignments: dict) -> dict:
    values: dict = {}
    for key, value in assignments.items():
        *sections, leaf = key.split(".")
        node = values
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return values


def test_documented_integer_ranges_hold():
    """Each stated (lowest, highest) is accepted and one past either end refused, by the
    recipe's own validation."""
    from p2p.recipe import recipe_from_dict

    generator = load_generator()
    probed = {key: field for key, field in generator.FIELDS.items() if field.probe}
    assert len(probed) >= 15
    for key, field in probed.items():
        low, high = field.probe
        base = dict(field.probe_base)
        for value in (low, high):
            recipe_from_dict(nested({**base, key: value}))
        for value in (low - 1, high + 1):
            with pytest.raises(Exception, match=re.escape(key.split(".")[-1])):
                recipe_from_dict(nested({**base, key: value}))


# ---- names the prose uses -----------------------------------------------------------------------

FILE_SUFFIXES = {"py", "pt", "pth", "safetensors", "onnx", "json", "jsonl", "yaml", "yml", "png"}


def test_recipe_keys_in_the_prose_exist():
    """Every `section.key` in a code span of the docs is a recipe key (`model.safetensors` and
    the official `train.py` are files)."""
    import p2p

    keys = {key for key, *_ in load_generator().recipe_fields()}
    wrong = []
    for page in PAGES:
        if not page.is_file():
            continue
        for line, _ in shell_lines(page.read_text(encoding="utf-8")):
            for section, name in re.findall(r"(?<![\w/.-])(data|model|train)\.([a-z_0-9]+)\b",
                                            line):
                if name in FILE_SUFFIXES or (section == "model" and hasattr(p2p.Model, name)):
                    continue  # a file, or the API's model.size, model.translate ...
                if f"{section}.{name}" not in keys:
                    wrong.append(f"{relative(page)}: {section}.{name}")
    assert not wrong, "no such recipe keys:\n" + "\n".join(sorted(set(wrong)))


def test_every_extra_is_in_the_install_table():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    table = (DOCS / "install.md").read_text(encoding="utf-8")
    missing = [name for name in extras if f"| `{name}` |" not in table]
    assert not missing, f"docs/install.md's table of extras lacks {missing}"


def test_install_hints_name_our_distribution_and_real_extras():
    """``p2p`` on the package index is another project: hints name ``p2p-pix2pix[EXTRA]`` (the
    pyproject name) with an extra that exists, in the code, the docs and the notebook."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")
    from p2p.errors import DISTRIBUTION

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION
    files = [*sorted((ROOT / "p2p").rglob("*.py")), *PAGES, NOTEBOOK]
    wrong = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        wrong += [f"{relative(file)}: p2p[" for _ in re.finditer(r"(?<![\w-])p2p\[", text)]
        named = re.findall(rf"{DISTRIBUTION}\[(\w+)\]", text)
        named += re.findall(r"""install_extra\(["'](\w+)["']\)""", text)
        wrong += [f"{relative(file)}: no extra {extra}" for extra in named
                  if extra not in project["optional-dependencies"] and extra != "EXTRA"]
    assert not wrong, "install hints that point elsewhere:\n" + "\n".join(wrong)


def test_readme_installs_what_ci_installs():
    """README's test command is .ci/run's: the same pip line, then pytest -q; CONTRIBUTING.md
    installs the same."""
    ci = (ROOT / ".ci" / "run").read_text()
    pip = re.search(r'^pip install -e "[^"]+"', ci, flags=re.MULTILINE).group(0)
    assert f"{pip} && pytest -q" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert pip in (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")


# ---- command lines ------------------------------------------------------------------------------

def shell_lines(text: str) -> list[tuple[str, bool]]:
    """(command line, from a code block) of a Markdown page: each logical line of its shell code
    blocks (continuations joined) and each inline code span."""
    found, block, fence = [], None, None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if fence is None:
                fence, block = stripped[3:].split()[0] if stripped[3:].strip() else "", []
            else:
                if fence in SHELL_FENCES:
                    joined = "\n".join(block).replace("\\\n", " ")
                    found += [(lin.removeprefix("$ "), True) for lin in joined.splitlines()]
                fence = None
            continue
        if fence is not None:
            block.append(line)
        else:
            found += [(span, False) for span in re.findall(r"`([^`\n]+)`", line)]
    return found


SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "$("}
REDIRECTS = {">", ">>", "<", "2>", "&>"}


def p2p_invocations(line: str) -> list[list[str]]:
    """The arguments of each ``p2p`` call in a shell line: ``p2p ...``, after environment
    assignments, in pipes and ``$(...)``, and ``python -m p2p`` / ``torchrun ... -m p2p``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: prose, not a command
        return []
    commands, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    calls = []
    for command in commands:
        words = []
        skip = False
        for token in command:
            if skip:
                skip = False
            elif token in REDIRECTS:
                skip = True
            else:
                words.append(token)
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words and words[0] == "p2p":
            calls.append(words[1:])
        elif "-m" in words[:-1] and words[words.index("-m") + 1] == "p2p":
            calls.append(words[words.index("-m") + 2:])
    return calls


def is_argument(param) -> bool:
    return type(param).__name__.endswith("Argument") or getattr(param, "param_type_name",
                                                                "") == "argument"


def check_call(root, args: list[str], complete: bool) -> str | None:
    """What is wrong with ``p2p ARGS`` for the Click command ``root``, or None. ``complete``:
    the line is a command to run (a code block), so required arguments must be there."""
    help_names = set(root.context_settings.get("help_option_names", ["--help"]))
    command, path, positionals, elided = root, ["p2p"], 0, False
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token in ("...", "…"):
            elided = True
        elif token.startswith("-") and token != "-":
            name, equals, _ = token.partition("=")
            if name in help_names:
                return None
            option = next((p for p in command.params if not is_argument(p)
                           and name in (*p.opts, *getattr(p, "secondary_opts", []))), None)
            if option is None:
                return f"{' '.join(path)} has no option {name}"
            if not getattr(option, "is_flag", False) and not equals:
                i += 1  # its value
        elif getattr(command, "commands", None) is not None and not positionals:
            if token.isupper() or token.startswith("{"):  # a placeholder: p2p COMMAND --help
                return None
            if token not in command.commands:
                return f"{' '.join(path)} has no command {token!r}"
            command = command.commands[token]
            path.append(token)
        else:
            positionals += 1
    arguments = [p for p in command.params if is_argument(p)]
    if any(p.nargs == -1 for p in arguments):
        return None
    if positionals > sum(p.nargs for p in arguments):
        return f"{' '.join(path)} takes {len(arguments)} argument(s), given {positionals}"
    required = sum(p.nargs for p in arguments if p.required)
    if complete and not elided and not getattr(command, "commands", None) and \
            positionals < required:
        return f"{' '.join(path)} needs {required} argument(s), given {positionals}"
    return None


@pytest.fixture(scope="module")
def click_app():
    import typer.main

    from p2p.cli.app import app

    return typer.main.get_command(app)


def test_the_command_line_check_catches_mistakes(click_app):
    def problems(line: str, complete: bool = True) -> list[str | None]:
        return [check_call(click_app, call, complete) for call in p2p_invocations(line)]

    assert problems("p2p trian recipes/quickstart.yaml") == ["p2p has no command 'trian'"]
    assert problems("p2p translate -c run in/ out/ --pared") == [
        "p2p translate has no option --pared"]
    assert problems("p2p data pair a/ b/ c/ d/")[0].startswith("p2p data pair takes 3")
    assert problems("p2p data pair photos/ labels/")[0].startswith("p2p data pair needs 3")
    assert problems("p2p data pair photos/ labels/", complete=False) == [None]
    assert problems("OMP_WAIT_POLICY=PASSIVE p2p train x.yaml --set a=1 | tee log") == [None]
    assert problems("cat x.png | p2p translate -c m.pt - - > out.png") == [None]
    assert problems("torchrun --nproc_per_node 2 -m p2p train r.yaml --nprocs 2") == [
        "p2p train has no option --nprocs"]
    assert problems("p2p COMMAND --help") == [None]
    assert problems("p2p zoo import ... --bgr") == [None]


def test_every_documented_command_line_exists(click_app):
    checked, wrong = 0, []
    for page in PAGES:
        if not page.is_file():
            continue
        for line, complete in shell_lines(page.read_text(encoding="utf-8")):
            for call in p2p_invocations(line):
                checked += 1
                problem = check_call(click_app, call, complete)
                if problem:
                    wrong.append(f"{relative(page)}: {line.strip()}\n    {problem}")
    assert not wrong, "documented command lines that do not match the CLI:\n" + "\n".join(wrong)
    assert checked > 100  # the extraction found the commands


# ---- runnable Python blocks ---------------------------------------------------------------------

def runnable_blocks(text: str) -> list[str]:
    """The ```python blocks that follow a line ``<!-- runnable -->``."""
    pattern = r"^" + re.escape(RUNNABLE) + r"[ \t]*\n\s*```python[^\n]*\n(.*?)\n[ \t]*```"
    return re.findall(pattern, text, flags=re.DOTALL | re.MULTILINE)


def marker_lines(text: str) -> int:
    return sum(line.strip() == RUNNABLE for line in text.splitlines())


RUNNABLE_PAGES = [page for page in PAGES if page.is_file()
                  and marker_lines(page.read_text(encoding="utf-8"))]


def test_runnable_markers_are_found():
    assert len(RUNNABLE_PAGES) >= 2
    for page in RUNNABLE_PAGES:
        text = page.read_text(encoding="utf-8")
        assert len(runnable_blocks(text)) == marker_lines(text), (
            f"{relative(page)}: a {RUNNABLE} line must be followed by a ```python block")


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=relative)
def test_runnable_blocks_run(page, tmp_path, monkeypatch):
    """A page's runnable blocks run in order in one namespace, from a scratch folder that has
    the repository's recipes/, as a reader runs them from a checkout."""
    (tmp_path / "recipes").symlink_to(ROOT / "recipes", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    for index, source in enumerate(runnable_blocks(page.read_text(encoding="utf-8"))):
        exec(compile(source, f"{relative(page)} (runnable block {index + 1})", "exec"),
             namespace)


# ---- the site -----------------------------------------------------------------------------------

def test_mkdocs_build_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers"):
        if importlib.util.find_spec(module) is None:
            skip_or_fail(f"{module} is not installed: pip install -e '.[docs]'", "CI")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in ("p2p.load", "p2p.Model", "p2p.train", "p2p.Run", "p2p.metrics.fid",
                 "p2p.metrics.pairs"):
        assert name in api, f"the API page lost {name}"


def test_pictures_are_small():
    pictures = sorted((DOCS / "images").glob("*.png"))
    assert {p.stem for p in pictures} >= {"quickstart-samples", "report-curves", "serve-page",
                                          "tile-memory"}
    for picture in pictures:
        assert picture.stat().st_size < 200_000, f"{relative(picture)}: keep it under 200 kB"


# ---- the notebook -------------------------------------------------------------------------------

def test_notebook_is_stored_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code
    for cell in code:
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
            "examples/quickstart.ipynb has outputs: clear them before committing (Jupyter: "
            "Edit > Clear All Outputs; or jupyter nbconvert --clear-output --inplace)")


@pytest.mark.slow
def test_notebook_runs_top_to_bottom():
    for module in ("nbclient", "nbformat", "ipykernel"):
        if importlib.util.find_spec(module) is None:
            skip_or_fail(f"{module} is not installed: pip install -e '.[docs]'", "CI")
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on an error
    print(f"notebook: {time.perf_counter() - started:.1f} s")  # pytest -s shows it
    text = "\n".join(output.get("text", "") for cell in notebook.cells
                     for output in cell.get("outputs", []) if output.get("name") == "stdout")
    assert "PSNR" in text
    images = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if "image/png" in output.get("data", {})]
    assert images, "the notebook shows its translations"

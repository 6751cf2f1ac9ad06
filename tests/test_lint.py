import ast
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


@pytest.mark.skipif(not shutil.which("ruff"), reason="ruff is installed by the test extra")
def test_ruff_check_is_clean():
    result = subprocess.run(["ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_layers_import_downward_only():
    """The import-linter contract in pyproject.toml: no module imports a layer above its own,
    nor a sibling of its layer, inside functions too; so there are no import cycles."""
    if not shutil.which("lint-imports"):
        skip_or_fail("import-linter is installed by the test extra: pip install -e '.[test]'",
                     "CI")
    result = subprocess.run(["lint-imports", "--no-cache"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def import_cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of an import graph (module -> the modules it imports): its strongly connected
    components of more than one module, or of one module importing itself."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(imports.get(module, ())):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1 or module in imports.get(module, ()):
                cycles.append(sorted(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return cycles


def test_import_cycles_are_found():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"a"}}) == [["a"]]
    assert import_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_module_imports_itself_back_not_even_inside_a_package():
    """The layers contract does not look inside a layer's package (p2p.training's modules may
    import each other): no cycle there either, nor through a package's __init__."""
    try:
        import grimp  # installed with import-linter (the test extra)
    except ImportError:
        skip_or_fail("grimp comes with import-linter, in the test extra: pip install -e '.[test]'",
                     "CI")
    graph = grimp.build_graph("p2p", exclude_type_checking_imports=True)
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert import_cycles(imports) == []


def imports_of_test_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source`` that reaches a test module: ``test_x``,
    ``tests`` or ``tests.x``, or a relative import (tests/ is no package), at any depth, and
    ``__import__``/``importlib.import_module`` of such a name written as a string."""
    def is_test_module(name: str) -> bool:
        first = name.split(".")[0]
        return first == "tests" or first.startswith("test_")

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if is_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "." * node.level + (node.module or "")))
            elif is_test_module(node.module):
                found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and is_test_module(node.args[0].value)
              and (isinstance(node.func, ast.Name) and node.func.id == "__import__"
                   or isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")):
            found.append((node.lineno, node.args[0].value))
    return found


def test_no_test_module_imports_another():
    # Helpers shared between test modules live in p2p_testing.py (fixtures in conftest.py): a
    # test module importing another breaks where an installed distribution ships a top-level
    # ``tests`` package (torch-fidelity does), and ties modules together.
    caught = imports_of_test_modules(
        "import test_zoo\nfrom test_hub import HubMirror\nfrom tests.test_zoo import SMALL\n"
        "import tests.test_serve\nfrom tests import test_serve\nfrom . import test_zoo\n"
        "def f():\n    from test_report import parse_self_contained\n"
        "importlib.import_module('test_zoo')\n"
        "from conftest import skip_or_fail\nfrom p2p_testing import png\nimport testfixtures\n")
    assert [line for line, _ in caught] == [1, 2, 3, 4, 5, 6, 8, 9]
    offenders = [f"tests/{path.name}:{line}: {module}"
                 for path in sorted(TESTS.glob("*.py"))
                 for line, module in imports_of_test_modules(path.read_text())]
    assert offenders == [], "move what is shared into tests/p2p_testing.py:\n" + "\n".join(
        offenders)

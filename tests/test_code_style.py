"""House rules that a reader relies on: short functions, files with one job (none over 500 lines), an
import graph without circles, and a config package that imports nothing from the rest of cohort."""

from __future__ import annotations

import ast
from pathlib import Path

import cohort

PACKAGE = Path(cohort.__file__).parent
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 500


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The cohort modules ``name`` imports anywhere in its file (function-level imports included)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in modules:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                found.add(target)
    return found


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], "split these functions: " + "; ".join(long)


def test_no_source_file_is_longer_than_five_hundred_lines():
    long = [f"{path.relative_to(PACKAGE)} ({n})" for path in sorted(PACKAGE.rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES]
    assert long == [], "split these files: " + ", ".join(long)


def test_the_import_graph_has_no_circle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                circles.append(" -> ".join(path[path.index(other):] + [other]))
            elif other not in state:
                visit(other, path + [other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == [], "import circles: " + "; ".join(circles)


def test_the_circle_check_finds_a_circle(tmp_path):
    """The check above must be able to fail: two modules importing each other are found."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import x\n")
    modules = {"pkg": package / "__init__.py", "pkg.a": package / "a.py", "pkg.b": package / "b.py"}
    assert _imports("pkg.a", modules["pkg.a"], modules) == {"pkg", "pkg.b"}
    assert _imports("pkg.b", modules["pkg.b"], modules) == {"pkg.a"}


def test_config_imports_nothing_from_the_package():
    modules = _modules()
    for name, path in modules.items():
        if name == "cohort.config" or name.startswith("cohort.config."):
            outside = {m for m in _imports(name, path, modules) if not m.startswith("cohort.config")}
            assert not outside, f"{name} imports {outside}"

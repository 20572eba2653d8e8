"""cohort.algo is pure math: it imports torch and the standard library only, and never syncs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import cohort.algo

ALGO_DIR = Path(cohort.algo.__file__).parent


def algo_sources() -> list[Path]:
    files = sorted(ALGO_DIR.glob("*.py"))
    assert len(files) >= 6, f"expected the algo modules, found {files}"
    return files


def imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_algo_imports_only_torch_and_stdlib():
    allowed = set(sys.stdlib_module_names) | {"torch", "__future__"}
    for path in algo_sources():
        for root in imported_roots(ast.parse(path.read_text())):
            if root == "cohort":
                continue
            assert root in allowed, f"{path.name} imports {root!r}; cohort.algo may import torch only"


def test_algo_imports_nothing_from_the_rest_of_cohort():
    for path in algo_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cohort."):
                assert node.module.startswith("cohort.algo"), f"{path.name} imports {node.module}"


def test_algo_never_calls_item():
    for path in algo_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr != "item", f"{path.name}:{node.lineno} calls .item() (a device sync)"

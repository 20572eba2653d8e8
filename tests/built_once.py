"""Build an expensive, read-only test artefact once per test session, shared by the pytest-xdist workers.

A module-scoped fixture runs once per worker that runs a test of the module: under ``-n 2`` a
fixture whose tests land on both workers is built twice (the quick reproduction, 40-80 s, was). Here
the first worker builds it under a file lock in the session's shared temporary root and records its
JSON value; the others wait for the lock and read the record. Without xdist it is a plain build.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock


def built_once(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str,
               build: Callable[[Path], Any]) -> tuple[Path, Any]:
    """(directory, value): ``build(directory)`` ran once this session; its value must be JSON. Tests
    must not modify the directory (copy it first)."""
    if worker_id == "master":  # no xdist: this process is the whole session
        directory = tmp_path_factory.mktemp(name)
        return directory, json.loads(json.dumps(build(directory)))
    root = tmp_path_factory.getbasetemp().parent  # the session's root, shared by its workers
    directory, record = root / name, root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not record.is_file():
            directory.mkdir(exist_ok=True)
            record.write_text(json.dumps(build(directory)))
    return directory, json.loads(record.read_text())

"""Atomic writes: a directory appears whole, under its final name, or not at all.

A checkpoint, ``final/`` or a trained reward model is written into a hidden temporary directory
beside its destination, flushed to disk, then renamed into place: a crash at any moment leaves the
previous version or the new one, never a half-written one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_directory(destination: Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``destination`` in one rename."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.parent / f".tmp-{destination.name}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        yield temporary
        _fsync_tree(temporary)
        if destination.exists():
            retired = destination.parent / f".tmp-retired-{destination.name}-{uuid.uuid4().hex[:8]}"
            os.rename(destination, retired)
            os.rename(temporary, destination)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise

"""JSON records on disk: strict JSON (NaN and inf written as null), JSON-lines files cut back to a step.

Every file of the run directory that holds numbers (metrics.jsonl, completions.jsonl, evaluation
summaries, cached offline samples, reproduce results) is written through :func:`dumps`, so a
reader never meets ``NaN``, which is not JSON.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping


def _json_value(value: Any) -> Any:
    """NaN and inf are not JSON: write them as null (recursively through dicts and lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    return value


def dumps(record: Any, indent: int | None = None) -> str:
    """Strict JSON (no NaN) of a record; non-JSON objects are written with str()."""
    return json.dumps(_json_value(record), ensure_ascii=False, indent=indent, default=str)


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop records of steps after ``last_step`` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        if line.strip() and json.loads(line).get("step", 0) <= last_step:
            kept.append(line)
    temporary = path.with_name(f".tmp-{path.name}")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)

"""The config reference in Markdown, generated from the config sections (fields, defaults, docstrings):
the core ones in :mod:`cohort.config.schema` and those the methods register.

``python -m cohort.config.reference --write docs/config.md`` refreshes the part of that page between
the reference markers; a test fails when it is out of date.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
from pathlib import Path

from cohort.config.schema import section_classes

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _field_docs(cls: type) -> dict[str, str]:
    """The string literal written right after each field of a dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        return ""
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value!r}`"


def markdown() -> str:
    lines = []
    for name, cls in section_classes().items():
        docs = _field_docs(cls)
        hints = inspect.get_annotations(cls, eval_str=False)
        lines += [f"**`{name}`**", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for field in dataclasses.fields(cls):
            kind = str(hints[field.name]).replace("|", "\\|")
            lines.append(f"| `{name}.{field.name}` | `{kind}` | {_default(field)} | {docs.get(field.name, '')} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def refreshed(readme: str) -> str:
    """The page's text with its reference section replaced by the current one."""
    if START not in readme or END not in readme:
        raise ValueError(f"the page has no {START} ... {END} section")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{markdown()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", metavar="PAGE", help="refresh the reference section of this Markdown file")
    args = parser.parse_args(argv)
    if args.write:
        path = Path(args.write)
        path.write_text(refreshed(path.read_text()))
    else:
        sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())

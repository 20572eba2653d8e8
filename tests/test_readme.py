"""The docs stay true: the config reference matches the code, every config field is documented, and
no link of the README or the docs leaves the repository or points at a file that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from cohort.config import reference as config_reference

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIG_PAGE = ROOT / "docs" / "config.md"


def test_the_config_reference_is_current():
    text = CONFIG_PAGE.read_text()
    assert config_reference.refreshed(text) == text, "run: python -m cohort.config.reference --write docs/config.md"


def test_every_config_field_is_documented():
    for line in config_reference.markdown().splitlines():
        if line.startswith("| `") and not line.startswith("| key"):
            assert not line.rstrip().endswith("|  |"), f"undocumented config field: {line}"


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "RESULTS.md"]


def test_no_link_of_the_docs_leaves_the_repository():
    for page in _pages():
        for target in LINK.findall(page.read_text()):
            assert not re.match(r"^[a-z]+:", target), f"{page.relative_to(ROOT)} links outside the repository: {target}"
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert ROOT in path.parents or path == ROOT, f"{page.relative_to(ROOT)}: {target} is outside the repository"
            assert path.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"


def test_the_link_check_catches_a_broken_link(tmp_path):
    """The check above can fail: it sees both a web link and a missing file."""
    assert LINK.findall("see [the spec](docs/spec.md) and [TRL](https://github.com/huggingface/trl)") == [
        "docs/spec.md", "https://github.com/huggingface/trl"]


def test_the_readme_is_a_front_door():
    assert len(README.read_text().splitlines()) <= 260, "keep the README short: details go under docs/"

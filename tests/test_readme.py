"""The README stays true: its config reference matches the code and every config field is documented."""

from __future__ import annotations

from pathlib import Path

from cohort.config import reference as config_reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_reference_is_current():
    text = README.read_text()
    assert config_reference.refreshed(text) == text, "run: python -m cohort.config.reference --write README.md"


def test_every_config_field_is_documented():
    for line in config_reference.markdown().splitlines():
        if line.startswith("| `") and not line.startswith("| key"):
            assert not line.rstrip().endswith("|  |"), f"undocumented config field: {line}"


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text

"""Tests that need system (Debian) packages, which pip cannot install: markers and pytest hooks.

A test marked ``@requires_bubblewrap`` or ``@requires_chromium`` (``pytest.mark.system_packages``)
is skipped before its fixtures are built where one of the package's executables is missing, with
a reason naming the package and the command that installs it; the terminal summary counts those
skips per reason. Under ``COHORT_REQUIRE_SYSTEM_DEPS=1`` (CI) such a test fails instead: CI never
skips silently. tests/conftest.py imports the three hooks::

    from system_deps import requires_bubblewrap

    @requires_bubblewrap
    def test_runs_programs(): ...
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass

import pytest

REQUIRE_ENV = "COHORT_REQUIRE_SYSTEM_DEPS"
MARKER = "system_packages"


@dataclass(frozen=True)
class SystemPackage:
    """A Debian package some tests need: the executables that show it is installed, and how to install it."""

    name: str
    executables: tuple[str, ...]
    install: str

    def installed(self) -> bool:
        return all(shutil.which(executable) is not None for executable in self.executables)


PACKAGES: dict[str, SystemPackage] = {
    "bubblewrap": SystemPackage("bubblewrap", ("bwrap",), "sudo apt-get install bubblewrap"),
    "chromium": SystemPackage("chromium", ("chromium", "chromedriver"), "sudo apt-get install chromium chromium-driver"),
}

requires_bubblewrap = pytest.mark.system_packages("bubblewrap")
requires_chromium = pytest.mark.system_packages("chromium")

_skip_reasons: dict[str, str] = {}  # nodeid -> reason, for the tests skipped for a missing package


def skip_reason(packages: list[SystemPackage]) -> str:
    """The reason a test needing ``packages`` (the missing ones) is skipped: names and install commands."""
    names = ", ".join(package.name for package in packages)
    installs = "`, `".join(package.install for package in packages)
    return f"missing system packages: {names} (install: `{installs}` or `make system-deps`)"


def _missing(item: pytest.Item) -> list[SystemPackage]:
    """The packages the item's markers ask for that are not installed here."""
    wanted: list[str] = []
    for marker in item.iter_markers(MARKER):
        wanted += [name for name in marker.args if name not in wanted]
    unknown = [name for name in wanted if name not in PACKAGES]
    if unknown:
        raise pytest.UsageError(f"{item.nodeid}: unknown system packages {unknown}; known: {sorted(PACKAGES)}")
    return [PACKAGES[name] for name in wanted if not PACKAGES[name].installed()]


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests whose packages are missing as skipped (unless they are required)."""
    if _required():
        return
    for item in items:
        missing = _missing(item)
        if missing:
            reason = skip_reason(missing)
            _skip_reasons[item.nodeid] = reason
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under COHORT_REQUIRE_SYSTEM_DEPS=1, fail a test whose packages are missing, before its fixtures."""
    if _required():
        missing = _missing(item)
        if missing:
            pytest.fail(f"{skip_reason(missing)}; {REQUIRE_ENV}=1 forbids skipping", pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """A "system packages" section: how many tests were skipped for which missing packages."""
    skipped = {report.nodeid for report in terminalreporter.stats.get("skipped", [])}
    counts = Counter(reason for nodeid, reason in _skip_reasons.items() if nodeid in skipped)
    if not counts:
        return
    terminalreporter.section("system packages")
    for reason, count in counts.items():
        terminalreporter.write_line(f"{count} test{'s' if count != 1 else ''} skipped: {reason}")
    terminalreporter.write_line(f"(set {REQUIRE_ENV}=1 to make these tests fail instead of skipping, as CI does)")

"""tests/system_deps.py: a test that needs a missing Debian package skips with a reason naming the
package and its install command, the terminal summary says so, and COHORT_REQUIRE_SYSTEM_DEPS=1
turns the skip into a failure. Each case is a real pytest run in a subprocess, on a package that
no machine has."""

from __future__ import annotations

from pathlib import Path

import pytest
import system_deps

pytest_plugins = ["pytester"]

TESTS_DIR = Path(__file__).resolve().parent
ABSENT = "cohort-absent-package"
INNER_CONFTEST = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
import system_deps
system_deps.PACKAGES[{ABSENT!r}] = system_deps.SystemPackage(
    {ABSENT!r}, ("cohort-no-such-program",), "sudo apt-get install {ABSENT}"
)
from system_deps import pytest_collection_modifyitems, pytest_runtest_setup, pytest_terminal_summary
"""
INNER_TESTS = f"""
import pytest

needs_absent = pytest.mark.system_packages({ABSENT!r})

@pytest.fixture
def expensive(tmp_path_factory):
    raise AssertionError("a skipped test's fixture was built")

@needs_absent
def test_one(expensive):
    pass

@needs_absent
def test_two():
    pass

def test_plain():
    pass
"""
REASON = f"missing system packages: {ABSENT} (install: `sudo apt-get install {ABSENT}` or `make system-deps`)"


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A throwaway test directory whose tests need a package that is never installed."""
    monkeypatch.delenv(system_deps.REQUIRE_ENV, raising=False)
    pytester.makeini("[pytest]\nmarkers =\n    system_packages(*names): needs Debian packages\n")
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester


def test_a_missing_package_skips_before_fixtures_and_the_summary_says_how_to_install(inner: pytest.Pytester) -> None:
    result = inner.runpytest_subprocess("-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "*= system packages =*", f"2 tests skipped: {REASON}", "*COHORT_REQUIRE_SYSTEM_DEPS=1*",
        f"SKIPPED [[]1[]] test_inner.py:*: {REASON}", f"SKIPPED [[]1[]] test_inner.py:*: {REASON}",
    ])


def test_required_system_packages_turn_the_skips_into_failures(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(system_deps.REQUIRE_ENV, "1")
    result = inner.runpytest_subprocess("-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=2)
    assert result.ret == 1
    result.stdout.fnmatch_lines([f"*{REASON}; COHORT_REQUIRE_SYSTEM_DEPS=1 forbids skipping*"])
    assert "tests skipped" not in result.stdout.str()


def test_the_markers_name_the_packages_the_project_installs() -> None:
    assert system_deps.requires_bubblewrap.args == ("bubblewrap",)
    assert system_deps.requires_chromium.args == ("chromium",)
    assert system_deps.PACKAGES["bubblewrap"].executables == ("bwrap",)
    assert system_deps.PACKAGES["chromium"].executables == ("chromium", "chromedriver")
    text = system_deps.skip_reason([system_deps.PACKAGES["bubblewrap"]])
    assert text == "missing system packages: bubblewrap (install: `sudo apt-get install bubblewrap` or `make system-deps`)"

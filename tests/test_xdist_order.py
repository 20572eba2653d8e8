"""tests/xdist_order.py: the session's order for xdist's work stealing, on real collected items.

Each worker's contiguous chunk must start with its share of the long tests (longest first, dealt
so the chunks' expected seconds stay even), the tests of one ``shares(name)`` must stay together
in one chunk, and every test must be run exactly once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from xdist_order import chunk_sizes

pytest_plugins = ["pytester"]

TESTS = Path(__file__).parent
INNER_CONFTEST = f"""
import os, sys
sys.path.insert(0, {str(TESTS)!r})
import xdist_order

def pytest_collection_modifyitems(config, items):
    items[:] = xdist_order.planned(items, int(os.environ["INNER_WORKERS"]))
"""
INNER_TESTS = """
import pytest

def test_quick_1(): pass
def test_quick_2(): pass
def test_quick_3(): pass
@pytest.mark.slow(seconds=30)
def test_long_30(): pass
def test_quick_4(): pass
@pytest.mark.slow
def test_slow_default(): pass
@pytest.mark.shares("artefact")
@pytest.mark.slow(seconds=25)
def test_reads_artefact_first(): pass
def test_quick_5(): pass
@pytest.mark.shares("artefact")
def test_reads_artefact_second(): pass
@pytest.mark.slow(seconds=90)
def test_long_90(): pass
def test_quick_6(): pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n    shares(name): shares\n")
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester


def order(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: int) -> list[str]:
    monkeypatch.setenv("INNER_WORKERS", str(workers))
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    return [line.split("::")[1] for line in result.outlines if line.startswith("test_inner.py::")]


def test_two_workers_start_with_their_share_of_the_long_tests(inner, monkeypatch):
    names = order(inner, monkeypatch, 2)
    assert sorted(names) == sorted(f"test_{n}" for n in [
        "quick_1", "quick_2", "quick_3", "quick_4", "quick_5", "quick_6", "long_30", "slow_default",
        "reads_artefact_first", "reads_artefact_second", "long_90"])
    assert chunk_sizes(11, 2) == [5, 6]  # worksteal's first distribution of 11 tests
    first, second = names[:5], names[5:]
    # longest first, each to the chunk with less expected work: 90 -> 0; 30 -> 1; the shared unit (25) -> 1
    # (30 < 90); the default 10 -> 1 (55 < 90)
    assert first[:1] == ["test_long_90"]
    assert second[:4] == ["test_long_30", "test_reads_artefact_first", "test_reads_artefact_second", "test_slow_default"]
    assert first[1:] == ["test_quick_1", "test_quick_2", "test_quick_3", "test_quick_4"]  # then quick ones, file order
    assert second[4:] == ["test_quick_5", "test_quick_6"]


def test_one_worker_runs_the_longest_first_and_keeps_a_shared_unit_together(inner, monkeypatch):
    names = order(inner, monkeypatch, 1)
    assert names[:5] == ["test_long_90", "test_long_30", "test_reads_artefact_first", "test_reads_artefact_second",
                         "test_slow_default"]
    assert names[5:] == [f"test_quick_{i}" for i in range(1, 7)]


@pytest.mark.parametrize("count, workers", [(0, 1), (1, 2), (11, 2), (1225, 2), (10, 3), (7, 4)])
def test_chunk_sizes_are_worksteals_split(count, workers):
    sizes = chunk_sizes(count, workers)
    assert sum(sizes) == count and max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes)

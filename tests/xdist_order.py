"""The order the test session runs in, planned for pytest-xdist's work stealing (``--dist worksteal``).

Work stealing hands worker i a contiguous chunk of the collection (the first half, the second
half under ``-n 2``); a worker that runs dry steals the tail of the busiest worker's queue. So
the head of each chunk is where the long tests belong: they start at once, each on its own worker,
and are never stolen. This module deals them there, longest first, each to the chunk with the least
expected work so far (the LPT rule), and fills the chunks with the quick tests in file order.

The expected seconds come from the markers: ``slow(seconds=N)`` (``slow`` alone counts 10 s) and
``shares(name)``, which makes the tests that read one expensive fixture a single unit: dealt to
one chunk, back to back, so the fixture is built once and no worker waits on built_once's lock
while another builds it. A wrong estimate only costs balance, never a test.
"""

from __future__ import annotations

import os

import pytest

SLOW_SECONDS = 10.0  # a test marked slow without an estimate


def expected_seconds(item: pytest.Item) -> float:
    slow = item.get_closest_marker("slow")
    return 0.0 if slow is None else float(slow.kwargs.get("seconds", SLOW_SECONDS))


def _units(items: list[pytest.Item]) -> list[list[pytest.Item]]:
    """Each test alone, except that the tests of one ``shares(name)`` form one unit (in file order)."""
    units: list[list[pytest.Item]] = []
    by_name: dict[str, list[pytest.Item]] = {}
    for item in items:
        shares = item.get_closest_marker("shares")
        if shares is None:
            units.append([item])
        elif shares.args[0] in by_name:
            by_name[shares.args[0]].append(item)
        else:
            by_name[shares.args[0]] = [item]
            units.append(by_name[shares.args[0]])
    return units


def chunk_sizes(count: int, workers: int) -> list[int]:
    """How worksteal's first distribution splits ``count`` tests over ``workers``."""
    sizes = []
    for i in range(workers):
        sizes.append((count - sum(sizes)) // (workers - i))
    return sizes


def planned(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """``items`` reordered: each chunk starts with its share of the long units, longest first."""
    long_units: list[tuple[float, list[pytest.Item]]] = []
    quick: list[pytest.Item] = []  # file order
    for unit in _units(items):
        seconds = sum(map(expected_seconds, unit))
        if seconds > 0 or len(unit) > 1:
            long_units.append((seconds, unit))
        else:
            quick.extend(unit)
    long_units.sort(key=lambda pair: -pair[0])  # stable: file order among equals
    workers = max(workers, 1)
    chunks: list[list[pytest.Item]] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for seconds, unit in long_units:
        target = min(range(workers), key=lambda w: (load[w], w))
        chunks[target].extend(unit)
        load[target] += seconds
    ordered: list[pytest.Item] = []
    for chunk, size in zip(chunks, chunk_sizes(len(items), workers)):
        take = max(size - len(chunk), 0)
        ordered.extend(chunk + quick[:take])
        del quick[:take]
    return ordered + quick


def workers_in_session() -> int:
    """The number of xdist workers (1 without xdist)."""
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))

"""The judge's wire format (cohort.rewards.sandbox.harness), in this process: what survives the trip, what is refused.

The judge only ever compares objects it decoded itself, so decoding must give exact builtin types
and refuse anything else; these checks need no sandbox.
"""

from __future__ import annotations

import ast
import collections
import enum
import json
import math
import os
import sys
import threading

import pytest

from cohort.rewards.sandbox import harness as judge
from cohort.rewards.sandbox.harness import (
    ProtocolError,
    decode,
    dump_line,
    encode,
    parse_line,
)


def roundtrip(value):
    return decode(parse_line(dump_line(encode(value))))


@pytest.mark.parametrize(
    "value",
    [
        None, True, False, 0, -7, 2**53, -(2**200), 10**5000, 0.1, -0.0, 1e308, complex(1.5, -2), "", "héllo \ud800",
        b"\x00\xff", bytearray(b"ab"), [1, [2, (3,)]], (), (1, "a", None), {1: "a", (2, 3): [4]}, {1, 2}, frozenset({(1, 2)}),
        range(1, 10, 3),
    ],
    ids=lambda value: type(value).__name__,
)  # fmt: skip
def test_builtin_values_survive_exactly(value):
    back = roundtrip(value)
    assert back == value and type(back) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, back) == math.copysign(1, value)


def test_nan_and_infinities_survive_as_floats():
    back = roundtrip([math.nan, math.inf, -math.inf])
    assert math.isnan(back[0]) and back[1:] == [math.inf, -math.inf]
    assert all(type(x) is float for x in back)


def test_subclasses_of_builtins_arrive_as_the_builtin():
    class Colour(enum.IntEnum):
        RED = 1

    class Loud(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    point = collections.namedtuple("Point", "x y")
    back = roundtrip([collections.Counter("aab"), Colour.RED, point(1, 2), Loud("x"), collections.OrderedDict(a=1)])
    assert back == [{"a": 2, "b": 1}, 1, (1, 2), "x", {"a": 1}]
    assert [type(x) for x in back] == [dict, int, tuple, str, dict]
    assert back[3] != "y"  # the judge's str, not the program's


def test_iterators_arrive_as_iterators_over_a_capped_list():
    back = roundtrip(x * x for x in range(3))
    assert type(back).__name__ == "list_iterator" and list(back) == [0, 1, 4]
    endless = roundtrip(iter(int, 1))  # an infinite iterator: cut at MAX_ITEMS
    assert sum(1 for _ in endless) == judge.MAX_ITEMS


@pytest.mark.parametrize("value", [object(), lambda: 1, print, type, [object()], {1: object()}])
def test_values_without_an_encoding_are_refused(value):
    with pytest.raises(ValueError):
        encode(value)


def test_self_referential_and_too_deep_values_are_refused():
    loop: list = []
    loop.append(loop)
    deep: list = []
    for _ in range(judge.MAX_DEPTH + 5):
        deep = [deep]
    for value in (loop, deep):
        with pytest.raises(ValueError, match="deeply"):
            encode(value)


@pytest.mark.parametrize(
    "line",
    [
        b"4.0", b"NaN", b"Infinity", b"-Infinity", b"[1e5]",  # bare JSON floats and constants
        b"1" * 5000,  # past the str-to-int digit limit
        b"[" * 100_000 + b"]" * 100_000,  # the JSON parser's recursion
        b"not json", b"\xff\xfe",
    ],
)
def test_unreadable_messages_are_protocol_errors(line):
    with pytest.raises(ProtocolError):
        parse_line(line)


@pytest.mark.parametrize(
    "node",
    [
        1.5, {"__eq__": True}, [], ["eq", "always"], ["l"], ["l", 3], ["t", [1], 2], ["f", 4], ["f", "zz"], ["i", "0xg"],
        ["s", [["l", []]]], ["d", [[["l", []], 1]]], ["d", [[1]]], ["r", 0, 5, 0], ["r", 0, "5", 1], ["b", "0"],
    ],
)  # fmt: skip
def test_malformed_values_are_protocol_errors(node):
    with pytest.raises(ProtocolError):
        decode(node)


def test_decoding_depth_is_limited():
    node: object = 0
    for _ in range(judge.MAX_DEPTH + 5):
        node = ["l", [node]]
    with pytest.raises(ProtocolError, match="deeply"):
        decode(node)


@pytest.mark.parametrize(
    "name, message, expected",
    [
        ("ValueError", "bad", ValueError),
        ("KeyError", "k", KeyError),
        ("ZeroDivisionError", "", ZeroDivisionError),
        ("StopIteration", "", RuntimeError),  # would end the judge's for loops and map() early
        ("StopAsyncIteration", "", RuntimeError),
        ("SystemExit", "0", RuntimeError),  # BaseException only
        ("KeyboardInterrupt", "", RuntimeError),
        ("GeneratorExit", "", RuntimeError),
        ("UnicodeDecodeError", "x", RuntimeError),  # needs five arguments
        ("MyOwnError", "x", RuntimeError),
        ("print", "x", RuntimeError),
    ],
)
def test_exceptions_come_back_as_builtin_exceptions(name, message, expected):
    error = judge._builtin_exception(name, message)
    assert type(error) is expected


def test_the_candidate_names_an_exception_by_its_nearest_builtin_class():
    class Custom(KeyError):
        pass

    class ValueError(Exception):  # a fake named like a builtin
        pass

    assert judge._exception_name(Custom()) == "KeyError"
    assert judge._exception_name(ValueError()) == "Exception"


def test_the_program_cannot_bind_builtin_names_or_foreign_modules():
    names = judge.bindings(
        [["set", "fn"], ["sorted", "fn"], ["f", "fn"], ["math", "module"], ["np", "module"], ["K", "value", ["t", [1]]]],
        candidate=None,
    )
    assert sorted(names) == ["K", "f", "math"]
    assert names["math"] is math and names["K"] == (1,)
    with pytest.raises(ProtocolError):
        judge.bindings([["f", "weird"]], candidate=None)


def test_lines_are_capped():
    read_end, write_end = os.pipe()
    channel = judge.Channel(read_end, write_end)
    flood = threading.Thread(target=lambda: channel.write(b"x" * (judge.MAX_LINE_BYTES + (1 << 17))), daemon=True)
    try:
        channel.write(b'["ok",1]\n')
        assert channel.read() == b'["ok",1]'
        flood.start()  # a line without end, longer than the cap
        with pytest.raises(ProtocolError, match="too long"):
            channel.read()
    finally:
        os.close(read_end)
        flood.join(timeout=5)
        os.close(write_end)


def test_the_harness_uses_the_standard_library_only():
    """It runs under the sandbox's interpreter, which need not have cohort (or anything else) installed."""
    tree = ast.parse(open(judge.__file__).read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported


def test_messages_are_ascii_json_lines():
    line = dump_line(["ok", encode("é\ud800")])
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert json.loads(line) == ["ok", "é\ud800"]

"""The judge's wire format (cohort.rewards.sandbox.codec) and name rules (harness), in this process.

The judge only ever compares objects it decoded itself, so decoding must give exact builtin types
and refuse anything else; the test, not the program, owns every name but the entry point; any
failure on a call's way fails the test. These checks need no sandbox.
"""

from __future__ import annotations

import ast
import collections
import enum
import inspect
import json
import math
import os
import sys
import threading

import pytest

from cohort.rewards.sandbox import codec
from cohort.rewards.sandbox import harness as judge
from cohort.rewards.sandbox.codec import (
    ProtocolError,
    decode,
    dump_line,
    encode,
    parse_line,
)
from cohort.rewards.sandbox.verdict import harness_source, ranked_names, referenced_names


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
    assert sum(1 for _ in endless) == codec.MAX_ITEMS


@pytest.mark.parametrize("value", [object(), lambda: 1, print, type, [object()], {1: object()}])
def test_values_without_an_encoding_are_refused(value):
    with pytest.raises(ValueError):
        encode(value)


def test_self_referential_and_too_deep_values_are_refused():
    loop: list = []
    loop.append(loop)
    deep: list = []
    for _ in range(codec.MAX_DEPTH + 5):
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
    for _ in range(codec.MAX_DEPTH + 5):
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


@pytest.fixture
def channel_pair():
    """(judge-side Candidate, candidate-side Channel): real pipes, the test plays the candidate."""
    to_candidate_r, to_candidate_w = os.pipe()
    to_judge_r, to_judge_w = os.pipe()
    candidate = judge.Candidate(codec.Channel(to_judge_r, to_candidate_w))
    yield candidate, codec.Channel(to_candidate_r, to_judge_w)
    for fd in (to_candidate_r, to_candidate_w, to_judge_r, to_judge_w):
        os.close(fd)


PROGRAM = judge.ProgramNames([
    ["set", "fn", ["__main__", "set"]], ["f", "fn", ["__main__", "f"]], ["helper", "fn", ["__main__", "helper"]],
    ["Counter", "fn", ["collections", "Counter"]], ["Tally", "fn", ["collections", "Counter"]],
    ["sqrt", "fn", ["math", "sqrt"]], ["math", "module"], ["np", "module"], ["os", "fn", ["os", "system"]],
])  # fmt: skip


def test_the_program_supplies_only_the_entry_point(channel_pair):
    candidate, _ = channel_pair
    code = "assert f(2) == Counter('aa') and helper(1) and Tally(1) and np and os and sqrt(4) == 2 and math.pi and set() == set()"
    namespace = judge.namespace_for({"code": code, "setup": "", "names": ranked_names([code])}, PROGRAM, candidate)
    bound = sorted(name for name in namespace if not name.startswith("__"))
    # helper: the program's; Tally and os: stdlib objects under another name; np: not the stdlib; set: a builtin
    assert bound == ["Counter", "f", "math", "sqrt"]
    assert namespace["Counter"] is collections.Counter and namespace["math"] is math and namespace["sqrt"] is math.sqrt
    assert namespace["f"].__name__ == "f"


def test_an_mbpp_entry_point_is_decided_from_the_asserts(channel_pair):
    candidate, _ = channel_pair
    asserts = ["assert Counter(helper(1)) == Counter('a')", "assert Counter(helper(2)) == Counter('b')"]
    test = {"code": "", "setup": "", "names": ranked_names(asserts)}
    namespace = judge.namespace_for(test, PROGRAM, candidate)
    assert namespace["Counter"] is collections.Counter and namespace["helper"].__name__ == "helper"
    own_counter = judge.ProgramNames([["Counter", "fn", ["__main__", "Counter"]], ["helper", "fn", ["__main__", "helper"]]])
    namespace = judge.namespace_for(test, own_counter, candidate)
    assert "helper" not in namespace  # the program's own Counter ranks first, so it is the one name the program supplies
    assert namespace["Counter"] is not collections.Counter and namespace["Counter"].__module__ == judge.__name__  # a proxy
    with_setup = {**test, "setup": "from collections import Counter"}
    assert judge.namespace_for(with_setup, own_counter, candidate)["Counter"] is collections.Counter


def test_humaneval_helpers_come_from_the_prompt_never_from_the_program(channel_pair):
    candidate, _ = channel_pair
    program = judge.ProgramNames([["encode", "fn", ["__main__", "encode"]], ["decode", "fn", ["__main__", "decode"]]])
    check = "def check(candidate):\n    assert candidate(encode('ab')) == 'ab'\n"
    test = {"code": check, "setup": "", "entry_point": "decode", "names": referenced_names(check)}
    namespace = judge.namespace_for(test, program, candidate)
    assert "encode" not in namespace and namespace["decode"].__name__ == "decode"
    prompt = 'def encode(s):\n    return s[::-1]\ndef decode(s):\n    """stub"""\n'
    namespace = judge.namespace_for({**test, "setup": prompt}, program, candidate)
    assert namespace["encode"]("ab") == "ba"  # the prompt's helper; the stub is replaced by the proxy
    missing = judge.namespace_for({**test, "setup": prompt}, judge.ProgramNames([]), candidate)
    with pytest.raises(ProtocolError):
        missing["decode"]("x")  # no entry point in the program: any use fails the test, not the prompt's stub
    assert candidate.poisoned


def test_a_plain_assert_list_names_its_function():
    assert ranked_names(["assert set(f((1, 2))) == set((1,))", "assert f(()) == ()"]) == ["f", "set"]
    assert ranked_names(["for got, want in zip(map(root, [4]), [2]):\n    assert got == want"]) == ["zip", "map", "root"]
    assert referenced_names("import math\ndef g(x):\n    return h(x)\ntry:\n    g(1)\nexcept E as e:\n    e\n") == ["h", "E"]
    assert referenced_names("assert (") == []


def _answer_with(channel: codec.Channel, line: bytes) -> threading.Thread:
    """Play the candidate for one call: read the request, send ``line``."""

    def answer():
        channel.read()
        channel.write(line + b"\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


def test_the_programs_exceptions_are_raised_as_builtins(channel_pair):
    candidate, other_end = channel_pair
    thread = _answer_with(other_end, b'["raise","ValueError","negative"]')
    with pytest.raises(ValueError, match="negative"):
        candidate.call("f", (-1,), {})
    thread.join(5)
    assert not candidate.poisoned and not candidate.channel.broken


@pytest.mark.parametrize("answer", [b'["ok",["l",[["x"]]]]', b'["unencodable","function"]', b"not json", b'["raise",1,2]'])
def test_an_invalid_answer_fails_the_test_whatever_it_catches(channel_pair, answer):
    candidate, other_end = channel_pair
    thread = _answer_with(other_end, answer)
    with pytest.raises(ProtocolError):
        candidate.call("f", (1,), {})
    thread.join(5)
    assert candidate.poisoned and candidate.channel.broken


def test_an_error_while_decoding_is_never_the_call_raising(channel_pair):
    """Decoding a nested answer at the edge of the recursion limit: RecursionError, which `except Exception` would catch."""
    candidate, other_end = channel_pair
    thread = _answer_with(other_end, b'["ok",' + b'["l",[' * 60 + b"1" + b"]]" * 60 + b"]")
    caught = []

    def deep(depth: int) -> None:
        if depth > 0:
            return deep(depth - 1)
        try:
            candidate.call("f", (), {})
        except Exception as error:  # what test code may catch
            caught.append(type(error).__name__)
        except ProtocolError:
            caught.append("ProtocolError")

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 200)
    try:
        deep(45)  # leaves room for parsing the line (the C parser recurses once a level), not for decoding it
    finally:
        sys.setrecursionlimit(limit)
        thread.join(5)
    assert caught == ["ProtocolError"] and candidate.poisoned


def test_an_unsendable_argument_fails_the_test(channel_pair):
    candidate, _ = channel_pair
    with pytest.raises(ProtocolError):
        candidate.call("f", (object(),), {})
    assert candidate.poisoned


def test_lines_are_capped():
    read_end, write_end = os.pipe()
    channel = codec.Channel(read_end, write_end)
    flood = threading.Thread(target=lambda: channel.write(b"x" * (codec.MAX_LINE_BYTES + (1 << 17))), daemon=True)
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
    """The joined script runs under the sandbox's interpreter, which need not have cohort (or anything else) installed."""
    source = harness_source()
    compile(source, "harness.py", "exec")
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names), imported
    assert "def decode(" in source and "def judge_main(" in source


def test_messages_are_ascii_json_lines():
    line = dump_line(["ok", encode("é\ud800")])
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert json.loads(line) == ["ok", "é\ud800"]

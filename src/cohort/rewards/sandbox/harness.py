"""The harness that runs inside the two sandboxes of an assertion test: the candidate and the judge.

Why two processes: a verdict decided inside the process that runs the program can be forged by
that program (it can read its own files, patch builtins, exit early with status 0, return objects
whose ``__eq__`` says True, or use ctypes to write anywhere). So the program runs alone in a
*candidate* sandbox and only ever answers calls; the tests run in a separate *judge* sandbox, where
the program's top-level names are proxies that send plain-data arguments to the candidate and
decode its answers into genuine builtin objects (None, bool, int, float, complex, str, bytes,
bytearray, list, tuple, dict, set, frozenset, range; an iterator becomes an iterator over a capped
list; an exception the call raised is re-raised as the builtin exception of that name). The judge's
``==``, ``math.isclose``, ``set()`` therefore only ever see data it built itself, and the verdict
goes to the host over a file descriptor only the judge holds.

This file is run as a script by the sandbox's interpreter (copied into the sandbox as source, or
compiled by the host when the sandbox runs the host's own interpreter), so it uses the standard
library only and must not import cohort::

    harness.py candidate PROGRAM REQUEST_FD RESPONSE_FD
    harness.py judge TESTS_FD VERDICT_FD REQUEST_FD RESPONSE_FD PER_TEST_S

Wire format: one JSON line per message. Candidate -> judge: ``["ready", [[name, kind, ...], ...]]``
once the program's top level has run (kind "fn", "module" or "value"), or ``["failed", why]``; then
one ``["ok", value]``, ``["raise", exception_name, message]`` or ``["unencodable", type_name]``
per request. Judge -> candidate: ``[name, [args...], [[key, value], ...]]``. Judge -> host: ``"K
pass"`` / ``"K fail"`` per test, then ``"done"``, or ``"stop"`` after a test during which the
candidate died, hung or broke the protocol (the host re-runs the remaining tests with a fresh pair).
"""

from __future__ import annotations

import builtins
import importlib
import json
import keyword
import os
import signal
import sys
import types
from collections.abc import Iterator

MAX_LINE_BYTES = 4 << 20  # one message; a longer one breaks the protocol
MAX_DEPTH = 100  # nesting of containers in one value
MAX_ITEMS = 100_000  # items taken from an iterator the program returns
MAX_VALUE_BYTES = 64 << 10  # a top-level value the candidate offers by value (bigger ones are left out)
MAX_MESSAGE_CHARS = 1000  # exception messages
_SMALL_INT = 1 << 53  # ints at least this large travel as hex (no 4300-digit str limit)
_UNIMPORTABLE = frozenset({"antigravity", "this"})  # stdlib modules with import-time side effects
_NOT_RAISED_AS_IS = frozenset({"StopIteration", "StopAsyncIteration"})  # would end the judge's loops


class ProtocolError(BaseException):
    """The candidate's answer is not a valid message. A BaseException so that ``except Exception`` in
    test code cannot swallow it; the test it happened in fails whatever the test code does."""


class TimeLimitExpired(BaseException):
    """The per-test time limit expired (raised from SIGALRM; not catchable as an Exception)."""


# ---------------------------------------------------------------- values <-> plain JSON


def encode(value: object, depth: int = 0) -> object:
    """A JSON-able tree for ``value`` (lenient: subclasses of builtins travel as their base type).

    ValueError if the value (or something inside it) has no encoding or nests too deeply.
    """
    if depth > MAX_DEPTH:
        raise ValueError("value nests too deeply")
    if value is None or value is True or value is False:
        return value
    if isinstance(value, int):
        number = int(value)
        return number if -_SMALL_INT < number < _SMALL_INT else ["i", hex(number)]
    if isinstance(value, float):
        return ["f", float(value).hex()]
    if isinstance(value, complex):
        return ["c", value.real.hex(), value.imag.hex()]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return ["ba" if isinstance(value, bytearray) else "b", bytes(value).hex()]
    return _encode_container(value, depth + 1)


def _encode_container(value: object, depth: int) -> object:
    """The containers (and iterators) of :func:`encode`."""
    for kind, tag in ((list, "l"), (tuple, "t"), (frozenset, "fs"), (set, "s")):
        if isinstance(value, kind):
            return [tag, [encode(item, depth) for item in value]]
    if isinstance(value, dict):
        return ["d", [[encode(k, depth), encode(v, depth)] for k, v in value.items()]]
    if isinstance(value, range):
        return ["r", encode(value.start), encode(value.stop), encode(value.step)]
    if isinstance(value, Iterator):
        items = []
        for item in value:
            if len(items) == MAX_ITEMS:
                break
            items.append(encode(item, depth))
        return ["it", items]
    if hasattr(value, "__index__"):  # e.g. numpy integers
        return encode(value.__index__(), depth)
    tolist = getattr(value, "tolist", None)  # e.g. numpy arrays and scalars
    if callable(tolist):
        return encode(tolist(), depth)
    raise ValueError(f"cannot encode a {type(value).__name__}")


def decode(node: object, depth: int = 0) -> object:
    """The builtin object for an encoded tree; strict: anything unexpected raises ProtocolError."""
    if depth > MAX_DEPTH:
        raise ProtocolError("value nests too deeply")
    if node is None or type(node) in (bool, int, str):
        return node
    if type(node) is not list or not node or type(node[0]) is not str:
        raise ProtocolError(f"not an encoded value: {type(node).__name__}")
    tag, rest = node[0], node[1:]
    if tag in _SCALARS:
        if len(rest) != _SCALARS[tag][0] or any(type(part) is not str or len(part) > MAX_LINE_BYTES for part in rest):
            raise ProtocolError(f"malformed {tag!r} value")
        try:
            return _SCALARS[tag][1](*rest)
        except (ValueError, OverflowError) as err:
            raise ProtocolError(f"malformed {tag!r} value: {err}") from None
    if tag == "r":
        if len(rest) != 3:
            raise ProtocolError("malformed range")
        start, stop, step = (decode(part, depth + 1) for part in rest)
        if not all(type(part) is int for part in (start, stop, step)) or step == 0:
            raise ProtocolError("malformed range")
        return range(start, stop, step)
    if tag not in _CONTAINERS or len(rest) != 1 or type(rest[0]) is not list:
        raise ProtocolError(f"unknown or malformed tag {tag!r}")
    return _decode_container(tag, rest[0], depth + 1)


def _decode_container(tag: str, items: list, depth: int) -> object:
    """The containers of :func:`decode`; unhashable keys or members raise ProtocolError."""
    try:
        if tag == "d":
            if not all(type(pair) is list and len(pair) == 2 for pair in items):
                raise ProtocolError("malformed dict")
            return {decode(k, depth): decode(v, depth) for k, v in items}
        values = [decode(item, depth) for item in items]
        return _CONTAINERS[tag](values)
    except TypeError as err:  # unhashable key or member
        raise ProtocolError(f"malformed {tag!r} container: {err}") from None


_SCALARS = {
    "i": (1, lambda text: int(text, 16)),
    "f": (1, float.fromhex),
    "c": (2, lambda re, im: complex(float.fromhex(re), float.fromhex(im))),
    "b": (1, bytes.fromhex),
    "ba": (1, lambda text: bytearray.fromhex(text)),
}
_CONTAINERS = {"l": list, "t": tuple, "s": set, "fs": frozenset, "d": dict, "it": iter}


def _reject_number(text: str) -> None:
    raise ProtocolError(f"bare JSON number {text[:40]!r} (floats travel as hex)")


def parse_line(line: bytes) -> object:
    """One message as JSON; strict (no bare floats, NaN or Infinity), any failure a ProtocolError."""
    try:
        return json.loads(line, parse_float=_reject_number, parse_constant=_reject_number)
    except (ValueError, RecursionError, MemoryError) as err:
        raise ProtocolError(f"unreadable message: {type(err).__name__}") from None


def dump_line(message: object) -> bytes:
    """One message as a JSON line (ASCII, so lone surrogates in str survive)."""
    return json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


# ---------------------------------------------------------------- lines over pipes


class Channel:
    """Line-based messages over a pair of pipes, with a size cap and a record of breakage."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self.buffer = bytearray()
        self.broken = False  # out of sync or peer gone: nothing more can be asked on it

    def read(self) -> bytes | None:
        """The next line (without its newline), or None at end of file."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) > MAX_LINE_BYTES:
                raise ProtocolError("message too long")
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view) :]


# ---------------------------------------------------------------- the candidate


def _exception_name(error: BaseException) -> str:
    """The name of the nearest builtin exception class in the error's MRO."""
    for cls in type(error).__mro__:
        if getattr(builtins, cls.__name__, None) is cls:
            return cls.__name__
    return "Exception"


def _safe_message(error: BaseException) -> str:
    try:
        return str(error)[:MAX_MESSAGE_CHARS]
    except BaseException:  # a hostile __str__
        return ""


def run_program(path: str) -> types.ModuleType:
    """Run the program at ``path`` as ``__main__`` in a fresh module (the harness keeps its own globals)."""
    with open(path, "rb") as handle:
        code = compile(handle.read(), path, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv[:] = [path]
    exec(code, module.__dict__)
    return module


def manifest(namespace: dict) -> list:
    """The program's top-level names for the judge: callables, stdlib-style modules, small values."""
    entries: list = []
    for name, value in list(namespace.items()):
        if not isinstance(name, str) or name.startswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            if value.__name__ == name:
                entries.append([name, "module"])
        elif callable(value):
            entries.append([name, "fn"])
        else:
            try:
                encoded = encode(value)
                if len(dump_line(encoded)) <= MAX_VALUE_BYTES:
                    entries.append([name, "value", encoded])
            except (ValueError, RecursionError, TypeError, OverflowError):
                continue
    return entries


def _answer(namespace: dict, line: bytes) -> list:
    """The reply to one request line: call the named top-level callable with the decoded arguments."""
    try:
        name, args, kwargs = parse_line(line)
        positional = [decode(arg) for arg in args]
        keywords = {str(key): decode(value) for key, value in kwargs}
        result = namespace[name](*positional, **keywords)
    except BaseException as error:  # the program's exceptions, SystemExit included, are answers
        return ["raise", _exception_name(error), _safe_message(error)]
    try:
        return ["ok", encode(result)]
    except BaseException:
        return ["unencodable", type(result).__name__]


def candidate_main(program: str, request_fd: int, response_fd: int) -> int:
    """Run the program's top level, announce its names, then answer calls until the judge hangs up."""
    channel = Channel(request_fd, response_fd)
    try:
        module = run_program(os.path.abspath(program))
        ready = ["ready", manifest(module.__dict__)]
    except BaseException as error:
        ready = ["failed", f"{_exception_name(error)}: {_safe_message(error)}"]
    channel.write(dump_line(ready))
    if ready[0] != "ready":
        return 1
    namespace = module.__dict__
    while (line := channel.read()) is not None:
        channel.write(dump_line(_answer(namespace, line)))
    return 0


# ---------------------------------------------------------------- the judge


class Candidate:
    """The judge's side of the channel: calls go out as plain data, answers come back as builtins."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.poisoned = False  # an invalid answer arrived during the current test: it fails

    def _receive(self) -> object:
        try:
            line = self.channel.read()
        except ProtocolError:
            self.channel.broken = True
            raise
        if line is None:
            self.channel.broken = True
            raise ProtocolError("the candidate hung up")
        return parse_line(line)

    def ready(self) -> list:
        """The program's manifest, once its top level has run; ProtocolError if it did not."""
        message = self._receive()
        if type(message) is not list or len(message) != 2 or message[0] != "ready" or type(message[1]) is not list:
            raise ProtocolError(f"the program did not start: {str(message)[:200]}")
        return message[1]

    def call(self, name: str, args: tuple, kwargs: dict) -> object:
        if self.channel.broken:
            raise ProtocolError("the candidate is gone")
        try:
            request = [name, [encode(arg) for arg in args], [[key, encode(value)] for key, value in kwargs.items()]]
        except (ValueError, RecursionError) as err:
            self.poisoned = True
            raise ProtocolError(f"cannot send the arguments: {err}") from None
        try:
            self.channel.write(dump_line(request))
        except OSError:
            self.channel.broken = True
            raise ProtocolError("the candidate hung up") from None
        try:
            return self._decode_reply(self._receive())
        except ProtocolError:
            self.poisoned = True
            raise

    def _decode_reply(self, message: object) -> object:
        if type(message) is list and len(message) == 2 and message[0] == "ok":
            return decode(message[1])
        if type(message) is list and len(message) == 3 and message[0] == "raise" and all(type(m) is str for m in message[1:]):
            raise _builtin_exception(message[1], message[2][:MAX_MESSAGE_CHARS])
        raise ProtocolError(f"invalid answer: {str(message)[:200]}")


def _builtin_exception(name: str, message: str) -> BaseException:
    """The builtin Exception subclass called ``name`` (RuntimeError for anything else)."""
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and name not in _NOT_RAISED_AS_IS:
        try:
            return cls(message)
        except Exception:  # e.g. UnicodeDecodeError wants five arguments
            pass
    return RuntimeError(f"{name}: {message}")


def _proxy(candidate: Candidate, name: str):
    def call(*args, **kwargs):
        return candidate.call(name, args, kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def bindings(entries: object, candidate: Candidate) -> dict:
    """The test namespace's view of the program: proxies, the judge's own stdlib modules, values.

    Builtin names stay the judge's (a program defining ``set`` or ``sorted`` cannot change what the
    test's ``set(...) == set(...)`` means); a module counts only under its own stdlib name.
    """
    if type(entries) is not list:
        raise ProtocolError("malformed manifest")
    names: dict = {}
    for entry in entries:
        if type(entry) is not list or len(entry) < 2 or type(entry[0]) is not str or not entry[0].isidentifier():
            raise ProtocolError("malformed manifest entry")
        name, kind = entry[0], entry[1]
        if keyword.iskeyword(name) or hasattr(builtins, name) or name.startswith("__"):
            continue
        if kind == "fn" and len(entry) == 2:
            names[name] = _proxy(candidate, name)
        elif kind == "value" and len(entry) == 3:
            names[name] = decode(entry[2])
        elif kind == "module" and len(entry) == 2:
            if name in sys.stdlib_module_names and name not in _UNIMPORTABLE:
                try:
                    names[name] = importlib.import_module(name)
                except Exception:
                    continue
        else:
            raise ProtocolError("malformed manifest entry")
    return names


class _Clock:
    """The per-test time limit: SIGALRM raises TimeLimitExpired, and keeps raising until cancelled."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = self.expired = False
        signal.signal(signal.SIGALRM, self._expire)

    def _expire(self, signum, frame) -> None:
        if self.armed:  # a signal delivered just after cancelling is ignored
            self.expired = True
            raise TimeLimitExpired()

    def __enter__(self) -> "_Clock":
        self.expired, self.armed = False, True
        signal.setitimer(signal.ITIMER_REAL, self.seconds, 0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)


def run_test(test: dict, names: dict, candidate: Candidate, clock: _Clock) -> bool:
    """Whether one test runs to its end with nothing raised, in time, and with only valid answers."""
    candidate.poisoned = False
    namespace = {"__builtins__": builtins, "__name__": "__cohort_test__", **names}
    entry_point = test.get("entry_point")
    try:
        with clock:
            exec(compile(test.get("setup") or "", "<test setup>", "exec", dont_inherit=True), namespace)
            if entry_point:  # HumanEval: check(candidate), with the program's function, never the prompt's stub
                namespace[entry_point] = _proxy(candidate, entry_point)
            exec(compile(test["code"], "<test>", "exec", dont_inherit=True), namespace)
            if entry_point:
                namespace["check"](namespace[entry_point])
    except TimeLimitExpired:
        candidate.channel.broken = True  # the candidate may still be busy with a call: start afresh
        return False
    except BaseException:
        return False
    return not (candidate.poisoned or candidate.channel.broken or clock.expired)


def _read_tests(fd: int) -> list:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks))["tests"]


def judge_main(tests_fd: int, verdict_fd: int, request_fd: int, response_fd: int, per_test_s: float) -> int:
    """Run each test against the candidate and report pass/fail per test to the host."""
    tests = _read_tests(tests_fd)
    candidate = Candidate(Channel(response_fd, request_fd))
    clock = _Clock(per_test_s)

    def report(line: str) -> None:
        os.write(verdict_fd, line.encode() + b"\n")

    names = None
    if __debug__:  # asserts must be live; run with -O, every test fails
        try:
            with clock:
                names = bindings(candidate.ready(), candidate)
        except BaseException:
            names = None
    for index, test in enumerate(tests):
        passed = names is not None and run_test(test, names, candidate, clock)
        report(f"{index} {'pass' if passed else 'fail'}")
        if names is not None and candidate.channel.broken and index + 1 < len(tests):
            report("stop")
            return 0
    report("done")
    return 0


def main(argv: list[str]) -> int:
    role, *args = argv
    if role == "candidate":
        return candidate_main(args[0], int(args[1]), int(args[2]))
    if role == "judge":
        return judge_main(int(args[0]), int(args[1]), int(args[2]), int(args[3]), float(args[4]))
    raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The wire format between the two sandboxes of an assertion test: plain data as JSON lines.

Values travel as JSON trees that name their builtin type (None, bool, int, float, complex, str,
bytes, bytearray, list, tuple, dict, set, frozenset, range; an iterator becomes an iterator over a
capped list). :func:`encode` is lenient (a subclass of a builtin travels as its base type, numpy
values through ``tolist``); :func:`decode` is strict and only ever builds genuine builtin objects,
so the judge's ``==`` never meets an object the program made. Floats travel as hex (exact, NaN and
infinities included), large ints as hex (no digit limit).

This file runs inside the sandboxes too: the host joins it with ``harness.py`` into the one script
both sandboxes run (see :func:`cohort.rewards.sandbox.verdict.harness_source`), so it uses the
standard library only and must not import cohort.
"""

import os
from _collections_abc import Iterator  # what collections.abc exports, without importing collections

try:  # json's own C scanner and string encoder, without importing json (and re): the candidate starts faster
    from _json import encode_basestring_ascii, make_scanner
except ImportError:  # an interpreter built without _json
    from json.encoder import py_encode_basestring_ascii as encode_basestring_ascii
    from json.scanner import py_make_scanner as make_scanner

MAX_LINE_BYTES = 4 << 20  # one message; a longer one breaks the protocol
MAX_DEPTH = 100  # nesting of containers in one value
MAX_ITEMS = 100_000  # items taken from an iterator the program returns
_SMALL_INT = 1 << 53  # ints at least this large travel as hex (no 4300-digit str limit)


class ProtocolError(BaseException):
    """The candidate's answer is not a valid message. A BaseException so that ``except Exception`` in
    test code cannot swallow it; the test it happened in fails whatever the test code does."""


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


class _Strict:
    """The settings json.loads(line, parse_float=..., parse_constant=...) would give the scanner."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_int = int
    parse_float = parse_constant = staticmethod(_reject_number)
    memo: dict = {}


_scan = make_scanner(_Strict())
_WHITESPACE = " \t\n\r"


def parse_line(line: bytes) -> object:
    """One message as JSON; strict (no bare floats, NaN or Infinity), any failure a ProtocolError.

    The same scan as ``json.loads`` (its C scanner), on UTF-8 text with JSON whitespace around it.
    """
    try:
        text = line.decode("utf-8").strip(_WHITESPACE)
        value, end = _scan(text, 0)
    except (ValueError, RecursionError, MemoryError, StopIteration) as err:
        raise ProtocolError(f"unreadable message: {type(err).__name__}") from None
    if end != len(text):
        raise ProtocolError("unreadable message: extra data")
    return value


def dump_line(message: object) -> bytes:
    """One message as a compact JSON line (ASCII, so lone surrogates in str survive), as ``json.dumps``
    with ``ensure_ascii=True`` writes it; a message holds only None, bools, ints, str and lists."""
    parts: list[str] = []
    _dump(message, parts, 0)
    parts.append("\n")
    return "".join(parts).encode("ascii")


def _dump(value: object, parts: list[str], depth: int) -> None:
    if depth > MAX_DEPTH + 10:  # encode() caps values at MAX_DEPTH; a message adds a few levels
        raise ValueError("message nests too deeply")
    if value is None:
        parts.append("null")
    elif value is True or value is False:
        parts.append("true" if value else "false")
    elif type(value) is int:
        parts.append(int.__repr__(value))
    elif type(value) is str:
        parts.append(encode_basestring_ascii(value))
    elif type(value) is list:
        parts.append("[")
        for i, item in enumerate(value):
            if i:
                parts.append(",")
            _dump(item, parts, depth + 1)
        parts.append("]")
    else:
        raise ValueError(f"a message cannot hold a {type(value).__name__}")


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

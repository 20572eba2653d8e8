"""The harness that runs inside the two sandboxes of an assertion test: the candidate and the judge.

Why two processes: a verdict decided inside the process that runs the program can be forged by
that program (it can read its own files, patch builtins, exit early with status 0, return objects
whose ``__eq__`` says True, or use ctypes to write anywhere). So the program runs alone in a
*candidate* sandbox and only ever answers calls; the tests run in a separate *judge* sandbox, where
the program's entry point is a proxy that sends plain-data arguments to the candidate and decodes
its answers into genuine builtin objects (:mod:`cohort.rewards.sandbox.codec`; an exception the
call raised is re-raised as the builtin exception of that name). The judge's ``==``,
``math.isclose``, ``set()`` therefore only ever see data it built itself, and the verdict goes to
the host over a file descriptor only the judge holds.

The test owns every name it uses except one. The program supplies only the *entry point* (named by
the problem, or the first name the asserts use that nothing else supplies: see :func:`entry_point`);
every other name comes from the test's own code, the problem's setup (HumanEval's prompt, MBPP's
imports and setup code), the judge's builtins, or the standard library: a stdlib module or
function the program imported under its own name (``import math``, ``from collections import
Counter``) is imported again by the judge, which uses its own copy. So a helper or constructor the
test calls can never be the program's, and cannot remember what the test asked.

Any failure between sending a call and decoding its answer (an unencodable argument, a broken or
malformed answer, MemoryError or RecursionError while decoding, the candidate gone) fails the test
it happened in, whatever the test code catches: it never counts as "the call raised".

The host joins :mod:`~cohort.rewards.sandbox.codec` and this file into one script that both
sandboxes run (copied as source, or compiled by the host when the sandbox runs the host's own
interpreter), so it uses the standard library only and must not import cohort except the codec::

    harness.py candidate PROGRAM REQUEST_FD RESPONSE_FD
    harness.py judge TESTS_FD VERDICT_FD REQUEST_FD RESPONSE_FD PER_TEST_S
    harness.py server CONTROL_FD FILTER_FD

A *server* (see :mod:`cohort.rewards.sandbox.judges`) forks one judge per program from its pristine
state, with the four descriptors the host sends it over CONTROL_FD; each forked judge installs the
seccomp filter read from FILTER_FD (the layer's whole filter) before it runs.

Wire format: one JSON line per message. Candidate -> judge: ``["ready", [[name, kind, ...], ...]]``
once the program's top level has run (kind "fn" with the callable's claimed [module, qualname],
or "module"), or ``["failed", why]``; then one ``["ok", value]``, ``["raise", exception_name,
message]`` or ``["unencodable", type_name]`` per request. Judge -> candidate: ``[name, [args...],
[[key, value], ...]]``. Judge -> host: ``"K pass"`` / ``"K fail"`` per test, then ``"done"``, or
``"stop"`` after a test during which the candidate died, hung or broke the protocol (the host
re-runs the remaining tests with a fresh pair).
"""

import builtins
import os
import sys
import types

from cohort.rewards.sandbox.codec import (  # joined in the sandbox
    Channel,
    ProtocolError,
    decode,
    dump_line,
    encode,
    parse_line,
)

MAX_MESSAGE_CHARS = 1000  # exception messages
_UNIMPORTABLE = frozenset({"antigravity", "this", "idlelib", "turtledemo", "tkinter"})  # import-time side effects
# What a judge server imports before it forks: what every judge uses, and what tests and prompts often import.
_PRELOADED = ("json", "signal", "resource", "typing", "math", "re", "collections", "itertools", "functools", "string")
_NOT_RAISED_AS_IS = frozenset({"StopIteration", "StopAsyncIteration"})  # would end the judge's loops


class TimeLimitExpired(BaseException):
    """The per-test time limit expired (raised from SIGALRM; not catchable as an Exception)."""


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
    """The program's top-level callables (with the module and name they claim) and modules, for the judge.

    The judge trusts none of it: a claimed stdlib origin only tells it which of its own stdlib
    objects to bind under that name.
    """
    entries: list = []
    for name, value in list(namespace.items()):
        if not isinstance(name, str) or name.startswith("__"):
            continue
        try:
            if isinstance(value, types.ModuleType):
                if value.__name__ == name:
                    entries.append([name, "module"])
            elif callable(value):
                origin = [getattr(value, "__module__", None), getattr(value, "__qualname__", None)]
                entries.append([name, "fn", origin if all(type(part) is str for part in origin) else None])
        except Exception:  # a hostile __getattr__ or __name__: leave it out
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
        self.poisoned = False  # a call failed on the way during the current test: it fails

    def _receive(self) -> object:
        line = self.channel.read()
        if line is None:
            raise ProtocolError("the candidate hung up")
        return parse_line(line)

    def ready(self) -> list:
        """The program's manifest, once its top level has run; ProtocolError if it did not."""
        message = self._receive()
        if type(message) is not list or len(message) != 2 or message[0] != "ready" or type(message[1]) is not list:
            raise ProtocolError(f"the program did not start: {str(message)[:200]}")
        return message[1]

    def call(self, name: str, args: tuple, kwargs: dict) -> object:
        """The call's answer, or the builtin exception it raised.

        Anything else that goes wrong (sending, receiving, decoding; MemoryError and RecursionError
        included) poisons the test and breaks the channel, so the test fails whatever it catches.
        """
        try:
            if self.channel.broken:
                raise ProtocolError("the candidate is gone")
            raised, value = self._exchange(name, args, kwargs)
        except TimeLimitExpired:
            self.poisoned = self.channel.broken = True
            raise
        except BaseException as error:
            self.poisoned = self.channel.broken = True
            raise ProtocolError(f"the call failed on the way: {type(error).__name__}") from None
        if raised:
            raise value
        return value

    def _exchange(self, name: str, args: tuple, kwargs: dict) -> tuple[bool, object]:
        """(raised, value): send one call, decode its answer into a value or a builtin exception."""
        request = [name, [encode(arg) for arg in args], [[key, encode(value)] for key, value in kwargs.items()]]
        self.channel.write(dump_line(request))
        message = self._receive()
        if type(message) is list and len(message) == 2 and message[0] == "ok":
            return False, decode(message[1])
        if type(message) is list and len(message) == 3 and message[0] == "raise" and all(type(m) is str for m in message[1:]):
            return True, _builtin_exception(message[1], message[2][:MAX_MESSAGE_CHARS])
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


def _missing(candidate: Candidate, name: str):
    """What the entry point is bound to when the program has none: any use fails the test."""

    def call(*args, **kwargs):
        candidate.poisoned = True
        raise ProtocolError(f"the program defines no callable {name!r}")

    call.__name__ = call.__qualname__ = name
    return call


class ProgramNames:
    """What the judge takes from the program's manifest: which names are callables, which claim the stdlib."""

    def __init__(self, entries: object) -> None:
        if type(entries) is not list:
            raise ProtocolError("malformed manifest")
        self.callables: set[str] = set()
        self.claims: dict[str, tuple[str, str | None]] = {}  # name -> (stdlib module, attribute or None: the module)
        self.resolved: dict[str, object] = {}
        for entry in entries:
            if type(entry) is not list or len(entry) not in (2, 3) or type(entry[0]) is not str or not entry[0].isidentifier():
                raise ProtocolError("malformed manifest entry")
            name, kind, origin = entry[0], entry[1], entry[2] if len(entry) == 3 else None
            if kind == "module" and len(entry) == 2:
                self.claims[name] = (name, None)
            elif kind == "fn" and len(entry) == 3:
                self.callables.add(name)
                if type(origin) is list and len(origin) == 2 and all(type(part) is str for part in origin) and origin[1] == name:
                    self.claims[name] = (origin[0], name)
            else:
                raise ProtocolError("malformed manifest entry")

    def stdlib(self, name: str) -> object | None:
        """The judge's own stdlib object the program bound to ``name`` (under its own name), or None."""
        if name not in self.resolved:
            self.resolved[name] = _import_stdlib(*self.claims[name]) if name in self.claims else None
        return self.resolved[name]


def _import_stdlib(module: str, attribute: str | None) -> object | None:
    """``module`` (or its ``attribute``) imported in the judge, if it is the standard library's; else None."""
    top = module.partition(".")[0]
    if top not in sys.stdlib_module_names or top in _UNIMPORTABLE:
        return None
    import importlib

    try:
        imported = importlib.import_module(module)
    except Exception:
        return None
    if attribute is None:
        return imported if imported.__name__ == module else None
    value = getattr(imported, attribute, None)
    return value if callable(value) else None


def entry_point(test: dict, defined: dict, program: ProgramNames) -> str | None:
    """The one name of the test that the program supplies.

    HumanEval names it. Otherwise it is the first of the names the asserts use (ranked by the host:
    used in most asserts, then first used) that the test, the problem's setup, the builtins and
    the program's stdlib imports leave unbound.
    """
    if test.get("entry_point"):
        return test["entry_point"]
    for name in test.get("names") or ():
        if name not in defined and not hasattr(builtins, name) and program.stdlib(name) is None:
            return name
    return None


def namespace_for(test: dict, program: ProgramNames, candidate: Candidate) -> dict:
    """The namespace one test runs in: its setup, stdlib names it uses, and the program's entry point only."""
    namespace = {"__builtins__": builtins, "__name__": "__cohort_test__"}
    exec(compile(test.get("setup") or "", "<test setup>", "exec", dont_inherit=True), namespace)
    entry = entry_point(test, namespace, program)
    for name in test.get("names") or ():
        if name != entry and name not in namespace and not hasattr(builtins, name):
            value = program.stdlib(name)
            if value is not None:
                namespace[name] = value
    if entry is not None:  # HumanEval's prompt stub is replaced too
        namespace[entry] = _proxy(candidate, entry) if entry in program.callables else _missing(candidate, entry)
    return namespace


class _Clock:
    """The per-test time limit: SIGALRM raises TimeLimitExpired, and keeps raising until cancelled.

    A signal cannot interrupt a long call into C (e.g. a set of colliding hashes); for that the
    host kills the judge when a test runs past this limit and a margin.
    """

    def __init__(self, seconds: float) -> None:
        import signal  # the judge's only: the candidate starts without it

        self.signal = signal
        self.seconds = seconds
        self.armed = self.expired = False
        signal.signal(signal.SIGALRM, self._expire)

    def _expire(self, signum, frame) -> None:
        if self.armed:  # a signal delivered just after cancelling is ignored
            self.expired = True
            raise TimeLimitExpired()

    def __enter__(self):
        self.expired, self.armed = False, True
        self.signal.setitimer(self.signal.ITIMER_REAL, self.seconds, 0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.armed = False
        self.signal.setitimer(self.signal.ITIMER_REAL, 0)


def run_test(test: dict, program: ProgramNames, candidate: Candidate, clock: _Clock) -> bool:
    """Whether one test runs to its end with nothing raised, in time, and with only valid answers."""
    candidate.poisoned = False
    try:
        with clock:
            namespace = namespace_for(test, program, candidate)
            exec(compile(test["code"], "<test>", "exec", dont_inherit=True), namespace)
            if test.get("entry_point"):  # HumanEval: check(candidate)
                namespace["check"](namespace[test["entry_point"]])
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
    import json  # the judge's only (a forked judge finds it loaded by its server)

    return json.loads(b"".join(chunks))["tests"]


def judge_main(tests_fd: int, verdict_fd: int, request_fd: int, response_fd: int, per_test_s: float) -> int:
    """Run each test against the candidate and report pass/fail per test to the host."""
    tests = _read_tests(tests_fd)
    candidate = Candidate(Channel(response_fd, request_fd))
    clock = _Clock(per_test_s)

    def report(line: str) -> None:
        os.write(verdict_fd, line.encode() + b"\n")

    program = None
    if __debug__:  # asserts must be live; run with -O, every test fails
        try:
            with clock:
                program = ProgramNames(candidate.ready())
        except BaseException:
            program = None
    for index, test in enumerate(tests):
        passed = program is not None and run_test(test, program, candidate, clock)
        report(f"{index} {'pass' if passed else 'fail'}")
        if program is not None and candidate.channel.broken and index + 1 < len(tests):
            report("stop")
            return 0
    report("done")
    return 0


# ---------------------------------------------------------------- the judge server


def _seccomp_installer(program: bytes):
    """A function that stacks the BPF ``program`` on the calling process (ctypes loaded now, once)."""
    import ctypes

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    code = ctypes.create_string_buffer(program, len(program))
    prog = Prog(len(program) // 8, ctypes.addressof(code))
    libc = ctypes.CDLL(None, use_errno=True)

    def install() -> None:
        # PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER (code is kept alive by this closure)
        if code is None or libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(prog), 0, 0):
            raise OSError(ctypes.get_errno(), "cannot install the seccomp filter")

    return install


def _forked_judge(install, message: bytes, fds: list) -> int:
    """In a judge the server forked: lower the CPU limit to the pair's, stack the layer's filter, judge.

    The message is [per_test_s, cpu_s], or [] for the server's probe (exit status 2 once the filter is on).
    """
    try:
        import json
        import resource

        job = json.loads(message)
        if job:  # [] is the server's probe: the filter alone
            hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
            cpu = int(job[1]) if hard == resource.RLIM_INFINITY else min(int(job[1]), hard - 1)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        install()
        if not job or len(fds) != 4:
            return 2 if not job else 1
        return judge_main(fds[0], fds[1], fds[2], fds[3], float(job[0]))
    except BaseException:
        return 1


def _fork(run, parent_closes=()) -> int:
    """Fork a child that exits with ``run()``; the parent closes ``parent_closes`` and returns the child's status."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = run()
        finally:
            os._exit(status)  # never back into the server's loop
    for fd in parent_closes:
        os.close(fd)  # the judge's ends are its own: when it dies, the host reads EOF at once
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def server_main(control_fd: int, filter_fd: int) -> int:
    """Fork a fresh judge for each pair the host sends, one at a time; "exited" after each.

    The server itself runs no test and reads no answer. Before it says "ready" it checks that a
    forked child can install the filter (else "failed": the host reports a sandbox error).
    """
    import importlib
    import socket

    for name in _PRELOADED:  # loaded once here, for every judge forked from this server
        importlib.import_module(name)

    program = b""
    while chunk := os.read(filter_fd, 1 << 16):
        program += chunk
    os.close(filter_fd)
    control = socket.socket(fileno=control_fd)
    install = _seccomp_installer(program)
    control.send(b"ready" if _fork(lambda: _forked_judge(install, b"[]", [])) == 2 else b"failed")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 256, 4)
        except OSError:
            return 0
        if not message:
            return 0
        _fork(lambda: control.close() or _forked_judge(install, message, fds), fds)
        control.send(b"exited")


def main(argv: list[str]) -> int:
    role, *args = argv
    if role == "candidate":
        return candidate_main(args[0], int(args[1]), int(args[2]))
    if role == "judge":
        return judge_main(int(args[0]), int(args[1]), int(args[2]), int(args[3]), float(args[4]))
    if role == "server":
        return server_main(int(args[0]), int(args[1]))
    raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The sandbox mechanism: limits, isolation and clean-up, for every isolation layer this machine offers,
and the layer policy (adequate bubblewrap by default, never a silent fallback, one warning for a weak
layer named explicitly).

Programs run for real (no mocks). Tests that need a layer this machine lacks are skipped with the
reason (bubblewrap: ``requires_bubblewrap``); hostile programs only ever run under a namespace layer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from system_deps import requires_bubblewrap

from cohort.rewards.sandbox.runner import (
    ExecutionRequest,
    IsolationUnavailable,
    Sandbox,
    SandboxLimits,
    sandbox_isolation,
)

pytestmark = pytest.mark.timeout(120)

SYSTEM_PYTHON = "/usr/bin/python3"
# (isolation, interpreter). Here (root, venv Python under /root) "auto" is bubblewrap with the
# sandbox user mapped to host uid 0 and fork forbidden by seccomp; with the system Python bubblewrap
# runs as host uid 65534; "unshare" is the fallback layer. As a normal user both bubblewrap entries
# give bubblewrap as that user and "unshare" is skipped. The layers other than "auto" are marked slow.
LAYERS = {
    "auto": ("auto", None),
    "bubblewrap-system-python": ("bubblewrap", SYSTEM_PYTHON),
    "unshare": ("unshare", SYSTEM_PYTHON),
}


def _dedent(source: str) -> str:
    return textwrap.dedent(source).strip() + "\n"


@pytest.fixture(scope="module")
def tmp_roots():
    """World-traversable directories for the sandboxes' throwaway dirs (bwrap may run as uid 65534)."""
    roots: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in roots:
            roots[name] = Path(tempfile.mkdtemp(prefix=f"cohort-test-{name}-"))
            os.chmod(roots[name], 0o755)
        return roots[name]

    yield make
    for root in roots.values():
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(
    params=[
        pytest.param("auto", marks=requires_bubblewrap),
        pytest.param("bubblewrap-system-python", marks=[pytest.mark.slow, requires_bubblewrap]),
        pytest.param("unshare", marks=pytest.mark.slow),
    ],
    scope="module",
)
def layer(request, tmp_roots):
    """(name, isolation, python, tmp_root) of a namespace layer; skipped where it is not available."""
    isolation, python = LAYERS[request.param]
    if python is not None and not os.access(python, os.X_OK):
        pytest.skip(f"{python} not installed")
    root = tmp_roots(request.param)
    try:
        sandbox = Sandbox(SandboxLimits(), isolation=isolation, python=python, tmp_root=root)
    except IsolationUnavailable as err:
        pytest.skip(f"isolation {isolation!r} not available here: {err}")
    if sandbox.isolation_kind not in ("bubblewrap", "unshare"):
        pytest.skip(f"no namespace isolation ({sandbox.isolation}); hostile programs not run")
    return request.param, isolation, python, root


@pytest.fixture
def make_sandbox(layer):
    """Build a sandbox of the current layer with given limits; checks no throwaway dir is left after the test."""
    _, isolation, python, root = layer

    def make(workers: int | None = 2, **limits) -> Sandbox:
        return Sandbox(SandboxLimits(**limits), workers=workers, isolation=isolation, python=python, tmp_root=root)

    yield make
    assert list(root.iterdir()) == [], "throwaway directories left behind"


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "field, value",
    [("wall_time_s", 0), ("wall_time_s", float("inf")), ("cpu_time_s", -1), ("memory_mb", 1.5), ("max_processes", True), ("max_output_bytes", "1")],
)
def test_limits_reject_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        SandboxLimits(**{field: value})


def test_sandbox_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        Sandbox(workers=0)
    with pytest.raises(ValueError, match="isolation"):
        Sandbox(isolation="docker")
    with pytest.raises(ValueError, match="tmp_root"):
        Sandbox(tmp_root=tmp_path / "missing")
    with pytest.raises(ValueError, match="python"):
        Sandbox(python=str(tmp_path / "no-such-python"))


@requires_bubblewrap
def test_interpreter_that_cannot_start_is_reported(tmp_path):
    with pytest.raises(IsolationUnavailable, match="not available with interpreter '/bin/false'"):
        Sandbox(python="/bin/false", tmp_root=tmp_path)


@requires_bubblewrap
def test_isolation_is_described_and_auto_is_adequate_bubblewrap(tmp_path):
    description = sandbox_isolation()
    assert description.startswith("bubblewrap") and "rlimits" in description, description
    sandbox = Sandbox(tmp_root=tmp_path)
    assert sandbox.isolation_kind == "bubblewrap" and sandbox.isolation_adequate


# ---------------------------------------------------------------- layer policy


@pytest.mark.parametrize("isolation", ["auto", "bubblewrap"])
@pytest.mark.parametrize("how", ["COHORT_BWRAP names a missing file", "no bwrap on PATH"])
def test_without_bubblewrap_auto_refuses_with_the_install_hint(tmp_path, monkeypatch, isolation, how):
    """No silent fallback: even where unshare/setuid/none would work, "auto" raises, saying how to install."""
    if how == "no bwrap on PATH":
        monkeypatch.delenv("COHORT_BWRAP", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no bwrap (or anything) on PATH
    else:
        monkeypatch.setenv("COHORT_BWRAP", str(tmp_path / "no-such-bwrap"))
    with pytest.raises(IsolationUnavailable) as raised:
        Sandbox(isolation=isolation, tmp_root=tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("bubblewrap is not installed"), message
    assert "`sudo apt-get install bubblewrap` or `make system-deps`" in message
    assert 'isolation="unshare"' in message  # the explicit way out is named too
    with pytest.raises(IsolationUnavailable, match="bubblewrap is not installed"):
        sandbox_isolation()


def test_a_bwrap_that_cannot_sandbox_is_reported_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_BWRAP", "/bin/false")  # "installed", but every probe fails
    with pytest.raises(IsolationUnavailable, match=r"bubblewrap is installed but not available with interpreter .*; .*isolation=") as raised:
        Sandbox(tmp_root=tmp_path)
    assert "\n" not in str(raised.value)


@requires_bubblewrap
def test_cohort_bwrap_points_the_sandbox_at_a_bwrap_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_BWRAP", shutil.which("bwrap"))
    assert Sandbox(tmp_root=tmp_path).run("print(6 * 7)").stdout == "42\n"


# A fresh interpreter, so that "once per process" is measured from the start: three sandboxes and a
# reward built from a reward spec, all on the explicitly named weak layer "none", without bubblewrap.
_WEAK_LAYER_RUN = """
import json, logging, tempfile
from cohort.rewards.registry import build_reward
from cohort.rewards.sandbox.runner import Sandbox
warnings = []
class Collect(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())
logging.getLogger("cohort").addHandler(Collect())
root = tempfile.mkdtemp()
outputs = [Sandbox(isolation="none", tmp_root=root).run("print(6 * 7)").stdout for _ in range(3)]
reward = build_reward({"name": "code", "isolation": "none", "timeout_s": 5}).fn
scores = reward(None, ["def f(x):\\n    return x + 1"] * 2, tests=[["assert f(1) == 2"]] * 2)
scores += reward(None, ["print(int(input()) * 2)"], tests=[[{"input": "3", "output": "6"}]])
print(json.dumps({"outputs": outputs, "scores": scores, "kind": reward.sandbox.isolation_kind, "warnings": warnings}))
"""


def test_an_explicit_weak_layer_runs_and_warns_exactly_once_per_process(tmp_path):
    env = {**os.environ, "COHORT_BWRAP": str(tmp_path / "no-such-bwrap")}  # weak layers need no bubblewrap
    done = subprocess.run([sys.executable, "-c", _WEAK_LAYER_RUN], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["outputs"] == ["42\n"] * 3
    assert report["scores"] == [1.0, 1.0, 1.0] and report["kind"] == "none"
    assert len(report["warnings"]) == 1, report["warnings"]
    assert "'none'" in report["warnings"][0] and "NOT ADEQUATE" in report["warnings"][0]


# ---------------------------------------------------------------- running programs


def test_runs_a_program_with_stdin_and_reports_its_exit(make_sandbox):
    sandbox = make_sandbox()
    echo = sandbox.run("print(input()[::-1])", stdin="olleh\n")
    assert (echo.exit_code, echo.signal, echo.stdout, echo.timed_out, echo.succeeded) == (0, None, "hello\n", False, True)
    failing = sandbox.run("import sys; print('partial'); sys.exit(3)")
    assert (failing.exit_code, failing.stdout, failing.succeeded) == (3, "partial\n", False)
    crashing = sandbox.run("raise KeyError('boom')")
    assert crashing.exit_code == 1 and "KeyError: 'boom'" in crashing.stderr


def test_wall_clock_limit_kills_a_sleeping_program_and_its_children(make_sandbox):
    marker = f"cohort-sleeper-{uuid.uuid4().hex}"
    program = _dedent(
        f"""
        import os, sys, time
        try:
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {marker!r}])
        except OSError:
            pass  # this layer forbids new processes
        time.sleep(60)
        print("woke")
        """
    )
    result = make_sandbox(wall_time_s=1.0).run(program)
    assert result.timed_out and not result.succeeded
    assert (result.exit_code, result.signal) == (None, signal.SIGKILL)
    assert result.stdout == ""
    _assert_no_process_with(marker)


def test_cpu_limit_stops_a_busy_loop(layer, make_sandbox):
    result = make_sandbox(wall_time_s=60.0, cpu_time_s=1).run("while True:\n    pass")
    assert not result.timed_out, "the CPU limit, not the wall clock, must end it"
    assert not result.succeeded
    if layer[1] != "unshare":
        assert result.signal == signal.SIGXCPU
    # Under `unshare` the program is its pid namespace's init, which ignores SIGXCPU; the hard
    # limit's SIGKILL a second later ends it, and unshare reports that as exit status 1.


def test_memory_limit(make_sandbox):
    sandbox = make_sandbox(memory_mb=256)
    small = sandbox.run("x = bytearray(50 * 2**20)\nprint(len(x))")
    assert small.stdout == f"{50 * 2**20}\n"
    bomb = sandbox.run("x = bytearray(2**31)")
    assert bomb.exit_code == 1 and "MemoryError" in bomb.stderr


def test_process_limit(make_sandbox):
    program = _dedent(
        """
        import os, time
        started = 0
        for _ in range(50):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(2)
                os._exit(0)
            started += 1
        print(started)
        """
    )
    result = make_sandbox(max_processes=8).run(program)
    assert result.succeeded, result.stderr
    assert 0 <= int(result.stdout) < 8


def test_output_is_capped(make_sandbox):
    sandbox = make_sandbox(max_output_bytes=1000)
    flood = sandbox.run("import os\nfor _ in range(3):\n    os.write(1, b'x' * 5000)\n    os.write(2, b'y' * 5000)")
    assert flood.stdout == "x" * 1000 and flood.stdout_truncated
    assert flood.stderr.startswith("y" * 1000) and flood.stderr_truncated
    assert not flood.succeeded  # writing past the cap fails inside the program (EFBIG)
    exact = sandbox.run("import sys\nsys.stdout.write('x' * 1000)")
    assert exact.stdout == "x" * 1000 and not exact.stdout_truncated


def test_environment_is_scrubbed(make_sandbox, monkeypatch):
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("COHORT_TEST_SECRET", secret)
    program = _dedent(
        """
        import glob, os
        print(sorted(os.environ))
        for path in glob.glob("/proc/*/environ"):
            try:
                print(path, open(path, "rb").read())
            except OSError:
                pass
        """
    )
    result = make_sandbox().run(program)
    assert result.succeeded, result.stderr
    assert secret not in result.stdout
    keys = set(eval(result.stdout.splitlines()[0]))
    assert keys <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PWD", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}


def test_no_network(make_sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    program = _dedent(
        f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"hello")
            print("connected")
        except OSError as err:
            print("blocked", err)
        """
    )
    try:
        result = make_sandbox().run(program)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing may have reached the listener
    finally:
        listener.close()
    assert result.stdout.startswith("blocked"), result.stdout


def test_nothing_outside_the_working_directory_is_writable(layer, make_sandbox):
    """Under bubblewrap the program writes only its own tmpfs; under unshare nothing at all (seccomp).

    Changing a mode is refused everywhere (file metadata could carry data from one sandbox to the next).
    """
    canary_dir = Path(tempfile.mkdtemp(prefix="cohort-canary-"))
    os.chmod(canary_dir, 0o755)
    canary = canary_dir / "canary.txt"
    canary.write_text("precious")
    os.chmod(canary, 0o644)
    tag = uuid.uuid4().hex
    targets = [str(canary), f"/usr/cohort-escape-{tag}", f"/etc/cohort-escape-{tag}", f"/cohort-escape-{tag}", f"/tmp/cohort-escape-{tag}"]
    program = _dedent(
        f"""
        import os, sys
        targets = {targets!r} + [os.path.join(sys.prefix, "cohort-escape-{tag}"), os.path.join(os.path.dirname(os.getcwd()), "cohort-escape-{tag}")]
        for target in targets:
            try:
                with open(target, "w") as handle:
                    handle.write("pwned")
                print("WROTE", target)
            except OSError:
                pass
        for attempt in (lambda: os.remove({str(canary)!r}), lambda: os.rename({str(canary)!r}, "stolen")):
            try:
                attempt()
                print("REMOVED")
            except OSError:
                pass
        try:
            with open("local.txt", "w") as handle:
                handle.write("mine")
            os.makedirs("made/inner")
            print("local", open("local.txt").read())
        except OSError as error:
            print("no local writes", error.errno)
        try:
            os.chmod(".", 0o700)
            print("CHMOD")
        except OSError:
            pass
        """
    )
    try:
        result = make_sandbox().run(program)
        assert result.succeeded, result.stderr
        assert "WROTE" not in result.stdout and "REMOVED" not in result.stdout and "CHMOD" not in result.stdout
        assert ("local mine" if layer[1] != "unshare" else "no local writes") in result.stdout, result.stdout
        assert canary.read_text() == "precious"
        escaped = [t for t in targets[1:] if os.path.exists(t)]
        assert escaped == []
    finally:
        for target in targets[1:]:
            if os.path.exists(target):
                os.remove(target)
        shutil.rmtree(canary_dir)


def test_other_sandboxes_stdin_and_stdout_are_unreadable(layer, make_sandbox):
    """A program cannot copy a concurrent sandbox's output (or read its input): the files are the host's, 0600."""
    _, _, _, root = layer
    secret = f"answer-{uuid.uuid4().hex}"
    writer = f"import time\nprint({secret!r}, flush=True)\ninput()\ntime.sleep(1.5)"
    reader = _dedent(
        f"""
        import glob, time
        time.sleep(0.5)
        paths = glob.glob({str(root)!r} + "/cohort-sandbox-*/stdout") + glob.glob({str(root)!r} + "/cohort-sandbox-*/stdin")
        for path in paths:
            try:
                print(open(path).read())
            except OSError as err:
                print("refused", type(err).__name__)
        """
    )
    results = make_sandbox(workers=2).run_many([ExecutionRequest(writer, stdin=secret + "\n"), ExecutionRequest(reader)])
    assert results[0].stdout == secret + "\n"
    assert secret not in results[1].stdout


def test_root_only_kernel_files_are_hidden(layer, make_sandbox):
    if layer[1] == "unshare":
        pytest.skip("under unshare the program is uid 65534 and the kernel's permission checks apply")
    program = _dedent(
        """
        for name in ("kpageflags", "kpagecount", "slabinfo", "timer_list", "vmallocinfo", "pagetypeinfo"):
            try:
                with open("/proc/" + name, "rb") as handle:
                    if handle.read(64):
                        print("READ", name)
            except OSError:
                pass
        print("done")
        """
    )
    assert make_sandbox().run(program).stdout == "done\n"


def test_killing_its_parent_harms_nothing(make_sandbox):
    sandbox = make_sandbox()
    killers = [
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('still here')",
        "import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('still here')",
    ]
    results = sandbox.run_many([ExecutionRequest(k) for k in killers] + [ExecutionRequest("print(1 + 1)")])
    assert results[2].stdout == "2\n"  # the pool went on
    assert all(not r.timed_out for r in results)
    assert sandbox.run("print('after')").stdout == "after\n"


def _processes_with(marker: str) -> list[int]:
    """Pids of host processes whose command line contains ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


def _assert_no_process_with(marker: str) -> None:
    deadline = time.monotonic() + 2.0  # the kernel may take a moment to reap a killed namespace
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(marker) == [], "a sandboxed process outlived its sandbox"


def test_fork_bomb_is_contained_and_leaves_no_process(make_sandbox):
    marker = f"cohort-bomb-{uuid.uuid4().hex}"
    program = _dedent(
        f"""
        import os, sys
        spawned = 0
        for _ in range(500):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                try:
                    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {marker!r}])
                finally:
                    os._exit(1)
            spawned += 1
        print(spawned)
        """
    )
    result = make_sandbox(max_processes=8).run(program)
    assert result.succeeded, result.stderr
    assert int(result.stdout) < 8
    _assert_no_process_with(marker)  # the sleepers it left behind died with the sandbox


def test_programs_run_in_parallel_and_in_order(make_sandbox):
    program = "import time\nstart = time.time()\ntime.sleep(0.5)\nprint({i}, start, time.time())"
    results = make_sandbox(workers=2).run_many([ExecutionRequest(program.format(i=i)) for i in range(2)])
    spans = [tuple(float(x) for x in r.stdout.split()) for r in results]
    assert [int(s[0]) for s in spans] == [0, 1]
    assert max(s[1] for s in spans) < min(s[2] for s in spans), f"runs did not overlap: {spans}"


@requires_bubblewrap
def test_default_worker_count_is_the_cpu_count(tmp_path):
    assert Sandbox(tmp_root=tmp_path).workers == (os.cpu_count() or 1)


@requires_bubblewrap
def test_run_many_rejects_other_objects(tmp_path):
    with pytest.raises(ValueError, match=r"requests\[0\]"):
        Sandbox(tmp_root=tmp_path).run_many(["print(1)"])
    assert Sandbox(tmp_root=tmp_path).run_many([]) == []


def test_the_weakest_layer_writes_nothing_and_leaves_nothing(tmp_path):
    """The weakest layer as a normal user: the program may not create or lock anything, and the directory goes."""
    if os.geteuid() == 0:
        pytest.skip("as root the weak layers are covered by test_sandbox_channels.py")
    sandbox = Sandbox(isolation="none", tmp_root=tmp_path)
    program = "import os\ntry:\n    os.makedirs('a/b')\n    print('MADE')\nexcept OSError:\n    print('refused')"
    assert sandbox.run(program).stdout == "refused\n"
    assert list(tmp_path.iterdir()) == []

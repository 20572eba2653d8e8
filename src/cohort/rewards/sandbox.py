"""Run untrusted Python programs in a sandbox: one process per program, in a throwaway directory.

Isolation comes in layers, detected at run time by running a probe program (strongest first; see
``sandbox_isolation()`` for the one in use):

``bubblewrap``  ``bwrap`` with new user, pid, net, ipc, uts, cgroup and mount namespaces. The
                program sees a read-only view of /usr and of the Python install, a fresh ``/proc``
                (root-only files hidden) and ``/dev``, and can write only to two small tmpfs
                mounts: ``/sandbox`` (its working directory) and ``/dev/shm``. When root runs it,
                bwrap drops to host uid 65534 if that uid can read the interpreter; otherwise the
                sandbox user is host uid 0 in disguise, which the kernel exempts from
                RLIMIT_NPROC, so a seccomp filter (libseccomp) forbids creating processes instead.
``unshare``     (root only) new pid, net, ipc, uts and mount namespaces via util-linux ``unshare``;
                the program runs as uid 65534 in a host directory it owns. File protection rests
                on permissions, so world-writable host directories (/tmp) stay writable.
``setuid``      (root only) the program runs as uid 65534; no network or pid isolation.
``none``        resource limits only.

The last two are not adequate for untrusted code and are announced with a warning. Every layer adds
resource limits set inside the sandbox just before the program starts (RLIMIT_CPU, RLIMIT_AS,
RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE), a wall-clock limit enforced from outside,
output capped by RLIMIT_FSIZE on the stdout/stderr files (the host never reads more than the cap),
and an environment built from scratch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import json
import logging
import math
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

logger = logging.getLogger(__name__)

NOBODY = 65534  # the conventional unprivileged uid/gid
SANDBOX_DIR = "/sandbox"  # the program's working directory inside bubblewrap
PROGRAM_NAME = "main.py"
ISOLATIONS = ("auto", "bubblewrap", "unshare", "setuid", "none")
_TEARDOWN_WAIT_S = 5.0  # how long to wait for a killed sandbox's processes to be gone
_STARTED = b"started"

# Runs inside the sandbox, in the interpreter that will run the program: applies the resource
# limits, tells the host (through an inherited pipe) that the sandbox came up, closes that pipe and
# runs the program as __main__ (like runpy.run_path, without the ~10 ms of imports runpy costs).
# The program can neither lift the limits (hard limits are lowered and it has no privileges) nor
# make a failure of its own look like a failure of the sandbox.
_LAUNCHER = """\
import os, resource as r, sys
fd, cpu, mem, nproc, fsize, nofile = (int(a) for a in sys.argv[1:7])
def limit(kind, soft, hard):
    top = r.getrlimit(kind)[1]
    cap = (lambda v: v) if top == r.RLIM_INFINITY else (lambda v: min(v, top))
    r.setrlimit(kind, (cap(soft), cap(hard)))
limit(r.RLIMIT_CORE, 0, 0)
limit(r.RLIMIT_CPU, cpu, cpu + 1)
limit(r.RLIMIT_AS, mem, mem)
limit(r.RLIMIT_NPROC, nproc, nproc)
limit(r.RLIMIT_FSIZE, fsize, fsize)
limit(r.RLIMIT_NOFILE, nofile, nofile)
os.write(fd, b"started")
os.close(fd)
del sys.argv[:7]
def run_as_main(path):
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec", dont_inherit=True)
    namespace = sys.modules["__main__"].__dict__
    builtins = namespace["__builtins__"]
    namespace.clear()  # the program gets a fresh __main__, as if run as `python main.py`
    namespace.update(__name__="__main__", __file__=path, __builtins__=builtins, __doc__=None,
                     __package__=None, __spec__=None, __loader__=None, __cached__=None)
    exec(code, namespace)
run_as_main(sys.argv[0])
"""


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): it could not be set up or started."""


class IsolationUnavailable(SandboxError):
    """The requested isolation layer does not work on this machine."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run."""

    wall_time_s: float = 10.0  # wall-clock limit; the host kills the sandbox when it expires
    cpu_time_s: int = 10  # RLIMIT_CPU: SIGXCPU at this many CPU seconds, SIGKILL one second later
    memory_mb: int = 1024  # RLIMIT_AS: address space of each process
    max_processes: int = 32  # RLIMIT_NPROC: processes and threads of the sandbox user
    max_output_bytes: int = 1 << 20  # stdout and stderr each; via RLIMIT_FSIZE, which also caps files it writes
    max_open_files: int = 64  # RLIMIT_NOFILE
    workdir_mb: int = 64  # size of each writable tmpfs (bubblewrap: /sandbox and /dev/shm)

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not is_number or not math.isfinite(value) or value <= 0:
                raise ValueError(f"SandboxLimits.{field.name} must be a finite number > 0, got {value!r}")
            if field.name != "wall_time_s" and value != int(value):
                raise ValueError(f"SandboxLimits.{field.name} must be a whole number, got {value!r}")


@dataclass(frozen=True)
class ExecutionRequest:
    """One program to run: its source and what it reads on stdin (None: an empty stdin)."""

    source: str
    stdin: str | None = None


@dataclass(frozen=True)
class ExecutionResult:
    """What one sandboxed run did. Output is cut at ``max_output_bytes`` (flagged as truncated)."""

    exit_code: int | None  # None when the program was killed by a signal
    signal: int | None  # the signal that ended it (SIGKILL after a wall-clock timeout)
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool  # killed by the host for running past wall_time_s
    wall_time_s: float

    @property
    def succeeded(self) -> bool:
        """True when the program ran to completion and exited with status 0."""
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True)
class _Layer:
    """One isolation layer: how the sandbox is built around the interpreter."""

    kind: str  # bubblewrap | unshare | setuid | none
    host_uid: int | None = None  # uid the host-side launcher (bwrap, setuid) drops to; None: keep ours
    disable_userns: bool = False  # bubblewrap: forbid nested user namespaces
    no_fork: bool = False  # bubblewrap: a seccomp filter forbids creating processes (threads still allowed)

    @property
    def process_limit(self) -> bool:
        """Whether the number of processes is bounded.

        The kernel does not apply RLIMIT_NPROC to host uid 0, which is what the sandbox user is when
        root runs bwrap without dropping to another uid; a seccomp filter then forbids fork instead.
        """
        return self.kind != "bubblewrap" or self.host_uid is not None or os.geteuid() != 0 or self.no_fork

    @property
    def adequate(self) -> bool:
        """Whether this layer is fit for untrusted code (filesystem, network and process isolation)."""
        return self.kind in ("bubblewrap", "unshare") and self.process_limit

    def describe(self) -> str:
        """A short human-readable account of the layer, for the run log."""
        if self.kind == "bubblewrap":
            if self.host_uid is not None:
                who = f"host uid {self.host_uid}"
            elif os.geteuid() == 0:
                who = f"host uid 0 mapped to {NOBODY} in its user namespace"
            else:
                who = f"host uid {os.geteuid()}"
            extras = ", nested user namespaces disabled" if self.disable_userns else ""
            if self.no_fork:
                extras += ", seccomp forbids new processes"
            elif not self.process_limit:
                extras += ", NO process-count limit"
            return (
                "bubblewrap (user+pid+net+ipc+uts+cgroup+mount namespaces, read-only system, "
                f"tmpfs workdir, {who}{extras}) + rlimits"
            )
        if self.kind == "unshare":
            return f"unshare (pid+net+ipc+uts+mount namespaces) + uid {NOBODY} + rlimits"
        if self.kind == "setuid":
            return f"uid {NOBODY} + rlimits (NO network or pid isolation)"
        return "rlimits only (NO isolation: the program runs as this user with network access)"


def _candidate_layers(isolation: str) -> list[_Layer]:
    """The layers worth probing for ``isolation``, strongest first."""
    root = os.geteuid() == 0
    layers: list[_Layer] = []
    bwrap = isolation in ("auto", "bubblewrap") and shutil.which("bwrap") is not None
    if bwrap:
        if root:  # as host uid 65534 (needs the interpreter readable by it), else uid 0 with fork forbidden
            variants = [(NOBODY, False)] + ([(None, True)] if _no_fork_filter() is not None else [])
        else:
            variants = [(None, False)]
        for host_uid, no_fork in variants:
            layers += [_Layer("bubblewrap", host_uid, True, no_fork), _Layer("bubblewrap", host_uid, False, no_fork)]
    if isolation in ("auto", "unshare") and root and shutil.which("unshare") and shutil.which("setpriv"):
        layers.append(_Layer("unshare", NOBODY))
    if bwrap and root:  # last resort among the namespace layers: no bound on the number of processes
        layers.append(_Layer("bubblewrap", None, True))
    if isolation in ("auto", "setuid") and root:
        layers.append(_Layer("setuid", NOBODY))
    if isolation in ("auto", "none"):
        layers.append(_Layer("none"))
    return layers


@functools.lru_cache(maxsize=None)
def _no_fork_filter() -> bytes | None:
    """A seccomp BPF program (from libseccomp) that makes fork/vfork/clone-without-CLONE_THREAD fail.

    clone3 fails with ENOSYS, which makes the C library fall back to clone. Threads stay allowed;
    their number is bounded by RLIMIT_AS (each reserves a stack). None if libseccomp is missing.
    """
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None

    class ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    allow, masked_eq, clone_thread = 0x7FFF0000, 7, 0x00010000
    errno_action = lambda code: 0x00050000 | code  # noqa: E731  (SCMP_ACT_ERRNO)
    ctx = lib.seccomp_init(allow)
    if not ctx:
        return None
    try:
        rules = [("fork", errno.EAGAIN, None), ("vfork", errno.EAGAIN, None), ("clone3", errno.ENOSYS, None)]
        rules.append(("clone", errno.EAGAIN, ArgCmp(0, masked_eq, clone_thread, 0)))  # flags & CLONE_THREAD == 0
        for syscall, code, condition in rules:
            number = lib.seccomp_syscall_resolve_name(syscall.encode())
            if number < 0:  # not a syscall on this architecture (e.g. fork on arm64)
                continue
            conditions = (ArgCmp * 1)(condition) if condition is not None else None
            if lib.seccomp_rule_add_array(ctx, errno_action(code), number, 1 if condition else 0, conditions) != 0:
                return None
        with tempfile.TemporaryFile() as handle:
            if lib.seccomp_export_bpf(ctx, handle.fileno()) != 0:
                return None
            handle.seek(0)
            return handle.read()
    finally:
        lib.seccomp_release(ctx)


@functools.lru_cache(maxsize=None)
def _interpreter_dirs(python: str) -> tuple[str, ...]:
    """Directories the interpreter needs that lie outside /usr (its prefixes), for read-only binds."""
    query = "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]))"
    try:
        out = subprocess.run([python, "-I", "-c", query], capture_output=True, text=True, timeout=30, check=True)
        prefixes = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        raise SandboxError(f"cannot run the sandbox interpreter {python!r}: {err}") from err
    candidates = {os.path.realpath(p) for p in prefixes} | {os.path.abspath(p) for p in prefixes}
    candidates.add(os.path.dirname(os.path.realpath(python)))
    candidates.add(os.path.dirname(os.path.abspath(python)))
    dirs = sorted(p for p in candidates if p != "/usr" and not p.startswith("/usr/") and os.path.isdir(p))
    # Keep only outermost directories; binding a parent already exposes its children.
    return tuple(p for p in dirs if not any(p.startswith(q + os.sep) for q in dirs if q != p))


def _system_binds() -> list[str]:
    """bwrap arguments exposing the system read-only: /usr, its top-level aliases and a few /etc files."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf"):
        args += ["--ro-bind-try", path, path]
    return args


@functools.lru_cache(maxsize=None)
def _root_only_proc_files() -> tuple[str, ...]:
    """Top-level /proc files that only root may read (kpageflags, slabinfo, timer_list, ...).

    A sandbox user that is host uid 0 in disguise would pass their permission check, so bubblewrap
    hides them behind /dev/null.
    """
    hidden = []
    for entry in os.scandir("/proc"):
        try:
            if not entry.name.isdigit() and entry.is_file() and not entry.stat().st_mode & stat.S_IROTH:
                hidden.append(entry.path)
        except OSError:
            continue
    return tuple(sorted(hidden))


def _program_env(workdir: str) -> dict[str, str]:
    """The whole environment of a sandboxed program: nothing inherited from the host."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",  # native libraries must not start a thread per core under RLIMIT_NPROC
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _wait_fd(fd: int, timeout_s: float) -> bool:
    """Block until ``fd`` is readable or ``timeout_s`` passes; True if readable."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if poller.poll(max(remaining, 0) * 1000):
            return True
        if remaining <= 0:
            return False


def _wait_exit(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for ``proc`` to exit without reaping it (so its pid stays reserved); True if it exited."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel/Python): Popen's polling wait
        try:
            proc.wait(timeout=max(timeout_s, 0))
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        return _wait_fd(pidfd, timeout_s)
    finally:
        os.close(pidfd)


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or None if it is gone or pidfds are unsupported."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _kill_group(pgid: int) -> None:
    """SIGKILL every process of group ``pgid`` (gone or not ours: nothing to do)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid`` (read from /proc)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields_after_name = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        state, pgrp = fields_after_name[0], int(fields_after_name[2])
        if pgrp == pgid and state != b"Z":
            members.append(int(entry.name))
    return members


def _kill_group_and_wait(pgid: int, timeout_s: float) -> None:
    """SIGKILL process group ``pgid`` until none of its processes is left (or ``timeout_s`` passes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        _kill_group(pgid)
        if not _group_members(pgid):
            return
        if time.monotonic() > deadline:
            logger.warning("code sandbox: processes of process group %d still alive after %.0f s", pgid, timeout_s)
            return
        time.sleep(0.01)


def _read_capped(path: Path, cap: int) -> tuple[str, bool]:
    """The first ``cap`` bytes of ``path`` as text, and whether there was more."""
    with open(path, "rb") as handle:
        data = handle.read(cap + 1)
    return data[:cap].decode("utf-8", errors="replace"), len(data) > cap


def _decode_status(returncode: int, layer: _Layer) -> tuple[int | None, int | None]:
    """(exit_code, signal) from the outer process' return code.

    bubblewrap reports a child killed by signal N as exit status 128 + N, so under bubblewrap
    statuses 129..191 are read as signals (a program calling ``sys.exit(137)`` reads as SIGKILL).
    """
    if returncode < 0:
        return None, -returncode
    if layer.kind == "bubblewrap" and 128 < returncode < 128 + 64:
        return None, returncode - 128
    return returncode, None


class Sandbox:
    """Runs Python programs under resource limits and the strongest isolation that works here."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        workers: int | None = None,
        isolation: str = "auto",
        python: str | None = None,
        tmp_root: str | os.PathLike[str] | None = None,
    ) -> None:
        """``isolation``: "auto" (strongest available) or one layer by name, which must work here.

        ``python`` is the interpreter that runs the programs (default: this one); ``tmp_root`` is
        where the throwaway directories are made (default: the system temp directory).
        """
        self.limits = limits if limits is not None else SandboxLimits()
        if not isinstance(self.limits, SandboxLimits):
            raise ValueError(f"limits must be a SandboxLimits, got {type(limits).__name__}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
        self.workers = workers or os.cpu_count() or 1
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.python = os.path.abspath(python or sys.executable)
        if not (os.path.isfile(self.python) and os.access(self.python, os.X_OK)):
            raise ValueError(f"python {self.python!r} is not an executable file")
        self.tmp_root = Path(tmp_root) if tmp_root is not None else Path(tempfile.gettempdir())
        if not self.tmp_root.is_dir():
            raise ValueError(f"tmp_root {str(self.tmp_root)!r} is not an existing directory")
        self._layer = _detect_layer(isolation, self.python, str(self.tmp_root))
        _announce(self._layer)

    @property
    def isolation(self) -> str:
        """The active isolation layer in words, e.g. for the run log."""
        return self._layer.describe()

    @property
    def isolation_adequate(self) -> bool:
        """Whether the active layer isolates filesystem, network and processes (else a warning was logged)."""
        return self._layer.adequate

    @property
    def isolation_kind(self) -> str:
        """The active layer's short name: bubblewrap, unshare, setuid or none."""
        return self._layer.kind

    def run(self, source: str, stdin: str | None = None) -> ExecutionResult:
        """Run one program and return what it did; raises SandboxError only if the sandbox failed."""
        if not isinstance(source, str):
            raise ValueError(f"source must be a str, got {type(source).__name__}")
        if stdin is not None and not isinstance(stdin, str):
            raise ValueError(f"stdin must be a str or None, got {type(stdin).__name__}")
        return _execute(self._layer, self.python, self.limits, self.tmp_root, source, stdin)

    def run_many(self, requests: Sequence[ExecutionRequest]) -> list[ExecutionResult]:
        """Run programs in parallel on ``workers`` threads (each waiting on one sandbox); results in order."""
        requests = list(requests)
        for i, request in enumerate(requests):
            if not isinstance(request, ExecutionRequest):
                raise ValueError(f"requests[{i}] must be an ExecutionRequest, got {type(request).__name__}")
        if not requests:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(requests)), thread_name_prefix="sandbox")
        try:
            futures = [pool.submit(self.run, r.source, r.stdin) for r in requests]
            return [future.result() for future in futures]
        finally:
            # On an error or an interrupt, drop queued runs; running ones end within their own limits.
            pool.shutdown(wait=True, cancel_futures=True)


@functools.lru_cache(maxsize=None)
def _detect_layer(isolation: str, python: str, tmp_root: str) -> _Layer:
    """The strongest layer of ``isolation`` that runs a probe program correctly here (cached)."""
    probe_limits = SandboxLimits(wall_time_s=30.0, cpu_time_s=10)
    failures = []
    for layer in _candidate_layers(isolation):
        try:
            result = _execute(layer, python, probe_limits, Path(tmp_root), "print('probe-ok')", None)
        except SandboxError as err:
            failures.append(f"{layer.describe()}: {err}")
            continue
        if result.succeeded and result.stdout == "probe-ok\n":
            if failures:
                logger.info("code sandbox: stronger isolation layers failed here: %s", "; ".join(failures))
            return layer
        failures.append(f"{layer.describe()}: probe exit {result.exit_code}, stderr {result.stderr[-300:]!r}")
    raise IsolationUnavailable(
        f"isolation {isolation!r} is not available with interpreter {python!r}: " + ("; ".join(failures) or "no candidate")
    )


def _announce(layer: _Layer) -> None:
    """Log the layer in use; loudly if it is not fit for untrusted code."""
    if layer.adequate:
        logger.info("code sandbox isolation: %s", layer.describe())
    else:
        logger.warning(
            "code sandbox: NO ADEQUATE ISOLATION; untrusted programs run under: %s. "
            "Install bubblewrap (scripts/install_sandbox_deps.sh) or run as root.",
            layer.describe(),
        )


def sandbox_isolation(python: str | None = None) -> str:
    """The isolation the code sandbox gets on this machine ("auto"), in words, for the run log."""
    interpreter = os.path.abspath(python or sys.executable)
    layer = _detect_layer("auto", interpreter, tempfile.gettempdir())
    _announce(layer)
    return layer.describe()


def _command(
    layer: _Layer, python: str, limits: SandboxLimits, host_dir: Path, started_fd: int, status_fd: int | None, seccomp_fd: int | None
) -> list[str]:
    """The argv that runs the program in ``host_dir`` under ``layer``."""
    program = f"{SANDBOX_DIR}/{PROGRAM_NAME}" if layer.kind == "bubblewrap" else PROGRAM_NAME
    launcher = [
        python, "-I", "-B", "-c", _LAUNCHER,
        str(started_fd),
        str(limits.cpu_time_s),
        str(limits.memory_mb * 2**20),
        str(limits.max_processes),
        str(limits.max_output_bytes + 1),  # +1 so that a full cap of output is told apart from a cut one
        str(limits.max_open_files),
        program,
    ]  # fmt: skip
    if layer.kind == "bubblewrap":
        tmpfs_bytes = str(limits.workdir_mb * 2**20)
        args = ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
        if layer.disable_userns:
            args.append("--disable-userns")
        if status_fd is not None:
            args += ["--json-status-fd", str(status_fd)]
        if seccomp_fd is not None:
            args += ["--seccomp", str(seccomp_fd)]
        args += _system_binds()
        for path in _interpreter_dirs(python):
            args += ["--ro-bind", path, path]
        args += ["--proc", "/proc"]
        for path in _root_only_proc_files():
            args += ["--ro-bind", "/dev/null", path]
        args += [
            "--dev", "/dev",
            "--size", tmpfs_bytes, "--tmpfs", "/dev/shm",
            "--size", tmpfs_bytes, "--tmpfs", SANDBOX_DIR,
            "--ro-bind", str(host_dir / PROGRAM_NAME), program,
            "--chdir", SANDBOX_DIR,
            "--remount-ro", "/dev",
            "--remount-ro", "/",
            "--uid", str(NOBODY), "--gid", str(NOBODY),
            "--hostname", "sandbox",
            "--",
        ]  # fmt: skip
        return args + launcher
    if layer.kind == "unshare":
        return [
            "unshare", "--pid", "--net", "--ipc", "--uts", "--mount", "--fork", "--kill-child", "--mount-proc", "--",
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs", "--",
        ] + launcher  # fmt: skip
    return launcher


def _prepare_dir(layer: _Layer, root: Path, source: str, stdin: str | None) -> tuple[Path, Path]:
    """Write the program (and its stdin) into the throwaway directory; return (host_dir, workdir)."""
    host_dir = Path(tempfile.mkdtemp(prefix="cohort-sandbox-", dir=root))
    workdir = host_dir if layer.kind == "bubblewrap" else host_dir / "work"
    workdir.mkdir(exist_ok=True)
    (workdir / PROGRAM_NAME).write_text(source, encoding="utf-8")
    (host_dir / "stdin").write_text(stdin or "", encoding="utf-8")
    readable = stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH
    os.chmod(workdir / PROGRAM_NAME, readable)
    if layer.host_uid is not None:
        # bwrap (run as host_uid) must reach the program to bind it; under unshare/setuid the
        # program owns its working directory. The outer directory keeps stdout/stderr out of reach.
        os.chmod(host_dir, stat.S_IRWXU | stat.S_IXGRP | stat.S_IXOTH)
        if layer.kind != "bubblewrap":
            os.chown(workdir, layer.host_uid, layer.host_uid)
            os.chmod(workdir, stat.S_IRWXU)
    return host_dir, workdir


def _execute(layer: _Layer, python: str, limits: SandboxLimits, root: Path, source: str, stdin: str | None) -> ExecutionResult:
    """Run one program under ``layer`` and clean up everything it left behind."""
    host_dir, workdir = _prepare_dir(layer, root, source, stdin)
    try:
        return _spawn_and_wait(layer, python, limits, host_dir, workdir)
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
        if host_dir.exists():  # e.g. a directory the program made unreadable: make it removable and retry
            for path, dirs, _ in os.walk(host_dir):
                for name in dirs:
                    os.chmod(os.path.join(path, name), stat.S_IRWXU)
            shutil.rmtree(host_dir, ignore_errors=True)
        if host_dir.exists():
            logger.warning("code sandbox: could not remove %s", host_dir)


def _spawn_and_wait(layer: _Layer, python: str, limits: SandboxLimits, host_dir: Path, workdir: Path) -> ExecutionResult:
    """Start the sandbox, enforce the wall-clock limit, make sure none of its processes survive."""
    started_read, started_write = os.pipe()  # the launcher's "started" signal
    status_read, status_write = os.pipe() if layer.kind == "bubblewrap" else (None, None)  # bwrap's JSON status
    seccomp_read = _pipe_with(_no_fork_filter()) if layer.no_fork else None
    child_fds = [fd for fd in (started_write, status_write, seccomp_read) if fd is not None]
    parent_fds = [fd for fd in (started_read, status_read) if fd is not None]
    inner_pidfd, proc, timed_out = None, None, False
    try:
        env = _program_env(SANDBOX_DIR if layer.kind == "bubblewrap" else str(workdir))
        command = _command(layer, python, limits, host_dir, started_write, status_write, seccomp_read)
        user = layer.host_uid if layer.kind in ("bubblewrap", "setuid") else None
        with open(host_dir / "stdin", "rb") as stdin, open(host_dir / "stdout", "wb") as stdout, open(host_dir / "stderr", "wb") as stderr:
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    command,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=host_dir if layer.kind == "bubblewrap" else workdir,
                    env=env,
                    pass_fds=child_fds,
                    start_new_session=True,
                    user=user,
                    group=user,
                    extra_groups=[] if user is not None else None,
                )
            except OSError as err:
                raise SandboxError(f"cannot start the sandbox ({command[0]}): {err}") from err
            finally:
                for fd in child_fds:
                    os.close(fd)
        if status_read is not None:
            inner_pidfd = _inner_pidfd(status_read, limits.wall_time_s)
        if not _wait_exit(proc, limits.wall_time_s - (time.monotonic() - start)):
            timed_out = True
        _kill_group(proc.pid)  # the timed-out sandbox, or anything left in its process group
        proc.wait()
        wall_time_s = time.monotonic() - start
        if inner_pidfd is not None and not _wait_fd(inner_pidfd, _TEARDOWN_WAIT_S):
            logger.warning("code sandbox: processes of a finished sandbox still alive after %.0f s", _TEARDOWN_WAIT_S)
        if layer.kind != "bubblewrap":  # no pid namespace teardown to rely on (or, for unshare, an async one)
            _kill_group_and_wait(proc.pid, _TEARDOWN_WAIT_S)
        started = _read_available(started_read)
    finally:
        if proc is not None and proc.returncode is None:  # interrupted (e.g. KeyboardInterrupt)
            _kill_group(proc.pid)
            proc.wait()
        for fd in parent_fds + ([inner_pidfd] if inner_pidfd is not None else []):
            os.close(fd)
    if not started.startswith(_STARTED) and not timed_out:
        err_text, _ = _read_capped(host_dir / "stderr", 2000)
        raise SandboxError(f"the sandbox did not start the program (exit status {proc.returncode}): {err_text.strip()}")
    exit_code, sig = _decode_status(proc.returncode, layer)
    out, out_cut = _read_capped(host_dir / "stdout", limits.max_output_bytes)
    err, err_cut = _read_capped(host_dir / "stderr", limits.max_output_bytes)
    return ExecutionResult(exit_code, sig, out, err, out_cut, err_cut, timed_out, wall_time_s)


def _pipe_with(data: bytes) -> int:
    """The read end of a pipe holding ``data`` (small: it must fit the pipe buffer)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


def _inner_pidfd(status_read: int, timeout_s: float) -> int | None:
    """A pidfd for bwrap's process inside the namespaces, read from its JSON status (None if unknown).

    Once that process is gone the kernel has killed every process of the sandbox's pid namespace.
    """
    if not _wait_fd(status_read, timeout_s):
        return None
    line = os.read(status_read, 4096).split(b"\n", 1)[0]
    try:
        pid = json.loads(line)["child-pid"]
    except (ValueError, KeyError, TypeError):
        return None  # bwrap exited before starting the sandbox: reported by the started check
    return _open_pidfd(int(pid))


def _read_available(fd: int) -> bytes:
    """Whatever is buffered in the pipe ``fd`` (its writers are gone, so this cannot block long)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 64)
    except BlockingIOError:
        return b""

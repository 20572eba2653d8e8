"""One sandboxed process: its throwaway directory, its start under a layer, and its teardown.

A :class:`SandboxProcess` writes the given files into a fresh directory, starts the interpreter
under the layer (:mod:`cohort.rewards.sandbox.commands` builds the command line; its launcher
applies the resource limits and the seccomp filter, then runs a script as ``__main__``), lets the caller wait for it, and on :meth:`SandboxProcess.close` kills whatever is
left of it and removes the directory. Extra file descriptors (``pass_fds``) reach the script under
the same numbers; the assertion-test judge uses them to talk to the program's sandbox and the host.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from cohort.rewards.sandbox.commands import SANDBOX_DIR, command, program_env
from cohort.rewards.sandbox.layers import Layer, SandboxError, SandboxLimits

logger = logging.getLogger("cohort.rewards.sandbox")

ROLES = ("program", "judge")  # program: may write its directory; judge: read-only directory, own uid
_TEARDOWN_WAIT_S = 5.0  # how long to wait for a killed sandbox's processes to be gone
_STARTED = b"started"
_PRIVATE = 0o600  # stdin/stdout/stderr: the host's, opened for the sandbox, unreadable to other sandboxes

class SandboxProcess:
    """A script running in a sandbox of its own; :meth:`close` (or ``with``) kills it and cleans up.

    ``files`` (name -> text or bytes) are what the script's directory holds; ``script`` is the one run as
    ``__main__`` with ``args``; ``pass_fds`` stay open in it under the same numbers (the caller
    closes its copies). ``role="judge"``: the directory is read-only to it and, under unshare and
    setuid, it runs as another uid than programs do. ``seccomp`` replaces the layer's filter (the
    judge server's, which may fork; each judge it forks installs the layer's own on top).
    """

    def __init__(
        self,
        layer: Layer,
        python: str,
        limits: SandboxLimits,
        root: Path,
        files: Mapping[str, str | bytes],
        script: str,
        args: Sequence[str] = (),
        *,
        pass_fds: Sequence[int] = (),
        stdin: str | None = None,
        role: str = "program",
        seccomp: bytes | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if script not in files:
            raise ValueError(f"script {script!r} is not one of the files {sorted(files)}")
        self.layer, self.limits = layer, limits
        self.returncode: int | None = None  # known after stop()
        self.wall_time_s = 0.0  # from start to exit, known after stop()
        self.started = False  # whether the launcher came up (known after stop())
        self._proc: subprocess.Popen | None = None
        self._fds: list[int] = []  # ours to close: the started pipe, the inner pidfd
        self._seccomp = seccomp
        self.host_dir, self.workdir = _prepare_dir(layer, root, files, stdin, role)
        try:
            self._launch(python, script, list(args), list(pass_fds), role)
        except BaseException:
            self.close()
            raise

    def _launch(self, python: str, script: str, args: list[str], pass_fds: list[int], role: str) -> None:
        layer = self.layer
        try:
            seccomp_filter = layer.seccomp_filter if self._seccomp is None else self._seccomp
        except OSError as err:
            raise SandboxError(f"cannot build the seccomp filter: {err}") from err
        started_read, started_write = os.pipe()  # the launcher's "started" signal
        status_read, status_write = os.pipe() if layer.kind == "bubblewrap" else (None, None)  # bwrap's JSON status
        seccomp_read = _pipe_with(seccomp_filter)  # read by bwrap, or by the launcher
        child_fds = [fd for fd in (started_write, status_write, seccomp_read) if fd is not None]
        self._fds = [fd for fd in (started_read, status_read) if fd is not None]
        self._started_read, self._inner_pidfd = started_read, None
        env = program_env(SANDBOX_DIR if layer.kind == "bubblewrap" else str(self.workdir))
        argv = command(layer, python, self.limits, self.host_dir, script, args, role, started_write, status_write, seccomp_read)
        uid = layer.uid_for(role) if layer.kind in ("bubblewrap", "setuid") else None
        try:
            with open(self.host_dir / "stdin", "rb") as i, open(self.host_dir / "stdout", "wb") as o, open(self.host_dir / "stderr", "wb") as e:
                self.start = time.monotonic()
                self._proc = subprocess.Popen(
                    argv, stdin=i, stdout=o, stderr=e, env=env, pass_fds=child_fds + pass_fds, start_new_session=True,
                    cwd=self.host_dir if layer.kind == "bubblewrap" else self.workdir,
                    user=uid, group=uid, extra_groups=[] if uid is not None else None,
                )  # fmt: skip
        except OSError as err:
            raise SandboxError(f"cannot start the sandbox ({argv[0]}): {err}") from err
        finally:
            for fd in child_fds:
                os.close(fd)
        if status_read is not None:
            self._inner_pidfd = _inner_pidfd(status_read, self.limits.wall_time_s)
            if self._inner_pidfd is not None:
                self._fds.append(self._inner_pidfd)

    @property
    def elapsed(self) -> float:
        """Seconds since the sandbox was started."""
        return time.monotonic() - self.start

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the sandbox to exit (without reaping it); True if it did."""
        return _wait_exit(self._proc, timeout_s)

    def stop(self) -> None:
        """Kill whatever is left of the sandbox and wait until none of its processes is alive (idempotent)."""
        proc = self._proc
        if proc is None or self.returncode is not None:
            return
        _kill_group(proc.pid)  # the sandbox if still running, or anything left in its process group
        proc.wait()
        self.wall_time_s = self.elapsed
        if self._inner_pidfd is not None and not _wait_fd(self._inner_pidfd, _TEARDOWN_WAIT_S):
            logger.warning("code sandbox: processes of a finished sandbox still alive after %.0f s", _TEARDOWN_WAIT_S)
        if self.layer.kind != "bubblewrap":  # no pid namespace teardown to rely on (or, for unshare, an async one)
            _kill_group_and_wait(proc.pid, _TEARDOWN_WAIT_S)
        self.started = _read_available(self._started_read).startswith(_STARTED)
        self.returncode = proc.returncode

    def output(self, name: str, cap: int) -> tuple[str, bool]:
        """The first ``cap`` bytes of the sandbox's "stdout" or "stderr" as text, and whether there was more."""
        return _read_capped(self.host_dir / name, cap)

    def remove_dir(self) -> None:
        """Remove the directory while the sandbox runs on (a server that has read its files: nothing stays on disk)."""
        _remove_dir(self.host_dir)

    def close(self) -> None:
        """Stop the sandbox, close its descriptors and remove its directory."""
        try:
            if self._proc is not None and self.returncode is None:
                self.stop()
        finally:
            for fd in self._fds:
                os.close(fd)
            self._fds = []
            _remove_dir(self.host_dir)

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_status(returncode: int, layer: Layer) -> tuple[int | None, int | None]:
    """(exit_code, signal) from the outer process' return code.

    bubblewrap reports a child killed by signal N as exit status 128 + N, so under bubblewrap
    statuses 129..191 are read as signals (a program calling ``sys.exit(137)`` reads as SIGKILL).
    """
    if returncode < 0:
        return None, -returncode
    if layer.kind == "bubblewrap" and 128 < returncode < 128 + 64:
        return None, returncode - 128
    return returncode, None


def _prepare_dir(layer: Layer, root: Path, files: Mapping[str, str | bytes], stdin: str | None, role: str) -> tuple[Path, Path]:
    """Write the files (and stdin) into a fresh throwaway directory; return (host_dir, workdir)."""
    host_dir = Path(tempfile.mkdtemp(prefix="cohort-sandbox-", dir=root))
    try:
        workdir = host_dir if layer.kind == "bubblewrap" else host_dir / "work"
        workdir.mkdir(exist_ok=True)
        for name, text in files.items():
            if os.sep in name or name in ("", ".", "..", "stdin", "stdout", "stderr", "work"):
                raise ValueError(f"sandbox file names must be plain names, got {name!r}")
            if isinstance(text, bytes):
                (workdir / name).write_bytes(text)
            else:
                (workdir / name).write_text(text, encoding="utf-8")
            os.chmod(workdir / name, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        for name, text in (("stdin", stdin or ""), ("stdout", ""), ("stderr", "")):
            descriptor = os.open(host_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
        if layer.host_uid is not None:
            # bwrap (run as host_uid) must reach the files to bind them; under unshare/setuid a program
            # owns its working directory (a judge's stays root's). The outer directory is not listable.
            os.chmod(host_dir, stat.S_IRWXU | stat.S_IXGRP | stat.S_IXOTH)
            if layer.kind != "bubblewrap":
                if role == "program":
                    os.chown(workdir, layer.host_uid, layer.host_uid)
                    os.chmod(workdir, stat.S_IRWXU)
                else:
                    os.chmod(workdir, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    except BaseException:
        _remove_dir(host_dir)
        raise
    return host_dir, workdir


def _remove_dir(host_dir: Path) -> None:
    """Remove a throwaway directory, also one the program made unreadable."""
    shutil.rmtree(host_dir, ignore_errors=True)
    if host_dir.exists():  # e.g. a directory the program made unreadable: make it removable and retry
        for path, dirs, _ in os.walk(host_dir):
            for name in dirs:
                os.chmod(os.path.join(path, name), stat.S_IRWXU)
        shutil.rmtree(host_dir, ignore_errors=True)
    if host_dir.exists():
        logger.warning("code sandbox: could not remove %s", host_dir)


def _pipe_with(data: bytes) -> int:
    """The read end of a pipe holding ``data`` (small: it must fit the pipe buffer)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


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


def _read_available(fd: int) -> bytes:
    """Whatever is buffered in the pipe ``fd`` (its writers are gone, so this cannot block long)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 64)
    except BlockingIOError:
        return b""

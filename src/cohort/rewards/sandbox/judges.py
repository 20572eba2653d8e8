"""Judge servers: a judge sandbox that forks a fresh judge for each program, instead of starting a sandbox per program.

Starting a sandbox (bubblewrap's namespaces and mounts, then an interpreter and the harness) is
most of what an assertion test costs; the judge runs only trusted code (the harness and the
dataset's tests) and only ever sees the program's answers as plain data, so its sandbox can be
started once and reused. A :class:`JudgeServer` is one judge sandbox running the harness as a
*server*: for each program the host hands it, over a unix socket, the descriptors of that
program's pair (tests, verdict, request, response), and it forks a judge for them from its own
pristine state (it never runs a test or reads an answer itself). The forked judge lowers its CPU
limit to its pair's, installs the layer's whole seccomp filter on top of the server's (which
differs only in letting the server fork), and runs exactly what a fresh judge sandbox ran; the
server waits for it and tells the host it exited, and only then takes the next program.

Every program still gets a candidate sandbox of its own; what is shared is the judge sandbox, in
which no code of any program ever runs. A server serves one program at a time, and is thrown
away (its whole sandbox killed) whenever a pair does not end cleanly ("done" or "stop", then the
judge's exit within :data:`EXIT_WAIT_S`): a judge that overran its limit in C, died, or wrote
nonsense takes its server with it. After :data:`MAX_JUDGES` judges a server is replaced too (a new
hash seed; bounded output files). Servers are started from one long-lived thread (bubblewrap's
``--die-with-parent`` ends a sandbox with the *thread* that started it, and a batch's worker threads
end with the batch); they end with their :class:`JudgePool`, or with this process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cohort.rewards.sandbox.layers import Layer, SandboxError, SandboxLimits
from cohort.rewards.sandbox.processes import SandboxProcess
from cohort.rewards.sandbox.seccomp import sandbox_filter

SERVER_CPU_S = 24 * 3600  # the server's own RLIMIT_CPU (it only forks); each judge lowers its own to its pair's
MAX_JUDGES = 256  # judges one server forks before it is replaced
EXIT_WAIT_S = 1.0  # after its last verdict, a judge must have exited within this long, or its server is killed
READY_SLACK_S = 5.0  # on top of the wall-time limit: a server coming up on a busy machine

_pools: weakref.WeakKeyDictionary[object, JudgePool] = weakref.WeakKeyDictionary()  # by the Sandbox they serve
_pools_lock = threading.Lock()
_starter: ThreadPoolExecutor | None = None
_starter_lock = threading.Lock()


def _start_thread() -> ThreadPoolExecutor:
    """The one thread that starts judge servers (it lives as long as this process)."""
    global _starter
    with _starter_lock:
        if _starter is None:
            _starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cohort-judge-start")
        return _starter


def _forget_after_fork() -> None:
    """In a forked child of the host: the starter thread and the servers are the parent's (not to use or kill)."""
    global _starter, _pools
    _starter, _pools = None, weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_forget_after_fork)


def server_filter(layer: Layer) -> bytes:
    """The server's seccomp filter: the layer's without the ban on new processes (its judges add the whole one)."""
    return sandbox_filter(files=layer.kind != "bubblewrap", no_fork=False)


class JudgeServer:
    """One judge sandbox running the harness' server; :meth:`judge` hands it one pair's descriptors."""

    def __init__(self, layer: Layer, python: str, limits: SandboxLimits, root: Path, script: tuple[str, str | bytes]) -> None:
        name, content = script
        host_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        filter_read, filter_write = os.pipe()
        try:
            try:
                os.write(filter_write, layer.seccomp_filter)  # a few KiB: fits the pipe buffer
            finally:
                os.close(filter_write)
            fds = [server_end.fileno(), filter_read]
            server_limits = dataclasses.replace(limits, cpu_time_s=SERVER_CPU_S)
            self.process = SandboxProcess(
                layer, python, server_limits, root, {name: content}, name, ["server", *map(str, fds)],
                pass_fds=fds, role="judge", seccomp=server_filter(layer),
            )  # fmt: skip
        except BaseException:
            host_end.close()
            raise
        finally:
            server_end.close()
            os.close(filter_read)
        self.control = host_end
        self.judged = 0
        if self._receive(limits.wall_time_s + READY_SLACK_S) != b"ready":
            self.process.stop()
            err, _ = self.process.output("stderr", 2000)
            self.close()
            raise SandboxError(f"the judge server did not start: {err.strip()[-500:]}")
        self.process.remove_dir()  # it has read its script; its output files stay open, nothing stays on disk

    def judge(self, fds: list[int], per_test_s: float, cpu_s: int) -> None:
        """Fork a judge for one pair (the descriptors: tests, verdict, request, response); OSError if the server is gone."""
        socket.send_fds(self.control, [json.dumps([per_test_s, cpu_s]).encode()], fds)
        self.judged += 1

    def exited(self, timeout_s: float) -> bool:
        """Whether the last judge exited (the server says so) within ``timeout_s``."""
        return self._receive(timeout_s) == b"exited"

    def _receive(self, timeout_s: float) -> bytes:
        """The server's next message, or b"" on a timeout or a closed socket."""
        poller = select.poll()
        poller.register(self.control.fileno(), select.POLLIN)
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if poller.poll(max(remaining, 0) * 1000):
                try:
                    return self.control.recv(64)
                except OSError:
                    return b""
            if remaining <= 0:
                return b""

    def close(self) -> None:
        """Kill the server's sandbox (and any judge of it) and remove its directory."""
        self.control.close()
        self.process.close()


class JudgePool:
    """Idle judge servers of one sandbox configuration; at most as many exist as programs are judged at once."""

    def __init__(self, layer: Layer, python: str, limits: SandboxLimits, root: Path, script: tuple[str, str | bytes]) -> None:
        self._config = (layer, python, limits, root, script)
        self._idle: list[JudgeServer] = []
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()  # a forked child of the host neither uses nor kills its parent's servers
        self.started = 0  # servers started (for throughput measurements)

    def dispatch(self, fds: list[int], per_test_s: float, cpu_s: int) -> JudgeServer:
        """A server now judging the pair behind ``fds``: an idle one, else a new one; SandboxError if none starts."""
        server = self._take()
        if server is not None:
            try:
                server.judge(fds, per_test_s, cpu_s)
                return server
            except OSError:  # it died while idle: start a fresh one
                server.close()
        server = _start_thread().submit(JudgeServer, *self._config).result()
        with self._lock:
            self.started += 1
        try:
            server.judge(fds, per_test_s, cpu_s)
        except OSError as err:
            server.close()
            raise SandboxError(f"the judge server went away: {err}") from err
        return server

    def _take(self) -> JudgeServer | None:
        with self._lock:
            if os.getpid() != self._pid:
                self._idle, self._pid = [], os.getpid()
            return self._idle.pop() if self._idle else None

    def release(self, server: JudgeServer, clean: bool) -> None:
        """Give back a server after its pair: kept if the pair ended cleanly and the judge exited, else killed."""
        keep = clean and server.judged < MAX_JUDGES and server.exited(EXIT_WAIT_S)
        with self._lock:
            if keep and not self._closed:
                self._idle.append(server)
                return
        server.close()

    def close(self) -> None:
        """Kill every idle server (servers in use are killed when given back)."""
        with self._lock:
            self._closed = True
            idle, self._idle = (self._idle if os.getpid() == self._pid else []), []
        for server in idle:
            server.close()


def pool_for(owner: object, make: Callable[[], JudgePool]) -> JudgePool:
    """The judge pool of ``owner`` (a Sandbox), made by ``make`` on first use and closed when ``owner`` is collected."""
    with _pools_lock:
        pool = _pools.get(owner)
        if pool is None:
            pool = _pools[owner] = make()
            weakref.finalize(owner, pool.close)
        return pool


def close_pool(owner: object) -> None:
    """Kill the idle judge servers of ``owner``, if it has any (a later assertion test starts new ones)."""
    with _pools_lock:
        pool = _pools.pop(owner, None)
    if pool is not None:
        pool.close()

"""Isolation layers of the code sandbox: what each one guarantees, and which ones a request may use.

``bubblewrap``  ``bwrap`` with new user, pid, net, ipc, uts, cgroup and mount namespaces. The
                program sees a read-only view of /usr and of the Python install, a fresh ``/proc``
                (root-only files hidden, ``/proc/sys`` read-only) and ``/dev``, and can write only
                to two small tmpfs mounts: ``/sandbox`` (its working directory) and ``/dev/shm``.
                When root runs it, bwrap drops to host uid 65534 if that uid can read the
                interpreter; otherwise the sandbox user is host uid 0 in disguise, which the kernel
                exempts from RLIMIT_NPROC, so the seccomp filter also forbids creating processes.
``unshare``     (root only) new pid, net, ipc, uts and mount namespaces via util-linux ``unshare``;
                the program runs as uid 65534 in a host directory, and may write no file at all.
``setuid``      (root only) the program runs as uid 65534; no network or pid isolation; no files
                written, no new processes.
``none``        resource limits only, as this user; no files written, no new processes.

Every layer installs a seccomp filter (:mod:`cohort.rewards.sandbox.seccomp`) that closes the
kernel channels its namespaces leave open, so that nothing a program does outlives its sandbox:
:data:`DENIALS` says, per kind of channel, what closes it under each layer. Without libseccomp no
layer can do that, and every layer refuses to start (IsolationUnavailable, with the install hint).

Policy: only bubblewrap with a bound on the number of processes is adequate for untrusted code, and
it is all that ``"auto"`` (and ``"bubblewrap"``) will use: where it is missing or cannot work, asking
for it raises :class:`IsolationUnavailable` with what is missing and how to install it. A weaker
layer runs only when named explicitly, and is then announced with one warning per process.

The bwrap binary is ``bwrap`` on PATH, or the file named by the environment variable
``COHORT_BWRAP`` (an absolute path; a path that is not an executable file counts as "not installed").
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, fields

from cohort.rewards.sandbox.seccomp import libseccomp_available, sandbox_filter

NOBODY = 65534  # the conventional unprivileged uid/gid: what sandboxed programs run as
JUDGE_UID = 65533  # the judge of assertion tests under unshare/setuid: not the program's uid
ISOLATIONS = ("auto", "bubblewrap", "unshare", "setuid", "none")
BWRAP_ENV = "COHORT_BWRAP"
BWRAP_INSTALL = "install it with `sudo apt-get install bubblewrap` or `make system-deps`"
WEAKER_LAYERS = 'or name a weaker layer explicitly: isolation="unshare" (root), "setuid" (root) or "none"'
SECCOMP_INSTALL = "install libseccomp2 (`sudo apt-get install libseccomp2` or `make system-deps`)"

# What closes each kind of channel between sandboxes, under each layer (docs/rewards.md shows this table).
# "seccomp" means the system calls fail (see cohort.rewards.sandbox.seccomp).
DENIALS: dict[str, dict[str, str]] = {
    "kernel keyrings": dict.fromkeys(("bubblewrap", "unshare", "setuid", "none"), "seccomp"),
    "SysV shm/sem/msg, POSIX mqueues": {
        "bubblewrap": "ipc namespace + seccomp", "unshare": "ipc namespace + seccomp", "setuid": "seccomp", "none": "seccomp",
    },
    "abstract unix sockets": {
        "bubblewrap": "net namespace", "unshare": "net namespace + seccomp (no unix sockets)",
        "setuid": "seccomp (no unix sockets)", "none": "seccomp (no unix sockets)",
    },
    "files (/dev/shm, /tmp, any writable path)": {
        "bubblewrap": "read-only root; /sandbox and /dev/shm are tmpfs of its own",
        "unshare": "seccomp (no file written)", "setuid": "seccomp (no file written)", "none": "seccomp (no file written)",
    },
    "file metadata (mode, owner, times, xattrs, flags)": dict.fromkeys(("bubblewrap", "unshare", "setuid", "none"), "seccomp"),
    "/proc and /proc/sys": {
        "bubblewrap": "/proc/sys read-only, root-only files hidden", "unshare": "seccomp (no file written)",
        "setuid": "seccomp (no file written)", "none": "seccomp (no file written)",
    },
    "processes that outlive it": {
        "bubblewrap": "pid namespace", "unshare": "pid namespace", "setuid": "seccomp (no new processes)",
        "none": "seccomp (no new processes)",
    },
}  # fmt: skip


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


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): it could not be set up or started."""


class IsolationUnavailable(SandboxError):
    """The requested isolation layer does not work on this machine (the message says how to fix it)."""


@dataclass(frozen=True)
class Layer:
    """One isolation layer: how the sandbox is built around the interpreter."""

    kind: str  # bubblewrap | unshare | setuid | none
    host_uid: int | None = None  # uid the host-side launcher (bwrap, setuid) drops to; None: keep ours
    disable_userns: bool = False  # bubblewrap: forbid nested user namespaces
    no_fork: bool = False  # the seccomp filter also forbids creating processes (threads still allowed)
    bwrap: str | None = None  # bubblewrap: the binary

    @property
    def seccomp_filter(self) -> bytes:
        """The BPF program every process of this layer runs under (see cohort.rewards.sandbox.seccomp).

        Layers without a private file system (all but bubblewrap) also forbid writing files.
        """
        return sandbox_filter(files=self.kind != "bubblewrap", no_fork=self.no_fork)

    @property
    def process_limit(self) -> bool:
        """Whether the number of processes is bounded.

        The kernel does not apply RLIMIT_NPROC to host uid 0, which is what the sandbox user is when
        root runs bwrap without dropping to another uid; a seccomp filter then forbids fork instead.
        """
        return self.kind != "bubblewrap" or self.host_uid is not None or os.geteuid() != 0 or self.no_fork

    @property
    def adequate(self) -> bool:
        """Whether this layer is fit for untrusted code: bubblewrap with a bound on processes."""
        return self.kind == "bubblewrap" and self.process_limit

    def uid_for(self, role: str) -> int | None:
        """The host uid a sandbox of ``role`` ("program" or "judge") runs as; None: this process' uid.

        Under unshare and setuid the judge of assertion tests runs as another uid than the program,
        so that the program cannot signal, trace or read the judge through /proc.
        """
        if self.kind in ("unshare", "setuid") and role == "judge":
            return JUDGE_UID
        return self.host_uid

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
                extras += ", no new processes"
            return (
                "bubblewrap (user+pid+net+ipc+uts+cgroup+mount namespaces, read-only system, "
                f"tmpfs workdir, {who}{extras}) + seccomp (no keyrings, IPC or file metadata) + rlimits"
            )
        no_writes = "seccomp (no keyrings, IPC, unix sockets or file writes"
        if self.kind == "unshare":
            return f"unshare (pid+net+ipc+uts+mount namespaces) + uid {NOBODY} + {no_writes}) + rlimits"
        if self.kind == "setuid":
            return f"uid {NOBODY} + {no_writes}, no new processes) + rlimits (NO network or pid isolation)"
        return f"{no_writes}, no new processes) + rlimits only (NO isolation: the program runs as this user with network access)"


def find_bwrap() -> str:
    """The bwrap binary to use (``$COHORT_BWRAP`` or ``bwrap`` on PATH); IsolationUnavailable if none."""
    configured = os.environ.get(BWRAP_ENV)
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return os.path.abspath(configured)
        raise IsolationUnavailable(
            f"bubblewrap is not installed at {BWRAP_ENV}={configured!r} (not an executable file): {BWRAP_INSTALL}, "
            f"or point {BWRAP_ENV} at the bwrap binary; {WEAKER_LAYERS}"
        )
    found = shutil.which("bwrap")
    if found is None:
        raise IsolationUnavailable(
            f"bubblewrap is not installed (no `bwrap` on PATH), and untrusted code is not run without it: "
            f"{BWRAP_INSTALL}; {WEAKER_LAYERS}"
        )
    return found


def candidate_layers(isolation: str, bwrap: str | None) -> list[Layer]:
    """The layers worth probing for ``isolation``, strongest first; IsolationUnavailable if none can exist.

    ``bwrap`` is the binary :func:`find_bwrap` found (needed for "auto" and "bubblewrap"). Every
    layer needs libseccomp, to close the kernel channels its namespaces leave open.
    """
    root = os.geteuid() == 0
    if not libseccomp_available():
        raise IsolationUnavailable(
            f"libseccomp is not installed, and no isolation layer can close the kernel's channels between sandboxes "
            f"(keyrings, IPC) without it: {SECCOMP_INSTALL}"
        )
    if isolation in ("auto", "bubblewrap"):
        if bwrap is None:
            raise IsolationUnavailable(f"bubblewrap is not installed: {BWRAP_INSTALL}; {WEAKER_LAYERS}")
        # As root: host uid 65534 (needs the interpreter readable by it), else uid 0 with fork forbidden.
        variants = [(NOBODY, False), (None, True)] if root else [(None, False)]
        return [Layer("bubblewrap", uid, userns, no_fork, bwrap) for uid, no_fork in variants for userns in (True, False)]
    if isolation in ("unshare", "setuid") and not root:
        raise IsolationUnavailable(f"isolation {isolation!r} switches to uid {NOBODY} and so needs root; run as root or use bubblewrap")
    if isolation == "unshare":
        if not (shutil.which("unshare") and shutil.which("setpriv")):
            raise IsolationUnavailable("isolation 'unshare' needs util-linux's unshare and setpriv: `sudo apt-get install util-linux`")
        return [Layer("unshare", NOBODY)]
    if isolation == "setuid":  # no pid namespace: a daemonised child would outlive the sandbox
        return [Layer("setuid", NOBODY, no_fork=True)]
    return [Layer("none", no_fork=True)]


def probes_failed(isolation: str, python: str, failures: list[str]) -> IsolationUnavailable:
    """The error for a layer that exists here but could not run a probe program (one line, with a hint)."""
    detail = " ".join(failures[0].split())[:300] if failures else "no candidate layer"
    if isolation not in ("auto", "bubblewrap"):
        return IsolationUnavailable(f"isolation {isolation!r} is not available with interpreter {python!r}: {detail}")
    if os.geteuid() != 0:
        hint = "unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1, or kernel.apparmor_restrict_unprivileged_userns=0)"
    else:
        hint = "see the probe's error above"
    return IsolationUnavailable(f"bubblewrap is installed but not available with interpreter {python!r}: {detail}; {hint}; {WEAKER_LAYERS}")

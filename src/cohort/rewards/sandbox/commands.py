"""The command line that starts a sandboxed interpreter under each isolation layer.

:func:`command` builds the argv: bwrap's arguments (namespaces, a read-only view of the system and
the interpreter, a fresh /proc with /proc/sys read-only, tmpfs mounts for the working directory
and /dev/shm), or util-linux's unshare + setpriv, or nothing around the interpreter (setuid, none:
the uid switch happens in the host's fork); then the in-sandbox launcher, which applies the
resource limits and, outside bubblewrap, the seccomp filter before it runs the script.
"""

from __future__ import annotations

import functools
import json
import os
import stat
import subprocess
from pathlib import Path

from cohort.rewards.sandbox.layers import NOBODY, Layer, SandboxError, SandboxLimits

SANDBOX_DIR = "/sandbox"  # the working directory inside bubblewrap

# Runs inside the sandbox, in the interpreter that will run the script: applies the resource
# limits, installs the seccomp filter where the layer did not (read from an inherited descriptor;
# -1: none to install), tells the host (through an inherited pipe) that the sandbox came up,
# closes that pipe and runs the script as __main__ (like runpy.run_path, without the ~10 ms of
# imports runpy costs).
# A script named *.code is a code object the host compiled and marshalled for this same
# interpreter (the harness: saves compiling it in every sandbox). The program can neither lift the
# limits (hard limits are lowered and it has no privileges) nor make a failure of its own look like
# a failure of the sandbox.
LAUNCHER = """\
import os, resource as r, sys
fd, cpu, mem, nproc, fsize, nofile, bpf = (int(a) for a in sys.argv[1:8])
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
if bpf >= 0:
    import ctypes
    program = b""
    while chunk := os.read(bpf, 1 << 16):
        program += chunk
    os.close(bpf)
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    code = ctypes.create_string_buffer(program, len(program))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(Prog(len(program) // 8, ctypes.addressof(code))), 0, 0):
        sys.exit("seccomp: " + os.strerror(ctypes.get_errno()))  # PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP (filter)
os.write(fd, b"started")
os.close(fd)
del sys.argv[:8]
def run_as_main(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".code"):
        import marshal
        code = marshal.loads(data)
    else:
        code = compile(data, path, "exec", dont_inherit=True)
    namespace = sys.modules["__main__"].__dict__
    builtins = namespace["__builtins__"]
    namespace.clear()  # the script gets a fresh __main__, as if run as `python main.py`
    namespace.update(__name__="__main__", __file__=path, __builtins__=builtins, __doc__=None,
                     __package__=None, __spec__=None, __loader__=None, __cached__=None)
    exec(code, namespace)
run_as_main(sys.argv[0])
"""


def program_env(workdir: str) -> dict[str, str]:
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


def command(
    layer: Layer, python: str, limits: SandboxLimits, host_dir: Path, script: str, args: list[str], role: str,
    started_fd: int, status_fd: int | None, seccomp_fd: int,
) -> list[str]:  # fmt: skip
    """The argv that runs ``script`` from ``host_dir`` under ``layer``.

    ``seccomp_fd`` reads the layer's seccomp filter: bwrap installs it under bubblewrap, the
    launcher (after ``no_new_privs``) under the other layers.
    """
    script_path = f"{SANDBOX_DIR}/{script}" if layer.kind == "bubblewrap" else script
    launcher = [
        python, "-I", "-B", "-c", LAUNCHER,
        str(started_fd),
        str(limits.cpu_time_s),
        str(limits.memory_mb * 2**20),
        str(limits.max_processes),
        str(limits.max_output_bytes + 1),  # +1 so that a full cap of output is told apart from a cut one
        str(limits.max_open_files),
        "-1" if layer.kind == "bubblewrap" else str(seccomp_fd),
        script_path,
    ] + args  # fmt: skip
    if layer.kind == "bubblewrap":
        return _bwrap_args(layer, python, limits, host_dir, status_fd, seccomp_fd) + launcher
    if layer.kind == "unshare":
        uid = layer.uid_for(role)
        return [
            "unshare", "--pid", "--net", "--ipc", "--uts", "--mount", "--fork", "--kill-child", "--mount-proc", "--",
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--",
        ] + launcher  # fmt: skip
    return launcher


def _bwrap_args(layer: Layer, python: str, limits: SandboxLimits, host_dir: Path, status_fd: int | None, seccomp_fd: int) -> list[str]:
    """bwrap's part of the argv: namespaces, read-only system, tmpfs workdir with the files bound in."""
    tmpfs_bytes = str(limits.workdir_mb * 2**20)
    args = [layer.bwrap or "bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
    if layer.disable_userns:
        args.append("--disable-userns")
    if status_fd is not None:
        args += ["--json-status-fd", str(status_fd)]
    args += ["--seccomp", str(seccomp_fd)]
    args += _system_binds()
    for path in _interpreter_dirs(python):
        args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys"]  # bwrap leaves /proc/sys writable to uid 0 in disguise
    for path in _root_only_proc_files():
        args += ["--ro-bind", "/dev/null", path]
    args += ["--dev", "/dev", "--size", tmpfs_bytes, "--tmpfs", "/dev/shm", "--size", tmpfs_bytes, "--tmpfs", SANDBOX_DIR]
    for entry in sorted(os.listdir(host_dir)):
        if entry not in ("stdin", "stdout", "stderr"):
            args += ["--ro-bind", str(host_dir / entry), f"{SANDBOX_DIR}/{entry}"]
    return args + [
        "--chdir", SANDBOX_DIR,
        "--remount-ro", "/dev",
        "--remount-ro", "/",
        "--uid", str(NOBODY), "--gid", str(NOBODY),
        "--hostname", "sandbox",
        "--",
    ]  # fmt: skip


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

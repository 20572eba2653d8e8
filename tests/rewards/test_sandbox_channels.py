"""No channel between sandboxes: what one sandboxed program writes, the next cannot read, under every layer.

A policy that could leave a note for its next scoring (a kernel key, a SysV segment, a file in
/tmp, a sysctl, the mtime of /dev/null, a daemon) could learn answers across runs. For each kind of
kernel object that outlives a process, a writer program tries every way in, then a reader in a new
sandbox looks for the secret, and the host checks that nothing was left behind (and cleans up if it
was). Under every layer this machine offers (as root: bubblewrap both ways, unshare, setuid, none);
layers it lacks are skipped, saying why. docs/rewards.md has the table of what denies what.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import signal
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from cohort.rewards.sandbox.runner import ExecutionRequest, IsolationUnavailable, Sandbox, SandboxLimits

pytestmark = pytest.mark.timeout(120)

SYSTEM_PYTHON = "/usr/bin/python3"  # readable by uid 65534 (the venv's interpreter under /root is not)
LAYERS = {  # name -> (isolation, interpreter or None for this one)
    "auto": ("auto", None),
    "bubblewrap-system-python": ("bubblewrap", SYSTEM_PYTHON),
    "unshare": ("unshare", SYSTEM_PYTHON),
    "setuid": ("setuid", SYSTEM_PYTHON),
    "none": ("none", None),
}
KEYCTL_SYSCALLS = {"x86_64": (248, 249, 250), "aarch64": (217, 218, 219)}  # add_key, request_key, keyctl
LIBC = ctypes.CDLL(None, use_errno=True)


@pytest.fixture(scope="module", params=list(LAYERS))
def layer_sandbox(request):
    """A sandbox of one layer (two workers, so that two programs can run at once); skipped where the layer is missing."""
    isolation, python = LAYERS[request.param]
    if python is not None and not os.access(python, os.X_OK):
        pytest.skip(f"{python} not installed")
    if isolation == "auto" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap not installed")
    root = Path(tempfile.mkdtemp(prefix=f"cohort-test-channel-{request.param}-"))
    os.chmod(root, 0o755)
    try:
        yield Sandbox(SandboxLimits(wall_time_s=10.0, cpu_time_s=5), workers=2, isolation=isolation, python=python, tmp_root=root)
    except IsolationUnavailable as err:
        pytest.skip(f"isolation {isolation!r} not available here: {err}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(sandbox: Sandbox, source: str, **values: object) -> str:
    """Run one program (its ``{name}`` fields filled with reprs) and return its stdout; it must exit 0."""
    program = textwrap.dedent(source).strip().format(**{k: repr(v) for k, v in values.items()})
    result = sandbox.run(program)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _write_then_read(sandbox: Sandbox, writer: str, reader: str, **values: object) -> tuple[str, str]:
    """The writer's stdout, then a reader's in the next sandbox."""
    return _run(sandbox, writer, **values), _run(sandbox, reader, **values)


@pytest.fixture
def secret() -> tuple[str, bytes]:
    token = uuid.uuid4().hex
    return f"cohort-{token[:12]}", token.encode()


# ---------------------------------------------------------------- kernel keyrings

KEYS_WRITER = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for ring in (-3, -4, -5):  # session, user and user-session keyrings: they outlive the process
    serial = libc.syscall({add_key}, b"user", {tag}.encode(), {secret}, len({secret}), ctypes.c_long(ring))
    print("WROTE" if serial > 0 else "refused", ring, ctypes.get_errno())
"""
KEYS_READER = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
print(open("/proc/keys").read())
serial = libc.syscall({request_key}, b"user", {tag}.encode(), None, ctypes.c_long(0))
if serial > 0:
    buffer = ctypes.create_string_buffer(256)
    size = libc.syscall({keyctl}, 11, ctypes.c_long(serial), buffer, ctypes.c_long(256))  # KEYCTL_READ
    print("FOUND", buffer.raw[: max(size, 0)])
"""


def test_kernel_keyrings(layer_sandbox, secret):
    if platform.machine() not in KEYCTL_SYSCALLS:
        pytest.skip(f"keyring system call numbers not known here for {platform.machine()}")
    tag, token = secret
    add_key, request_key, keyctl = KEYCTL_SYSCALLS[platform.machine()]
    numbers = dict(add_key=add_key, request_key=request_key, keyctl=keyctl)
    wrote, read = _write_then_read(layer_sandbox, KEYS_WRITER, KEYS_READER, tag=tag, secret=token, **numbers)
    assert "WROTE" not in wrote and wrote.count("refused") == 3, wrote
    assert tag not in read and token.decode() not in read
    assert tag not in Path("/proc/keys").read_text()


# ---------------------------------------------------------------- SysV IPC and POSIX message queues

SYSV_WRITER = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
shm = libc.shmget({key}, 4096, 0o1666)  # IPC_CREAT | 0666
if shm >= 0:
    address = libc.shmat(shm, None, 0)
    if address not in (None, ctypes.c_void_p(-1).value):
        ctypes.memmove(address, {secret}, len({secret}))
        print("WROTE shm")
message = ctypes.create_string_buffer(ctypes.sizeof(ctypes.c_long) + 64)
ctypes.c_long.from_buffer(message).value = 1
message[ctypes.sizeof(ctypes.c_long) : ctypes.sizeof(ctypes.c_long) + len({secret})] = {secret}
queue = libc.msgget({key}, 0o1666)
if queue >= 0 and libc.msgsnd(queue, message, len({secret}), 0) == 0:
    print("WROTE msg")
semaphores = libc.semget({key}, 1, 0o1666)
if semaphores >= 0 and libc.semctl(semaphores, 0, 16, ctypes.c_int({value})) == 0:  # SETVAL
    print("WROTE sem")
mq = libc.mq_open(("/" + {tag}).encode(), 0o101, 0o666, None)  # O_CREAT | O_WRONLY
if mq >= 0 and libc.mq_send(mq, {secret}, len({secret}), 0) == 0:
    print("WROTE mq")
print("writer done", ctypes.get_errno())
"""
SYSV_READER = """
import ctypes, glob
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
shm = libc.shmget({key}, 0, 0)
if shm >= 0:
    address = libc.shmat(shm, None, 0o10000)  # SHM_RDONLY
    if address not in (None, ctypes.c_void_p(-1).value):
        print("FOUND shm", ctypes.string_at(address, 32))
message = ctypes.create_string_buffer(ctypes.sizeof(ctypes.c_long) + 64)
queue = libc.msgget({key}, 0)
if queue >= 0 and libc.msgrcv(queue, message, 64, 0, 0o4000) > 0:  # IPC_NOWAIT
    print("FOUND msg", message.raw)
semaphores = libc.semget({key}, 0, 0)
if semaphores >= 0:
    print("FOUND sem", libc.semctl(semaphores, 0, 12))  # GETVAL
mq = libc.mq_open(("/" + {tag}).encode(), 0o4000)  # O_RDONLY | O_NONBLOCK
if mq >= 0:
    buffer = ctypes.create_string_buffer(1 << 20)
    if libc.mq_receive(mq, buffer, 1 << 20, None) > 0:
        print("FOUND mq", buffer.value)
for path in glob.glob("/proc/sysvipc/*"):
    for line in open(path).read().splitlines()[1:]:
        print("KEY", line.split()[0])
"""


def _remove_ipc_objects(key: int, tag: str) -> None:
    """Remove what a writer that was not stopped left in the host's ipc namespace."""
    for get, control in ((LIBC.shmget, LIBC.shmctl), (LIBC.msgget, LIBC.msgctl)):
        ident = get(key, 0, 0)
        if ident >= 0:
            control(ident, 0, None)  # IPC_RMID
    semaphores = LIBC.semget(key, 0, 0)
    if semaphores >= 0:
        LIBC.semctl(semaphores, 0, 0)
    LIBC.mq_unlink(("/" + tag).encode())


def test_sysv_ipc_and_posix_message_queues(layer_sandbox, secret):
    tag, token = secret
    key, value = int(token[:7], 16) + 1, int(token[7:11], 16) + 1  # a SysV key and a semaphore value only this test uses
    try:
        wrote, read = _write_then_read(layer_sandbox, SYSV_WRITER, SYSV_READER, key=key, value=value, tag=tag, secret=token)
    finally:
        _remove_ipc_objects(key, tag)
    assert "writer done" in wrote
    assert "FOUND" not in read and token.decode() not in read, read
    assert f"KEY {key}\n" not in read


# ---------------------------------------------------------------- abstract unix sockets (two programs at once)

SOCKET_LISTENER = """
import socket
try:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(b"\\0" + {tag}.encode())
    server.listen(1)
    server.settimeout(3)
    print("BOUND", flush=True)
    connection, _ = server.accept()
    connection.sendall({secret})
    print("SENT")
except OSError as error:
    print("refused", error)
"""
SOCKET_CLIENT = """
import socket, time
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(b"\\0" + {tag}.encode())
        print("FOUND", client.recv(100))
        break
    except OSError as error:
        last = error
        time.sleep(0.05)
else:
    print("never connected", last)
"""


def test_abstract_unix_sockets(layer_sandbox, secret):
    """A socket lives only as long as its process, so the two programs run at the same time here."""
    tag, token = secret
    programs = [textwrap.dedent(p).strip().format(tag=repr(tag), secret=repr(token)) for p in (SOCKET_LISTENER, SOCKET_CLIENT)]
    listener, client = layer_sandbox.run_many([ExecutionRequest(p) for p in programs])
    assert "SENT" not in listener.stdout, listener.stdout
    assert "never connected" in client.stdout and token.decode() not in client.stdout, client.stdout


# ---------------------------------------------------------------- files in shared places

FILES_WRITER = """
import os
tops = [os.path.join("/", name) for name in os.listdir("/") if name not in ("proc", "sys")]
directories = [top for top in tops if os.path.isdir(top) and not os.path.islink(top)]
for top in list(directories):
    try:
        directories += [os.path.join(top, name) for name in os.listdir(top) if os.path.isdir(os.path.join(top, name))]
    except OSError:
        pass
for directory in sorted(set(directories)):
    path = os.path.join(directory, {tag})
    try:
        with open(path, "wb") as handle:
            handle.write({secret})
        print("WROTE", path)
    except OSError:
        pass
"""
FILES_READER = """
import glob
for path in glob.glob("/" + {tag}) + glob.glob("/*/" + {tag}) + glob.glob("/*/*/" + {tag}):
    print("FOUND", path, open(path, "rb").read())
"""


def _host_files_named(tag: str) -> list[str]:
    return [p for p in [f"/{tag}", *Path("/").glob(f"*/{tag}"), *Path("/").glob(f"*/*/{tag}")] if os.path.lexists(p)]


def test_files_in_every_shared_directory(layer_sandbox, secret):
    """/tmp, /var/tmp, /dev/shm, /run/lock, ...: every directory two levels deep."""
    tag, token = secret
    try:
        wrote, read = _write_then_read(layer_sandbox, FILES_WRITER, FILES_READER, tag=tag, secret=token)
        left = [str(p) for p in _host_files_named(tag)]
    finally:
        for path in _host_files_named(tag):
            os.remove(path)
    assert "FOUND" not in read, read
    assert left == []
    if layer_sandbox.isolation_kind != "bubblewrap":  # outside bubblewrap nothing at all; inside, its own tmpfs only
        assert "WROTE" not in wrote, wrote
    else:
        assert {line.split()[1] for line in wrote.splitlines()} <= {f"/sandbox/{tag}", f"/dev/shm/{tag}"}, wrote


# ---------------------------------------------------------------- /proc/sys and file metadata

SYSCTL = "/proc/sys/fs/lease-break-time"
PROC_WRITER = """
import os
try:
    with open({sysctl}, "w") as handle:
        handle.write(str({value}))
    print("WROTE sysctl")
except OSError as error:
    print("refused sysctl", error)
for name, change in (("utime", lambda: os.utime("/dev/null", ns=({atime}, {mtime}))), ("chmod", lambda: os.chmod("/dev/null", 0o666))):
    try:
        change()
        print("WROTE", name)
    except OSError as error:
        print("refused", name, error)
"""
PROC_READER = """
import os
print("sysctl", open({sysctl}).read().strip())
print("mtime", os.stat("/dev/null").st_mtime_ns)
"""


def test_proc_sys_and_device_metadata(layer_sandbox, secret):
    """A host sysctl and the mtime of /dev/null (host uid 0 in disguise owns it under bubblewrap as root)."""
    if not os.path.exists(SYSCTL):
        pytest.skip(f"{SYSCTL} missing on this kernel")
    _, token = secret
    original, null = Path(SYSCTL).read_text().strip(), os.stat("/dev/null")
    values = dict(sysctl=SYSCTL, value=int(original) + 1, atime=null.st_atime_ns, mtime=null.st_mtime_ns + 1 + int(token[:6], 16))
    try:
        wrote, read = _write_then_read(layer_sandbox, PROC_WRITER, PROC_READER, **values)
        after = Path(SYSCTL).read_text().strip(), os.stat("/dev/null")
    finally:
        Path(SYSCTL).write_text(original)
        os.utime("/dev/null", ns=(null.st_atime_ns, null.st_mtime_ns))
        os.chmod("/dev/null", null.st_mode & 0o7777)
    assert "WROTE" not in wrote, wrote
    assert after[0] == original and after[1].st_mtime_ns == null.st_mtime_ns and after[1].st_mode == null.st_mode
    assert f"sysctl {original}" in read and f"mtime {null.st_mtime_ns}" in read


# ---------------------------------------------------------------- processes that outlive their sandbox

DAEMON = """
import ctypes, os, time
try:
    pid = os.fork()
except OSError as error:
    print("refused", error)
    raise SystemExit(0)
if pid == 0:
    os.setsid()
    ctypes.CDLL(None).prctl(15, {marker}.encode(), 0, 0, 0)
    time.sleep(30)
    os._exit(0)
print("FORKED")
"""


def _processes_named(name: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and Path(f"/proc/{entry.name}/comm").read_text().strip() == name:
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_no_process_outlives_its_sandbox(layer_sandbox, secret):
    """A child in a new session (out of the sandbox's process group) that would hold any channel open."""
    marker = "d" + secret[1].decode()[:14]
    try:
        _run(layer_sandbox, DAEMON, marker=marker)
        deadline = time.monotonic() + 3.0  # the kernel may take a moment to reap a killed pid namespace
        while _processes_named(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = _processes_named(marker)
    finally:
        for pid in _processes_named(marker):
            os.kill(pid, signal.SIGKILL)
    assert survivors == []

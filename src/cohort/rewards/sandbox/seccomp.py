"""The kernel calls a sandboxed program may not make: seccomp filters built with libseccomp.

A program must not leave anything behind that a later sandbox could read: that would let a policy
carry answers from one scoring to the next (or from one completion to another). Namespaces close
some of these channels (a new ipc namespace takes its SysV objects and message queues with it, a new
network namespace its abstract unix sockets, a private tmpfs its files); the rest are closed here,
as seccomp filters that make the calls fail with an errno. Groups of rules (see :func:`sandbox_filter`):

* ``CHANNELS``, under every layer: kernel keyrings (``add_key``, ``keyctl``, ``request_key``: a
  user's keyrings outlive every namespace), SysV shared memory, semaphores and message queues,
  POSIX message queues, ``io_uring`` (its operations bypass seccomp) and ``bpf`` (pinned objects).
* ``METADATA``, under every layer: changes to the mode, owner, times, extended attributes or inode
  flags of a file. Under bubblewrap the device nodes in ``/dev`` are the host's (``/dev/null`` is
  bound in writable), and a sandbox user that is host uid 0 in disguise owns them: their mtime
  alone would carry 64 bits from one sandbox to the next.
* ``FILES``, under the layers without a private file system (unshare, setuid, none): no file may be
  created, opened for writing, renamed, linked or removed, no unix socket made (abstract or
  named), and no system-wide state changed (mounts, hostname, clock, modules, swap, accounting,
  the kernel log). The program writes only to its inherited stdout and stderr.
* ``NO_FORK``: no new processes (threads stay allowed). Bubblewrap as uid 0 in disguise (which
  RLIMIT_NPROC does not bound), and setuid and none, which have no pid namespace to take a
  daemonised child down with the sandbox.

The BPF program is the native architecture's; libseccomp kills a process that makes a system call
through another ABI (i386 ``int 0x80``, x32), so none of this can be stepped around that way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import tempfile

ALLOW = 0x7FFF0000  # SCMP_ACT_ALLOW
MASKED_EQ, EQ = 7, 4  # enum scmp_compare
CLONE_THREAD = 0x00010000
AF_UNIX = 1
# New system calls share one number on every architecture since Linux 5.1; libseccomp releases
# older than the kernel do not know their names, so these are added by number.
BY_NUMBER = {"setxattrat": 463, "removexattrat": 466, "file_setattr": 469}
# ioctl requests that set inode flags or fsxattrs (chattr): FS_IOC_SETFLAGS, FS_IOC32_SETFLAGS, FS_IOC_FSSETXATTR
SET_INODE_FLAGS = (0x40086602, 0x40046602, 0x401C5820)

Rule = tuple[str, int, tuple[tuple[int, int, int, int], ...]]  # (syscall, errno, conditions that must all hold)
# A condition is (argument index, comparison, a, b): EQ compares the argument with a; MASKED_EQ
# tests (argument & a) == b.


def _plain(names: str, code: int = errno.EPERM) -> list[Rule]:
    return [(name, code, ()) for name in names.split()]


CHANNELS: list[Rule] = _plain(
    "add_key keyctl request_key "
    "shmget shmat shmdt shmctl semget semop semtimedop semctl msgget msgsnd msgrcv msgctl ipc "
    "mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr bpf"
) + _plain("io_uring_setup io_uring_enter io_uring_register", errno.ENOSYS)

METADATA: list[Rule] = _plain(
    "chmod fchmod fchmodat fchmodat2 chown fchown lchown fchownat utime utimes futimesat utimensat "
    "setxattr lsetxattr fsetxattr removexattr lremovexattr fremovexattr setxattrat removexattrat file_setattr"
) + [("ioctl", errno.EPERM, ((1, EQ, request, 0),)) for request in SET_INODE_FLAGS]

_WRITE_FLAGS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC)  # any one of them: the open is refused
FILES: list[Rule] = (
    [("open", errno.EACCES, ((1, MASKED_EQ, flag, flag),)) for flag in _WRITE_FLAGS]
    + [("openat", errno.EACCES, ((2, MASKED_EQ, flag, flag),)) for flag in _WRITE_FLAGS]
    + _plain("openat2", errno.ENOSYS)  # its flags sit in a struct seccomp cannot read; callers fall back to openat
    + _plain(
        "creat open_by_handle_at mkdir mkdirat rmdir unlink unlinkat rename renameat renameat2 link linkat "
        "symlink symlinkat mknod mknodat truncate",
        errno.EACCES,
    )
    + [("socket", errno.EAFNOSUPPORT, ((0, EQ, AF_UNIX, 0),))]
    + _plain(
        "mount umount2 pivot_root fsopen fsconfig fsmount fspick move_mount open_tree mount_setattr swapon swapoff "
        "reboot kexec_load kexec_file_load init_module finit_module delete_module settimeofday clock_settime "
        "clock_adjtime adjtimex sethostname setdomainname acct quotactl quotactl_fd syslog iopl ioperm"
    )
)

NO_FORK: list[Rule] = [
    ("fork", errno.EAGAIN, ()),
    ("vfork", errno.EAGAIN, ()),
    ("clone3", errno.ENOSYS, ()),  # its flags sit in a struct; the C library then falls back to clone
    ("clone", errno.EAGAIN, ((0, MASKED_EQ, CLONE_THREAD, 0),)),  # flags & CLONE_THREAD == 0: a process
]


def libseccomp_available() -> bool:
    """Whether filters can be built here (libseccomp2 installed)."""
    return _library() is not None


@functools.lru_cache(maxsize=None)
def sandbox_filter(*, files: bool, no_fork: bool) -> bytes:
    """The BPF program for one layer: CHANNELS and METADATA, plus FILES and NO_FORK where asked.

    Raises OSError when libseccomp is missing or refuses a rule (callers turn that into
    IsolationUnavailable with the install hint).
    """
    rules = CHANNELS + METADATA + (FILES if files else []) + (NO_FORK if no_fork else [])
    return _build(tuple(rules))


@functools.lru_cache(maxsize=None)
def _library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


class _ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _syscall_number(lib: ctypes.CDLL, name: str) -> int | None:
    """The native number of ``name``; None where this architecture has no such call (e.g. fork on arm64)."""
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number >= 0:
        return number
    return BY_NUMBER.get(name)  # negative: unknown to this libseccomp, or a multiplexed pseudo-call


def _build(rules: tuple[Rule, ...]) -> bytes:
    """Compile ``rules`` (allow everything else) into a BPF program with libseccomp."""
    lib = _library()
    if lib is None:
        raise OSError(errno.ENOENT, "libseccomp is not installed (`sudo apt-get install libseccomp2` or `make system-deps`)")
    ctx = lib.seccomp_init(ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        for name, code, conditions in rules:
            number = _syscall_number(lib, name)
            if number is None:
                continue
            compares = (_ArgCmp * len(conditions))(*(_ArgCmp(*condition) for condition in conditions))
            status = lib.seccomp_rule_add_array(ctx, 0x00050000 | code, number, len(conditions), compares if conditions else None)
            if status != 0:
                raise OSError(-status, f"libseccomp refused the rule for {name}: {os.strerror(-status)}")
        with tempfile.TemporaryFile() as handle:
            status = lib.seccomp_export_bpf(ctx, handle.fileno())
            if status != 0:
                raise OSError(-status, f"libseccomp could not export the filter: {os.strerror(-status)}")
            handle.seek(0)
            return handle.read()
    finally:
        lib.seccomp_release(ctx)

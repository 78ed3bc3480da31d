"""The confinement of `exec --strict`: the kernel interfaces (namespaces, tmpfs mounts,
capabilities, a seccomp filter), and the two small programs that apply them.

`python -P -m anonproxy.cli.confine helper FD DIR...` runs first, inside new user, network and
mount namespaces (made by `unshare`): it brings loopback up, mounts a fresh tmpfs over each DIR
(where anonproxy keeps its state: the dashboard token, pid files, tor's data, keys), makes the
proxy's listening socket, checks that the seccomp filter can be installed, passes the socket
over FD and stays alive to hold the namespaces. `... confine run CWD -- ARGV` is what `nsenter`
starts inside those namespaces: it changes to CWD (entering a mount namespace resets the
working directory to its root), makes a process namespace of the program's own and forks its
first process (PID 1 there: it mounts that namespace's /proc, reaps orphans and passes signals
on), which forks the program: it gives up every capability, installs the filter and execs
ARGV, so the program and all its children inherit the filter and none can undo the mounts.

Why a process namespace: signals are allowed by uid, so a program running as you could stop,
kill or reload (SIGHUP) your `serve`, your browser, anything of yours; in its own namespace it
sees and signals only its own processes, and they all end with it (the kernel kills what is
left in a namespace when its PID 1 ends); nor can it read their memory (/proc/PID/mem needs
the process in sight).

Why both a filter and a mount namespace: a socket named by a path (dbus, systemd-resolved,
docker, avahi, X11, ssh-agent, the journal, ...) is not per network namespace and may live
anywhere, so the filter refuses `socket()` for every address family that is not per network
namespace (everything but AF_INET, AF_INET6 and AF_NETLINK) with EACCES; `socketpair()` stays
allowed, so a program's own pipes and IPC work. It also refuses `io_uring_setup` (io_uring can
make sockets without `socket()`) and kills the program on any other syscall ABI (x32, or
32-bit calls on a 64-bit kernel, where socket() hides behind socketcall). A filter cannot
hide files, so the mount namespace hides anonproxy's own directories behind empty tmpfs:
reading the token is then impossible, not merely useless. Everything else — the working
directory, $HOME, /tmp, stdio — is the program's as before.

Why a classic BPF program rather than libseccomp: the filter is 14 instructions; the
maintained Python bindings of libseccomp ship only with distributions (not on PyPI) and
pyseccomp has had no release since 2021, so a ctypes `prctl` call keeps us free of either.

Invariants: the program never starts unconfined (any failure here exits before exec); it runs
with no capabilities and no_new_privs, so it can neither unmount the tmpfs nor enter other
namespaces; the filter allows nothing on an architecture we have no table for (the helper
fails, and --strict says so). What it does not do: the program runs as your user, so files
outside the hidden directories stay readable; abstract unix sockets are per network namespace
and need no filter (the filter refuses AF_UNIX sockets altogether).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import time

PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SECCOMP_MODE_FILTER = 2
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
# what the layers between `exec` and the program pass on (a terminal's Ctrl-C reaches the
# whole process group anyway; `kill` of exec reaches only exec, which passes it to us)
PASSED_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)

# architecture -> (AUDIT_ARCH_*, __NR_socket); io_uring_setup is 425 on every one of them
ARCHES = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198),
          "riscv64": (0xC00000F3, 198)}
NR_IO_URING_SETUP = 425
X32_SYSCALL_BIT = 0x40000000
ALLOWED_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)

RET_KILL_PROCESS, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
LD_ABS, JEQ, JGE, RET = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, ..|JGE|K, BPF_RET|K


class ConfineError(Exception):
    """The confinement could not be set up; the message is one sentence for the user."""


def filter_program(machine: str) -> list[tuple[int, int, int, int]]:
    """The seccomp filter as (code, jt, jf, k) instructions for `machine` (platform.machine())."""
    if machine not in ARCHES:
        raise ConfineError(f"there is no seccomp filter for this architecture, {machine}")
    arch, nr_socket = ARCHES[machine]
    arg0 = 16 + (0 if sys.byteorder == "little" else 4)  # low half of seccomp_data.args[0]
    # (code, k, jump-if-true label, jump-if-false label); None: the next instruction
    body = [
        (LD_ABS, 4, None, None),                                  # seccomp_data.arch
        (JEQ, arch, None, "kill"),
        (LD_ABS, 0, None, None),                                  # seccomp_data.nr
        (JGE, X32_SYSCALL_BIT, "kill", None),
        (JEQ, NR_IO_URING_SETUP, "enosys", None),
        (JEQ, nr_socket, None, "allow"),
        (LD_ABS, arg0, None, None),                               # socket()'s family
        *[(JEQ, int(family), "allow", None) for family in ALLOWED_FAMILIES],
        (RET, RET_ERRNO | errno.EACCES, None, None),
    ]
    labels = {"allow": RET_ALLOW, "enosys": RET_ERRNO | errno.ENOSYS, "kill": RET_KILL_PROCESS}
    where = {name: len(body) + i for i, name in enumerate(labels)}
    program: list[tuple[int, int, int, int]] = []
    for i, (code, k, yes, no) in enumerate(body):
        jt, jf = (0 if label is None else where[label] - i - 1 for label in (yes, no))
        program.append((code, jt, jf, k))
    return program + [(RET, 0, 0, k) for k in labels.values()]


_libc = ctypes.CDLL(None, use_errno=True)
if sys.platform == "linux":  # elsewhere there is no prctl, and main() refuses to run
    _libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    _libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    _libc.unshare.argtypes = [ctypes.c_int]


def _prctl(option: int, arg2: int = 0, arg3: int = 0, what: str = "prctl") -> None:
    if _libc.prctl(option, arg2, arg3, 0, 0) != 0:
        raise ConfineError(f"{what} failed: {os.strerror(ctypes.get_errno())}")


def install_filter() -> None:
    """no_new_privs, then the filter: this process and everything it execs are bound by it."""
    program = filter_program(platform.machine())
    raw = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(raw, len(raw))

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = _Prog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    _prctl(PR_SET_NO_NEW_PRIVS, 1, what="setting no_new_privs")
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog),
           what="installing the seccomp filter")


def drop_capabilities() -> None:
    """Empty the bounding and ambient sets: what we exec next has no capability, even as the
    namespace's root, so it cannot unmount the tmpfs or enter other namespaces."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        _prctl(PR_CAPBSET_DROP, cap, what="dropping capabilities")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="clearing ambient capabilities")


def hide(directory: str) -> None:
    """Mount an empty private tmpfs over `directory` (in our own mount namespace)."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if _libc.mount(b"tmpfs", os.fsencode(directory), b"tmpfs", flags, b"mode=0700") != 0:
        raise ConfineError(f"hiding {directory} failed: {os.strerror(ctypes.get_errno())}")


def helper(fd: int, directories: list[str]) -> None:
    """Inside the new namespaces: see the module docstring."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for directory in directories:
        if os.path.isdir(directory):
            hide(directory)
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    channel = socket.socket(fileno=fd)
    install_filter()  # on ourselves: proves the kernel takes it before the program depends on it
    socket.send_fds(channel, [b"L"], [listener.fileno()])
    while True:
        time.sleep(3600)


def run(cwd: str, argv: list[str]) -> int:
    """Inside the namespaces (entered by nsenter): `argv` confined in a process namespace of
    its own; its exit code (128+N for signal N)."""
    try:
        os.chdir(cwd)
    except OSError as error:
        raise ConfineError(f"cannot start in {cwd}: {error.strerror}") from None
    if _libc.unshare(CLONE_NEWPID | CLONE_NEWNS) != 0:
        raise ConfineError("making the program's process namespace failed: "
                           f"{os.strerror(ctypes.get_errno())}")
    _pass_signals()  # (before the fork: none may end us with a child left behind)
    first = os.fork()  # PID 1 of the new namespace
    if first == 0:
        _passing_to.clear()
        _pending.clear()  # (the outer process passes on what it got before the fork)
        os._exit(_first_process(argv))
    return _wait(first)


def _first_process(argv: list[str]) -> int:
    """PID 1 of the program's namespace: its own /proc (the namespace's processes only), then
    the program, whose exit code it gives; orphans are reaped meanwhile."""
    try:
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        if _libc.mount(b"proc", b"/proc", b"proc", flags, None) != 0:
            raise ConfineError("mounting the program's /proc failed: "
                               f"{os.strerror(ctypes.get_errno())}")
        program = os.fork()
        if program == 0:
            _become(argv)
        return _wait(program, reap=True)
    except (ConfineError, OSError) as error:
        print(f"anonproxy: exec --strict: {error}", file=sys.stderr)
        return 126


def _become(argv: list[str]) -> None:
    """The program: no capabilities, the filter, then `argv` (never returns)."""
    for sig in PASSED_ON:  # (a signal before the exec ends it, as it would the program)
        signal.signal(sig, signal.SIG_DFL)
    try:
        drop_capabilities()
        install_filter()
    except (ConfineError, OSError) as error:  # (never started unconfined)
        print(f"anonproxy: exec --strict: {error}", file=sys.stderr)
        os._exit(126)
    try:
        os.execvp(argv[0], argv)
    except OSError as error:
        print(f"anonproxy: exec {argv[0]}: {error.strerror}", file=sys.stderr)
    os._exit(127)


_passing_to: list[int] = []  # the child PASSED_ON signals go to, once there is one
_pending: list[int] = []  # signals that came before it: passed on once it is there


def _pass_signals() -> None:
    for sig in PASSED_ON:
        signal.signal(sig, _pass_on)


def _pass_on(number: int, _frame: object) -> None:
    if not _passing_to:
        _pending.append(number)
        return
    try:
        os.kill(_passing_to[-1], number)
    except ProcessLookupError:
        pass  # (it ended already)


def _wait(child: int, reap: bool = False) -> int:
    """Wait for `child`, passing PASSED_ON signals to it; its exit code (128+N for signal N).
    `reap`: other children that end meanwhile (orphans, for PID 1) are waited for too."""
    _passing_to.append(child)
    while _pending:
        _pass_on(_pending.pop(0), None)
    while True:
        pid, status = os.waitpid(-1 if reap else child, 0)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def main(args: list[str]) -> int:
    if sys.platform != "linux":  # exec --strict (wrap.py) says so before it ever runs us
        print("anonproxy: exec --strict: confining a program needs Linux (namespaces, seccomp), "
              f"and this system is {sys.platform}", file=sys.stderr)
        return 2
    try:
        if args[:1] == ["helper"]:
            helper(int(args[1]), args[2:])
        elif args[:1] == ["run"] and args[2:3] == ["--"] and args[3:]:
            return run(args[1], args[3:])
    except (ConfineError, OSError, subprocess.CalledProcessError) as error:
        print(f"anonproxy: exec --strict: {error}", file=sys.stderr)
        return 126
    print("usage: python -m anonproxy.cli.confine helper FD DIR... | run CWD -- CMD ARGS...",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

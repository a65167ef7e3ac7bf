"""The seccomp filter every sandbox runs under: kernel surface that a session's tools never need is refused.

In the spirit of Docker's default profile, but written as a deny list over an allow-by-default filter.
The sandbox's namespaces, its unprivileged user and its empty capability set already make the privileged
calls fail; what they leave open is kernel code that an unprivileged process may reach and that is not
namespaced (the key rings behind /proc/keys, vsock to the hypervisor) or is a frequent source of kernel
exploits (bpf, perf events, userfaultfd, io_uring). The filter closes those, and refuses the privileged
calls a second time (mounts, modules, kexec, namespaces, clocks, ...). An allow list like Docker's would
also refuse calls nobody listed, but it breaks ordinary programs whenever they (or glibc) adopt a call the
list lacks, in ways the model cannot diagnose; the deny list keeps every such program working.

Denied calls fail with EPERM, or ENOSYS where programs treat the call as missing and fall back (clone3 to
clone, io_uring to plain calls); nothing is killed. Kept on purpose:

- ptrace (and process_vm_readv/writev, pidfd_getfd): strace and gdb are ordinary debugging tools. The
  sandbox's PID namespace shows only the session's own processes, all of the same user and without
  capabilities, and since Linux 4.8 seccomp checks a call again after a tracer changed it, so tracing is no
  way around this filter (Docker allows ptrace from 4.8 on too).

The 32-bit system call ABIs (i386 through `int 0x80`, x32) reach the same kernel code under other numbers,
and i386's multiplexed socketcall hides its arguments from any filter, so every call through them fails
with ENOSYS, as on a kernel built without them. Nothing 32-bit is installed in the sandbox's /usr anyway.

The filter is compiled to BPF once per server by libseccomp (through the `pyseccomp` bindings) and handed
to bubblewrap (`--seccomp FD`), which loads it just before it runs the sandbox's first program.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

from corral.hands.sandbox.launcher import SandboxUnavailable

DENIED_CALLS = (
    # Key rings are per user, not per sandbox: every session runs as the same user, so a key one session
    # adds would show in another's /proc/keys.
    "add_key",
    "keyctl",
    "request_key",
    # Kernel attack surface an unprivileged process can reach.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "fanotify_init",
    "lookup_dcookie",
    # File systems and mounts (the sandbox's mounts are bubblewrap's, set before the filter applies).
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "swapon",
    "swapoff",
    "quotactl",
    "quotactl_fd",
    # File handles bypass the path walk, and with it the sandbox's view of the file system.
    "open_by_handle_at",
    "name_to_handle_at",
    # New namespaces (clone's namespace flags are refused below).
    "unshare",
    "setns",
    # The machine itself: kernel code, power, clocks, hardware, accounting, the kernel log, terminals.
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "ioperm",
    "iopl",
    "acct",
    "syslog",
    "vhangup",
    # Page placement of other processes' memory.
    "move_pages",
    "migrate_pages",
    # Obsolete calls that nothing current uses.
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "nfsservctl",
)

# Calls that programs probe for and do without when they are missing.
UNSUPPORTED_CALLS = (
    # Its flags sit in a struct the filter cannot read; glibc falls back to clone, whose flags it can.
    "clone3",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)

# clone's flags that make new namespaces (CLONE_NEWTIME exists only for clone3 and unshare).
_CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
# vsock is not namespaced: from a sandbox with only `lo` it still reaches the hypervisor and its host.
_AF_VSOCK = 40
_PER_LINUX = 0
# The kernel reads the address family as a 32-bit int: comparing all 64 bits would let AF_VSOCK with
# junk in the upper half through.
_LOW_32_BITS = 0xFFFFFFFF


@dataclass(frozen=True)
class SeccompFilter:
    """A compiled seccomp program (classic BPF, as the kernel and `bwrap --seccomp` take it)."""

    bpf: bytes

    def open(self) -> int:
        """A new descriptor from which bubblewrap reads the program (it reads to the end, so one per sandbox).

        The descriptor is close-on-exec; `subprocess`'s `pass_fds` hands it over to the child all the same.
        """
        fd = os.memfd_create("corral-seccomp", os.MFD_CLOEXEC)
        try:
            os.write(fd, self.bpf)
            os.lseek(fd, 0, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd


def compile_sandbox_filter() -> SeccompFilter:
    """The sandbox filter for this machine's architecture; SandboxUnavailable without libseccomp."""
    seccomp = _libseccomp()
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    # Calls through another ABI than the native one (i386's int 0x80, x32) all fail.
    rules.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.ERRNO(errno.ENOSYS))
    deny, unsupported = seccomp.ERRNO(errno.EPERM), seccomp.ERRNO(errno.ENOSYS)
    for name in DENIED_CALLS:
        if native_syscall_exists(name):
            rules.add_rule(deny, name)
    for name in UNSUPPORTED_CALLS:
        if native_syscall_exists(name):
            rules.add_rule(unsupported, name)
    for flag in _CLONE_NAMESPACE_FLAGS.values():
        rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    rules.add_rule(deny, "socket", seccomp.Arg(0, seccomp.MASKED_EQ, _LOW_32_BITS, _AF_VSOCK))
    # Personas other than plain Linux, and flags such as ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC (as in
    # flatpak, even the query with 0xffffffff: gdb and the sanitizers carry on without it).
    rules.add_rule(deny, "personality", seccomp.Arg(0, seccomp.NE, _PER_LINUX))

    with open(os.memfd_create("corral-seccomp-export"), "w+b") as program:
        rules.export_bpf(program)
        program.seek(0)
        return SeccompFilter(program.read())


def native_syscall_exists(name: str) -> bool:
    """Whether this machine's architecture has the call (aarch64 has no iopl, x86_64 no umount)."""
    seccomp = _libseccomp()
    # Negative numbers are libseccomp's pseudo-calls for other architectures, or unknown names.
    return int(seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)) >= 0


def _libseccomp() -> Any:
    """libseccomp's bindings, imported on first use: they load libseccomp.so.2, which may be missing."""
    try:
        import pyseccomp  # type: ignore[import-untyped]  # ctypes bindings without type information
    except (ImportError, RuntimeError) as exc:
        raise SandboxUnavailable(
            f"libseccomp is not available ({exc}); run scripts/setup or `apt-get install libseccomp2`"
        ) from exc
    return pyseccomp

"""The seccomp filter of every sandbox: kernel surface that tools never need is refused, ordinary work runs.

Real bubblewrap sandboxes as the server starts them (as the sandbox user when run as root), without
cgroups or workspace images, which the filter does not depend on.
"""

from __future__ import annotations

import base64
import hashlib
import io
import platform
import secrets
import shlex
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pyseccomp  # type: ignore[import-untyped]
import pytest

from corral.hands.builtin.bash import BashSession
from corral.hands.sandbox.bubblewrap import BubblewrapLauncher, sandbox_identity
from corral.hands.sandbox.launcher import SandboxUnavailable
from corral.hands.sandbox.seccomp import DENIED_CALLS, UNSUPPORTED_CALLS, SeccompFilter, native_syscall_exists

EPERM, ENOSYS = 1, 38


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    """A data directory the sandbox user can traverse, as /var/lib/corral is (pytest's tmp_path is not)."""
    with tempfile.TemporaryDirectory(prefix="corral-seccomp-test-") as name:
        path = Path(name)
        path.chmod(0o711)
        yield path


@pytest.fixture(scope="module")
def launcher(data_dir: Path) -> BubblewrapLauncher:
    # No skip: a machine where the filtered sandbox cannot start must fail this suite loudly.
    return BubblewrapLauncher.detect(data_dir / "workspaces")


class Sessions:
    """Sandboxed shells on workspaces of their own, as sessions have them."""

    def __init__(self, data_dir: Path, launcher: BubblewrapLauncher) -> None:
        self._data_dir = data_dir
        self._launcher = launcher
        self._shells: dict[str, BashSession] = {}

    @property
    def owner(self) -> tuple[int, int]:
        return self._launcher.identity.uid, self._launcher.identity.gid

    def workspace(self, name: str) -> Path:
        path = self._data_dir / "workspaces" / name
        path.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(path, *self.owner)
        return path

    async def run(self, command: str, session: str = "sesn_a") -> tuple[str, bool]:
        if session not in self._shells:
            self._shells[session] = BashSession(self.workspace(session), self._launcher)
        result = await self._shells[session].run(command, timeout_s=60)
        return result.content[0]["text"], result.is_error

    async def close(self) -> None:
        for shell in self._shells.values():
            await shell.close()
        for name in self._shells:
            shutil.rmtree(self._data_dir / "workspaces" / name, ignore_errors=True)


@pytest.fixture
async def sessions(data_dir: Path, launcher: BubblewrapLauncher) -> AsyncIterator[Sessions]:
    sessions = Sessions(data_dir, launcher)
    yield sessions
    await sessions.close()


def number(name: str) -> int:
    return int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))


# Python in the sandbox makes each raw call (harmless arguments: without the filter every one of them
# fails for another reason or succeeds) and prints the errno it got, 0 for success.
RAW_CALLS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for spec in sys.argv[1:]:
    label, nr, *args = spec.split(":")
    result = libc.syscall(int(nr), *(ctypes.c_long(int(arg)) for arg in args))
    if result == 0 and label == "clone":
        os._exit(0)  # the child, had the call made one
    print(label, ctypes.get_errno() if result == -1 else 0)
"""


async def raw_calls(sessions: Sessions, calls: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """The errno of each call, keyed `name` or `name/what-is-special` as in `calls`."""
    specs = [":".join((label, str(number(label.split("/")[0])), *map(str, args))) for label, args in calls.items()]
    output, _ = await sessions.run(f"python3 -c {shlex.quote(RAW_CALLS)} {shlex.join(specs)}")
    return {label: int(errno) for label, errno in (line.split() for line in output.splitlines())}


async def test_key_rings_cannot_be_used(sessions: Sessions) -> None:
    # add_key and request_key with NULL strings (EFAULT unfiltered), and
    # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, create), which succeeds unfiltered.
    errors = await raw_calls(
        sessions,
        {"add_key": (0, 0, 0, 0, -4), "keyctl": (0, -4, 1), "request_key": (0, 0, 0, 0)},
    )
    assert errors == {"add_key": EPERM, "keyctl": EPERM, "request_key": EPERM}


async def test_a_key_one_session_tries_to_add_never_shows_in_another_sessions_proc_keys(sessions: Sessions) -> None:
    name = f"corral-secret-{secrets.token_hex(4)}"
    add_key = (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
        # add_key("user", name, "payload", 7, KEY_SPEC_USER_KEYRING)
        f"print(libc.syscall({number('add_key')}, b'user', b'{name}', b'payload', 7, -4), ctypes.get_errno())"
    )
    output, _ = await sessions.run(f"python3 -c {shlex.quote(add_key)}", session="sesn_a")
    assert output.split() == ["-1", str(EPERM)]
    listing, _ = await sessions.run("cat /proc/keys", session="sesn_b")
    assert name not in listing


async def test_namespaces_cannot_be_made_or_joined(sessions: Sessions) -> None:
    clone_newuser_with_sigchld = 0x10000000 | 17
    errors = await raw_calls(
        sessions,
        {"unshare": (0x10000000,), "setns": (-1, 0), "clone": (clone_newuser_with_sigchld, 0, 0, 0, 0)},
    )
    assert errors == {"unshare": EPERM, "setns": EPERM, "clone": EPERM}
    output, failed = await sessions.run("unshare --user --map-root-user id")
    assert failed
    assert "Operation not permitted" in output


async def test_clone3_is_reported_missing_so_that_programs_fall_back_to_clone(sessions: Sessions) -> None:
    assert await raw_calls(sessions, {"clone3": (0, 0)}) == {"clone3": ENOSYS}


async def test_mounts_and_file_handles_are_refused(sessions: Sessions) -> None:
    calls: dict[str, tuple[int, ...]] = {
        "mount": (0, 0, 0, 0, 0),
        "umount2": (0, 0),
        "pivot_root": (0, 0),
        "fsopen": (0, 0),
        "open_by_handle_at": (-1, 0, 0),
        "name_to_handle_at": (-1, 0, 0, 0, 0),
    }
    assert await raw_calls(sessions, calls) == dict.fromkeys(calls, EPERM)


async def test_kernel_attack_surface_is_refused(sessions: Sessions) -> None:
    errors = await raw_calls(
        sessions,
        {
            "bpf": (-1, 0, 0),
            "perf_event_open": (0, 0, -1, -1, 0),
            "userfaultfd": (1,),  # UFFD_USER_MODE_ONLY, which any user may ask for
            "io_uring_setup": (1, 0),
            "init_module": (0, 0, 0),
            "socket": (40, 1, 0),  # AF_VSOCK: not namespaced, it reaches the hypervisor
            "socket/vsock-high-bits": (0x1_0000_0028, 1, 0),  # the kernel reads the family as a 32-bit int
            "personality": (0x0040000,),  # ADDR_NO_RANDOMIZE
        },
    )
    assert errors == {
        "bpf": EPERM,
        "perf_event_open": EPERM,
        "userfaultfd": EPERM,
        "io_uring_setup": ENOSYS,
        "init_module": EPERM,
        "socket": EPERM,
        "socket/vsock-high-bits": EPERM,
        "personality": EPERM,
    }


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the 32-bit ABIs checked here are x86's")
async def test_system_calls_through_the_32_bit_abis_are_all_refused(sessions: Sessions) -> None:
    # getpid through i386's `int 0x80` (number 20) and through x32 (x86_64's 39 with bit 30 set): both
    # would return the PID unfiltered (x32 where the kernel has it).
    calls = """
import ctypes, mmap
code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20; int 0x80; ret
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
i386_getpid = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
libc = ctypes.CDLL(None, use_errno=True)
x32 = libc.syscall(0x40000000 | 39)
print(i386_getpid(), x32, ctypes.get_errno())
"""
    output, failed = await sessions.run(f"python3 -c {shlex.quote(calls)}")
    assert not failed, output
    assert output.split() == [str(-ENOSYS), "-1", str(ENOSYS)]


async def test_tracing_the_sessions_own_processes_still_works(sessions: Sessions) -> None:
    # ptrace is kept for strace and gdb: the PID namespace holds only the session's own processes.
    trace = (
        "import ctypes, os, signal\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    signal.pause()\n"
        "attached = libc.ptrace(16, child, 0, 0) == 0\n"  # PTRACE_ATTACH
        "os.kill(child, signal.SIGKILL)\n"
        "print('attached' if attached else f'refused {ctypes.get_errno()}')\n"
    )
    output, failed = await sessions.run(f"python3 -c {shlex.quote(trace)}")
    assert not failed, output
    assert output.strip() == "attached"


def a_wheel(name: str, version: str, module: str) -> bytes:
    """A minimal pure-Python wheel holding `name.py` with `module` as its source."""
    files = {
        f"{name}.py": module.encode(),
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    files[f"{name}-{version}.dist-info/RECORD"] = (record + f"{name}-{version}.dist-info/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
    return buffer.getvalue()


async def test_ordinary_work_still_runs(sessions: Sessions) -> None:
    workspace = sessions.workspace("sesn_a")
    wheel = workspace / "greeting-1.0-py3-none-any.whl"
    wheel.write_bytes(a_wheel("greeting", "1.0", "def hello():\n    return 'hello from a wheel'\n"))
    shutil.chown(wheel, sessions.owner[0], sessions.owner[1])
    threads_and_processes = (
        "import subprocess, threading\n"
        "out = []\n"
        "worker = threading.Thread(target=lambda: out.append(subprocess.run(['echo', 'child'], capture_output=True,"
        " text=True).stdout.strip()))\n"
        "worker.start(); worker.join(); print('python', *out)\n"
    )
    script = (
        "set -e; echo one two | wc -w; "
        f"python3 -c {shlex.quote(threads_and_processes)}; "
        "git init -q repo && cd repo && echo notes > notes.txt && git add notes.txt && "
        "git -c user.name=agent -c user.email=agent@example.com commit -q -m first && git log --format=%s && cd .. ; "
        f"python3 -m pip install -q --no-index --no-deps --disable-pip-version-check --target /tmp/site {wheel.name}; "
        "PYTHONPATH=/tmp/site python3 -c 'import greeting; print(greeting.hello())'; "
        "rg --no-heading notes repo/notes.txt"
    )
    output, failed = await sessions.run(script)
    assert not failed, output
    assert output.split("\n")[:4] == ["2", "python child", "first", "hello from a wheel"]
    assert output.rstrip().endswith("notes")


def test_the_probe_fails_when_the_kernel_rejects_the_filter(data_dir: Path) -> None:
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    assert bwrap is not None
    not_a_program = SeccompFilter(b"\xff" * 8)
    launcher = BubblewrapLauncher(sandbox_identity(), bwrap, setpriv, seccomp=not_a_program)
    with pytest.raises(SandboxUnavailable, match="seccomp filter could not be applied"):
        launcher.probe(data_dir / "workspaces")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the names are checked against x86_64's table")
def test_every_refused_call_is_known_on_x86_64() -> None:
    # Calls the native architecture lacks are left out of the filter, so a misspelt name would be too.
    assert [name for name in (*DENIED_CALLS, *UNSUPPORTED_CALLS) if not native_syscall_exists(name)] == []

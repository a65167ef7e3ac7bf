"""Where a session's workspace lives on the host: a plain directory, or a filesystem of its own with a size cap.

A model can fill its workspace. As a plain directory (`DirectoryVolumes`) it shares the disk with the server's
database and every other session, and a disk filler in one session stops them all. `ImageVolumes` gives each
session an ext4 filesystem in a sparse image file of a fixed size (`--sandbox-workspace-size`), loop-mounted on
the workspace directory while the session's tools are in use: a disk filler gets ENOSPC at its cap and nobody
else notices. Per-file limits (RLIMIT_FSIZE) would not do: many files each under the limit still fill the disk.

Cost, measured on the reference machine (2 vCPU, ext4): an empty 10 GiB image holds ~240 KiB of real data
(ext4 without the resize inode, inode tables initialised lazily); a new workspace is a sparse copy of a
template image made once at start (~0.5 ms) plus a loop device and the mount syscall (~1.5 ms), done here
through ioctl/mount(2) rather than by running losetup/mount (~10 ms). Deleting files inside punches holes in
the image (`discard`), so the host disk gets the space back.

The images are sparse, so together they may promise more than the data disk has: ten 10 GiB workspaces on a
disk with 50 GiB free. Attaching a workspace is therefore admission-controlled: it is refused (a tool error
naming the fix) unless what every attached workspace may still grow (its image's size minus the blocks it
already has) plus what this one may grow fits in the disk's free space less a reserve (`--sandbox-disk-reserve`)
that is kept for the database and the logs. A detached workspace cannot grow, so it only counts through the
blocks it already holds, which the free space already shows. The attached workspaces are read from the mount
table, so servers sharing a data directory share one budget; a lock file serialises their admissions.

While a server has a workspace attached it holds an exclusive `flock` on the image: a second server on the
same data directory cannot mount it as well (two mounts of one ext4 image corrupt it), and a mount whose
image nobody holds was left by a server that died; `sweep` unmounts those at start.

Mounting needs root (CAP_SYS_ADMIN) and loop devices; where that is missing the server says so at start and
every tool call fails with the reason, unless the operator turns the cap off.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from corral.hands.sandbox.cgroups import format_bytes
from corral.hands.sandbox.launcher import SandboxUnavailable

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_SIZE = 10 * 1024**3
# Kept free for the database and the logs when no --sandbox-disk-reserve is given: 1 GiB, or 1/20 of a disk
# smaller than 20 GiB (a 1 GiB reserve on a small test disk would leave no room for any workspace).
DEFAULT_DISK_RESERVE = 1024**3
DEFAULT_DISK_RESERVE_SHARE = 20

_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_SET_FD = 0x4C00
_LOOP_SET_STATUS64 = 0x4C04
_LOOP_CONFIGURE = 0x4C0A
_LO_FLAGS_AUTOCLEAR = 4  # the loop device detaches itself when the filesystem is unmounted
_LOOP_MAJOR = 7
_MS_NOSUID, _MS_NODEV, _MS_NOATIME = 2, 4, 1024
_MNT_DETACH = 2
_MOUNT_OPTIONS = b"discard,noinit_itable"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class WorkspaceVolumes(Protocol):
    """Makes a session's workspace directory usable and puts it away again. Every method blocks."""

    def attach(self, workspace: Path) -> None:
        """Create the workspace if it is new, and make it usable at `workspace` (mode 0700)."""
        ...

    def detach(self, workspace: Path) -> None:
        """The session is idle or archived: release what `attach` holds; the files stay."""
        ...

    def delete(self, workspace: Path) -> None:
        """Detach and delete the workspace's files for good."""
        ...


def make_workspace_dir(workspace: Path, owner: tuple[int, int] | None) -> None:
    """The workspace directory, mode 0700, owned by the sandbox user; its parent is traversable only."""
    if workspace.is_dir():
        return
    # The sandbox user must be able to reach its workspace to mount it, but not list its neighbours.
    workspace.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    workspace.mkdir(mode=0o700, exist_ok=True)
    # mkdir's mode is filtered by the umask; make sure no one else can look in.
    os.chmod(workspace, 0o700)
    if owner is not None:
        os.chown(workspace, *owner)


class DirectoryVolumes:
    """Workspaces as plain directories on the data disk (no size cap)."""

    def __init__(self, owner: tuple[int, int] | None = None) -> None:
        self._owner = owner

    def attach(self, workspace: Path) -> None:
        make_workspace_dir(workspace, self._owner)

    def detach(self, workspace: Path) -> None:
        pass

    def delete(self, workspace: Path) -> None:
        shutil.rmtree(workspace, ignore_errors=True)


class RefusingVolumes:
    """Stands in when the configured workspace cap cannot be enforced: every tool call fails with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def attach(self, workspace: Path) -> None:
        raise SandboxUnavailable(f"the workspace cannot be provided: {self.reason}")

    def detach(self, workspace: Path) -> None:
        pass

    def delete(self, workspace: Path) -> None:
        shutil.rmtree(workspace, ignore_errors=True)


def default_disk_reserve(disk_bytes: int) -> int:
    """The reserve kept for the database and the logs on a disk of `disk_bytes` when none is configured."""
    return min(DEFAULT_DISK_RESERVE, disk_bytes // DEFAULT_DISK_RESERVE_SHARE)


class ImageVolumes:
    """Each workspace is an ext4 image `<root>/<session>.ext4` of `size_bytes`, mounted on `<root>/<session>`.

    `reserve_bytes` is the free space on the disk under `root` that workspaces may never take (None: the
    default, `default_disk_reserve`).
    """

    def __init__(
        self, root: Path, size_bytes: int, owner: tuple[int, int] | None = None, reserve_bytes: int | None = None
    ) -> None:
        self.root = root
        self.size_bytes = size_bytes
        self.reserve_bytes = reserve_bytes
        self._owner = owner or (os.geteuid(), os.getegid())
        uid, gid = self._owner
        self._template = root / f".template-{size_bytes}-{uid}-{gid}.ext4"
        # Workspace -> an open fd on its image, flock'ed while this server has it attached.
        self._held: dict[Path, int] = {}

    @classmethod
    def detect(
        cls, root: Path, size_bytes: int, owner: tuple[int, int] | None = None, reserve_bytes: int | None = None
    ) -> ImageVolumes:
        """Volumes for this machine, after making the template image; else SandboxUnavailable naming the fix.

        A disk without room for even one workspace is only logged: the room may come back before a session
        needs it, and every attach checks again."""
        fix = "or pass --sandbox-workspace-size none to keep workspaces as plain directories without a size cap"
        if os.geteuid() != 0:
            raise SandboxUnavailable(f"capping the workspace size needs a server running as root (to mount); {fix}")
        if shutil.which("mkfs.ext4") is None:
            raise SandboxUnavailable(f"mkfs.ext4 is missing; run scripts/setup or `apt-get install e2fsprogs`, {fix}")
        if not os.path.exists("/dev/loop-control"):
            raise SandboxUnavailable(f"this machine has no loop devices (/dev/loop-control); `modprobe loop`, {fix}")
        volumes = cls(root, size_bytes, owner, reserve_bytes)
        try:
            volumes.make_template()
        except (OSError, subprocess.CalledProcessError) as exc:
            size = format_bytes(size_bytes)
            raise SandboxUnavailable(f"cannot make a {size} workspace image ({exc}); {fix}") from exc
        refusal = volumes._refusal(size_bytes)
        if refusal is not None:
            log.warning("workspaces will be refused until the data disk has room: %s", refusal)
        return volumes

    def image(self, workspace: Path) -> Path:
        return workspace.with_name(f"{workspace.name}.ext4")

    def make_template(self) -> None:
        """An empty, formatted image whose root directory is the sandbox user's (mode 0700, no lost+found)."""
        if self._template.exists():
            return
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.root, prefix=".template-", suffix=".tmp")
        scratch = Path(name)
        try:
            os.ftruncate(fd, self.size_bytes)
            os.close(fd)
            uid, gid = self._owner
            subprocess.run(
                [
                    "mkfs.ext4", "-q", "-F", "-m", "0",
                    # No reserved GDT blocks (the image never grows online): 240 KiB instead of 4 MiB per image.
                    "-O", "^resize_inode",
                    "-E", f"lazy_itable_init=1,lazy_journal_init=1,root_owner={uid}:{gid}",
                    str(scratch),
                ],
                check=True,
                capture_output=True,
            )  # fmt: skip
            mount_point = Path(tempfile.mkdtemp(dir=self.root, prefix=".template-mnt-"))
            try:
                _loop_mount(scratch, mount_point)
                try:
                    (mount_point / "lost+found").rmdir()
                    os.chmod(mount_point, 0o700)
                finally:
                    _unmount(mount_point)
            finally:
                mount_point.rmdir()
            os.rename(scratch, self._template)
        finally:
            with contextlib.suppress(FileNotFoundError):
                scratch.unlink()

    def attach(self, workspace: Path) -> None:
        if workspace in self._held and os.path.ismount(workspace):
            return
        image = self.image(workspace)
        # Held from the admission until the mount is in the mount table, where the next admission counts it.
        with self._admission_lock():
            # Still mounted with nobody holding it: left by a server that died; the same image, so reuse it
            # (being mounted, it is already counted).
            mounted = os.path.ismount(workspace)
            refusal = None if mounted else self._refusal(_headroom(image, default=self.size_bytes))
            if refusal is not None:
                log.warning("refused a workspace to session %s: %s", workspace.name, refusal)
                raise SandboxUnavailable(refusal)
            if not image.exists():
                self._create_image(workspace, image)
            held = self._held.pop(workspace, None)
            if held is None:
                held = _hold(image)
                if held is None:
                    raise SandboxUnavailable(
                        "this session's workspace is in use by another Corral server on this machine; give "
                        "each server a --data-dir of its own"
                    )
            try:
                if not mounted:
                    make_workspace_dir(workspace, self._owner)
                    _loop_mount(image, workspace)
            except BaseException:
                os.close(held)
                raise
            self._held[workspace] = held

    @contextlib.contextmanager
    def _admission_lock(self) -> Iterator[None]:
        """Excludes other admissions, in this process (one open file each) and in other servers on this root."""
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        fd = os.open(self.root / ".admission.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _refusal(self, wanted: int) -> str | None:
        """Why a workspace that may grow by `wanted` bytes does not fit beside the attached ones and the
        reserve; None if it fits. Names no host path: the model reads it."""
        disk = os.statvfs(self.root)
        free = disk.f_bavail * disk.f_frsize  # what the server's database could still use
        reserve = self.reserve_bytes
        if reserve is None:
            reserve = default_disk_reserve(disk.f_blocks * disk.f_frsize)
        promised = [_headroom(self.image(point), default=0) for point in self.attached()]
        if sum(promised) + wanted + reserve <= free:
            return None
        return (
            f"not enough free disk for a workspace: the data disk has {format_bytes(free)} free, "
            f"{format_bytes(reserve)} of it kept for the database, {format_bytes(sum(promised))} promised to the "
            f"{len(promised)} workspace(s) in use, and this one may grow by {format_bytes(wanted)}; free space on "
            "the data disk, let sessions go idle, or lower --sandbox-workspace-size"
        )

    def attached(self) -> list[Path]:
        """The workspaces mounted now, by this server or another on the same root (one that died included)."""
        # The mount table holds canonical paths; the data dir may be reached through a symlink.
        real_root = self.root.resolve()
        workspaces = [self.root / point.name for point in _mount_points_below(real_root) if point.parent == real_root]
        return [workspace for workspace in workspaces if self.image(workspace).exists()]

    def _create_image(self, workspace: Path, image: Path) -> None:
        self.make_template()
        scratch = image.with_name(f".{image.name}.tmp")
        _sparse_copy(self._template, scratch)
        try:
            if workspace.is_dir() and any(workspace.iterdir()):
                self._migrate(workspace, scratch)
            os.rename(scratch, image)
        finally:
            with contextlib.suppress(FileNotFoundError):
                scratch.unlink()

    def _migrate(self, workspace: Path, image: Path) -> None:
        """A workspace made before the cap (a plain directory): move its files into the new image."""
        log.warning("moving workspace %s into a %s image", workspace, format_bytes(self.size_bytes))
        mount_point = Path(tempfile.mkdtemp(dir=self.root, prefix=".migrate-"))
        try:
            _loop_mount(image, mount_point)
            try:
                result = subprocess.run(["cp", "-a", f"{workspace}/.", str(mount_point)], capture_output=True)
                if result.returncode != 0:
                    raise SandboxUnavailable(
                        f"cannot move workspace {workspace} into a {format_bytes(self.size_bytes)} image: "
                        f"{result.stderr.decode(errors='replace').strip()}; raise --sandbox-workspace-size"
                    )
            finally:
                _unmount(mount_point)
        finally:
            mount_point.rmdir()
        for entry in list(workspace.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def detach(self, workspace: Path) -> None:
        held = self._held.pop(workspace, None)
        if held is None and os.path.ismount(workspace):
            held = _hold(self.image(workspace))
            if held is None:
                return  # another live server has it
        try:
            if os.path.ismount(workspace):
                _unmount(workspace)
        finally:
            if held is not None:
                os.close(held)

    def sweep(self) -> int:
        """Unmount the workspaces that servers which are gone left mounted; returns how many."""
        swept = 0
        for mount_point in self.attached():
            held = _hold(self.image(mount_point))
            if held is None:
                continue  # a live server's
            try:
                _unmount(mount_point)
                swept += 1
            except OSError:
                log.warning("cannot unmount stale workspace %s", mount_point, exc_info=True)
            finally:
                os.close(held)
        return swept

    def delete(self, workspace: Path) -> None:
        self.detach(workspace)
        if os.path.ismount(workspace):
            log.warning("not deleting workspace %s: another server on this machine has it mounted", workspace)
            return
        with contextlib.suppress(FileNotFoundError):
            self.image(workspace).unlink()
        shutil.rmtree(workspace, ignore_errors=True)


def _headroom(image: Path, default: int) -> int:
    """How many more bytes of the disk `image` may take: its size less the blocks it has (`default`: none yet)."""
    try:
        info = image.stat()
    except FileNotFoundError:
        return default
    return max(0, info.st_size - info.st_blocks * 512)


def _hold(image: Path) -> int | None:
    """An fd on `image` with an exclusive flock, or None if another process holds it."""
    fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _mount_points_below(root: Path) -> list[Path]:
    found: list[Path] = []
    prefix = f"{root}/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].replace("\\040", " ")
            if point.startswith(prefix):
                found.append(Path(point))
    return found


def _sparse_copy(source: Path, target: Path) -> None:
    """Copy only the allocated extents of `source` (a few hundred KiB of a 10 GiB image); mode 0600."""
    fd_out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(source, "rb") as handle:
            fd_in = handle.fileno()
            size = os.fstat(fd_in).st_size
            os.ftruncate(fd_out, size)
            position = 0
            while position < size:
                try:
                    data = os.lseek(fd_in, position, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:
                        break  # only a hole is left
                    raise
                hole = os.lseek(fd_in, data, os.SEEK_HOLE)
                offset = data
                while offset < hole:
                    copied = os.copy_file_range(fd_in, fd_out, hole - offset, offset, offset)
                    if copied == 0:
                        break
                    offset += copied
                position = hole
    finally:
        os.close(fd_out)


def _loop_info(image: Path) -> bytes:
    # struct loop_info64: 5 x u64 (device, inode, rdevice, offset, sizelimit), 4 x u32 (number,
    # encrypt_type, encrypt_key_size, flags), file_name[64], crypt_name[64], encrypt_key[32], 2 x u64.
    name = str(image).encode()[:63]
    return struct.pack("=5Q4I64s64s32s2Q", 0, 0, 0, 0, 0, 0, 0, 0, _LO_FLAGS_AUTOCLEAR, name, b"", b"", 0, 0)


def _attach_loop(image: Path) -> tuple[str, int]:
    """A loop device backed by `image`: its path and an open fd, which the caller must hold until the
    mount does (the device detaches itself when the last user lets go)."""
    image_fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(20):
                number = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                if not os.path.exists(device):
                    # No udev (containers): make the node ourselves.
                    with contextlib.suppress(FileExistsError):
                        os.mknod(device, 0o660 | stat.S_IFBLK, os.makedev(_LOOP_MAJOR, number))
                loop_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                try:
                    config = struct.pack("=2I", image_fd, 0) + _loop_info(image) + bytes(64)
                    try:
                        fcntl.ioctl(loop_fd, _LOOP_CONFIGURE, config)
                    except OSError as exc:
                        if exc.errno not in (errno.EINVAL, errno.ENOTTY):
                            raise
                        # Kernels before 5.8 have no LOOP_CONFIGURE.
                        fcntl.ioctl(loop_fd, _LOOP_SET_FD, image_fd)
                        fcntl.ioctl(loop_fd, _LOOP_SET_STATUS64, _loop_info(image))
                except OSError as exc:
                    os.close(loop_fd)
                    if exc.errno == errno.EBUSY:
                        continue  # another process took this device first: ask for the next free one
                    raise
                return device, loop_fd
            raise OSError(errno.EBUSY, "no free loop device")
        finally:
            os.close(control)
    finally:
        os.close(image_fd)


def _loop_mount(image: Path, target: Path) -> None:
    """Mount ext4 `image` on `target` through a fresh loop device (nosuid, nodev)."""
    device, hold = _attach_loop(image)
    try:
        flags = _MS_NOSUID | _MS_NODEV | _MS_NOATIME
        if _libc.mount(device.encode(), str(target).encode(), b"ext4", flags, _MOUNT_OPTIONS) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"mount {image} on {target}: {os.strerror(code)}")
    finally:
        os.close(hold)


def _unmount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), 0) == 0:
        return
    code = ctypes.get_errno()
    if code == errno.EBUSY:
        # A process still has a file open in there: detach now, the kernel finishes when it lets go.
        log.warning("workspace %s is busy; detaching it lazily", target)
        if _libc.umount2(str(target).encode(), _MNT_DETACH) == 0:
            return
        code = ctypes.get_errno()
    if code not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not mounted any more
        raise OSError(code, f"unmount {target}: {os.strerror(code)}")

"""An environment's `config.packages`, installed once outside the sandbox and shown to it read-only.

Each distinct set of package lists gets a directory `<root>/<hash>/` holding what the managers installed:

    apt/   `apt-get download` of the packages and the dependencies the host lacks, unpacked with `dpkg -x`
    pip/   `python3 -m pip install --target`, wheels only
    npm/   `npm install --prefix --ignore-scripts`

Nothing from a package runs during installation (wheels only, no npm lifecycle scripts, no maintainer
scripts), and the installers run as the sandbox user with a scrubbed environment, so an API client's
package list cannot run code on the host. The directory is built under a temporary name and renamed into
place when complete, so a crash never leaves half an installation that looks finished; installs of the same
lists are serialized, so concurrent sessions of one environment install once. The second session of an
environment finds the directory and installs nothing.

Inside the sandbox the directory is mounted at `/opt/corral/packages` and PATH, PYTHONPATH, NODE_PATH and
LD_LIBRARY_PATH point into it (see `InstalledPackages.sandbox_env`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.hands.sandbox.launcher import SAFE_PATH

log = logging.getLogger("corral.packages")

SANDBOX_MOUNT = "/opt/corral/packages"
SUPPORTED = ("apt", "npm", "pip")  # the order the spec gives: alphabetical
UNSUPPORTED = ("cargo", "gem", "go")
_FORMAT = 1  # bump when the directory layout changes, so old caches are not reused
_INSTALL_TIMEOUT_S = 900.0
_FAILURE_MEMORY_S = 60.0
_OUTPUT_TAIL = 2000
# Installer configuration that may pass from the server's environment (mirrors, CA bundles, proxies); nothing else.
_PASS_ENV = re.compile(
    r"(PIP_[A-Z_]+|NPM_CONFIG_[A-Z_]+|npm_config_[a-z_]+|(HTTPS?|NO|ALL)_PROXY|(https?|no|all)_proxy"
    r"|SSL_CERT_FILE|SSL_CERT_DIR|NODE_EXTRA_CA_CERTS|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE)"
)
_SPEC = {
    "apt": re.compile(r"[a-z0-9][a-z0-9+.-]*(=[A-Za-z0-9.+~:-]+)?"),
    "pip": re.compile(
        r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._, -]+\])?\s*([<>=!~]=?=?\s*[A-Za-z0-9.*+!_-]+\s*,?\s*)*"
    ),
    "npm": re.compile(r"(@[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*(@[\w.^~<>=| *+-]+)?"),
}


class PackageInstallError(Exception):
    """Installation failed; the message names the manager and package, and carries the installer's output."""


@dataclass(frozen=True)
class InstalledPackages:
    """A finished installation directory on the host."""

    root: Path

    def sandbox_env(self, base_path: str = SAFE_PATH) -> list[tuple[str, str]]:
        """PATH, PYTHONPATH, NODE_PATH and LD_LIBRARY_PATH for a sandbox that mounts `root` at SANDBOX_MOUNT."""
        mount = Path(SANDBOX_MOUNT)
        paths, python, node, libraries = [], [], [], []
        if (self.root / "pip").is_dir():
            python.append(mount / "pip")
            if (self.root / "pip" / "bin").is_dir():
                paths.append(mount / "pip" / "bin")
        if (self.root / "npm" / "node_modules").is_dir():
            node.append(mount / "npm" / "node_modules")
            paths.append(mount / "npm" / "node_modules" / ".bin")
        apt = self.root / "apt"
        if apt.is_dir():
            for sub in ("usr/local/bin", "usr/bin", "bin", "usr/sbin", "sbin"):
                if (apt / sub).is_dir():
                    paths.append(mount / "apt" / sub)
            for lib in sorted((apt / "usr" / "lib").glob("*-linux-gnu")) + sorted((apt / "lib").glob("*-linux-gnu")):
                libraries.append(mount / "apt" / lib.relative_to(apt))
            for sub in ("usr/lib", "lib"):
                if (apt / sub).is_dir():
                    libraries.append(mount / "apt" / sub)
            if (apt / "usr/lib/python3/dist-packages").is_dir():
                python.append(mount / "apt" / "usr/lib/python3/dist-packages")
        env = [("PATH", ":".join([*map(str, paths), base_path]))]
        for name, entries in (("PYTHONPATH", python), ("NODE_PATH", node), ("LD_LIBRARY_PATH", libraries)):
            if entries:
                env.append((name, ":".join(map(str, entries))))
        return env


def package_lists(packages: dict[str, Any] | None) -> dict[str, list[str]]:
    """The non-empty lists of an environment's resolved `config.packages`."""
    lists: dict[str, list[str]] = {}
    for manager, entries in (packages or {}).items():
        if manager != "type" and entries:
            lists[manager] = [str(entry).strip() for entry in entries]
    return lists


def cache_key(lists: dict[str, list[str]]) -> str:
    document = json.dumps({"format": _FORMAT, "lists": lists}, sort_keys=True)
    return hashlib.sha256(document.encode()).hexdigest()[:24]


def validate(lists: dict[str, list[str]]) -> None:
    """Refuse managers Corral cannot install and entries that are not plain package specifiers."""
    for manager in lists:
        if manager not in SUPPORTED:
            raise PackageInstallError(
                f"config.packages.{manager} is not supported by Corral yet (supported: {', '.join(SUPPORTED)}); "
                "remove it from the environment or install those tools another way"
            )
    for manager, entries in lists.items():
        for entry in entries:
            if not _SPEC[manager].fullmatch(entry):
                raise PackageInstallError(
                    f"config.packages.{manager}: {entry!r} is not a package specifier Corral installs "
                    "(name with an optional version; no URLs, paths or options)"
                )


class PackageCache:
    """Installs environments' packages under `root`, once per distinct set of lists.

    `run_as` (uid, gid) runs the installers as that user (the sandbox user when the server is root).
    `installs` counts the installations actually performed (a cached hit does not count).
    """

    def __init__(self, root: Path, *, run_as: tuple[int, int] | None = None, setpriv: str | None = None) -> None:
        self.root = root
        self._run_as = run_as
        self._setpriv = setpriv or shutil.which("setpriv")
        self._locks: dict[str, asyncio.Lock] = {}
        self._failures: dict[str, tuple[float, str]] = {}
        self._apt_updated = False
        self.installs = 0

    async def ensure(self, packages: dict[str, Any] | None) -> InstalledPackages | None:
        """The installation for these package lists (installing first if needed); None when there are none."""
        lists = package_lists(packages)
        if not lists:
            return None
        validate(lists)
        key = cache_key(lists)
        target = self.root / key
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if (target / ".complete").is_file():
                return InstalledPackages(target)
            failed = self._failures.get(key)
            if failed is not None and time.monotonic() - failed[0] < _FAILURE_MEMORY_S:
                raise PackageInstallError(failed[1])
            try:
                await self._install(lists, target)
            except PackageInstallError as exc:
                self._failures[key] = (time.monotonic(), str(exc))
                raise
            self._failures.pop(key, None)
            return InstalledPackages(target)

    async def _install(self, lists: dict[str, list[str]], target: Path) -> None:
        started = time.monotonic()
        await asyncio.to_thread(self._prepare_root)
        work = self.root / f".tmp-{target.name}-{os.getpid()}-{int(time.time() * 1000)}"
        await asyncio.to_thread(self._make_work_dir, work)
        try:
            for manager in SUPPORTED:
                if manager in lists:
                    await getattr(self, f"_install_{manager}")(lists[manager], work)
            await asyncio.to_thread(self._finish, work, target, lists)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        self.installs += 1
        log.info("installed packages %s into %s in %.1f s", lists, target, time.monotonic() - started)

    # -- managers ---------------------------------------------------------------------------------

    async def _install_pip(self, specs: list[str], work: Path) -> None:
        python = shutil.which("python3", path=SAFE_PATH)
        if python is None:
            raise PackageInstallError("pip packages need python3 on the host (apt-get install python3-pip)")
        argv = [
            python, "-m", "pip", "install", "--target", str(work / "pip"), "--only-binary=:all:",
            "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--no-warn-script-location",
            "--progress-bar", "off", *specs,
        ]  # fmt: skip
        code, output = await self._run(argv, work)
        if code != 0:
            if "No module named pip" in output:
                raise PackageInstallError("pip packages need pip on the host: apt-get install python3-pip")
            raise PackageInstallError(_failure("pip", specs, output, "(pip installs wheels only)"))

    async def _install_npm(self, specs: list[str], work: Path) -> None:
        if shutil.which("npm", path=SAFE_PATH) is None:
            raise PackageInstallError("npm packages need npm on the host: apt-get install npm")
        argv = [
            "npm", "install", "--prefix", str(work / "npm"), "--ignore-scripts", "--no-audit", "--no-fund",
            "--no-update-notifier", "--cache", str(work / ".home" / "npm-cache"), "--", *specs,
        ]  # fmt: skip
        code, output = await self._run(argv, work)
        if code != 0:
            raise PackageInstallError(_failure("npm", specs, output, "(npm lifecycle scripts do not run)"))

    async def _install_apt(self, specs: list[str], work: Path) -> None:
        for tool in ("apt-get", "apt-cache", "dpkg", "dpkg-query"):
            if shutil.which(tool, path=SAFE_PATH + ":/usr/sbin:/sbin") is None:
                raise PackageInstallError(f"apt packages need {tool} on the host (a Debian-based host)")
        names = [spec.split("=", 1)[0] for spec in specs]
        needed = await self._apt_closure(names, specs, work)
        downloads = self._mkdir(work / ".debs")
        pinned = {spec.split("=", 1)[0]: spec for spec in specs}
        argv = ["apt-get", "download", "-q", *(pinned.get(name, name) for name in needed)]
        code, output = await self._run(argv, work, cwd=downloads)
        if code != 0:
            raise PackageInstallError(_failure("apt", specs, output))
        self._mkdir(work / "apt")
        for deb in sorted(downloads.glob("*.deb")):
            code, output = await self._run(["dpkg", "-x", str(deb), str(work / "apt")], work)
            if code != 0:
                raise PackageInstallError(f"apt: could not unpack {deb.name}: {output[-_OUTPUT_TAIL:]}")

    async def _apt_closure(self, names: list[str], specs: list[str], work: Path) -> list[str]:
        """The packages among `names` and their dependencies that the host does not have installed."""
        argv = [
            "apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
            "--no-breaks", "--no-replaces", "--no-enhances", *names,
        ]  # fmt: skip
        code, output = await self._run(argv, work)
        if code != 0 and os.geteuid() == 0 and not self._apt_updated:
            # A fresh machine may have no (or stale) package lists: refresh them, once per server process.
            self._apt_updated = True
            await self._run(["apt-get", "update", "-qq"], work, as_root=True)
            code, output = await self._run(argv, work)
        if code != 0:
            raise PackageInstallError(_failure("apt", specs, output))
        closure = [line.strip() for line in output.splitlines() if line and not line[0].isspace()]
        closure = [name for name in dict.fromkeys(closure) if not name.startswith("<")]
        code, installed_text = await self._run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n"], work)
        installed = {line.split()[0] for line in installed_text.splitlines() if line.endswith(" installed")}
        return [name for name in closure if name not in installed or name in names]

    # -- plumbing ---------------------------------------------------------------------------------

    def _prepare_root(self) -> None:
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)

    def _make_work_dir(self, work: Path) -> None:
        self._mkdir(work, 0o755)
        self._mkdir(work / ".home", 0o700)

    def _mkdir(self, path: Path, mode: int = 0o755) -> Path:
        """A directory the installers (which may run as another user) can write to."""
        path.mkdir(mode=mode, exist_ok=True)
        if self._run_as is not None and os.geteuid() == 0:
            os.chown(path, *self._run_as)
        return path

    def _finish(self, work: Path, target: Path, lists: dict[str, list[str]]) -> None:
        shutil.rmtree(work / ".home", ignore_errors=True)
        shutil.rmtree(work / ".debs", ignore_errors=True)
        # Hand everything back to the server's user and make it world-readable but not writable: sandboxes
        # (which run as the installers' user) see it read-only, and nothing but the server may change it.
        for directory, subdirs, files in os.walk(work):
            for name in [*subdirs, *files]:
                path = os.path.join(directory, name)
                if os.geteuid() == 0:
                    os.lchown(path, 0, 0)
                if not os.path.islink(path):
                    mode = os.lstat(path).st_mode
                    os.chmod(path, (mode | 0o444 | (0o111 if mode & 0o111 or os.path.isdir(path) else 0)) & 0o755)
        if os.geteuid() == 0:
            os.chown(work, 0, 0)
        os.chmod(work, 0o755)
        (work / ".complete").write_text(json.dumps(lists, sort_keys=True) + "\n")
        try:
            os.rename(work, target)
        except OSError:
            if not (target / ".complete").is_file():
                raise  # another process finished the same lists first otherwise

    async def _run(
        self, argv: list[str], work: Path, *, cwd: Path | None = None, as_root: bool = False
    ) -> tuple[int, str]:
        env = {name: value for name, value in os.environ.items() if _PASS_ENV.fullmatch(name)}
        env.update({"PATH": SAFE_PATH + ":/usr/sbin:/sbin", "HOME": str(work / ".home"), "LANG": "C.UTF-8"})
        env["DEBIAN_FRONTEND"] = "noninteractive"
        prefix: list[str] = []
        if self._run_as is not None and os.geteuid() == 0 and not as_root:
            if self._setpriv is None:
                raise PackageInstallError("setpriv (util-linux) is needed to install packages as the sandbox user")
            uid, gid = self._run_as
            prefix = [self._setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
        process = await asyncio.create_subprocess_exec(
            *prefix,
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=str(cwd or work),
            start_new_session=True,
        )
        try:
            stdout, _ = await asyncio.wait_for(process.communicate(), _INSTALL_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            if isinstance(exc, TimeoutError):
                raise PackageInstallError(f"{argv[0]} did not finish within {_INSTALL_TIMEOUT_S:g} s") from exc
            raise
        return process.returncode or 0, stdout.decode(errors="replace")


def _failure(manager: str, specs: list[str], output: str, note: str = "") -> str:
    """A failure message that names the package the installer complained about, when it can tell."""
    complaints = "\n".join(
        line.lower() for line in output.splitlines() if re.search(r"error|^e:|unable|not found|404", line, re.I)
    )
    named = [spec for spec in specs if _name_of(spec).lower() in complaints]
    culprit = ", ".join(repr(s) for s in (named or specs))
    tail = output.strip()[-_OUTPUT_TAIL:]
    return f"{manager}: could not install {culprit} {note}".rstrip() + f":\n{tail}"


def _name_of(spec: str) -> str:
    """The package name in a specifier (`@scope/pkg@1.0` -> `@scope/pkg`, `foo[x]>=1` -> `foo`)."""
    scope = "@" if spec.startswith("@") else ""
    return scope + re.split(r"[=<>!~@\[ ]", spec[len(scope) :], maxsplit=1)[0]

"""A PostgreSQL server for the tests, found or started, never silently missing.

Where the server comes from, in order:

1. `CORRAL_TEST_DATABASE_URL` when set (any database on the server; tests create their own databases there).
   If it cannot be reached, the tests fail: a URL that was asked for is never replaced by another server.
2. The machine's server at `postgresql://postgres@127.0.0.1:5432/postgres` (trust auth on loopback).
3. The machine's Debian cluster(s), started with `pg_ctlcluster` when installed but stopped.
4. A private throwaway cluster: `initdb` (on PATH or under /usr/lib/postgresql) into a temporary directory,
   trust auth, a free port; stopped and removed when the test session ends.

If none of these works, `PostgresServer.find_or_start` raises `PostgresUnavailable` saying what was tried:
the PostgreSQL half of the suites fails loudly instead of being skipped.

Each test run works in databases of its own (`corral_test_<pid>_<random>`), so several runs can share one server.

`python -m tests.support.postgres` finds or starts a shared server (steps 1-3) and says which; scripts/test
runs it before pytest.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ENV_URL = "CORRAL_TEST_DATABASE_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "corral_test_"
START_TIMEOUT_S = 30.0


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be found or started for the tests."""


def _unreachable(url: str) -> str | None:
    """None if `url` accepts a connection, else why not."""
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip() or type(exc).__name__
    return None


def _wait_until_reachable(url: str, timeout: float = START_TIMEOUT_S) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        error = _unreachable(url)
        if error is None or time.monotonic() > deadline:
            return error
        time.sleep(0.2)


def redact(url: str) -> str:
    parts = urlsplit(url)
    return url if parts.password is None else url.replace(f":{parts.password}@", ":***@")


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _start_debian_clusters(tried: list[str]) -> None:
    """`pg_ctlcluster VERSION NAME start` for every cluster under /etc/postgresql (a no-op for running ones)."""
    if shutil.which("pg_ctlcluster") is None:
        tried.append("pg_ctlcluster: not installed")
        return
    configs = sorted(glob.glob("/etc/postgresql/*/*/postgresql.conf"))
    if not configs:
        tried.append("pg_ctlcluster: no cluster under /etc/postgresql")
    for config in configs:
        version, cluster = Path(config).parent.parent.name, Path(config).parent.name
        result = _run(["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "start"])
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0 and "already running" not in output:
            tried.append(f"pg_ctlcluster {version} {cluster} start: exit {result.returncode}: {output}")


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path)],
    )
    return candidates[-1] if candidates else None


@dataclass
class PostgresServer:
    """A server the tests may create databases on; `url` connects to its maintenance database."""

    url: str
    origin: str
    _private_dir: Path | None = None
    _options: str = ""
    _run_as: list[str] = field(default_factory=list)
    _created: list[str] = field(default_factory=list)

    @classmethod
    def find_or_start(cls, *, private: bool = True) -> PostgresServer:
        """The first server that works, in the order above (`private=False`: never a throwaway cluster)."""
        configured = os.environ.get(ENV_URL)
        if configured:
            error = _unreachable(configured)
            if error is not None:
                raise PostgresUnavailable(f"{ENV_URL}={redact(configured)} cannot be reached: {error}")
            return cls(configured, origin=ENV_URL)
        tried: list[str] = []
        error = _unreachable(DEFAULT_URL)
        if error is None:
            return cls(DEFAULT_URL, origin="local server")
        tried.append(f"{DEFAULT_URL}: {error}")
        _start_debian_clusters(tried)
        if _wait_until_reachable(DEFAULT_URL, timeout=10.0) is None:
            return cls(DEFAULT_URL, origin="local server, started with pg_ctlcluster")
        if not private:
            raise PostgresUnavailable(cls._explain(tried))
        return cls._start_private(tried)

    @classmethod
    def start_private(cls) -> PostgresServer:
        """A throwaway cluster of this test's own, e.g. to stop and restart it under a running Corral."""
        return cls._start_private([])

    @classmethod
    def _start_private(cls, tried: list[str]) -> PostgresServer:
        initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            tried.append("initdb/pg_ctl: not found on PATH or under /usr/lib/postgresql/*/bin")
            raise PostgresUnavailable(cls._explain(tried))
        run_as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            if shutil.which("runuser") is None or _run(["id", "-u", "postgres"]).returncode != 0:
                tried.append("initdb: running as root, and there is no `postgres` user (or runuser) to run it as")
                raise PostgresUnavailable(cls._explain(tried))
            run_as = ["runuser", "-u", "postgres", "--"]
        directory = Path(tempfile.mkdtemp(prefix="corral-pg-"))
        data = directory / "data"
        port = _free_port()
        if run_as:
            directory.chmod(0o755)
            shutil.chown(directory, user="postgres")
        result = _run([*run_as, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        if result.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            tried.append(f"initdb: exit {result.returncode}: {(result.stdout + result.stderr).strip()[-2000:]}")
            raise PostgresUnavailable(cls._explain(tried))
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -k {directory} -c fsync=off"
        result = _run([*run_as, pg_ctl, "-D", str(data), "-o", options, "-l", str(directory / "log"), "-w", "start"])
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        error = _wait_until_reachable(url, timeout=10.0) if result.returncode == 0 else result.stderr.strip()
        if error is not None:
            log = (directory / "log").read_text(errors="replace")[-2000:] if (directory / "log").exists() else ""
            _run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
            shutil.rmtree(directory, ignore_errors=True)
            tried.append(f"private cluster on port {port}: {error}\n{log}")
            raise PostgresUnavailable(cls._explain(tried))
        return cls(
            url, origin=f"private cluster in {directory}", _private_dir=directory, _run_as=run_as, _options=options
        )

    @staticmethod
    def _explain(tried: list[str]) -> str:
        lines = "\n".join(f"  - {attempt}" for attempt in tried)
        return (
            "no PostgreSQL server for the tests. Set CORRAL_TEST_DATABASE_URL to a server the tests may create "
            f"databases on, or install PostgreSQL (Debian: apt-get install postgresql). Tried:\n{lines}"
        )

    # --- databases -----------------------------------------------------------------------------------

    def create_database(self) -> str:
        """A new empty database of this test run; returns its URL."""
        name = f"{DATABASE_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return with_database(self.url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with contextlib.suppress(ValueError):
            self._created.remove(name)

    def drop_stale_databases(self) -> None:
        """Drop databases left by test runs on this machine that died before cleaning up (their pid is gone)."""
        if urlsplit(self.url).hostname not in ("127.0.0.1", "localhost", "::1", None):
            return
        with psycopg.connect(self.url, autocommit=True) as conn:
            names = [row[0] for row in conn.execute("SELECT datname FROM pg_database").fetchall()]
            for name in names:
                match = re.fullmatch(rf"{DATABASE_PREFIX}(\d+)_[0-9a-f]+", name)
                if match and not Path(f"/proc/{match.group(1)}").exists():
                    with contextlib.suppress(psycopg.Error):
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def restart(self, mode: str = "immediate") -> None:
        """Stop and start a private cluster (`immediate`: as a crash would; `fast`: a clean shutdown)."""
        pg_ctl = _postgres_bin("pg_ctl")
        assert self._private_dir is not None and pg_ctl is not None, "only a private cluster can be restarted"
        data, log = str(self._private_dir / "data"), str(self._private_dir / "log")
        result = _run([*self._run_as, pg_ctl, "-D", data, "-m", mode, "-o", self._options, "-l", log, "-w", "restart"])
        if result.returncode != 0 or _wait_until_reachable(self.url) is not None:
            raise PostgresUnavailable(f"the private cluster did not restart: {result.stdout}{result.stderr}")

    def close(self) -> None:
        """Drop this run's databases; stop and remove a private cluster."""
        for name in list(self._created):
            with contextlib.suppress(psycopg.Error):
                self.drop_database(with_database(self.url, name))
        if self._private_dir is not None:
            pg_ctl = _postgres_bin("pg_ctl")
            if pg_ctl is not None:
                _run([*self._run_as, pg_ctl, "-D", str(self._private_dir / "data"), "-m", "immediate", "stop"])
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None


def truncate_all_tables(url: str) -> None:
    """Empty every table of the database but Alembic's version table (a fresh store, without migrating again)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename != 'alembic_version'"
            ).fetchall()
        ]
        if tables:
            quoted = ", ".join(f'"{name}"' for name in tables)
            conn.execute(f"TRUNCATE {quoted} RESTART IDENTITY")


if __name__ == "__main__":
    try:
        server = PostgresServer.find_or_start(private=False)
    except PostgresUnavailable as exc:
        print(f"tests/support/postgres.py: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"PostgreSQL for the tests: {redact(server.url)} ({server.origin})", file=sys.stderr)

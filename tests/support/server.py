"""Starts a real `corral serve` process for tests and benchmarks, on a free port with its own data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

CORRAL_BIN = Path(sys.executable).with_name("corral")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CorralServer:
    """A `corral serve` subprocess. `api_key` is registered on start through CORRAL_API_KEY."""

    def __init__(
        self,
        *,
        model_url: str | None = None,
        api_key: str = "sk-corral-test-key",
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="corral-test-")
        self.data_dir = data_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        # The sandbox user must be able to traverse down to the workspaces (as under /var/lib).
        self.data_dir.chmod(0o711)
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir / "server.log"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_", "CORRAL_"))}
        self.env = {
            **base_env,
            "CORRAL_API_KEY": api_key,
            "CORRAL_MODEL_RETRY_DELAY": "0.01",
            "CORRAL_MCP_RETRY_DELAY": "0.01",
            "CORRAL_SSE_PING_SECONDS": "1",
            "CORRAL_LOG_LEVEL": "warning",
            # Suites make hundreds of requests a minute with one key: no HTTP-edge limits unless a test sets them.
            "CORRAL_RATE_LIMIT_CREATE": "0",
            "CORRAL_RATE_LIMIT_OTHER": "0",
            "CORRAL_RATE_LIMIT_ENVIRONMENTS": "0",
            "CORRAL_MAX_RUNNING_SESSIONS": "0",
            # Suites keep dozens of workspaces attached at once: small ones, so that each is admitted on a CI
            # disk with little free space (the 10 GiB default would promise more than most disks have).
            "CORRAL_SANDBOX_WORKSPACE_SIZE": "64M",
            "CORRAL_SANDBOX_DISK_RESERVE": "32M",
        }
        if model_url:
            self.env.update({"ANTHROPIC_BASE_URL": model_url, "ANTHROPIC_API_KEY": "sk-ant-fake-model-key"})
        self.env.update(env or {})
        self.args = args or []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> CorralServer:
        command = [str(CORRAL_BIN), "serve", "--data-dir", str(self.data_dir), "--port", str(self.port), *self.args]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"corral serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"corral serve did not become healthy in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def corral(self, *args: str) -> str:
        """Run a `corral` admin command against this server's data directory; returns stdout."""
        result = subprocess.run(
            [str(CORRAL_BIN), *args, "--data-dir", str(self.data_dir)],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    def __enter__(self) -> CorralServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


WORKER_READY = b"running brains on"


class CorralWorker(CorralServer):
    """A `corral worker` subprocess: brains only, no HTTP API. Needs CORRAL_DATABASE_URL (PostgreSQL) in `env`.

    It takes every `corral serve` setting; `node_id` names it in session leases. It is ready once it logs that
    it runs brains (after its cluster listener is up and its first sweep is done), so it logs at info level.
    """

    def __init__(
        self,
        *,
        node_id: str,
        model_url: str | None = None,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        super().__init__(model_url=model_url, data_dir=data_dir, env=env, args=args)
        self.node_id = node_id
        self.env["CORRAL_LOG_LEVEL"] = "info"
        self.log_path = self.data_dir / f"worker-{node_id}.log"

    def start(self, timeout: float = 20.0) -> CorralWorker:
        command = [str(CORRAL_BIN), "worker", "--data-dir", str(self.data_dir), "--node-id", self.node_id, *self.args]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"corral worker exited with {self.process.returncode}:\n{self.log()}")
            if WORKER_READY in self.log_path.read_bytes()[offset:]:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"corral worker did not start in {timeout}s:\n{self.log()}")

    def __enter__(self) -> CorralWorker:
        return self.start()

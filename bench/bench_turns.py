"""Turn-latency benchmark: a real `corral serve` driven over HTTP + SSE, with the fake model at zero delay.

Measures, from the client side, with one persistent httpx connection for requests and one for the stream:

* a-warm   no-tool turn (POST user.message -> `session.status_idle` frame) in one long-lived session;
* a-fresh  the same, in a fresh session per turn (session made and stream opened before timing);
* b-new    one bash tool turn in a brand-new session (includes the lazy sandbox cold start);
* b-warm   one bash tool turn in a session whose sandbox is already running;
* c        POST /v1/agents + /v1/environments + /v1/sessions, end to end;
* d        `agent.tool_use` frame -> `agent.tool_result` frame inside the b-warm turns;
* memory   the server's VmRSS before and after 100 sessions with one no-tool turn each (own server).

Run from the repository root: ``python -m bench.bench_turns [--quick] [--write]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.fake_model import FakeModel
from tests.support.postgres import PostgresServer
from tests.support.server import CorralServer, free_port

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
IDLE = "session.status_idle"
TOOL_USE = "agent.tool_use"
TOOL_RESULT = "agent.tool_result"
MODEL = "claude-sonnet-4-6"
TURN_TIMEOUT_S = 30.0  # a turn that has not gone idle by then is reported as a failure
READ_TIMEOUT_S = 5.0  # the server pings every second (CorralServer sets CORRAL_SSE_PING_SECONDS=1)
# The running-sessions cap at the server's default (the test servers turn it off): it is checked on every message.
SERVER_ENV = {"CORRAL_LOG_LEVEL": "warning", "CORRAL_MAX_RUNNING_SESSIONS": "100"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

JSONDict = dict[str, Any]


class BenchError(RuntimeError):
    """A measurement could not be taken; the message says what the server did."""


# ---------------------------------------------------------------------------
# Statistics


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Series:
    """Latencies of one measurement, in milliseconds."""

    name: str
    description: str
    target_p50_ms: float | None = None
    values: list[float] = field(default_factory=list)
    cpu_seconds: float | None = None  # the server process's CPU time over the measured iterations

    def add_seconds(self, seconds: float) -> None:
        self.values.append(seconds * 1000)

    def add_cpu(self, seconds: float) -> None:
        self.cpu_seconds = (self.cpu_seconds or 0.0) + seconds

    def row(self) -> str:
        target = f"p50 <= {self.target_p50_ms:g} ms" if self.target_p50_ms is not None else ""
        if not self.values:
            return f"| {self.name} | {self.description} | 0 | - | - | - | - | {target} |"
        p50 = percentile(self.values, 50)
        ratio = f" ({p50 / self.target_p50_ms:.2f}x target)" if self.target_p50_ms else ""
        cpu = "" if self.cpu_seconds is None else f"{self.cpu_seconds * 1000 / len(self.values):.1f}"
        return (
            f"| {self.name} | {self.description} | {len(self.values)} | {p50:.2f} | "
            f"{percentile(self.values, 95):.2f} | {statistics.fmean(self.values):.2f} | {cpu} | {target}{ratio} |"
        )

    def drift(self) -> str | None:
        """Median of the first and last quarter, to show growth over a long-lived session."""
        if len(self.values) < 8:
            return None
        quarter = len(self.values) // 4
        first = statistics.median(self.values[:quarter])
        last = statistics.median(self.values[-quarter:])
        return f"{self.name}: p50 first quarter {first:.2f} ms, last quarter {last:.2f} ms ({last / first:.2f}x)"


# ---------------------------------------------------------------------------
# A lean client


@dataclass(frozen=True)
class Frame:
    type: str
    data: JSONDict
    at: float  # perf_counter() when the frame's blank line was read


class EventStream:
    """An open `GET /v1/sessions/{id}/events/stream`, read one frame at a time."""

    def __init__(self, client: httpx.Client, session_id: str) -> None:
        self._context = client.stream(
            "GET",
            f"/v1/sessions/{session_id}/events/stream",
            timeout=httpx.Timeout(10.0, read=READ_TIMEOUT_S),
        )
        self._lines: Iterator[str] = iter(())

    def __enter__(self) -> EventStream:
        response = self._context.__enter__()
        if response.status_code != 200:
            response.read()
            self._context.__exit__(None, None, None)
            raise BenchError(f"stream open failed: HTTP {response.status_code}: {response.text[:300]}")
        self._lines = response.iter_lines()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._context.__exit__(exc_type, exc, tb)

    def next_frame(self, deadline: float) -> Frame:
        """The next frame carrying JSON data (pings and comments are skipped)."""
        data_lines: list[str] = []
        for line in self._lines:
            if time.monotonic() > deadline:
                raise BenchError("timed out waiting for a frame (only keepalives arrived)")
            if line:
                if line.startswith("data:"):
                    value = line[5:]
                    data_lines.append(value[1:] if value.startswith(" ") else value)
                continue
            if not data_lines:
                continue
            at = time.perf_counter()
            try:
                data = json.loads("\n".join(data_lines))
            except ValueError:
                data_lines = []
                continue  # e.g. an `event: ping` frame with a non-JSON body
            data_lines = []
            if isinstance(data, dict) and data.get("type") not in (None, "ping"):
                return Frame(type=str(data["type"]), data=data, at=at)
        raise BenchError("the server closed the event stream")


@dataclass(frozen=True)
class Seen:
    type: str
    at: float  # seconds after the POST was sent
    processed_at: str | None  # the server's timestamp of the event


@dataclass
class Turn:
    seconds: float  # POST sent -> idle frame received
    frames: list[Seen]  # from this turn's user.message echo on
    stop_reason: str

    def _first(self, kind: str) -> Seen | None:
        return next((seen for seen in self.frames if seen.type == kind), None)

    def between(self, first: str, second: str) -> float | None:
        """Seconds between the arrival of the first frames of two types."""
        start, end = self._first(first), self._first(second)
        return None if start is None or end is None else end.at - start.at

    def server_between(self, first: str, second: str) -> float | None:
        """Seconds between the `processed_at` stamps of the first events of two types (the server's clock)."""
        start, end = self._first(first), self._first(second)
        if start is None or end is None or not start.processed_at or not end.processed_at:
            return None
        return (_timestamp(end.processed_at) - _timestamp(start.processed_at)).total_seconds()


def _timestamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Api:
    """The few Managed Agents calls the bench needs, over one persistent httpx client."""

    def __init__(self, server: CorralServer) -> None:
        self.client = httpx.Client(
            base_url=server.url,
            headers={"x-api-key": server.api_key, "anthropic-version": "2023-06-01"},
            timeout=httpx.Timeout(10.0),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )

    def close(self) -> None:
        self.client.close()

    def post(self, path: str, body: JSONDict) -> JSONDict:
        response = self.client.post(path, json=body)
        if response.status_code != 200:
            raise BenchError(f"POST {path}: HTTP {response.status_code}: {response.text[:300]}")
        result: JSONDict = response.json()
        return result

    def create_agent(self) -> str:
        body = {"name": "bench agent", "model": MODEL, "tools": [{"type": "agent_toolset_20260401"}]}
        return str(self.post("/v1/agents", body)["id"])

    def create_environment(self) -> str:
        body = {
            "name": f"bench-{uuid.uuid4().hex[:12]}",
            "config": {"type": "cloud", "networking": {"type": "unrestricted"}},
        }
        return str(self.post("/v1/environments", body)["id"])

    def create_session(self, agent_id: str, environment_id: str) -> str:
        return str(self.post("/v1/sessions", {"agent": agent_id, "environment_id": environment_id})["id"])

    def archive_session(self, session_id: str) -> None:
        self.post(f"/v1/sessions/{session_id}/archive", {})

    def stream(self, session_id: str) -> EventStream:
        return EventStream(self.client, session_id)

    def turn(self, stream: EventStream, session_id: str, text: str) -> Turn:
        """Send one user message and read the stream until this turn's `session.status_idle`."""
        body = {"events": [{"type": "user.message", "content": [{"type": "text", "text": text}]}]}
        started = time.perf_counter()
        echo = self.post(f"/v1/sessions/{session_id}/events", body)
        echo_id = echo["data"][0]["id"]
        deadline = time.monotonic() + TURN_TIMEOUT_S
        frames: list[Seen] = []
        seen_echo = False
        while True:
            frame = stream.next_frame(deadline)
            if not seen_echo:
                # Frames still in flight from an earlier turn precede this turn's echo.
                seen_echo = frame.type == "user.message" and frame.data.get("id") == echo_id
                if not seen_echo:
                    continue
            processed_at = frame.data.get("processed_at")
            frames.append(Seen(frame.type, frame.at - started, processed_at if isinstance(processed_at, str) else None))
            if frame.type in ("session.error", "session.status_terminated", "error"):
                raise BenchError(f"turn failed with {frame.type}: {json.dumps(frame.data)[:300]}")
            if frame.type == IDLE:
                reason = frame.data.get("stop_reason") or {}
                return Turn(frame.at - started, frames, str(reason.get("type")))


class FakeModelProcess:
    """`python -m tests.support.fake_model` in its own process, so its work does not hold the client's GIL."""

    def __init__(self) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FakeModelProcess:
        port = self.url.rsplit(":", 1)[1]
        command = [sys.executable, "-m", "tests.support.fake_model", "--port", port, "--no-record"]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BenchError(f"fake model exited with {self._process.returncode}")
            try:
                if httpx.get(f"{self.url}/_control/requests", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise BenchError("fake model did not start in 20 s")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


def fake_model(in_process: bool) -> FakeModel | FakeModelProcess:
    return FakeModel(record=False) if in_process else FakeModelProcess()


# ---------------------------------------------------------------------------
# Measurements


@dataclass
class Counts:
    warm: int
    fresh: int
    new_tool: int
    warm_tool: int
    create: int
    memory_sessions: int
    warmup: int


@dataclass
class Results:
    series: dict[str, Series]
    arrivals: dict[str, dict[str, list[float]]]  # series name -> event type -> arrival offsets (ms)
    memory: JSONDict
    errors: list[str]


def _record_arrivals(target: dict[str, list[float]], turn: Turn) -> None:
    firsts: dict[str, float] = {}
    for seen in turn.frames:
        firsts.setdefault(seen.type, seen.at)
    for kind, at in firsts.items():
        target[kind].append(at * 1000)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children: sandboxed shells are not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Bench:
    """The latency measurements against one server, sharing one agent and one environment."""

    def __init__(self, api: Api, counts: Counts, server_pid: int) -> None:
        self.api = api
        self.counts = counts
        self.server_pid = server_pid
        self.agent_id = api.create_agent()
        self.env_id = api.create_environment()
        self.series = {
            "a-warm": Series("a-warm", "no-tool turn, warm session", 10),
            "a-fresh": Series("a-fresh", "no-tool turn, fresh session (stream already open)", 10),
            "b-new": Series("b-new", "bash turn, brand-new session (sandbox cold start)", 30),
            "b-new-tool": Series("b-new-tool", "  of which tool_use -> tool_result, server clock"),
            "b-warm": Series("b-warm", "bash turn, warm session"),
            "c": Series("c", "create agent + environment + session (3 POSTs)"),
            "d": Series("d", "tool_use -> tool_result frames, warm session", 2),
            "d-server": Series("d-server", "  the same on the server clock (`processed_at`)", 2),
        }
        self.arrivals: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def new_session(self) -> str:
        return self.api.create_session(self.agent_id, self.env_id)

    def _turn(self, stream: EventStream, session_id: str, text: str, series: Series | None) -> Turn:
        """One turn; its latency and the server's CPU time go to `series` unless it is None (warmup)."""
        cpu = cpu_seconds(self.server_pid)
        turn = self.api.turn(stream, session_id, text)
        if turn.stop_reason != "end_turn":
            kinds = " ".join(seen.type for seen in turn.frames)
            raise BenchError(f"{text!r}: idle with stop_reason {turn.stop_reason!r}; frames: {kinds}")
        if text.startswith("bash: ") and turn.between(TOOL_USE, TOOL_RESULT) is None:
            kinds = " ".join(seen.type for seen in turn.frames)
            raise BenchError(f"{text!r}: no tool round trip in the turn; frames: {kinds}")
        if series is not None:
            series.add_cpu(cpu_seconds(self.server_pid) - cpu)
            series.add_seconds(turn.seconds)
            _record_arrivals(self.arrivals[series.name], turn)
        return turn

    def create(self) -> None:
        series = self.series["c"]
        for _ in range(self.counts.create):
            cpu = cpu_seconds(self.server_pid)
            started = time.perf_counter()
            agent_id = self.api.create_agent()
            environment_id = self.api.create_environment()
            self.api.create_session(agent_id, environment_id)
            series.add_seconds(time.perf_counter() - started)
            series.add_cpu(cpu_seconds(self.server_pid) - cpu)

    def warm_text(self) -> None:
        session_id = self.new_session()
        with self.api.stream(session_id) as stream:
            for index in range(self.counts.warmup):
                self._turn(stream, session_id, f"warmup {index}", None)
            for index in range(self.counts.warm):
                self._turn(stream, session_id, f"hello {index}", self.series["a-warm"])

    def fresh_text(self) -> None:
        for index in range(self.counts.fresh):
            session_id = self.new_session()
            with self.api.stream(session_id) as stream:
                self._turn(stream, session_id, f"hello fresh {index}", self.series["a-fresh"])

    def new_tool(self) -> None:
        for _ in range(self.counts.new_tool):
            session_id = self.new_session()
            with self.api.stream(session_id) as stream:
                turn = self._turn(stream, session_id, "bash: echo hi", self.series["b-new"])
            _add_gap(self.series["b-new-tool"], turn.server_between(TOOL_USE, TOOL_RESULT))
            self.api.archive_session(session_id)  # untimed: stops the sandbox so shells do not pile up

    def warm_tool(self) -> None:
        session_id = self.new_session()
        with self.api.stream(session_id) as stream:
            # The first tool turn starts the sandbox; it and the warmup turns are not timed.
            for index in range(1 + self.counts.warmup):
                self._turn(stream, session_id, f"bash: echo warmup {index}", None)
            for index in range(self.counts.warm_tool):
                turn = self._turn(stream, session_id, f"bash: echo hi {index}", self.series["b-warm"])
                _add_gap(self.series["d"], turn.between(TOOL_USE, TOOL_RESULT))
                _add_gap(self.series["d-server"], turn.server_between(TOOL_USE, TOOL_RESULT))
        self.api.archive_session(session_id)


def _add_gap(series: Series, seconds: float | None) -> None:
    if seconds is not None:
        series.add_seconds(seconds)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def measure_memory(model_url: str, server_args: list[str], counts: Counts) -> JSONDict:
    """RSS of a fresh server before and after `memory_sessions` sessions, each with one no-tool turn."""
    with CorralServer(model_url=model_url, env=SERVER_ENV, args=server_args) as server:
        assert server.process is not None
        pid = server.process.pid
        api = Api(server)
        try:
            agent_id, env_id = api.create_agent(), api.create_environment()
            # A few sessions first, so one-time imports and caches are not counted as per-session cost.
            for index in range(5):
                session_id = api.create_session(agent_id, env_id)
                with api.stream(session_id) as stream:
                    api.turn(stream, session_id, f"warm {index}")
            time.sleep(0.2)
            before = rss_kib(pid)
            for index in range(counts.memory_sessions):
                session_id = api.create_session(agent_id, env_id)
                with api.stream(session_id) as stream:
                    api.turn(stream, session_id, f"memory {index}")
            time.sleep(0.2)
            after = rss_kib(pid)
        finally:
            api.close()
    return {"sessions": counts.memory_sessions, "before_kib": before, "after_kib": after}


@contextlib.contextmanager
def database_args(store: str) -> Iterator[list[str]]:
    """The server's arguments for `store`: none for SQLite (its default), else a new PostgreSQL database's URL
    (on the server the tests use, see tests/support/postgres.py), dropped afterwards."""
    if store == "sqlite":
        yield []
        return
    server = PostgresServer.find_or_start(private=False)
    try:
        yield ["--database-url", server.create_database()]
    finally:
        server.close()


def run(counts: Counts, server_args: list[str], model_in_process: bool) -> Results:
    errors: list[str] = []
    memory: JSONDict = {}
    with fake_model(model_in_process) as model:
        with CorralServer(model_url=model.url, env=SERVER_ENV, args=server_args) as server:
            api = Api(server)
            try:
                assert server.process is not None
                bench = Bench(api, counts, server.process.pid)
                steps = [
                    ("c", bench.create),
                    ("a-warm", bench.warm_text),
                    ("a-fresh", bench.fresh_text),
                    ("b-new", bench.new_tool),
                    ("b-warm", bench.warm_tool),
                ]
                for name, step in steps:
                    print(f"running {name} ...", file=sys.stderr, flush=True)
                    try:
                        step()
                    except (BenchError, httpx.HTTPError) as exc:
                        errors.append(f"{name}: {type(exc).__name__}: {exc}")
            finally:
                api.close()
        print("running memory ...", file=sys.stderr, flush=True)
        try:
            memory = measure_memory(model.url, server_args, counts)
        except (BenchError, httpx.HTTPError) as exc:
            errors.append(f"memory: {type(exc).__name__}: {exc}")
    return Results(bench.series, bench.arrivals, memory, errors)


# ---------------------------------------------------------------------------
# Reporting


def machine() -> str:
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = f", {match.group(1).strip()}" if match else ""
    return f"nproc {os.cpu_count()}{cpu}, Linux {platform.release()}, Python {platform.python_version()}"


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} / {five:.2f}"


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


ARRIVAL_ORDER = (
    "user.message",
    "session.status_running",
    "span.model_request_start",
    "agent.message",
    TOOL_USE,
    "span.model_request_end",
    TOOL_RESULT,
    "session.usage",
    IDLE,
)


def report(results: Results, counts: Counts, sandbox: str, model_in_process: bool, load: str) -> str:
    where = "a thread of the bench process" if model_in_process else "its own process"
    lines = [
        f"Machine: {machine()}; load average (1/5 min) at start {load}; commit {commit()} "
        f"(plus uncommitted changes, if any); sandbox `{sandbox}`; fake model in {where}.",
        f"Counts: warm {counts.warm}, fresh {counts.fresh}, new-session tool {counts.new_tool}, "
        f"warm tool {counts.warm_tool}, create {counts.create}, warmup {counts.warmup} (not for b-new).",
        "",
        "| id | measurement | n | p50 ms | p95 ms | mean ms | server CPU ms/iter | design target |",
        "|---|---|---:|---:|---:|---:|---:|---|",
        *(s.row() for s in results.series.values()),
        "",
    ]
    memory = results.memory
    if memory:
        delta = memory["after_kib"] - memory["before_kib"]
        lines.append(
            f"Memory per {memory['sessions']} sessions (one no-tool turn each, own server after 5 warm-up "
            f"sessions): VmRSS {memory['before_kib'] / 1024:.1f} MiB -> {memory['after_kib'] / 1024:.1f} MiB, "
            f"**{delta / 1024:+.1f} MiB** ({delta / memory['sessions']:.0f} KiB per session)."
        )
        lines.append("")
    drifts = [d for name in ("a-warm", "b-warm", "d") if (d := results.series[name].drift())]
    if drifts:
        lines.append("Growth over a long-lived session: " + "; ".join(drifts) + ".")
        lines.append("")
    if results.arrivals:
        names = [name for name in ("a-warm", "a-fresh", "b-new", "b-warm") if name in results.arrivals]
        lines += [
            "Median arrival of each frame, ms after the POST was sent:",
            "",
            "| frame | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        kinds = [k for k in ARRIVAL_ORDER if any(k in results.arrivals[n] for n in names)]
        kinds += sorted({k for n in names for k in results.arrivals[n]} - set(kinds))
        for kind in kinds:
            cells = [
                f"{statistics.median(results.arrivals[n][kind]):.2f}" if results.arrivals[n].get(kind) else ""
                for n in names
            ]
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        lines.append("")
    if results.errors:
        lines.append("Errors:")
        lines += [f"- {error}" for error in results.errors]
        lines.append("")
    return "\n".join(lines)


HEADER = """# Corral turn-latency benchmark results

Produced by `bench/bench_turns.py`. A real `corral serve` subprocess (SQLite in a temporary data dir,
sandbox as stated per run) talks to the scripted fake model (`tests/support/fake_model.py`, zero delay,
one write per response, run in its own process so it does not share the client's GIL). The client is
httpx with persistent connections: it opens the session's SSE stream, then times from just before
`POST /v1/sessions/{id}/events` to receipt of the turn's `session.status_idle` frame. All numbers are
wall time on one machine whose CPUs the client, the server and the fake model share. Percentiles are
linear-interpolated. "server CPU ms/iter" is the `corral serve` process's utime+stime over the timed
iterations divided by their count (10 ms tick granularity, so only meaningful as an average; sandboxed
shells are separate processes and not included). `d-server` and `b-new-tool` come from the events'
`processed_at` stamps, i.e. the server's clock, and exclude SSE delivery.

Run from the repository root:

    . .venv/bin/activate
    python -m bench.bench_turns --quick           # smoke run, ~5 iterations each
    python -m bench.bench_turns --write           # full counts; replaces today's section here
    python -m bench.bench_turns --help            # counts, --sandbox none, --model-in-process

Host this file was first written on: MACHINE.
"""


def write_results(section_title: str, body: str) -> None:
    text = RESULTS_PATH.read_text() if RESULTS_PATH.exists() else HEADER.replace("MACHINE", machine())
    heading = f"## {section_title}"
    section = f"{heading}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    RESULTS_PATH.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", type=int, default=200, help="a-warm turns")
    parser.add_argument("--fresh", type=int, default=200, help="a-fresh turns (one session each)")
    parser.add_argument("--new-tool", type=int, default=30, help="b-new turns (one new session each)")
    parser.add_argument("--warm-tool", type=int, default=200, help="b-warm / d turns")
    parser.add_argument("--create", type=int, default=200, help="c iterations")
    parser.add_argument("--memory-sessions", type=int, default=100, help="sessions for the memory figure")
    parser.add_argument("--warmup", type=int, default=10, help="untimed turns before a-warm and b-warm")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 iterations of everything")
    parser.add_argument("--sandbox", choices=["bubblewrap", "none"], default="bubblewrap")
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the server's database: SQLite in its data dir, or a new database on the tests' PostgreSQL server",
    )
    parser.add_argument(
        "--model-in-process",
        action="store_true",
        help="run the fake model in a thread of this process (default: its own process)",
    )
    parser.add_argument("--write", action="store_true", help=f"replace today's section in {RESULTS_PATH.name}")
    args = parser.parse_args(argv)

    if args.quick:
        counts = Counts(5, 5, 5, 5, 5, 5, 1)
    else:
        counts = Counts(
            args.warm, args.fresh, args.new_tool, args.warm_tool, args.create, args.memory_sessions, args.warmup
        )
    load = load_average()
    with database_args(args.store) as store_args:
        results = run(counts, ["--sandbox", args.sandbox, *store_args], args.model_in_process)
    body = report(results, counts, f"{args.sandbox}`; store `{args.store}", args.model_in_process, load)
    print(body)
    if args.write:
        title = f"{dt.date.today().isoformat()} — sandbox {args.sandbox}" + (" (quick)" if args.quick else "")
        write_results(title, body)
        print(f"wrote {RESULTS_PATH}", file=sys.stderr)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())

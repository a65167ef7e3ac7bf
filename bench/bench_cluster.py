"""Cluster benchmark: cross-node fan-out latency, and turn throughput with one node and with two.

Real `corral serve` (and `corral worker`) subprocesses on 127.0.0.1, the scripted fake model in a process of its
own, an asyncio httpx client.

* fan-out   a session's event stream is open on node A; `POST /v1/sessions/{id}` title changes (each appends one
            `session.updated` event) go to node B, one at a time, each after the previous one arrived. Measured:
            the event's `processed_at` (stamped by B just before its append; one machine, one clock) to the
            frame's arrival on A's stream, and the POST being sent to that arrival. Baselines: the same with the
            POSTs sent to A itself (same two-node deployment), and on a single node on SQLite. Cross-node
            delivery is PostgreSQL NOTIFY to A's listener, then A reads the new events from the database.
            Design target: "within a few milliseconds", taken here as p50 <= 5 ms.
* throughput 20 sessions x 5 bash tool turns (`bash: echo hi`, through the fake model's `bash:` rule: tool_use,
            the command in the session's sandbox, tool_result, final answer), all 20 sessions at once, each
            session's turns one after another (a turn is POST user.message -> that turn's
            `session.status_idle` on the session's stream). Each session first runs one untimed tool turn (its
            sandbox starts). Deployments: one node on PostgreSQL; two `corral serve` nodes on PostgreSQL
            (sessions alternate between them for their requests and streams; brains take sessions by lease,
            whichever node wins); `corral serve` + `corral worker` on PostgreSQL (all HTTP to the serve node);
            one node on SQLite. Turns/s = 100 / wall time of the timed turns; the median of the rounds is
            reported. Design target: >= 300 turns/s.

Every wait has a deadline and the bench stops by itself. PostgreSQL: `--postgres-url` (a server the bench may
create databases on), else as the tests find one (tests/support/postgres.py); the bench's databases are dropped.

Run from the repository root: ``python -m bench.bench_cluster [--quick] [--write]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from bench.bench_turns import (
    FakeModelProcess,
    commit,
    cpu_seconds,
    load_average,
    machine,
    percentile,
    write_results,
)
from tests.support.postgres import PostgresServer
from tests.support.server import CorralServer, CorralWorker

MODEL = "claude-sonnet-4-6"
TARGET_TURNS_PER_S = 300.0
TARGET_FANOUT_MS = 5.0
SECRET_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # one vault key for every node of a deployment
SERVER_ENV = {"CORRAL_LOG_LEVEL": "warning"}
TOOL_TEXT = "bash: echo hi"
FRAME_TIMEOUT_S = 5.0  # a fan-out event that has not arrived by then is a failure
TURN_TIMEOUT_S = 60.0  # a turn that has not gone idle by then is a failure
ROUND_TIMEOUT_S = 300.0  # a throughput round as a whole
READ_TIMEOUT_S = 5.0  # the servers ping every second (CorralServer sets CORRAL_SSE_PING_SECONDS=1)
FAILED_FRAMES = ("session.error", "session.status_terminated", "error")

JSONDict = dict[str, Any]


class BenchError(RuntimeError):
    """A measurement could not be taken; the message says what the server did."""


# ---------------------------------------------------------------------------
# Deployments


@dataclass
class Deployment:
    """The running nodes of one configuration: `api` take HTTP requests; `processes` are every node's pid."""

    name: str
    description: str
    api: list[CorralServer]
    processes: dict[str, int]
    store: str


def _pid(node: CorralServer) -> int:
    assert node.process is not None
    return node.process.pid


@contextmanager
def deployment(kind: str, model_url: str, sandbox: str, postgres: PostgresServer | None) -> Iterator[Deployment]:
    """Start the nodes of `kind` (pg-1, pg-2, pg-worker, sqlite-1), each with a data directory of its own."""
    args = ["--sandbox", sandbox]
    with ExitStack() as stack:
        if kind == "sqlite-1":
            node = stack.enter_context(CorralServer(model_url=model_url, env=SERVER_ENV, args=args))
            yield Deployment(kind, "one `corral serve`, SQLite", [node], {"serve": _pid(node)}, "SQLite")
            return
        assert postgres is not None
        env = {**SERVER_ENV, "CORRAL_DATABASE_URL": postgres.create_database(), "CORRAL_SECRET_KEY": SECRET_KEY}
        first = stack.enter_context(CorralServer(model_url=model_url, env=env, args=args))
        if kind == "pg-1":
            yield Deployment(kind, "one `corral serve`", [first], {"serve": _pid(first)}, "PostgreSQL")
        elif kind == "pg-2":
            second = stack.enter_context(CorralServer(model_url=model_url, env=env, args=args))
            processes = {"serve A": _pid(first), "serve B": _pid(second)}
            yield Deployment(kind, "two `corral serve`", [first, second], processes, "PostgreSQL")
        elif kind == "pg-worker":
            worker = stack.enter_context(CorralWorker(node_id="bench-worker", model_url=model_url, env=env, args=args))
            processes = {"serve": _pid(first), "worker": _pid(worker)}
            yield Deployment(kind, "`corral serve` + `corral worker`", [first], processes, "PostgreSQL")
        else:
            raise ValueError(f"unknown deployment {kind!r}")


# ---------------------------------------------------------------------------
# A lean asyncio client


@dataclass(frozen=True)
class Frame:
    type: str
    data: JSONDict
    at: float  # perf_counter() when the frame's blank line was read
    wall: float  # time.time() at the same moment (to compare with the server's `processed_at`)


class Node:
    """The few Managed Agents calls the bench needs, on one node, over one pooled httpx client."""

    def __init__(self, server: CorralServer) -> None:
        self.url = server.url
        self.client = httpx.AsyncClient(
            base_url=server.url,
            headers={"x-api-key": server.api_key, "anthropic-version": "2023-06-01"},
            timeout=httpx.Timeout(10.0, read=READ_TIMEOUT_S),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def post(self, path: str, body: JSONDict) -> JSONDict:
        response = await self.client.post(path, json=body)
        if response.status_code != 200:
            raise BenchError(f"POST {self.url}{path}: HTTP {response.status_code}: {response.text[:300]}")
        result: JSONDict = response.json()
        return result

    async def new_session(self) -> str:
        agent = await self.post(
            "/v1/agents", {"name": "bench agent", "model": MODEL, "tools": [{"type": "agent_toolset_20260401"}]}
        )
        environment = await self.post(
            "/v1/environments",
            {
                "name": f"bench-{uuid.uuid4().hex[:12]}",
                "config": {"type": "cloud", "networking": {"type": "unrestricted"}},
            },
        )
        session = await self.post("/v1/sessions", {"agent": agent["id"], "environment_id": environment["id"]})
        return str(session["id"])

    async def metric(self, name: str, labels: str = "") -> float:
        """The value of one Prometheus sample on this node (0 when absent)."""
        response = await self.client.get("/metrics")
        if response.status_code != 200:
            raise BenchError(f"GET {self.url}/metrics: HTTP {response.status_code}")
        pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", re.MULTILINE)
        match = pattern.search(response.text)
        return float(match.group(1)) if match else 0.0


class Stream:
    """An open `GET /v1/sessions/{id}/events/stream`, read by a task of its own that timestamps every frame."""

    def __init__(self, node: Node, session_id: str) -> None:
        self._context = node.client.stream("GET", f"/v1/sessions/{session_id}/events/stream")
        self._frames: asyncio.Queue[Frame | BaseException] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Stream:
        response = await self._context.__aenter__()
        if response.status_code != 200:
            await response.aread()
            await self._context.__aexit__(None, None, None)
            raise BenchError(f"stream open failed: HTTP {response.status_code}: {response.text[:300]}")
        self._reader = asyncio.create_task(self._read(response))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._context.__aexit__(exc_type, exc, tb)

    async def _read(self, response: httpx.Response) -> None:
        data_lines: list[str] = []
        try:
            async for line in response.aiter_lines():
                if line:
                    if line.startswith("data:"):
                        value = line[5:]
                        data_lines.append(value[1:] if value.startswith(" ") else value)
                    continue
                if not data_lines:
                    continue
                at, wall = time.perf_counter(), time.time()
                try:
                    data = json.loads("\n".join(data_lines))
                except ValueError:
                    data = None  # e.g. an `event: ping` frame with a non-JSON body
                data_lines = []
                if isinstance(data, dict) and data.get("type") not in (None, "ping"):
                    self._frames.put_nowait(Frame(str(data["type"]), data, at, wall))
            self._frames.put_nowait(BenchError("the server closed the event stream"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._frames.put_nowait(exc)

    async def until(self, predicate: Callable[[Frame], bool], deadline: float) -> Frame:
        """The first frame matching `predicate` (earlier ones are dropped); BenchError after `deadline`."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError("timed out waiting for a frame")
            try:
                item = await asyncio.wait_for(self._frames.get(), remaining)
            except TimeoutError:
                raise BenchError("timed out waiting for a frame") from None
            if isinstance(item, BaseException):
                raise item
            if item.type in FAILED_FRAMES:
                raise BenchError(f"{item.type}: {json.dumps(item.data)[:300]}")
            if predicate(item):
                return item


def machine_busy() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def _timestamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------
# Fan-out


@dataclass
class Fanout:
    name: str
    description: str
    from_append_ms: list[float] = field(default_factory=list)
    from_send_ms: list[float] = field(default_factory=list)

    def row(self, target: bool) -> str:
        if not self.from_append_ms:
            return f"| {self.name} | {self.description} | 0 | - | - | - | - | |"
        p50 = percentile(self.from_append_ms, 50)
        versus = f"{p50 / TARGET_FANOUT_MS:.2f}x" if target else ""
        return (
            f"| {self.name} | {self.description} | {len(self.from_append_ms)} | {p50:.2f} | "
            f"{percentile(self.from_append_ms, 95):.2f} | {percentile(self.from_send_ms, 50):.2f} | "
            f"{percentile(self.from_send_ms, 95):.2f} | {versus} |"
        )


def titled(title: str) -> Callable[[Frame], bool]:
    return lambda frame: frame.type == "session.updated" and frame.data.get("title") == title


async def measure_fanout(stream_node: Node, post_node: Node, result: Fanout, count: int, warmup: int) -> None:
    session_id = await stream_node.new_session()
    marker = uuid.uuid4().hex[:8]
    async with Stream(stream_node, session_id) as stream:
        for index in range(warmup + count):
            title = f"fan-out {marker} {index}"
            sent = time.perf_counter()
            await post_node.post(f"/v1/sessions/{session_id}", {"title": title})
            frame = await stream.until(titled(title), time.monotonic() + FRAME_TIMEOUT_S)
            if index >= warmup:
                result.from_append_ms.append((frame.wall - _timestamp(str(frame.data["processed_at"]))) * 1000)
                result.from_send_ms.append((frame.at - sent) * 1000)


async def fanout_two_nodes(first: CorralServer, second: CorralServer, count: int, warmup: int) -> list[Fanout]:
    a, b = Node(first), Node(second)
    cross = Fanout("cross-node", "stream on A, POSTs to B (PostgreSQL, two nodes)")
    same = Fanout("same-node", "stream on A, POSTs to A (PostgreSQL, two nodes)")
    try:
        await measure_fanout(a, b, cross, count, warmup)
        await measure_fanout(a, a, same, count, warmup)
    finally:
        await a.close()
        await b.close()
    return [cross, same]


async def fanout_one_node(server: CorralServer, count: int, warmup: int) -> Fanout:
    node = Node(server)
    result = Fanout("single SQLite", "stream and POSTs on one node (SQLite)")
    try:
        await measure_fanout(node, node, result, count, warmup)
    finally:
        await node.close()
    return result


# ---------------------------------------------------------------------------
# Throughput


@dataclass
class Throughput:
    deployment: Deployment
    rates: list[float] = field(default_factory=list)  # turns/s, one per round
    latencies_ms: list[float] = field(default_factory=list)
    cpu_ms_per_turn: list[float] = field(default_factory=list)  # every node's CPU over the timed turns, per round
    turns_by_node: dict[str, float] = field(default_factory=dict)  # from the serve nodes' corral_turns_total
    sandbox_starts: float = 0.0  # during the timed turns, on the serve nodes
    machine_busy: list[float] = field(default_factory=list)  # share of all CPUs busy over the timed turns, per round
    errors: list[str] = field(default_factory=list)

    def row(self, baseline: float | None) -> str:
        name, description = self.deployment.name, self.deployment.description
        if not self.rates:
            return f"| {name} | {description} | {self.deployment.store} | 0 | - | - | - | - | - | - | | | |"
        median = statistics.median(self.rates)
        spread = f"{min(self.rates):.0f}-{max(self.rates):.0f}"
        ratio = f"{median / baseline:.2f}x" if baseline else ""
        split = ", ".join(f"{node} {count:.0f}" for node, count in self.turns_by_node.items())
        return (
            f"| {name} | {description} | {self.deployment.store} | {len(self.rates)} | **{median:.1f}** | {spread} | "
            f"{percentile(self.latencies_ms, 50):.0f} | {percentile(self.latencies_ms, 95):.0f} | "
            f"{statistics.median(self.cpu_ms_per_turn):.1f} | {statistics.median(self.machine_busy):.0%} | {split} | "
            f"{ratio} | "
            f"{median / TARGET_TURNS_PER_S:.2f}x |"
        )


async def tool_turn(node: Node, stream: Stream, session_id: str) -> float:
    """One `bash: echo hi` turn; its seconds from the POST to its `session.status_idle`."""
    body = {"events": [{"type": "user.message", "content": [{"type": "text", "text": TOOL_TEXT}]}]}
    started = time.perf_counter()
    echo = await node.post(f"/v1/sessions/{session_id}/events", body)
    echo_id = echo["data"][0]["id"]
    deadline = time.monotonic() + TURN_TIMEOUT_S
    await stream.until(lambda frame: frame.type == "user.message" and frame.data.get("id") == echo_id, deadline)
    result = await stream.until(lambda frame: frame.type == "agent.tool_result", deadline)
    if result.data.get("is_error"):
        raise BenchError(f"the tool call failed: {json.dumps(result.data)[:300]}")
    idle = await stream.until(lambda frame: frame.type == "session.status_idle", deadline)
    reason = (idle.data.get("stop_reason") or {}).get("type")
    if reason != "end_turn":
        raise BenchError(f"turn went idle with stop_reason {reason!r}")
    return idle.at - started


async def session_turns(node: Node, stream: Stream, session_id: str, turns: int, latencies: list[float]) -> None:
    for _ in range(turns):
        latencies.append(await tool_turn(node, stream, session_id) * 1000)


async def node_counts(nodes: list[Node]) -> list[tuple[float, float]]:
    """(completed turns, sandbox starts) of every serve node."""
    counts = []
    for node in nodes:
        turns = await node.metric("corral_turns_total", '{outcome="completed"}')
        counts.append((turns, await node.metric("corral_sandbox_starts_total")))
    return counts


async def throughput_round(deployed: Deployment, result: Throughput, sessions: int, turns: int) -> None:
    nodes = [Node(server) for server in deployed.api]
    try:
        # Session i is created, streamed and sent to through node i mod N.
        homes = [nodes[index % len(nodes)] for index in range(sessions)]
        session_ids = [await home.new_session() for home in homes]
        async with AsyncExitStack() as stack:
            streams = [
                await stack.enter_async_context(Stream(home, sid)) for home, sid in zip(homes, session_ids, strict=True)
            ]
            warm: list[float] = []
            await asyncio.gather(
                *(session_turns(h, s, sid, 1, warm) for h, s, sid in zip(homes, streams, session_ids, strict=True))
            )
            before = await node_counts(nodes)
            cpu = sum(cpu_seconds(pid) for pid in deployed.processes.values())
            busy = machine_busy()
            latencies: list[float] = []
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    session_turns(h, s, sid, turns, latencies)
                    for h, s, sid in zip(homes, streams, session_ids, strict=True)
                )
            )
            seconds = time.perf_counter() - started
            cpu = sum(cpu_seconds(pid) for pid in deployed.processes.values()) - cpu
            result.machine_busy.append(busy_share(busy, machine_busy()))
            after = await node_counts(nodes)
        total = sessions * turns
        result.rates.append(total / seconds)
        result.latencies_ms.extend(latencies)
        result.cpu_ms_per_turn.append(cpu * 1000 / total)
        serve_turns = 0.0
        names = [name for name in deployed.processes if name != "worker"]
        for name, (turns_before, starts_before), (turns_after, starts_after) in zip(names, before, after, strict=True):
            ran = turns_after - turns_before
            serve_turns += ran
            result.turns_by_node[name] = result.turns_by_node.get(name, 0.0) + ran
            result.sandbox_starts += starts_after - starts_before
        if "worker" in deployed.processes:
            result.turns_by_node["worker"] = result.turns_by_node.get("worker", 0.0) + total - serve_turns
        for home, session_id in zip(homes, session_ids, strict=True):
            await home.post(f"/v1/sessions/{session_id}/archive", {})  # stops the sandboxes between rounds
    finally:
        for node in nodes:
            await node.close()


def measure_throughput(deployed: Deployment, rounds: int, sessions: int, turns: int) -> Throughput:
    result = Throughput(deployed)
    for index in range(rounds):
        print(f"  {deployed.name}: round {index + 1}/{rounds} ...", file=sys.stderr, flush=True)
        try:
            asyncio.run(asyncio.wait_for(throughput_round(deployed, result, sessions, turns), ROUND_TIMEOUT_S))
        except (BenchError, httpx.HTTPError, TimeoutError) as exc:
            result.errors.append(f"{deployed.name} round {index + 1}: {type(exc).__name__}: {exc}")
    return result


# ---------------------------------------------------------------------------
# Running and reporting


@dataclass
class Results:
    fanout: list[Fanout]
    throughput: list[Throughput]
    errors: list[str]


@dataclass
class Counts:
    fanout: int
    fanout_warmup: int
    rounds: int
    sessions: int
    turns: int


def run(counts: Counts, sandbox: str, postgres_url: str | None) -> Results:
    fanouts: list[Fanout] = []
    throughputs: list[Throughput] = []
    errors: list[str] = []
    postgres = PostgresServer(postgres_url, origin="--postgres-url") if postgres_url else PostgresServer.find_or_start()
    try:
        with FakeModelProcess() as model:
            for kind in ("pg-1", "pg-2", "pg-worker", "sqlite-1"):
                print(f"running {kind} ...", file=sys.stderr, flush=True)
                try:
                    with deployment(kind, model.url, sandbox, postgres) as deployed:
                        try:
                            if kind == "pg-2":
                                fanouts[:0] = asyncio.run(
                                    fanout_two_nodes(
                                        deployed.api[0], deployed.api[1], counts.fanout, counts.fanout_warmup
                                    )
                                )
                            elif kind == "sqlite-1":
                                fanouts.append(
                                    asyncio.run(fanout_one_node(deployed.api[0], counts.fanout, counts.fanout_warmup))
                                )
                        except (BenchError, httpx.HTTPError) as exc:
                            errors.append(f"fan-out on {kind}: {type(exc).__name__}: {exc}")
                        measured = measure_throughput(deployed, counts.rounds, counts.sessions, counts.turns)
                        throughputs.append(measured)
                        errors.extend(measured.errors)
                except RuntimeError as exc:  # a node that did not start
                    errors.append(f"{kind}: {exc}")
    finally:
        postgres.close()
    return Results(fanouts, throughputs, errors)


def postgres_version(url: str | None) -> str:
    import psycopg

    server = PostgresServer(url, origin="--postgres-url") if url else PostgresServer.find_or_start()
    try:
        with psycopg.connect(server.url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            settings = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit') ORDER BY name"
            ).fetchall()
    finally:
        server.close()
    described = ", ".join(f"{name}={setting}" for name, setting in settings)
    return f"PostgreSQL {row[0] if row else '?'} on loopback TCP ({described})"


def report(results: Results, counts: Counts, sandbox: str, load: str, pg: str) -> str:
    total = counts.sessions * counts.turns
    lines = [
        f"Commit {commit()} (plus uncommitted changes, if any); {machine()}; load average (1/5 min) at start {load}; "
        f"{pg}; sandbox `{sandbox}`; fake model in its own process; every process on this one machine.",
        "",
        f"Fan-out: {counts.fanout} title changes per row after {counts.fanout_warmup} untimed, one at a time. "
        "\"append\" is the event's `processed_at` (the posting node's clock, which is the streaming node's "
        'clock here) to the frame\'s arrival on the stream; "POST" is the request being sent to that arrival. '
        f"Target: within a few milliseconds (read as p50 <= {TARGET_FANOUT_MS:g} ms).",
        "",
        "| id | measurement | n | append p50 ms | append p95 ms | POST p50 ms | POST p95 ms | vs 5 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [fanout.row(target=fanout.name == "cross-node") for fanout in results.fanout]
    cross = next((f for f in results.fanout if f.name == "cross-node" and f.from_append_ms), None)
    same = next((f for f in results.fanout if f.name == "same-node" and f.from_append_ms), None)
    if cross and same:
        extra = statistics.median(cross.from_append_ms) - statistics.median(same.from_append_ms)
        lines += ["", f"Crossing nodes adds {extra:.2f} ms at the median (append -> frame)."]
    lines += [
        "",
        f"Throughput: {counts.sessions} sessions x {counts.turns} `{TOOL_TEXT}` turns = {total} turns per round, all "
        f"sessions at once; {counts.rounds} round(s) per deployment, new sessions each round (one untimed tool "
        "turn each first). turns/s is the median over rounds (min-max beside it); turn latency is POST -> idle "
        "over all rounds; CPU is every node process's utime+stime over the timed turns per turn (sandboxed "
        "shells and PostgreSQL not included); machine CPU busy is the share of all the machine's CPUs busy over "
        "the timed turns (/proc/stat: nodes, PostgreSQL, sandboxes, the fake model and this client); "
        "turns per node (all rounds) from the serve nodes' "
        "`corral_turns_total` (a worker's share is the rest). Ratio: against one node on PostgreSQL.",
        "",
        "| id | deployment | store | rounds | turns/s | min-max | turn p50 ms | turn p95 ms | node CPU ms/turn "
        "| machine CPU busy | turns per node | vs 1 node | vs 300/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    baseline = next((t for t in results.throughput if t.deployment.name == "pg-1" and t.rates), None)
    base_rate = statistics.median(baseline.rates) if baseline else None
    for measured in results.throughput:
        compare = base_rate if measured.deployment.store == "PostgreSQL" and measured is not baseline else None
        lines.append(measured.row(compare))
    starts = [f"{t.deployment.name} {t.sandbox_starts:.0f}" for t in results.throughput if t.rates]
    if starts:
        lines += [
            "",
            "Sandbox starts during the timed turns, on the serve nodes (all rounds): " + ", ".join(starts) + ".",
        ]
    if results.errors:
        lines += ["", "Errors:"]
        lines += [f"- {error}" for error in results.errors]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fanout", type=int, default=300, help="timed title changes per fan-out row")
    parser.add_argument("--fanout-warmup", type=int, default=20, help="untimed title changes first")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per deployment")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions per round")
    parser.add_argument("--turns", type=int, default=5, help="tool turns per session per round")
    parser.add_argument("--sandbox", choices=["bubblewrap", "none"], default="bubblewrap")
    parser.add_argument("--postgres-url", default=None, help="a server the bench may create databases on")
    parser.add_argument("--quick", action="store_true", help="smoke run: 30 title changes, one round")
    parser.add_argument("--write", action="store_true", help="record the results in bench/RESULTS.md")
    args = parser.parse_args(argv)
    counts = Counts(args.fanout, args.fanout_warmup, args.rounds, args.sessions, args.turns)
    if args.quick:
        counts = Counts(30, 5, 1, args.sessions, args.turns)
    load = load_average()
    pg = postgres_version(args.postgres_url)
    results = run(counts, args.sandbox, args.postgres_url)
    body = report(results, counts, args.sandbox, load, pg)
    print(body)
    if args.write:
        title = f"{dt.date.today().isoformat()} — cluster fan-out and turn throughput (bench_cluster, {args.sandbox})"
        write_results(title + (" (quick)" if args.quick else ""), body)
        print(f"wrote {Path(__file__).with_name('RESULTS.md')}", file=sys.stderr)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())

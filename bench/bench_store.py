"""Event-log append benchmark: throughput and latency of `Store.append_events` on SQLite and PostgreSQL.

In-process, straight on the store (no HTTP, no brain). Each append is one transaction that allocates the
positions, inserts the events and updates the session's derived state, exactly as the brain's appends do.
The events are a real turn's mix (`bench.bench_recovery.turn_events`: status changes, spans, messages, tool
calls and results, 0.1-1 KB each), so some appends change the session's status and some do not.

* single     one event per append, one writer, appends back to back;
* batch      ten events per append (one turn), one writer;
* parallel   one event per append, 20 writers on 20 sessions at once (PostgreSQL runs them on its pool;
             SQLite serialises them: its calls never yield);
* PostgreSQL "no notify": the same single appends without the NOTIFY other nodes listen for.

Throughput counts events per second of wall time; latency is per `append_events` call; "loop CPU" is the CPU
time of the thread running the event loop per append (all of SQLite's work but its background checkpoints;
only the client's share for PostgreSQL), which a busy machine inflates less than wall time. Target (design
doc): >= 20,000 appends/s on SQLite.

PostgreSQL: `--postgres-url` (a server the bench may create a database on), else as the tests find one
(tests/support/postgres.py); the bench's database is dropped afterwards.

Run from the repository root: ``python -m bench.bench_store [--quick] [--write]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.bench_recovery import turn_events
from bench.bench_turns import commit, load_average, machine, percentile, write_results
from corral.session.postgres import PostgresStore
from corral.session.records import NewEvent, SessionRecord
from corral.session.sqlite import SqliteStore
from corral.session.state import empty_usage
from corral.session.store import Store
from tests.support.postgres import PostgresServer

TARGET_APPENDS_PER_S = 20_000
WRITERS = 20
NOW = "2026-01-01T00:00:00.000000Z"


@dataclass
class Result:
    name: str
    events_per_append: int
    latencies_ms: list[float] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the bench's event-loop thread: all of SQLite's work, the client side of PostgreSQL's

    def row(self, adapter: str, target: bool) -> str:
        rate = self.events / self.seconds if self.seconds else 0.0
        versus = f"{rate / TARGET_APPENDS_PER_S:.2f}x" if target else ""
        appends = len(self.latencies_ms)
        return (
            f"| {adapter} | {self.name} | {self.events_per_append} | {appends} | {rate:,.0f} | "
            f"{percentile(self.latencies_ms, 50) * 1000:.0f} | {percentile(self.latencies_ms, 95) * 1000:.0f} | "
            f"{statistics.fmean(self.latencies_ms) * 1000:.0f} | {self.cpu_seconds / appends * 1e6:.0f} | {versus} |"
        )


def session(session_id: str) -> SessionRecord:
    return SessionRecord(
        session_id, "wrkspc_bench", "agent_b", 1, "env_b", {"agent": {}}, "idle", empty_usage(), 0.0, None, NOW, NOW
    )


def event_stream(count: int) -> list[NewEvent]:
    events: list[NewEvent] = []
    index = 0
    while len(events) < count:
        events.extend(turn_events(index))
        index += 1
    return events[:count]


async def one_writer(store: Store, session_id: str, batches: list[list[NewEvent]], result: Result) -> None:
    for batch in batches:
        started = time.perf_counter()
        await store.append_events(session_id, batch)
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
        result.events += len(batch)


async def run_case(
    store: Store, name: str, *, appends: int, per_append: int, writers: int, prefix: str, warmup: int
) -> Result:
    result = Result(name, per_append)
    session_ids = [f"sesn_{prefix}_{name}_{n}" for n in range(writers)]
    for session_id in session_ids:
        await store.insert_session(session(session_id))
    per_writer = max(1, appends // writers)
    plans = {}
    for session_id in session_ids:
        events = event_stream((per_writer + warmup) * per_append)
        plans[session_id] = [events[i : i + per_append] for i in range(0, len(events), per_append)]
    # Warm-up appends (connections, prepared statements, page cache) are not counted.
    warm = Result(name, per_append)
    await asyncio.gather(*(one_writer(store, sid, plan[:warmup], warm) for sid, plan in plans.items()))
    started, cpu = time.perf_counter(), time.thread_time()
    await asyncio.gather(*(one_writer(store, sid, plan[warmup:], result) for sid, plan in plans.items()))
    result.seconds, result.cpu_seconds = time.perf_counter() - started, time.thread_time() - cpu
    return result


async def run_cases(store: Store, prefix: str, appends: int, warmup: int) -> list[Result]:
    return [
        await run_case(store, "single", appends=appends, per_append=1, writers=1, prefix=prefix, warmup=warmup),
        await run_case(
            store, "batch", appends=max(1, appends // 10), per_append=10, writers=1, prefix=prefix, warmup=warmup
        ),
        await run_case(store, "parallel", appends=appends, per_append=1, writers=WRITERS, prefix=prefix, warmup=warmup),
    ]


@asynccontextmanager
async def sqlite_store() -> AsyncIterator[Store]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "corral.db")
        try:
            yield store
        finally:
            await store.close()


def postgres_database(url: str | None) -> tuple[PostgresServer, str]:
    server = PostgresServer(url, origin="--postgres-url") if url else PostgresServer.find_or_start()
    return server, server.create_database()


async def measure(appends: int, warmup: int, postgres_url: str | None) -> dict[str, list[Result]]:
    results: dict[str, list[Result]] = {}
    async with sqlite_store() as store:
        results["SQLite"] = await run_cases(store, "sqlite", appends, warmup)
    server, url = postgres_database(postgres_url)
    try:
        pg = await PostgresStore.open(url, max_connections=WRITERS)
        try:
            results["PostgreSQL"] = await run_cases(pg, "pg", appends, warmup)
        finally:
            await pg.close()
        quiet = await PostgresStore.open(url, migrate=False, notify=False)
        try:
            single = await run_case(
                quiet, "single, no notify", appends=appends, per_append=1, writers=1, prefix="quiet", warmup=warmup
            )
            results["PostgreSQL"].insert(1, single)
        finally:
            await quiet.close()
    finally:
        server.close()
    return results


def postgres_settings(url: str | None) -> str:
    import psycopg

    server = PostgresServer(url, origin="--postgres-url") if url else PostgresServer.find_or_start()
    try:
        with psycopg.connect(server.url) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            settings = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers')"
                " ORDER BY name"
            ).fetchall()
    finally:
        server.close()
    described = ", ".join(f"{name}={setting}" for name, setting in settings)
    return f"PostgreSQL {version[0] if version else '?'} on loopback TCP ({described})"


def report(results: dict[str, list[Result]], appends: int, warmup: int, pg_settings: str) -> str:
    lines = [
        f"Commit {commit()} (plus uncommitted changes, if any); {machine()}; load average (1/5 min) at start "
        f"{load_average()}.",
        f"In-process, {appends} appends per case after {warmup} warm-up appends per writer. SQLite: WAL, "
        f"synchronous=NORMAL, a temporary file. {pg_settings}, psycopg 3 pool; NOTIFY on unless stated.",
        "",
        "| adapter | case | events/append | appends | events/s | p50 µs | p95 µs | mean µs | loop CPU µs/append "
        "| vs 20k/s target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for adapter, rows in results.items():
        for result in rows:
            lines.append(result.row(adapter, target=adapter == "SQLite" and result.events_per_append == 1))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=20_000, help="appends per case (batch: a tenth)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed appends per writer")
    parser.add_argument("--postgres-url", default=None, help="a server the bench may create a database on")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 appends per case")
    parser.add_argument("--write", action="store_true", help="record the results in bench/RESULTS.md")
    args = parser.parse_args(argv)
    appends = 500 if args.quick else args.appends
    pg_settings = postgres_settings(args.postgres_url)
    results = asyncio.run(measure(appends, args.warmup, args.postgres_url))
    body = report(results, appends, args.warmup, pg_settings)
    print(body)
    if args.write:
        write_results("Event-log appends (bench_store)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

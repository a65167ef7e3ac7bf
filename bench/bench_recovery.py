"""Recovery benchmark: how long a brain takes to rebuild a session from its log.

A brain that takes over a session (after a crash, or on another node) knows nothing but the log. This
measures, in-process on the SQLite store, the time from "this session is mine" to "ready to call the model":
reading a 1,000-event session's log into the brain's view (conversation, pending calls, open calls) and
building the model request from it. Target (design doc): <= 10 ms for 1,000 events.

Run from the repository root: ``python -m bench.bench_recovery [--events 1000] [--repeat 50] [--write]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_turns import commit, machine, percentile, write_results
from corral.brain.view import SessionView
from corral.session.log import new_event
from corral.session.records import NewEvent, SessionRecord
from corral.session.sqlite import SqliteStore
from corral.session.state import empty_usage

TARGET_MS = 10.0


def turn_events(index: int) -> list[NewEvent]:
    """One tool turn as the brain logs it: ten events, four of them conversation."""
    tool_use = new_event(
        "agent.tool_use",
        name="bash",
        input={"command": f"ls -la /workspace/{index}"},
        evaluated_permission="allow",
        evaluation={"type": "always_allow"},
    )
    return [
        new_event("user.message", content=[{"type": "text", "text": f"step {index}: list the files and explain"}]),
        new_event("session.status_running"),
        new_event("span.model_request_start"),
        tool_use,
        new_event("span.model_request_end", model_request_start_id="x", is_error=False, model_usage={}),
        new_event("agent.tool_result", tool_use_id=tool_use.id, content=[{"type": "text", "text": "a\nb\nc\n" * 20}]),
        new_event("span.model_request_start"),
        new_event("agent.message", content=[{"type": "text", "text": f"Done with step {index}. " * 10}]),
        new_event("session.usage", usage={}),
        new_event("session.status_idle", stop_reason={"type": "end_turn"}, stop_details=None),
    ]


async def measure(events: int, repeat: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "corral.db")
        now = "2026-01-01T00:00:00.000000Z"
        session = SessionRecord(
            "sesn_bench",
            "wrkspc_bench",
            "agent_b",
            1,
            "env_b",
            {"agent": {}},
            "idle",
            empty_usage(),
            0.0,
            None,
            now,
            now,
        )
        await store.insert_session(session)
        for index in range(events // 10):
            await store.append_events(session.id, turn_events(index))
        rebuild, request = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            view = SessionView()
            await view.sync(store, session.id)
            synced = time.perf_counter()
            messages = view.conversation.messages()
            finished = time.perf_counter()
            assert len(messages) > events // 10
            rebuild.append((synced - started) * 1000)
            request.append((finished - started) * 1000)
        await store.close()
        return rebuild, request


def row(name: str, values: list[float]) -> str:
    p50 = percentile(values, 50)
    return (
        f"| {name} | {len(values)} | {p50:.2f} | {percentile(values, 95):.2f} | {statistics.fmean(values):.2f} "
        f"| {p50 / TARGET_MS:.2f}x |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--write", action="store_true", help="record the results in bench/RESULTS.md")
    args = parser.parse_args(argv)
    rebuild, request = asyncio.run(measure(args.events, args.repeat))
    body = "\n".join(
        [
            f"Commit {commit()}; {machine()}. In-process, SQLite store, a {args.events}-event session "
            f"({args.events // 10} tool turns); target p50 <= {TARGET_MS:g} ms.",
            "",
            "| measurement | n | p50 ms | p95 ms | mean ms | p50 vs target |",
            "|---|---:|---:|---:|---:|---:|",
            row("read the log into the brain's view", rebuild),
            row("... and build the model request", request),
        ]
    )
    print(body)
    if args.write:
        write_results("Recovery: rebuilding a session from its log", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`corral sessions`: list, show, create and archive sessions; print (and follow) their event logs."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import click

from corral.cli.commands.common import Client, Json, all_items, client_command, print_fields, print_table, to_json
from corral.cli.commands.events import EventRenderer


def _usage_text(usage: Json) -> str:
    return f"{usage.get('input_tokens', 0)}/{usage.get('output_tokens', 0)}"


@click.group()
def sessions() -> None:
    """List, show, create and archive sessions; print their event logs."""


@sessions.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["idle", "running", "rescheduling", "terminated"]),
    help="Only sessions in this status (repeatable).",
)
@click.option("--agent", "agent_id", default=None, help="Only sessions of this agent.")
@click.option("--all", "include_archived", is_flag=True, help="Include archived sessions.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="Show at most this many.")
@client_command
def sessions_list(
    client: Client, statuses: tuple[str, ...], agent_id: str | None, include_archived: bool, limit: int
) -> None:
    """List sessions, newest first."""
    from anthropic import omit

    pages = client.sdk.beta.sessions.list(
        statuses=cast(Any, list(statuses)) if statuses else omit,
        agent_id=agent_id or omit,
        include_archived=include_archived,
        limit=min(limit, 100),
    )
    found = all_items(pages, limit)
    if client.json_output:
        client.emit_json(found)
        return
    rows = [
        [
            s["id"],
            s["status"] + (" (archived)" if s.get("archived_at") else ""),
            s.get("title") or "",
            s["agent"]["name"],
            _usage_text(s.get("usage") or {}),
            s["created_at"],
        ]
        for s in found
    ]
    print_table(client, ["ID", "STATUS", "TITLE", "AGENT", "TOKENS IN/OUT", "CREATED"], rows)


@sessions.command("get")
@click.argument("session_id")
@client_command
def sessions_get(client: Client, session_id: str) -> None:
    """Show a session: status, agent, usage."""
    session = to_json(client.sdk.beta.sessions.retrieve(session_id))
    if client.json_output:
        client.emit_json(session)
        return
    usage = session.get("usage") or {}
    print_fields(
        client,
        [
            ("id", session["id"]),
            ("status", session["status"]),
            ("title", session.get("title")),
            ("agent", f"{session['agent']['name']} ({session['agent']['id']} v{session['agent']['version']})"),
            ("model", session["agent"]["model"]["id"]),
            ("environment", session["environment_id"]),
            ("tokens", f"{usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out"),
            ("active", f"{(session.get('stats') or {}).get('active_seconds') or 0:.1f} s"),
            ("metadata", session.get("metadata") or None),
            ("created", session["created_at"]),
            ("archived", session.get("archived_at")),
        ],
    )


@sessions.command("create")
@click.option("--agent", "agent_id", required=True, help="Agent id.")
@click.option("--environment", "environment_id", required=True, help="Environment id.")
@click.option("--title", default=None)
@client_command
def sessions_create(client: Client, agent_id: str, environment_id: str, title: str | None) -> None:
    """Create a session (idle until it gets a message)."""
    session = to_json(client.sdk.beta.sessions.create(agent=agent_id, environment_id=environment_id, title=title))
    if client.json_output:
        client.emit_json(session)
    else:
        client.console.print(f"created session {session['id']}")


@sessions.command("archive")
@click.argument("session_id")
@client_command
def sessions_archive(client: Client, session_id: str) -> None:
    """Archive a session: it becomes read-only and its sandbox stops."""
    session = to_json(client.sdk.beta.sessions.archive(session_id))
    if client.json_output:
        client.emit_json(session)
    else:
        client.console.print(f"archived session {session['id']}")


def _last_status(events: list[Json]) -> str | None:
    for event in reversed(events):
        if event.get("type", "").startswith("session.status_") or event.get("type") == "session.deleted":
            return str(event["type"])
    return None


@sessions.command("logs")
@click.argument("session_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing live events until the session is idle.")
@client_command
def sessions_logs(client: Client, session_id: str, follow: bool) -> None:
    """Print a session's events; with -f, follow a running session until it goes idle."""
    sdk = client.sdk
    renderer = None if client.json_output else EventRenderer(client.console)

    def show(event: Json) -> None:
        if renderer is None:
            client.emit_line(event)
        else:
            renderer.render(event)

    stream_context: AbstractContextManager[Any] = (
        sdk.beta.sessions.events.stream(session_id) if follow else nullcontext(None)
    )
    # The stream opens before the history is read, so no event falls between the two.
    with stream_context as stream:
        status = to_json(sdk.beta.sessions.retrieve(session_id))["status"] if follow else None
        history = all_items(sdk.beta.sessions.events.list(session_id, limit=1000, order="asc"))
        for event in history:
            show(event)
        if stream is None or status not in ("running", "rescheduling"):
            return
        if _last_status(history) in ("session.status_idle", "session.status_terminated", "session.deleted"):
            return
        seen = {event["id"] for event in history}
        for item in stream:
            event = to_json(item)
            if event.get("id") in seen:
                continue
            show(event)
            if event.get("type") in ("session.status_idle", "session.status_terminated", "session.deleted"):
                return

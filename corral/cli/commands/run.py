"""`corral run`: send a prompt to an agent and show the session live until it is idle."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, cast

import click

from corral.cli.commands.common import DEFAULT_MODEL, Client, Json, client_command, shorten, to_json
from corral.cli.commands.events import EventRenderer, tool_summary

# What `corral run` creates when it is not told which agent and environment to use, and reuses after that.
RUN_AGENT_NAME = "corral-run"
RUN_ENVIRONMENT_NAME = "corral-run"
EXIT_WAITING = 3  # `run` stopped at a call that needs an answer it cannot give


def _find_by_name(items: Iterable[Any], name: str) -> list[Json]:
    return [item for item in map(to_json, items) if item.get("name") == name]


def _ensure_run_agent(client: Client, model: str | None) -> str:
    found = _find_by_name(client.sdk.beta.agents.list(limit=100), RUN_AGENT_NAME)
    if found:
        return str(found[0]["id"])
    agent = client.sdk.beta.agents.create(
        name=RUN_AGENT_NAME,
        model=model or DEFAULT_MODEL,
        description="Created by `corral run`.",
        tools=[{"type": "agent_toolset_20260401"}],
    )
    return agent.id


def _ensure_run_environment(client: Client) -> str:
    import anthropic

    found = _find_by_name(client.sdk.beta.environments.list(limit=100), RUN_ENVIRONMENT_NAME)
    if found:
        return str(found[0]["id"])
    try:
        return client.sdk.beta.environments.create(
            name=RUN_ENVIRONMENT_NAME, description="Created by `corral run`.", config={"type": "cloud"}
        ).id
    except anthropic.ConflictError:  # another `corral run` made it just now
        return str(_find_by_name(client.sdk.beta.environments.list(limit=100), RUN_ENVIRONMENT_NAME)[0]["id"])


def _confirm_calls(client: Client, renderer: EventRenderer | None, waiting: list[str]) -> list[Json] | None:
    """Answers for calls awaiting confirmation, asked at the terminal; None when they cannot be answered here."""
    if not sys.stdin.isatty() or client.json_output or renderer is None:
        return None
    answers: list[Json] = []
    for call_id in waiting:
        call = renderer.calls.get(call_id)
        if call is None or call.get("type") == "agent.custom_tool_use":
            return None
        allowed = click.confirm(
            f"Allow {call.get('name')} {tool_summary(str(call.get('name')), call.get('input'))}?", default=False
        )
        verdict = "allow" if allowed else "deny"
        answers.append({"type": "user.tool_confirmation", "tool_use_id": call_id, "result": verdict})
    return answers


@click.command()
@click.argument("prompt")
@click.option("--agent", "agent_id", default=None, help=f"Agent id (default: the '{RUN_AGENT_NAME}' agent, made once).")
@click.option(
    "--environment",
    "environment_id",
    default=None,
    help=f"Environment id (default: the '{RUN_ENVIRONMENT_NAME}' environment, made once).",
)
@click.option("--session", "session_id", default=None, help="Continue this session instead of starting one.")
@click.option("--model", envvar="CORRAL_MODEL", show_envvar=True, default=None, help="Model for this session.")
@click.option("--system", default=None, help="System prompt for this session.")
@click.option("--title", default=None, help="Session title (default: the start of the prompt).")
@client_command
def run(
    client: Client,
    prompt: str,
    agent_id: str | None,
    environment_id: str | None,
    session_id: str | None,
    model: str | None,
    system: str | None,
    title: str | None,
) -> None:
    """Send PROMPT to an agent and show the session live until it is idle.

    Without --agent and --environment it uses an agent and an environment named 'corral-run', creating them
    the first time. --model and --system apply to the new session only (the agent is not changed). Exit
    status: 0 when the turn ends, 1 when it failed, 3 when it waits for an answer this terminal cannot give.
    """
    sdk = client.sdk
    if session_id is not None:
        if agent_id or environment_id or model or system:
            raise click.UsageError(
                "--session continues a session: it cannot be combined with --agent, --environment, --model or --system"
            )
        session = to_json(sdk.beta.sessions.retrieve(session_id))
    else:
        agent_ref: Any = agent_id or _ensure_run_agent(client, model)
        if model or system:
            agent_ref = {"type": "agent_with_overrides", "id": agent_ref}
            if model:
                agent_ref["model"] = model
            if system:
                agent_ref["system"] = system
        session = to_json(
            sdk.beta.sessions.create(
                agent=agent_ref,
                environment_id=environment_id or _ensure_run_environment(client),
                title=title or shorten(prompt, 60),
            )
        )
    renderer = None if client.json_output else EventRenderer(client.console, show_user=False)
    if client.json_output:
        client.emit_line(session)
    else:
        client.console.print(
            f"session {session['id']} · agent {session['agent']['name']} · model {session['agent']['model']['id']}",
            style="dim",
            markup=False,
        )
    outcome = _stream_turn(client, renderer, session["id"], [_user_message(prompt)])
    if outcome == "retries_exhausted":
        raise click.ClickException(f"the turn failed; see `corral sessions logs {session['id']}`")
    if outcome == "waiting":
        click.echo(
            f"session {session['id']} waits for an answer to a tool call (see `corral sessions logs {session['id']}`)",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_WAITING)


def _user_message(text: str) -> Json:
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


def _stream_turn(client: Client, renderer: EventRenderer | None, session_id: str, events: list[Json]) -> str:
    """Send `events`, print the session's events until it idles; the idle's stop reason ("waiting" when a
    call needs an answer that cannot be given here)."""
    sdk = client.sdk
    while True:
        with sdk.beta.sessions.events.stream(session_id) as stream:
            sdk.beta.sessions.events.send(session_id, events=cast(Any, events))
            stop = _until_idle(client, renderer, stream)
        if stop.get("type") != "requires_action":
            return str(stop.get("type", "end_turn"))
        answers = _confirm_calls(client, renderer, list(stop.get("event_ids") or []))
        if answers is None:
            return "waiting"
        events = answers


def _until_idle(client: Client, renderer: EventRenderer | None, stream: Iterator[Any]) -> Json:
    for item in stream:
        event = to_json(item)
        if renderer is None:
            client.emit_line(event)
        else:
            renderer.render(event)
        if event.get("type") == "session.status_idle":
            return cast(Json, event.get("stop_reason") or {"type": "end_turn"})
        if event.get("type") in ("session.status_terminated", "session.deleted"):
            return {"type": "terminated"}
    raise click.ClickException("the server closed the event stream before the session went idle")

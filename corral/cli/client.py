"""Client commands: `corral run`, `agents`, `environments`, `sessions` and `apply`, over the HTTP API.

They speak to any Corral server (or any server of the Managed Agents API) through the official `anthropic`
SDK, so they exercise exactly what other clients use. The server and key come from `--url` / `CORRAL_URL`
and `--api-key` / `CORRAL_API_KEY`. Every command takes `--json` for scripts: objects and lists as JSON,
streams as one JSON object per line. Failures are one line on stderr and exit status 1 (no traceback).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

if TYPE_CHECKING:
    from anthropic import Anthropic
    from rich.console import Console

Json = dict[str, Any]

DEFAULT_URL = "http://127.0.0.1:8400"
DEFAULT_MODEL = "claude-sonnet-4-6"
# What `corral run` creates when it is not told which agent and environment to use, and reuses after that.
RUN_AGENT_NAME = "corral-run"
RUN_ENVIRONMENT_NAME = "corral-run"
TOOL_RESULT_LINES = 12
PIPE_WIDTH = 200
EXIT_WAITING = 3  # `run` stopped at a call that needs an answer it cannot give


# --- connecting ----------------------------------------------------------------------------------------


@dataclass
class Client:
    url: str
    api_key: str | None
    json_output: bool
    _sdk: Anthropic | None = field(default=None, repr=False)
    _console: Console | None = field(default=None, repr=False)

    @property
    def sdk(self) -> Anthropic:
        if self._sdk is None:
            if not self.api_key:
                raise click.ClickException(
                    "no API key: pass --api-key or set CORRAL_API_KEY (`corral keys create` on the server makes one)"
                )
            from anthropic import Anthropic

            self._sdk = Anthropic(base_url=self.url, api_key=self.api_key, max_retries=2)
        return self._sdk

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            # Piped output is not wrapped at 80 columns: ids and commands stay on one line.
            width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
            self._console = Console(highlight=False, width=width)
        return self._console

    def emit_json(self, value: Any) -> None:
        click.echo(json.dumps(value, indent=2, ensure_ascii=False))

    def emit_line(self, value: Any) -> None:
        click.echo(json.dumps(value, ensure_ascii=False))


def to_json(obj: Any) -> Json:
    """An SDK object as the JSON the server sent."""
    return cast(Json, obj.to_dict(mode="json")) if hasattr(obj, "to_dict") else cast(Json, obj)


def _error_message(exc: Exception, url: str) -> str:
    import anthropic

    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__ or exc
        return (
            f"cannot reach the Corral server at {url} ({type(cause).__name__}: {cause}); "
            "is `corral serve` running there? Set --url or CORRAL_URL to point elsewhere"
        )
    if isinstance(exc, anthropic.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        message = str((error or {}).get("message") or exc.message)
        if isinstance(exc, anthropic.AuthenticationError):
            return (
                f"the server at {url} rejected the API key: {message}. "
                "Pass a valid one with --api-key or CORRAL_API_KEY (`corral keys create` makes one)"
            )
        kind = (error or {}).get("type") or "error"
        request_id = f" (request {exc.request_id})" if exc.request_id else ""
        return f"{exc.status_code} {kind}: {message}{request_id}"
    return f"{type(exc).__name__}: {exc}"


def client_command(command: Callable[..., None]) -> Callable[..., None]:
    """Adds --url, --api-key and --json, passes a `Client` as `client`, and turns API failures into messages."""

    @click.option(
        "--url",
        envvar="CORRAL_URL",
        show_envvar=True,
        default=DEFAULT_URL,
        show_default=True,
        help="The Corral server.",
    )
    @click.option("--api-key", envvar="CORRAL_API_KEY", show_envvar=True, default=None, help="API key for the server.")
    @click.option("--json", "json_output", is_flag=True, help="Print JSON for scripts instead of tables and text.")
    @functools.wraps(command)
    def wrapper(*args: Any, url: str, api_key: str | None, json_output: bool, **kwargs: Any) -> None:
        import anthropic

        client = Client(url=url.rstrip("/"), api_key=api_key, json_output=json_output)
        try:
            command(*args, client=client, **kwargs)
        except anthropic.APIError as exc:
            raise click.ClickException(_error_message(exc, client.url)) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None
        finally:
            if client._sdk is not None:
                client._sdk.close()

    return wrapper


def _all(pages: Iterable[Any], limit: int | None = None) -> list[Json]:
    """Every item of an auto-paginating SDK listing (or the first `limit`)."""
    items = []
    for item in pages:
        items.append(to_json(item))
        if limit is not None and len(items) >= limit:
            break
    return items


# --- rendering -----------------------------------------------------------------------------------------


def _short(value: Any, width: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _text_of(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            parts.append(f"[{block.get('type')}]")
    return "\n".join(parts)


def tool_summary(name: str, tool_input: Any) -> str:
    """The part of a tool call a person wants to see: the command, the path, the pattern."""
    if not isinstance(tool_input, dict):
        return _short(tool_input)
    if name == "bash":
        if tool_input.get("restart"):
            return "(restart)"
        return _short(str(tool_input.get("command", "")), 160)
    for key in ("file_path", "pattern", "url", "query"):
        if key in tool_input:
            extra = f"  in {tool_input['path']}" if key == "pattern" and tool_input.get("path") else ""
            return _short(str(tool_input[key]), 160) + extra
    return _short(tool_input, 160)


class EventRenderer:
    """Prints session events for a person: messages, tool calls with their results, errors, status."""

    def __init__(self, console: Console, *, show_user: bool = True) -> None:
        self.console = console
        self.show_user = show_user
        self.calls: dict[str, Json] = {}
        self.usage: Json = {}
        self._thinking: Any = None

    def _print(self, renderable: Any, **kwargs: Any) -> None:
        self.console.print(renderable, markup=False, highlight=False, **kwargs)

    def thinking(self, on: bool) -> None:
        if not self.console.is_terminal:
            return
        if on and self._thinking is None:
            self._thinking = self.console.status("thinking…")
            self._thinking.start()
        elif not on and self._thinking is not None:
            self._thinking.stop()
            self._thinking = None

    def render(self, event: Json) -> None:
        from rich.markdown import Markdown
        from rich.padding import Padding
        from rich.text import Text

        kind = event.get("type", "")
        if kind == "span.model_request_start":
            self.thinking(True)
            return
        if kind == "span.model_request_end":
            self.thinking(False)
            return
        self.thinking(False)
        if kind == "user.message":
            if self.show_user:
                self._print(Text("> " + _text_of(event.get("content")), style="bold cyan"))
        elif kind == "agent.message":
            self._print(Markdown(_text_of(event.get("content"))))
        elif kind in ("agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use"):
            self.calls[str(event.get("id"))] = event
            name = str(event.get("name", "?"))
            label = f"{event['mcp_server_name']}/{name}" if event.get("mcp_server_name") else name
            line = Text("⏺ ", style="magenta")
            line.append(label, style="bold magenta")
            line.append("  " + tool_summary(name, event.get("input")))
            permission = event.get("evaluated_permission")
            if permission in ("ask", "deny"):
                line.append(f"  [{'needs confirmation' if permission == 'ask' else 'not allowed'}]", style="yellow")
            if kind == "agent.custom_tool_use":
                line.append("  [client tool]", style="yellow")
            self._print(line)
        elif kind in ("agent.tool_result", "agent.mcp_tool_result"):
            text = _text_of(event.get("content")) or "(no output)"
            lines = text.rstrip("\n").splitlines() or [""]
            shown = lines[:TOOL_RESULT_LINES]
            if len(lines) > TOOL_RESULT_LINES:
                shown.append(f"… {len(lines) - TOOL_RESULT_LINES} more lines")
            style = "red" if event.get("is_error") else "dim"
            self._print(Padding(Text("\n".join(shown), style=style), (0, 0, 0, 2), expand=False))
        elif kind == "user.custom_tool_result":
            self._print(Text("  ⎿ client tool result: " + _short(_text_of(event.get("content"))), style="dim"))
        elif kind == "user.tool_confirmation":
            verdict = "allowed" if event.get("result") == "allow" else "denied"
            self._print(Text(f"  ⎿ {verdict} by the user", style="yellow"))
        elif kind == "user.interrupt":
            self._print(Text("⏹ interrupted", style="yellow"))
        elif kind == "session.error":
            error = event.get("error") or {}
            retry = (error.get("retry_status") or {}).get("type", "")
            self._print(Text(f"✖ {error.get('type', 'error')}: {error.get('message', '')} ({retry})", style="bold red"))
        elif kind == "session.usage":
            self.usage = event.get("usage") or {}
        elif kind == "session.status_idle":
            reason = (event.get("stop_reason") or {}).get("type", "end_turn")
            self._print(Text(f"── idle: {reason}{self._usage_note()}", style="dim"))
        elif kind == "session.status_running":
            self._print(Text("── running", style="dim"))
        elif kind in ("session.status_rescheduled", "session.status_terminated", "session.deleted"):
            self._print(Text(f"── {kind.removeprefix('session.').replace('status_', '')}", style="yellow"))
        elif kind == "session.updated":
            changed = ", ".join(key for key in event if key not in ("id", "type", "processed_at"))
            self._print(Text(f"── session updated: {changed}", style="dim"))
        elif kind not in ("event_start", "event_delta"):
            self._print(Text(f"── {kind}", style="dim"))

    def _usage_note(self) -> str:
        if not self.usage:
            return ""
        return f"  (tokens: {self.usage.get('input_tokens', 0)} in, {self.usage.get('output_tokens', 0)} out)"


def _table(client: Client, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    client.console.print(table, markup=False)


def _fields(client: Client, pairs: list[tuple[str, Any]]) -> None:
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in pairs:
        shown = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
        table.add_row(key, "-" if value is None or value == "" else shown)
    client.console.print(table, markup=False)


def _tool_names(agent: Json) -> str:
    names = []
    for tool in agent.get("tools") or []:
        if tool.get("type") == "custom":
            names.append(tool.get("name", "?"))
        elif tool.get("type") == "mcp_toolset":
            names.append(f"mcp:{tool.get('mcp_server_name')}")
        else:
            names.append(str(tool.get("type")))
    return ", ".join(names) or "-"


def _usage_text(usage: Json) -> str:
    return f"{usage.get('input_tokens', 0)}/{usage.get('output_tokens', 0)}"


# --- agents --------------------------------------------------------------------------------------------


@click.group()
def agents() -> None:
    """List, show, create and archive agents."""


@agents.command("list")
@click.option("--all", "include_archived", is_flag=True, help="Include archived agents.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Show at most this many.")
@client_command
def agents_list(client: Client, include_archived: bool, limit: int | None) -> None:
    """List agents, newest first."""
    found = _all(client.sdk.beta.agents.list(include_archived=include_archived, limit=100), limit)
    if client.json_output:
        client.emit_json(found)
        return
    rows = [
        [a["id"], a["name"], a["model"]["id"], str(a["version"]), _tool_names(a), a["created_at"]]
        + (["archived" if a.get("archived_at") else ""] if include_archived else [])
        for a in found
    ]
    _table(client, ["ID", "NAME", "MODEL", "VERSION", "TOOLS", "CREATED"] + ([""] if include_archived else []), rows)


@agents.command("get")
@click.argument("agent_id")
@click.option("--version", type=click.IntRange(1), default=None, help="A past version (default: the latest).")
@click.option("--versions", "with_versions", is_flag=True, help="Also list every version.")
@client_command
def agents_get(client: Client, agent_id: str, version: int | None, with_versions: bool) -> None:
    """Show an agent."""
    from anthropic import omit

    agent = to_json(client.sdk.beta.agents.retrieve(agent_id, version=version if version is not None else omit))
    versions = _all(client.sdk.beta.agents.versions.list(agent_id, limit=100)) if with_versions else None
    if client.json_output:
        client.emit_json({**agent, "versions": versions} if versions is not None else agent)
        return
    _fields(
        client,
        [
            ("id", agent["id"]),
            ("name", agent["name"]),
            ("version", str(agent["version"])),
            ("model", agent["model"]["id"]),
            ("description", agent.get("description")),
            ("system", agent.get("system")),
            ("tools", _tool_names(agent)),
            ("mcp servers", ", ".join(s["name"] for s in agent.get("mcp_servers") or []) or None),
            ("metadata", agent.get("metadata") or None),
            ("created", agent["created_at"]),
            ("updated", agent["updated_at"]),
            ("archived", agent.get("archived_at")),
        ],
    )
    if versions is not None:
        client.console.print()
        _table(
            client,
            ["VERSION", "MODEL", "UPDATED"],
            [[str(v["version"]), v["model"]["id"], v["updated_at"]] for v in versions],
        )


@agents.command("create")
@click.argument("name")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model id.")
@click.option("--system", default=None, help="System prompt.")
@click.option("--description", default=None)
@click.option("--no-tools", is_flag=True, help="No built-in toolset (bash, read, write, edit, glob, grep).")
@client_command
def agents_create(
    client: Client, name: str, model: str, system: str | None, description: str | None, no_tools: bool
) -> None:
    """Create an agent (with the built-in toolset unless --no-tools)."""
    tools: Any = [] if no_tools else [{"type": "agent_toolset_20260401"}]
    agent = to_json(
        client.sdk.beta.agents.create(name=name, model=model, system=system, description=description, tools=tools)
    )
    if client.json_output:
        client.emit_json(agent)
    else:
        client.console.print(f"created agent {agent['id']} ({agent['name']}, version {agent['version']})")


@agents.command("archive")
@click.argument("agent_id")
@client_command
def agents_archive(client: Client, agent_id: str) -> None:
    """Archive an agent: it stays readable; new sessions cannot use it."""
    agent = to_json(client.sdk.beta.agents.archive(agent_id))
    if client.json_output:
        client.emit_json(agent)
    else:
        client.console.print(f"archived agent {agent['id']} ({agent['name']})")


# --- environments --------------------------------------------------------------------------------------


def _networking_text(environment: Json) -> str:
    config = environment.get("config") or {}
    if config.get("type") != "cloud":
        return str(config.get("type", "-"))
    networking = config.get("networking") or {}
    if networking.get("type") != "limited":
        return str(networking.get("type", "-"))
    hosts = networking.get("allowed_hosts") or []
    return "limited" + (f" ({', '.join(hosts)})" if hosts else "")


@click.group()
def environments() -> None:
    """List, show, create and archive environments."""


@environments.command("list")
@click.option("--all", "include_archived", is_flag=True, help="Include archived environments.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Show at most this many.")
@client_command
def environments_list(client: Client, include_archived: bool, limit: int | None) -> None:
    """List environments."""
    found = _all(client.sdk.beta.environments.list(include_archived=include_archived, limit=100), limit)
    if client.json_output:
        client.emit_json(found)
        return
    rows = [
        [e["id"], e["name"], _networking_text(e), e["created_at"]]
        + (["archived" if e.get("archived_at") else ""] if include_archived else [])
        for e in found
    ]
    _table(client, ["ID", "NAME", "NETWORKING", "CREATED"] + ([""] if include_archived else []), rows)


@environments.command("get")
@click.argument("environment_id")
@client_command
def environments_get(client: Client, environment_id: str) -> None:
    """Show an environment."""
    environment = to_json(client.sdk.beta.environments.retrieve(environment_id))
    if client.json_output:
        client.emit_json(environment)
        return
    _fields(
        client,
        [
            ("id", environment["id"]),
            ("name", environment["name"]),
            ("description", environment.get("description")),
            ("networking", _networking_text(environment)),
            ("config", environment.get("config")),
            ("metadata", environment.get("metadata") or None),
            ("created", environment["created_at"]),
            ("archived", environment.get("archived_at")),
        ],
    )


@environments.command("create")
@click.argument("name")
@click.option(
    "--networking",
    type=click.Choice(["limited", "unrestricted"]),
    default="limited",
    show_default=True,
    help="Network access of the sandbox.",
)
@click.option(
    "--allow-host", "allowed_hosts", multiple=True, help="A host the sandbox may reach (limited; repeatable)."
)
@click.option("--description", default=None)
@client_command
def environments_create(
    client: Client, name: str, networking: str, allowed_hosts: tuple[str, ...], description: str | None
) -> None:
    """Create a cloud environment."""
    network: Json = {"type": networking}
    if networking == "limited" and allowed_hosts:
        network["allowed_hosts"] = list(allowed_hosts)
    config: Any = {"type": "cloud", "networking": network}
    environment = to_json(client.sdk.beta.environments.create(name=name, config=config, description=description))
    if client.json_output:
        client.emit_json(environment)
    else:
        client.console.print(f"created environment {environment['id']} ({environment['name']})")


@environments.command("archive")
@click.argument("environment_id")
@client_command
def environments_archive(client: Client, environment_id: str) -> None:
    """Archive an environment: new sessions cannot use it."""
    environment = to_json(client.sdk.beta.environments.archive(environment_id))
    if client.json_output:
        client.emit_json(environment)
    else:
        client.console.print(f"archived environment {environment['id']} ({environment['name']})")


# --- sessions ------------------------------------------------------------------------------------------


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
    found = _all(pages, limit)
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
    _table(client, ["ID", "STATUS", "TITLE", "AGENT", "TOKENS IN/OUT", "CREATED"], rows)


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
    _fields(
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
        history = _all(sdk.beta.sessions.events.list(session_id, limit=1000, order="asc"))
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


# --- run -----------------------------------------------------------------------------------------------


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
                title=title or _short(prompt, 60),
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


# --- apply ---------------------------------------------------------------------------------------------

AGENT_FIELDS = ("name", "model", "system", "description", "tools", "mcp_servers", "metadata")
ENVIRONMENT_FIELDS = ("name", "config", "description", "metadata")


def _load_spec(path: Path) -> tuple[list[Json], list[Json]]:
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise click.ClickException(f"{path}: expected a mapping with 'agents' and/or 'environments'")
    unknown = sorted(set(document) - {"agents", "environments"})
    if unknown:
        raise click.ClickException(f"{path}: unknown top-level keys {', '.join(unknown)} (use agents, environments)")

    def entries(kind: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> list[Json]:
        items = document.get(kind) or []
        if not isinstance(items, list):
            raise click.ClickException(f"{path}: '{kind}' must be a list")
        names = set()
        for index, item in enumerate(items):
            where = f"{path}: {kind}[{index}]"
            if not isinstance(item, dict):
                raise click.ClickException(f"{where} must be a mapping")
            extra = sorted(set(item) - set(allowed))
            if extra:
                raise click.ClickException(f"{where}: unknown keys {', '.join(extra)} (allowed: {', '.join(allowed)})")
            missing = [key for key in required if not item.get(key)]
            if missing:
                raise click.ClickException(f"{where}: {', '.join(missing)} is required")
            if item["name"] in names:
                raise click.ClickException(f"{where}: the name {item['name']!r} appears twice")
            names.add(item["name"])
        return cast(list[Json], items)

    return (
        entries("agents", AGENT_FIELDS, ("name", "model")),
        entries("environments", ENVIRONMENT_FIELDS, ("name",)),
    )


def _metadata_patch(current: Json, desired: Json) -> Json:
    """The metadata update that makes `current` equal `desired` (null deletes a key)."""
    patch: Json = {key: None for key in current if key not in desired}
    patch.update({key: str(value) for key, value in desired.items()})
    return patch


def _contains(actual: Any, desired: Any) -> bool:
    """Whether `actual` (as the server resolved it) already has every value `desired` states."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(_contains(actual.get(key), value) for key, value in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(_contains(a, d) for a, d in zip(actual, desired, strict=True))
        )
    return bool(actual == desired)


def _single(found: list[Json], kind: str, name: str) -> Json | None:
    if len(found) > 1:
        ids = ", ".join(item["id"] for item in found)
        raise click.ClickException(f"{len(found)} {kind}s are named {name!r} ({ids}); archive all but one to apply")
    return found[0] if found else None


def _apply_environment(client: Client, spec: Json, existing: list[Json]) -> Json:
    sdk = client.sdk
    name = spec["name"]
    current = _single([e for e in existing if e["name"] == name], "environment", name)
    if current is None:
        created = to_json(
            sdk.beta.environments.create(
                name=name,
                config=cast(Any, spec.get("config") or {"type": "cloud"}),
                description=spec.get("description"),
                metadata={k: str(v) for k, v in (spec.get("metadata") or {}).items()},
            )
        )
        return {"kind": "environment", "name": name, "id": created["id"], "action": "created"}
    desired_metadata = {k: str(v) for k, v in (spec.get("metadata") or {}).items()}
    unchanged = (
        _contains(current.get("config"), spec.get("config") or {"type": "cloud"})
        and (current.get("description") or None) == (spec.get("description") or None)
        and (current.get("metadata") or {}) == desired_metadata
    )
    if unchanged:
        return {"kind": "environment", "name": name, "id": current["id"], "action": "unchanged"}
    sdk.beta.environments.update(
        current["id"],
        config=cast(Any, spec.get("config") or {"type": "cloud"}),
        description=spec.get("description"),
        metadata=_metadata_patch(current.get("metadata") or {}, desired_metadata),
    )
    return {"kind": "environment", "name": name, "id": current["id"], "action": "updated"}


def _apply_agent(client: Client, spec: Json, existing: list[Json]) -> Json:
    sdk = client.sdk
    name = spec["name"]
    current = _single([a for a in existing if a["name"] == name], "agent", name)
    desired_metadata = {k: str(v) for k, v in (spec.get("metadata") or {}).items()}
    fields: Any = {
        "name": name,
        "model": spec["model"],
        "system": spec.get("system"),
        "description": spec.get("description"),
        "tools": spec.get("tools") or [],
        "mcp_servers": spec.get("mcp_servers") or [],
    }
    if current is None:
        created = to_json(sdk.beta.agents.create(**fields, metadata=desired_metadata))
        return {"kind": "agent", "name": name, "id": created["id"], "action": "created", "version": created["version"]}
    # Every field is sent, so what the file leaves out is cleared; the server makes a new version only if
    # this changes something.
    updated = to_json(
        sdk.beta.agents.update(
            current["id"],
            version=current["version"],
            metadata=_metadata_patch(current.get("metadata") or {}, desired_metadata),
            **fields,
        )
    )
    action = "unchanged" if updated["version"] == current["version"] else "updated"
    return {"kind": "agent", "name": name, "id": updated["id"], "action": action, "version": updated["version"]}


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@client_command
def apply(client: Client, file: Path) -> None:
    """Create or update the agents and environments declared in FILE (YAML), matched by name.

    \b
    environments:
      - name: reviewer-env
        config: {type: cloud, networking: {type: unrestricted}}
    agents:
      - name: reviewer
        model: claude-sonnet-4-6
        system: You review code for bugs. Be direct.
        tools: [{type: agent_toolset_20260401}]

    Applying the same file again changes nothing. An agent gets a new version only when a field changed;
    fields the file leaves out are cleared (system, description, tools, MCP servers, metadata). Names must be
    unique among the workspace's unarchived agents and environments.
    """
    agent_specs, environment_specs = _load_spec(file)
    sdk = client.sdk
    results: list[Json] = []
    if environment_specs:
        existing_environments = _all(sdk.beta.environments.list(limit=100))
        results += [_apply_environment(client, spec, existing_environments) for spec in environment_specs]
    if agent_specs:
        existing_agents = _all(sdk.beta.agents.list(limit=100))
        results += [_apply_agent(client, spec, existing_agents) for spec in agent_specs]
    if client.json_output:
        client.emit_json(results)
        return
    for result in results:
        version = f" (version {result['version']})" if "version" in result else ""
        client.console.print(f"{result['kind']} {result['name']}: {result['action']} {result['id']}{version}")


def register(group: click.Group) -> None:
    """Adds the client commands to the `corral` command group."""
    for command in (run, apply, agents, environments, sessions):
        group.add_command(command)

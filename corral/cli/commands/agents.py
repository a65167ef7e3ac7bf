"""`corral agents`: list, show, create and archive agents."""

from __future__ import annotations

from typing import Any

import click

from corral.cli.commands.common import (
    DEFAULT_MODEL,
    Client,
    Json,
    all_items,
    client_command,
    print_fields,
    print_table,
    to_json,
)


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


@click.group()
def agents() -> None:
    """List, show, create and archive agents."""


@agents.command("list")
@click.option("--all", "include_archived", is_flag=True, help="Include archived agents.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Show at most this many.")
@client_command
def agents_list(client: Client, include_archived: bool, limit: int | None) -> None:
    """List agents, newest first."""
    found = all_items(client.sdk.beta.agents.list(include_archived=include_archived, limit=100), limit)
    if client.json_output:
        client.emit_json(found)
        return
    rows = [
        [a["id"], a["name"], a["model"]["id"], str(a["version"]), _tool_names(a), a["created_at"]]
        + (["archived" if a.get("archived_at") else ""] if include_archived else [])
        for a in found
    ]
    print_table(
        client, ["ID", "NAME", "MODEL", "VERSION", "TOOLS", "CREATED"] + ([""] if include_archived else []), rows
    )


@agents.command("get")
@click.argument("agent_id")
@click.option("--version", type=click.IntRange(1), default=None, help="A past version (default: the latest).")
@click.option("--versions", "with_versions", is_flag=True, help="Also list every version.")
@client_command
def agents_get(client: Client, agent_id: str, version: int | None, with_versions: bool) -> None:
    """Show an agent."""
    from anthropic import omit

    agent = to_json(client.sdk.beta.agents.retrieve(agent_id, version=version if version is not None else omit))
    versions = all_items(client.sdk.beta.agents.versions.list(agent_id, limit=100)) if with_versions else None
    if client.json_output:
        client.emit_json({**agent, "versions": versions} if versions is not None else agent)
        return
    print_fields(
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
        print_table(
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

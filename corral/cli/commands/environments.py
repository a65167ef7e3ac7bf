"""`corral environments`: list, show, create and archive environments."""

from __future__ import annotations

from typing import Any

import click

from corral.cli.commands.common import Client, Json, all_items, client_command, print_fields, print_table, to_json


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
    found = all_items(client.sdk.beta.environments.list(include_archived=include_archived, limit=100), limit)
    if client.json_output:
        client.emit_json(found)
        return
    rows = [
        [e["id"], e["name"], _networking_text(e), e["created_at"]]
        + (["archived" if e.get("archived_at") else ""] if include_archived else [])
        for e in found
    ]
    print_table(client, ["ID", "NAME", "NETWORKING", "CREATED"] + ([""] if include_archived else []), rows)


@environments.command("get")
@click.argument("environment_id")
@client_command
def environments_get(client: Client, environment_id: str) -> None:
    """Show an environment."""
    environment = to_json(client.sdk.beta.environments.retrieve(environment_id))
    if client.json_output:
        client.emit_json(environment)
        return
    print_fields(
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

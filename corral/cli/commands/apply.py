"""`corral apply`: the agents and environments a YAML file declares, created or updated to match, by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import click

from corral.cli.commands.common import Client, Json, all_items, client_command, to_json

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
        existing_environments = all_items(sdk.beta.environments.list(limit=100))
        results += [_apply_environment(client, spec, existing_environments) for spec in environment_specs]
    if agent_specs:
        existing_agents = all_items(sdk.beta.agents.list(limit=100))
        results += [_apply_agent(client, spec, existing_agents) for spec in agent_specs]
    if client.json_output:
        client.emit_json(results)
        return
    for result in results:
        version = f" (version {result['version']})" if "version" in result else ""
        client.console.print(f"{result['kind']} {result['name']}: {result['action']} {result['id']}{version}")

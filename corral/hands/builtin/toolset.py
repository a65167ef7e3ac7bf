"""The built-in toolset `agent_toolset_20260401`: its tools, their resolved configs, and what the model sees."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

TOOLSET_TYPE = "agent_toolset_20260401"
# The one registry of built-in tool names: the hands, the API, MCP's reserved names and the tool router
# (brain/tools.py) take them from here. WORKSPACE_TOOLS run in the session's workspace; WEB_TOOLS run in the
# server (`web.py` here), and hands list them in `tool_names` only when they can run them (web_search needs a
# search backend).
WORKSPACE_TOOLS = ("bash", "read", "write", "edit", "glob", "grep")
WEB_TOOLS = ("web_fetch", "web_search")
BUILTIN_TOOLS = (*WORKSPACE_TOOLS, *WEB_TOOLS)

ALWAYS_ALLOW: Json = {"type": "always_allow"}

_WEB_FETCH_EXTRAS = ("url_sources", "allowed_domains", "blocked_domains", "max_content_tokens")
_WEB_SEARCH_EXTRAS = ("allowed_domains", "blocked_domains", "user_location")


def resolve_toolset(param: Json) -> Json:
    """The response form of a toolset param: `default_config` and one resolved entry per built-in tool."""
    default = param.get("default_config") or {}
    default_enabled = default.get("enabled")
    default_policy = default.get("permission_policy") or ALWAYS_ALLOW
    resolved_default = {
        "enabled": True if default_enabled is None else bool(default_enabled),
        "permission_policy": default_policy,
    }
    overrides = {entry["name"]: entry for entry in param.get("configs") or []}
    configs = []
    for name in BUILTIN_TOOLS:
        override = overrides.get(name, {})
        enabled = override.get("enabled")
        entry: Json = {
            "name": name,
            "type": name,
            "enabled": resolved_default["enabled"] if enabled is None else bool(enabled),
            "permission_policy": override.get("permission_policy") or resolved_default["permission_policy"],
        }
        extras = _WEB_FETCH_EXTRAS if name == "web_fetch" else _WEB_SEARCH_EXTRAS if name == "web_search" else ()
        for extra in extras:
            entry[extra] = override.get(extra)
        configs.append(entry)
    return {"type": TOOLSET_TYPE, "default_config": resolved_default, "configs": configs}


def builtin_config(tools: list[Json], name: str) -> Json | None:
    """The resolved config of built-in tool `name` in an agent's tools, or None if it has no toolset."""
    for tool in tools:
        if tool.get("type") == TOOLSET_TYPE:
            return next((entry for entry in tool["configs"] if entry["name"] == name), None)
    return None


_DEFINITIONS: dict[str, Json] = {
    "bash": {
        "description": (
            "Run a command in a persistent bash shell in the session's workspace (/workspace). The working "
            "directory and environment variables persist between calls. Output (stdout and stderr, merged) is "
            "capped at 100 KiB. Set restart to true to start a fresh shell."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command to run."},
                "restart": {
                    "type": "boolean",
                    "description": "Restart the shell instead of running a command.",
                },
                "timeout_ms": {"type": "integer", "description": "Kill the command after this many ms."},
            },
        },
    },
    "read": {
        "description": (
            "Read a file in the workspace. Text comes back with line numbers; images and PDFs come back as "
            "content blocks. Use view_range [start, end] (1-indexed, inclusive; end <= 0 means end of file) "
            "for large files."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {"type": "string"},
                "view_range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            },
            "required": ["file_path"],
        },
    },
    "write": {
        "description": "Write a file in the workspace, replacing it if it exists and creating parent directories.",
        "input_schema": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["file_path", "content"],
        },
    },
    "edit": {
        "description": (
            "Replace old_string with new_string in a file. old_string must occur exactly once unless "
            "replace_all is true."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {"type": "string"},
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean"},
            },
            "required": ["file_path", "old_string", "new_string"],
        },
    },
    "glob": {
        "description": "Find files by glob pattern (supports **), newest first.",
        "input_schema": {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
            "required": ["pattern"],
        },
    },
    "grep": {
        "description": "Search file contents with a regular expression (ripgrep syntax); prints file:line:text.",
        "input_schema": {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
            "required": ["pattern"],
        },
    },
    "web_fetch": {
        "description": (
            "Fetch a web page or document by URL and return its readable text (HTML as Markdown, with links); "
            "PDFs and images come back as content blocks. Long pages are cut to a token limit."
        ),
        "input_schema": {
            "type": "object",
            "properties": {"url": {"type": "string", "description": "The http(s) URL to fetch."}},
            "required": ["url"],
        },
    },
    "web_search": {
        "description": "Search the web; returns the top results with their URLs, titles and snippets.",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "The search query."}},
            "required": ["query"],
        },
    },
}


def model_tool_definitions(tools: list[Json], runnable: frozenset[str] = frozenset(WORKSPACE_TOOLS)) -> list[Json]:
    """The tool definitions offered to the model, in the agent's order: its enabled built-in tools that the
    hands can run (`runnable`), and its custom tools."""
    definitions: list[Json] = []
    for tool in tools:
        if tool.get("type") == TOOLSET_TYPE:
            for entry in tool["configs"]:
                if entry["enabled"] and entry["name"] in runnable and entry["name"] in _DEFINITIONS:
                    definitions.append({"name": entry["name"], **_DEFINITIONS[entry["name"]]})
        elif tool.get("type") == "custom":
            definitions.append(
                {
                    "name": tool["name"],
                    "description": tool["description"],
                    "input_schema": tool["input_schema"],
                }
            )
    return definitions

"""The tool router: one session's tools, which one a model call names, whether it may run, and running it.

Three sources offer tools to the model: the built-in tools of the agent's toolset that the hands can run
(`hands/`), the tools of the agent's MCP servers (`mcp/`), and the agent's custom tools, which the client runs.
This module is the only place that tells them apart. `ToolCatalog` is what the model may call this turn and under
which permission: it turns a model's tool call into the event that records it (`call_event`). `ToolRouter` holds
the session's catalog and runs the calls the brain runs itself (`execute`). The harness asks, and appends what
they say.

It lives in brain/, not hands/, because it needs the session's MCP connections beside its hands, and `mcp/`
imports `hands/` (the built-in names it must not shadow): a router in hands/ would make the two rooms import
each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from corral.hands.base import Hands, ToolResult
from corral.hands.builtin.toolset import builtin_config, model_tool_definitions
from corral.mcp.client import McpHub, McpTool, Report, SessionMcp, tool_config
from corral.observability import metrics
from corral.protocol import events
from corral.protocol.events import EventType
from corral.session.records import EventRecord, Json, NewEvent


def error_result(message: str) -> Json:
    """A tool result that tells the model its call failed (or never ran) and why."""
    return {"content": [{"type": "text", "text": message}], "is_error": True}


def evaluate_policy(policy: str) -> tuple[str, Json]:
    """The permission a policy gives a call, and the `evaluation` that says which policy decided it."""
    if policy == "always_allow":
        return "allow", {"type": "always_allow"}
    if policy == "always_ask":
        return "ask", {"type": "always_ask"}
    # No classifier decides `auto` here yet, so it asks: never run a call nobody approved.
    return "ask", {"type": "auto", "evaluated_permission": {"type": "ask", "reason_code": "indeterminate"}}


def result_event(call_id: str, call_type: str, result: Json) -> NewEvent:
    """The event that answers a call: an MCP call's result names it as one."""
    if call_type == EventType.AGENT_MCP_TOOL_USE:
        return events.mcp_tool_result(call_id, result)
    return events.tool_result(call_id, result)


@dataclass(frozen=True)
class ToolCatalog:
    """What the model may call: the agent's `tools` (toolset configs, MCP toolsets, custom tools), the built-in
    tools the hands can run (`runnable`), and this turn's MCP tools by the name the model knows them by."""

    agent_tools: list[Json]
    runnable: frozenset[str]
    mcp: dict[str, McpTool] = field(default_factory=dict)

    def definitions(self) -> list[Json]:
        """The tool definitions of a model request: built-in and custom tools in the agent's order, then MCP's."""
        return [
            *model_tool_definitions(self.agent_tools, self.runnable),
            *(tool.definition() for tool in self.mcp.values()),
        ]

    def call_event(self, name: str, tool_input: Any) -> NewEvent:
        """The event recording the model's call of `name`, with its evaluated permission.

        A custom tool's name wins (the client runs it), then an MCP tool's, then a built-in tool's; a name the
        agent has not enabled, or that the hands cannot run, is recorded as denied.
        """
        if any(tool.get("type") == "custom" and tool["name"] == name for tool in self.agent_tools):
            return events.custom_tool_use(name, tool_input)
        mcp_tool = self.mcp.get(name)
        if mcp_tool is not None:
            return self._mcp_call_event(mcp_tool, tool_input)
        config = builtin_config(self.agent_tools, name)
        if config is None or not config["enabled"] or name not in self.runnable:
            return events.tool_use(name, tool_input, "deny")
        permission, evaluation = evaluate_policy(config["permission_policy"]["type"])
        return events.tool_use(name, tool_input, permission, evaluation)

    def _mcp_call_event(self, tool: McpTool, tool_input: Any) -> NewEvent:
        toolset = next(
            t for t in self.agent_tools if t.get("type") == "mcp_toolset" and t["mcp_server_name"] == tool.server
        )
        permission, evaluation = evaluate_policy(tool_config(toolset, tool.name)["permission_policy"]["type"])
        return events.mcp_tool_use(tool.name, tool.server, tool_input, permission, evaluation)


class ToolRouter:
    """One session's tools: its catalog, refreshed at the start of each turn, and the calls the brain runs.

    Built-in calls go to the session's `hands`, MCP calls to its connections in the `mcp` hub (opened with the
    credentials of `vault_ids` in `workspace_id`); custom calls and calls held for confirmation are the
    client's to answer and never reach `execute` unanswered.
    """

    def __init__(
        self,
        agent: Json,
        *,
        hands: Hands,
        runnable: frozenset[str],
        mcp: McpHub,
        session_id: str,
        workspace_id: str,
        vault_ids: list[str],
    ) -> None:
        self._agent = agent
        self._hands = hands
        self._mcp_hub = mcp
        self._session_id = session_id
        self._workspace_id = workspace_id
        self._vault_ids = vault_ids
        self.catalog = ToolCatalog(agent["tools"], runnable)

    @property
    def _mcp(self) -> SessionMcp:
        # Asked of the hub each time: it forgets a session's connections when the session is stopped here.
        return self._mcp_hub.session(self._session_id)

    async def prepare(self, report: Report) -> None:
        """Connect the agent's MCP servers (reusing the session's open connections) and offer their tools this
        turn; `report` appends a `session.error` for a server that cannot be used."""
        tools = await self._mcp.prepare(
            self._agent, workspace_id=self._workspace_id, vault_ids=self._vault_ids, report=report
        )
        self.catalog = replace(self.catalog, mcp={tool.model_name: tool for tool in tools})

    async def execute(self, call: EventRecord) -> Json:
        """Run a built-in or MCP call and return its result (`content`, `is_error`); a denied call is refused.
        Failures are error results, never exceptions (except cancellation).

        It takes the recorded call rather than the model's name and input: the call event holds what was decided
        when the model made it (the MCP server, the permission), so a call confirmed after a restart, before
        this turn's MCP tools are listed, runs the tool that was asked about.
        """
        name = call.body["name"]
        if call.body.get("evaluated_permission") == "deny":
            return error_result(f"The tool '{name}' is not enabled for this agent.")
        if call.type == EventType.AGENT_MCP_TOOL_USE:
            return await self._execute_mcp(call)
        result: ToolResult = await metrics.observe_tool_call(  # observability: latency, span
            name, self._hands.execute(name, call.body["input"], builtin_config(self.catalog.agent_tools, name))
        )
        return {"content": result.content, "is_error": result.is_error}

    async def _execute_mcp(self, call: EventRecord) -> Json:
        server_name = call.body["mcp_server_name"]
        server = next((s for s in self._agent.get("mcp_servers") or [] if s["name"] == server_name), None)
        if server is None:
            return error_result(f"MCP server '{server_name}' is no longer part of this agent.")
        return await self._mcp.call(
            server,
            call.body["name"],
            call.body["input"],
            workspace_id=self._workspace_id,
            vault_ids=self._vault_ids,
        )

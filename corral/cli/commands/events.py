"""Session events as a person reads them: messages, tool calls with their results, errors, status.

Shared by `corral run` and `corral sessions logs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.cli.commands.common import Json, shorten

if TYPE_CHECKING:
    from rich.console import Console

TOOL_RESULT_LINES = 12


def text_of(content: Any) -> str:
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
        return shorten(tool_input)
    if name == "bash":
        if tool_input.get("restart"):
            return "(restart)"
        return shorten(str(tool_input.get("command", "")), 160)
    for key in ("file_path", "pattern", "url", "query"):
        if key in tool_input:
            extra = f"  in {tool_input['path']}" if key == "pattern" and tool_input.get("path") else ""
            return shorten(str(tool_input[key]), 160) + extra
    return shorten(tool_input, 160)


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
                self._print(Text("> " + text_of(event.get("content")), style="bold cyan"))
        elif kind == "agent.message":
            self._print(Markdown(text_of(event.get("content"))))
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
            text = text_of(event.get("content")) or "(no output)"
            lines = text.rstrip("\n").splitlines() or [""]
            shown = lines[:TOOL_RESULT_LINES]
            if len(lines) > TOOL_RESULT_LINES:
                shown.append(f"… {len(lines) - TOOL_RESULT_LINES} more lines")
            style = "red" if event.get("is_error") else "dim"
            self._print(Padding(Text("\n".join(shown), style=style), (0, 0, 0, 2), expand=False))
        elif kind == "user.custom_tool_result":
            self._print(Text("  ⎿ client tool result: " + shorten(text_of(event.get("content"))), style="dim"))
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

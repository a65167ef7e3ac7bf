"""Hands: tool execution in per-session workspaces behind execute(name, input) -> result."""

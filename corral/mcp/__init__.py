"""The MCP client: agents' MCP servers, connected from the brain (outside any sandbox) with the `mcp` SDK."""

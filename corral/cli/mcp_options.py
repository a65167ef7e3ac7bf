"""`corral serve` options for agents' MCP servers and vault credentials.

`mcp_options` adds the options to the command and hands the command one `McpSettings` value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from corral.config import McpSettings

DEFAULTS = McpSettings()

MCP_EPILOG = """\b
MCP servers and vaults:
  The brain connects to each MCP server an agent declares (Streamable HTTP;
  SSE when the URL ends in /sse) from the server process, never from the
  sandbox, sending the session's vault credential for that server URL as
  Authorization. Vault secrets are encrypted at rest with AES-256-GCM under
  CORRAL_SECRET_KEY (32 bytes, base64; read from the environment only). Without
  it, the first start writes a new key to <data-dir>/secret.key (mode 0600):
  back it up, and give every server sharing one database the same key.
"""


def mcp_options(command: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option(
            "--mcp-connect-timeout",
            envvar="CORRAL_MCP_CONNECT_TIMEOUT",
            show_envvar=True,
            default=DEFAULTS.connect_timeout,
            show_default=True,
            type=click.FloatRange(0.1, 600),
            help="Seconds to connect to an MCP server and complete its handshake.",
        ),
        click.option(
            "--mcp-timeout",
            envvar="CORRAL_MCP_TIMEOUT",
            show_envvar=True,
            default=DEFAULTS.call_timeout,
            show_default=True,
            type=click.FloatRange(1, 3600),
            help="Seconds one MCP tool call may take.",
        ),
        click.option(
            "--mcp-connect-retries",
            envvar="CORRAL_MCP_CONNECT_RETRIES",
            show_envvar=True,
            default=DEFAULTS.connect_retries,
            show_default=True,
            type=click.IntRange(0, 10),
            help="Further attempts to reach an unreachable MCP server within a turn (the turn then goes on "
            "without it).",
        ),
        click.option(
            "--mcp-retry-delay",
            envvar="CORRAL_MCP_RETRY_DELAY",
            show_envvar=True,
            default=DEFAULTS.retry_delay,
            show_default=True,
            type=click.FloatRange(0, 60),
            help="Seconds before the first MCP connection retry; each further retry waits twice as long.",
        ),
    ]

    @functools.wraps(command)
    def with_mcp(*args: Any, **kwargs: Any) -> None:
        mcp = McpSettings(
            connect_timeout=kwargs.pop("mcp_connect_timeout"),
            call_timeout=kwargs.pop("mcp_timeout"),
            connect_retries=kwargs.pop("mcp_connect_retries"),
            retry_delay=kwargs.pop("mcp_retry_delay"),
        )
        command(*args, mcp=mcp, **kwargs)

    decorated: Callable[..., None] = with_mcp
    for option in reversed(options):
        decorated = option(decorated)
    return decorated

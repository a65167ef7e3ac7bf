"""What every client command shares: the SDK client, --url / --api-key / --json, output and errors.

The commands speak to any Corral server (or any server of the Managed Agents API) through the official
`anthropic` SDK, so they exercise exactly what other clients use. The server and key come from `--url` /
`CORRAL_URL` and `--api-key` / `CORRAL_API_KEY`. Every command takes `--json` for scripts: objects and lists as
JSON, streams as one JSON object per line. Failures are one line on stderr and exit status 1 (no traceback).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import click

if TYPE_CHECKING:
    from anthropic import Anthropic
    from rich.console import Console

Json = dict[str, Any]

DEFAULT_URL = "http://127.0.0.1:8400"
DEFAULT_MODEL = "claude-sonnet-4-6"
PIPE_WIDTH = 200


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


def all_items(pages: Iterable[Any], limit: int | None = None) -> list[Json]:
    """Every item of an auto-paginating SDK listing (or the first `limit`)."""
    items = []
    for item in pages:
        items.append(to_json(item))
        if limit is not None and len(items) >= limit:
            break
    return items


# --- output --------------------------------------------------------------------------------------------


def shorten(value: Any, width: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(client: Client, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    client.console.print(table, markup=False)


def print_fields(client: Client, pairs: list[tuple[str, Any]]) -> None:
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in pairs:
        shown = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
        table.add_row(key, "-" if value is None or value == "" else shown)
    client.console.print(table, markup=False)

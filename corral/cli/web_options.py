"""`corral serve` options for the sandboxes' network egress and the web tools.

`web_options` adds the options to the command and hands the command one `WebSettings` value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, get_args

import click

from corral.config import SearchKind, WebSettings
from corral.hands.net.policy import ALLOW_ADDRESSES_ENV, parse_allow_addresses

DEFAULTS = WebSettings()

WEB_EPILOG = """\b
Network, packages and web tools:
  A sandbox has no network interface but loopback. When its environment's
  config.networking allows any host, its traffic goes through the server's
  egress proxy (HTTP_PROXY/HTTPS_PROXY inside the sandbox), which enforces the
  environment's allowed_hosts (`host`, `*.host`, optionally `:port`),
  allow_package_managers and allow_mcp_servers, and never connects to
  loopback, private, link-local or metadata addresses, or this host's own.
  web_fetch runs in the server with the same address rules and the agent's
  allowed_domains / blocked_domains; web_search needs --web-search.
  An environment's config.packages (apt, pip, npm) are installed on a session's
  first command, once per distinct package list, into <data-dir>/packages and
  shown read-only in the sandbox: pip wheels only, no npm scripts, apt packages
  unpacked (not configured), so nothing from a package runs on the host.
"""


def _check_allow_addresses(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    try:
        parse_allow_addresses(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return tuple(entry.strip() for entry in value.split(",") if entry.strip())


def web_options(command: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option(
            "--web-search",
            envvar="CORRAL_WEB_SEARCH",
            show_envvar=True,
            default=None,  # derived below from --searxng-url, so not WebSettings.search
            type=click.Choice(get_args(SearchKind)),
            help="Backend of the web_search tool: searxng (at --searxng-url; its settings.yml must allow the json "
            "format), brave (Brave Search API, key read from BRAVE_SEARCH_API_KEY), or none: web_search is not "
            "offered to models. Default: searxng when --searxng-url is set, else none.",
        ),
        click.option(
            "--searxng-url",
            envvar="CORRAL_SEARXNG_URL",
            show_envvar=True,
            default=DEFAULTS.searxng_url,
            help="Base URL of a SearXNG instance for web_search, e.g. http://127.0.0.1:8888.",
        ),
        click.option(
            "--egress-allow-addresses",
            envvar=ALLOW_ADDRESSES_ENV,
            show_envvar=True,
            default=",".join(DEFAULTS.egress_allow_addresses) or None,
            callback=_check_allow_addresses,
            help="FOR TESTS ONLY: comma-separated exact address:port pairs (127.0.0.1:8080, [::1]:8080) that "
            "sandboxes and web_fetch may reach although they are not public addresses. Off by default.",
        ),
    ]

    @functools.wraps(command)
    def with_web(*args: Any, **kwargs: Any) -> None:
        searxng_url = kwargs.pop("searxng_url") or None
        search: SearchKind = kwargs.pop("web_search") or ("searxng" if searxng_url else "none")
        if search == "searxng" and not searxng_url:
            raise click.BadParameter("--web-search searxng needs --searxng-url", param_hint="--web-search")
        web = WebSettings(
            search=search,
            searxng_url=searxng_url,
            egress_allow_addresses=kwargs.pop("egress_allow_addresses"),
        )
        command(*args, web=web, **kwargs)

    decorated: Callable[..., None] = with_web
    for option in reversed(options):
        decorated = option(decorated)
    return decorated

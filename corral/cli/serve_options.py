"""`corral serve` options for operating the server: limits at the HTTP edge, metrics, logs, traces.

`operations_options` adds the options to the command and hands the command one `Operations` value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, get_args

import click

from corral.config import LogFormat, MetricsAccess, Operations

DEFAULTS = Operations()

OPERATIONS_EPILOG = """\b
Operating the server:
  /metrics     Prometheus metrics. --metrics key (default) needs an API key like
               the API (Prometheus: `authorization: {credentials: <key>}`);
               public serves it without one; off removes it.
  /console     the web console (sign in with an API key).
  Rate limits count per API key and per server process, as tokens that refill
  over the minute; over a limit: 429 rate_limit_error with retry-after.
  A user.message that would start more running sessions in a workspace than
  --max-running-sessions allows: 429 rate_limit_error, x-should-retry: false.
"""


def operations_options(command: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option(
            "--rate-limit-create",
            envvar="CORRAL_RATE_LIMIT_CREATE",
            show_envvar=True,
            default=DEFAULTS.rate_limit_create,
            show_default=True,
            type=click.IntRange(0),
            help="Create requests (POST /v1/agents, /v1/sessions, /v1/vaults) per minute per API key; 0: no limit.",
        ),
        click.option(
            "--rate-limit-other",
            envvar="CORRAL_RATE_LIMIT_OTHER",
            show_envvar=True,
            default=DEFAULTS.rate_limit_other,
            show_default=True,
            type=click.IntRange(0),
            help="Every other /v1/ request per minute per API key; 0: no limit.",
        ),
        click.option(
            "--rate-limit-environments",
            envvar="CORRAL_RATE_LIMIT_ENVIRONMENTS",
            show_envvar=True,
            default=DEFAULTS.rate_limit_environments,
            show_default=True,
            type=click.IntRange(0),
            help="Requests to /v1/environments... per minute per API key; 0: no limit.",
        ),
        click.option(
            "--max-running-sessions",
            envvar="CORRAL_MAX_RUNNING_SESSIONS",
            show_envvar=True,
            default=DEFAULTS.max_running_sessions,
            show_default=True,
            type=click.IntRange(0, 1000),
            help="Sessions of one workspace that may run at once; a message that would start one more is "
            "refused with 429. 0: no cap.",
        ),
        click.option(
            "--metrics",
            "metrics",
            envvar="CORRAL_METRICS",
            show_envvar=True,
            default=DEFAULTS.metrics,
            show_default=True,
            type=click.Choice(get_args(MetricsAccess)),
            help="Prometheus metrics at /metrics: behind an API key, public (no key), or off.",
        ),
        click.option(
            "--log-format",
            envvar="CORRAL_LOG_FORMAT",
            show_envvar=True,
            default=DEFAULTS.log_format,
            show_default=True,
            type=click.Choice(get_args(LogFormat)),
            help="Log lines as text, or one JSON object per line (time, level, logger, message, request_id, "
            "session_id). Keys and tokens are masked in both.",
        ),
        click.option(
            "--otlp-endpoint",
            envvar=["CORRAL_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"],
            show_envvar=True,
            default=DEFAULTS.otlp_endpoint,
            help="OpenTelemetry collector (OTLP over HTTP, e.g. http://127.0.0.1:4318): export traces of turns, "
            "model requests and tool calls. Default: no traces.",
        ),
    ]

    @functools.wraps(command)
    def with_operations(*args: Any, **kwargs: Any) -> None:
        operations = Operations(
            rate_limit_create=kwargs.pop("rate_limit_create"),
            rate_limit_other=kwargs.pop("rate_limit_other"),
            rate_limit_environments=kwargs.pop("rate_limit_environments"),
            max_running_sessions=kwargs.pop("max_running_sessions"),
            metrics=kwargs.pop("metrics"),
            log_format=kwargs.pop("log_format"),
            otlp_endpoint=kwargs.pop("otlp_endpoint") or None,
        )
        command(*args, operations=operations, **kwargs)

    decorated: Callable[..., None] = with_operations
    for option in reversed(options):
        decorated = option(decorated)
    return decorated

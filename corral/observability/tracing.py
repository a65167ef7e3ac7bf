"""OpenTelemetry traces of turns, model requests and tool calls, exported over OTLP/HTTP when configured.

Off unless `configure` is given an endpoint (`--otlp-endpoint` / `CORRAL_OTLP_ENDPOINT`); then every turn is a
`corral.turn` span with its model requests (`corral.model_request`) and tool calls (`corral.tool_call`) as
children. Span attributes carry ids, model and tool names only: never message text, tool input or output.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("corral.tracing")

_tracer: Any = None
_provider: Any = None


class Span:
    """What a hook may do with its span; a no-op when tracing is off."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set_error(self, message: str) -> None:
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, message))


@contextmanager
def span(name: str, attributes: dict[str, str]) -> Iterator[Span]:
    if _tracer is None:
        yield Span()
        return
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield Span(current)


def configure(endpoint: str | None, service_name: str, node_id: str) -> None:
    """Export spans to the OTLP/HTTP collector at `endpoint` (e.g. http://collector:4318); None: no tracing."""
    global _tracer, _provider
    if not endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    traces_url = endpoint.rstrip("/")
    if not traces_url.endswith("/v1/traces"):
        traces_url += "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": service_name, "service.instance.id": node_id}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url), schedule_delay_millis=1000))
    _provider = provider
    _tracer = provider.get_tracer("corral")
    log.info("tracing: exporting spans to %s", traces_url)


def shutdown() -> None:
    """Flush and stop the exporter (server shutdown)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None

"""Observability: Prometheus metrics at /metrics, structured logs, OpenTelemetry traces."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from corral.observability import logs
from tests.support.fake_model import FakeModel
from tests.support.server import CorralServer

LISTED_SERIES = {
    "corral_turns",
    "corral_turn_duration_seconds",
    "corral_model_request_duration_seconds",
    "corral_tool_call_duration_seconds",
    "corral_sandbox_starts",
    "corral_active_sessions",
    "corral_queued_events",
    "corral_session_errors",
}


def _turn(sdk: anthropic.Anthropic, session_id: str, text: str) -> None:
    with sdk.beta.sessions.events.stream(session_id) as stream:
        sdk.beta.sessions.events.send(
            session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
        )
        for event in stream:
            if event.type == "session.status_idle":
                return


def _session(sdk: anthropic.Anthropic) -> str:
    agent = sdk.beta.agents.create(
        name="observed", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    environment = sdk.beta.environments.create(name="observed")
    return sdk.beta.sessions.create(agent=agent.id, environment_id=environment.id).id


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# --- metrics -------------------------------------------------------------------------------------------


def test_a_scrape_after_a_turn_with_a_tool_call_and_a_model_error_has_every_listed_series(
    server: CorralServer, client: anthropic.Anthropic, api_key: str, fake_model: FakeModel
) -> None:
    session_id = _session(client)
    _turn(client, session_id, "bash: echo metered")
    fake_model.script({"status": 400, "error_type": "invalid_request_error", "message": "bad request"})
    _turn(client, session_id, "this one fails")

    scrape = httpx.get(f"{server.url}/metrics", headers={"x-api-key": api_key})

    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(scrape.text)}
    assert families >= LISTED_SERIES
    samples = _samples(scrape.text)
    assert samples[("corral_turns_total", (("outcome", "completed"),))] >= 2
    assert samples[("corral_tool_call_duration_seconds_count", (("outcome", "ok"), ("tool", "bash")))] >= 1
    assert samples[("corral_sandbox_starts_total", ())] >= 1
    assert (
        samples[
            ("corral_session_errors_total", (("retry_status", "exhausted"), ("type", "model_request_failed_error")))
        ]
        >= 1
    )
    model_ok = ("corral_model_request_duration_seconds_count", (("model", "claude-sonnet-4-6"), ("outcome", "ok")))
    assert samples[model_ok] >= 2
    assert samples[("corral_active_sessions", ())] == 0


def test_metrics_need_an_api_key_by_default(server: CorralServer) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 401


@pytest.mark.slow
def test_metrics_can_be_public_or_off() -> None:
    with CorralServer(env={"CORRAL_METRICS": "public"}) as public:
        public_status = httpx.get(f"{public.url}/metrics").status_code
        api_still_needs_a_key = httpx.get(f"{public.url}/v1/agents").status_code
    with CorralServer(env={"CORRAL_METRICS": "off"}) as off:
        off_status = httpx.get(f"{off.url}/metrics", headers={"x-api-key": off.api_key}).status_code

    assert public_status == 200
    assert api_still_needs_a_key == 401
    assert off_status == 404


# --- logs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "sk-corral-AbCdEfGh12345678_-xyz",
        "sk-ant-api03-AbCdEfGh12345678",
        "Bearer AbCdEfGh12345678.token",
        "password=hunter2hunter2",
    ],
)
def test_redaction_masks_keys_and_credentials(secret: str) -> None:
    masked = logs.redact(f"calling upstream with {secret} failed")

    assert "[REDACTED]" in masked
    assert secret not in masked


def _record_through(formatter: logging.Formatter, message: str) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(logs._ContextFilter())
    logger = logging.getLogger("corral.test.formatting")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_log_lines_carry_the_request_and_session_ids_bound_for_the_task() -> None:
    logs.bind_request("req_123", "/v1/sessions/sesn_abc/events")

    line = json.loads(_record_through(logs.JsonFormatter(), "key sk-corral-AbCdEfGh12345678 refused"))

    assert line["request_id"] == "req_123"
    assert line["session_id"] == "sesn_abc"
    assert line["level"] == "warning"
    assert line["logger"] == "corral.test.formatting"
    assert line["message"] == "key sk-corral-[REDACTED] refused"
    assert line["time"].endswith("Z")


def test_the_brain_binds_the_session_id_for_its_records() -> None:
    logs.bind_request("req_1", "/v1/agents")
    logs.bind_session("sesn_worker")

    line = json.loads(_record_through(logs.JsonFormatter(), "turn failed"))

    assert line["session_id"] == "sesn_worker"
    assert "request_id" not in line


@pytest.mark.slow
def test_a_server_with_json_logs_writes_only_json_lines_and_never_the_api_key(fake_model: FakeModel) -> None:
    env = {"CORRAL_LOG_FORMAT": "json", "CORRAL_LOG_LEVEL": "info"}
    with CorralServer(model_url=fake_model.url, env=env) as server:
        sdk = anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0)
        _turn(sdk, _session(sdk), "logged turn")
        output = server.log()

    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert records
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    assert any(record["logger"].startswith("uvicorn") for record in records)
    assert server.api_key not in output


# --- traces --------------------------------------------------------------------------------------------


class _Collector:
    """An OTLP/HTTP trace receiver on loopback that keeps every exported span."""

    def __init__(self) -> None:
        self.spans: list[object] = []
        self.received = threading.Event()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        collector.spans.extend(scope_spans.spans)
                collector.received.set()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[_Collector]:
    running = _Collector()
    yield running
    running.close()


@pytest.mark.slow
def test_a_turn_is_traced_with_its_model_request_and_tool_call_as_children(
    fake_model: FakeModel, collector: _Collector
) -> None:
    with CorralServer(model_url=fake_model.url, env={"CORRAL_OTLP_ENDPOINT": collector.url}) as server:
        sdk = anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0)
        session_id = _session(sdk)
        _turn(sdk, session_id, "bash: echo traced")
    # Stopping the server flushed the exporter.

    spans = {span.name: span for span in collector.spans}  # type: ignore[attr-defined]
    assert {"corral.turn", "corral.model_request", "corral.tool_call"} <= set(spans)
    turn = spans["corral.turn"]
    assert spans["corral.model_request"].parent_span_id == turn.span_id
    assert spans["corral.tool_call"].parent_span_id == turn.span_id
    attributes = {a.key: a.value.string_value for a in turn.attributes}
    assert attributes["corral.session_id"] == session_id
    tool_attributes = {a.key: a.value.string_value for a in spans["corral.tool_call"].attributes}
    assert tool_attributes == {"corral.tool": "bash"}

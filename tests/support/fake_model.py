"""Scripted fake LLM server speaking the Anthropic Messages and OpenAI chat-completions wire formats.

It is the test double for the model provider: Corral talks to it over real HTTP, exactly as it
would talk to the real APIs, so provider clients, streaming parsers and retry logic are exercised
end to end. Replies come from a FIFO script when one applies, otherwise from simple rules on the
last message (see ``FakeModel``). It is also used by benchmarks, so the hot path avoids sleeps,
logging and per-chunk writes unless a scripted item asks for them.

Run standalone with ``python -m tests.support.fake_model --port 8401 [--api-key K]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["FakeModel", "FakeModelState", "ScriptError", "create_app", "main"]

JSONDict = dict[str, Any]

# Streaming splits output into pieces this long so clients see several real deltas.
TEXT_CHUNK_CHARS = 8
JSON_CHUNK_CHARS = 16
TOOL_RESULT_PREVIEW_CHARS = 200

_DEFAULT_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_ITEM_KEYS = frozenset(
    {
        "text",
        "tool_use",
        "tool_uses",
        "status",
        "error_type",
        "message",
        "delay",
        "chunk_delay",
        "stop_reason",
        "match",
    }
)
# Anthropic stop reasons translated to OpenAI finish reasons; unknown values pass through unchanged.
_FINISH_REASONS = {
    "end_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "stop_sequence": "stop",
}
_COMPACT = (",", ":")


class ScriptError(ValueError):
    """A scripted item is malformed."""


@dataclass(frozen=True, slots=True)
class _ToolCall:
    name: str
    input: JSONDict
    id: str | None = None  # None: a fresh id is generated for each response


@dataclass(frozen=True, slots=True)
class _Reply:
    """One answer, already validated so the request path does no checking."""

    text: str = ""
    tool_calls: tuple[_ToolCall, ...] = ()
    status: int | None = None  # set for scripted HTTP errors
    error_type: str = ""
    message: str = ""
    delay: float = 0.0
    chunk_delay: float = 0.0
    stop_reason: str | None = None
    match: str | None = None


def _parse_tool_call(raw: Any) -> _ToolCall:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise ScriptError(f"tool_use must be an object with a string 'name': {raw!r}")
    tool_input = raw.get("input", {})
    if not isinstance(tool_input, Mapping):
        raise ScriptError(f"tool_use input must be an object: {raw!r}")
    tool_id = raw.get("id")
    if tool_id is not None and not isinstance(tool_id, str):
        raise ScriptError(f"tool_use id must be a string: {raw!r}")
    return _ToolCall(name=raw["name"], input=dict(tool_input), id=tool_id)


def _parse_item(item: Mapping[str, Any]) -> _Reply:
    if not isinstance(item, Mapping):
        raise ScriptError(f"script item must be an object: {item!r}")
    unknown = set(item) - _ITEM_KEYS
    if unknown:
        raise ScriptError(f"unknown script item keys {sorted(unknown)}; allowed: {sorted(_ITEM_KEYS)}")
    calls: list[_ToolCall] = []
    if "tool_use" in item:
        calls.append(_parse_tool_call(item["tool_use"]))
    if "tool_uses" in item:
        if not isinstance(item["tool_uses"], list):
            raise ScriptError("tool_uses must be a list")
        calls.extend(_parse_tool_call(raw) for raw in item["tool_uses"])
    status = item.get("status")
    if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
        raise ScriptError(f"status must be an HTTP error code (400-599): {status!r}")
    match = item.get("match")
    if match is not None and not isinstance(match, str):
        raise ScriptError("match must be a string")
    text = item.get("text", "")
    if not isinstance(text, str):
        raise ScriptError("text must be a string")
    stop_reason = item.get("stop_reason")
    if stop_reason is not None and not isinstance(stop_reason, str):
        raise ScriptError("stop_reason must be a string")
    try:
        delay = float(item.get("delay", 0.0))
        chunk_delay = float(item.get("chunk_delay", 0.0))
    except (TypeError, ValueError) as exc:
        raise ScriptError(f"delay and chunk_delay must be numbers: {item!r}") from exc
    error_type = item.get("error_type") or (_DEFAULT_ERROR_TYPES.get(status, "api_error") if status else "")
    return _Reply(
        text=text,
        tool_calls=tuple(calls),
        status=status,
        error_type=str(error_type),
        message=str(item.get("message", "scripted error")),
        delay=delay,
        chunk_delay=chunk_delay,
        stop_reason=stop_reason,
        match=match,
    )


class FakeModelState:
    """Script queue, recorded requests and auth settings shared by the app and the controlling thread."""

    def __init__(self, api_key: str | None = None, record: bool = True) -> None:
        self.api_key = api_key
        self.record = record
        # A threading lock, not an asyncio one: tests script from their own thread while the
        # server consumes on the uvicorn loop. It is never held across an await.
        self._lock = threading.Lock()
        self._queue: list[_Reply] = []
        self._requests: list[JSONDict] = []

    def script(self, items: Iterable[Mapping[str, Any]]) -> None:
        replies = [_parse_item(item) for item in items]  # validate all before queueing any
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._requests.clear()

    @property
    def requests(self) -> list[JSONDict]:
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def take(self, user_text: str) -> _Reply | None:
        """Pop the first queued item that applies to a request whose latest user text is given."""
        with self._lock:
            for index, reply in enumerate(self._queue):
                if reply.match is None or reply.match in user_text:
                    del self._queue[index]
                    return reply
        return None

    def record_request(self, request: Request, body: JSONDict | None) -> None:
        if not self.record:
            return
        entry = {
            "method": request.method,
            "path": request.url.path,
            "headers": {key.lower(): value for key, value in request.headers.items()},
            "body": body,
        }
        with self._lock:
            self._requests.append(entry)

    def authorized(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        headers = request.headers
        if headers.get("x-api-key") == self.api_key:
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token == self.api_key


# ---------------------------------------------------------------------------
# Reading requests


def _parse_body(raw: bytes) -> JSONDict | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _content_text(content: Any) -> str:
    """Text of a message content that is either a string or a list of typed parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _latest_user_text(messages: list[Any]) -> str:
    # Walk back past tool-result-only turns so a session keeps matching on its original prompt.
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = _content_text(message.get("content"))
            if text:
                return text
    return ""


def _anthropic_tool_result(messages: list[Any]) -> str | None:
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user" or not isinstance(last.get("content"), list):
        return None
    for block in last["content"]:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            return _content_text(block.get("content"))
    return None


def _openai_tool_result(messages: list[Any]) -> str | None:
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "tool":
        return None
    # Several calls answer as a run of consecutive tool messages; the first of the run is the first result.
    first = len(messages) - 1
    while first > 0 and isinstance(messages[first - 1], dict) and messages[first - 1].get("role") == "tool":
        first -= 1
    return _content_text(messages[first].get("content"))


def _default_reply(tool_result: str | None, user_text: str) -> _Reply:
    if tool_result is not None:
        return _Reply(text="done: " + tool_result[:TOOL_RESULT_PREVIEW_CHARS])
    if user_text.startswith("bash: "):
        return _Reply(tool_calls=(_ToolCall("bash", {"command": user_text[len("bash: ") :]}),))
    if user_text.startswith("tool: "):
        name, _, raw_input = user_text[len("tool: ") :].partition(" ")
        try:
            tool_input = json.loads(raw_input)
        except ValueError:
            tool_input = None
        if name and isinstance(tool_input, dict):
            return _Reply(tool_calls=(_ToolCall(name, tool_input),))
    return _Reply(text="echo: " + user_text)


# ---------------------------------------------------------------------------
# Writing responses


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=_COMPACT)


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _output_tokens(reply: _Reply) -> int:
    chars = len(reply.text) + sum(len(_dumps(call.input)) for call in reply.tool_calls)
    return chars // 4 + 1


def _sse_response(frames: list[str], chunk_delay: float, headers: dict[str, str]) -> Response:
    headers = {**headers, "cache-control": "no-cache"}
    if chunk_delay <= 0:
        # One write for the whole stream: clients still parse separate events, and benchmarks
        # measure the server under test rather than this double's per-chunk overhead.
        return Response("".join(frames), media_type="text/event-stream", headers=headers)

    async def paced() -> AsyncIterator[str]:
        for index, frame in enumerate(frames):
            if index:
                await asyncio.sleep(chunk_delay)
            yield frame

    return StreamingResponse(paced(), media_type="text/event-stream", headers=headers)


def _anthropic_error(status: int, error_type: str, message: str) -> Response:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return JSONResponse(body, status_code=status, headers={"request-id": "req_" + secrets.token_hex(12)})


def _openai_error(status: int, error_type: str, message: str, code: str | None = None) -> Response:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers={"x-request-id": "req_" + secrets.token_hex(12)})


def _anthropic_blocks(reply: _Reply) -> list[JSONDict]:
    blocks: list[JSONDict] = []
    # Like the real API, a tool-only answer has no empty text block in front of it.
    if reply.text or not reply.tool_calls:
        blocks.append({"type": "text", "text": reply.text})
    for call in reply.tool_calls:
        tool_id = call.id or "toolu_" + secrets.token_hex(12)
        blocks.append({"type": "tool_use", "id": tool_id, "name": call.name, "input": call.input})
    return blocks


def _anthropic_stream_frames(message: JSONDict) -> list[str]:
    def frame(data: JSONDict) -> str:
        return f"event: {data['type']}\ndata: {_dumps(data)}\n\n"

    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**usage, "output_tokens": 1},
    }
    frames = [frame({"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            frames.append(
                frame(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    }
                )
            )
            frames.extend(
                frame(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                )
                for piece in _chunks(block["text"], TEXT_CHUNK_CHARS)
            )
        else:
            opened = {**block, "input": {}}
            frames.append(frame({"type": "content_block_start", "index": index, "content_block": opened}))
            frames.extend(
                frame(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    }
                )
                for piece in _chunks(_dumps(block["input"]), JSON_CHUNK_CHARS)
            )
        frames.append(frame({"type": "content_block_stop", "index": index}))
    frames.append(
        frame(
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            }
        )
    )
    frames.append(frame({"type": "message_stop"}))
    return frames


def _openai_tool_calls(reply: _Reply) -> list[JSONDict]:
    return [
        {
            "id": call.id or "call_" + secrets.token_hex(12),
            "type": "function",
            "function": {"name": call.name, "arguments": _dumps(call.input)},
        }
        for call in reply.tool_calls
    ]


def _openai_stream_frames(
    completion_id: str, created: int, model: str, reply: _Reply, finish: str, usage: JSONDict | None
) -> list[str]:
    def chunk(delta: JSONDict, finish_reason: str | None = None) -> str:
        data: JSONDict = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if usage is not None:
            data["usage"] = None  # the real API sends null usage on every chunk but the last
        return f"data: {_dumps(data)}\n\n"

    frames = [chunk({"role": "assistant", "content": ""})]
    frames.extend(chunk({"content": piece}) for piece in _chunks(reply.text, TEXT_CHUNK_CHARS))
    for index, call in enumerate(_openai_tool_calls(reply)):
        opened = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        frames.append(chunk({"tool_calls": [{"index": index, **opened}]}))
        frames.extend(
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in _chunks(call["function"]["arguments"], JSON_CHUNK_CHARS)
        )
    frames.append(chunk({}, finish))
    if usage is not None:
        final = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        frames.append(f"data: {_dumps(final)}\n\n")
    frames.append("data: [DONE]\n\n")
    return frames


# ---------------------------------------------------------------------------
# Endpoints


class _Endpoints:
    def __init__(self, state: FakeModelState) -> None:
        self.state = state

    async def anthropic_messages(self, request: Request) -> Response:
        raw = await request.body()
        body = _parse_body(raw)
        self.state.record_request(request, body)
        if not self.state.authorized(request):
            return _anthropic_error(401, "authentication_error", "invalid x-api-key")
        if body is None or not isinstance(body.get("messages"), list):
            return _anthropic_error(400, "invalid_request_error", "body must be a JSON object with 'messages'")
        messages: list[Any] = body["messages"]
        user_text = _latest_user_text(messages)
        reply = self.state.take(user_text) or _default_reply(_anthropic_tool_result(messages), user_text)
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        if reply.status is not None:
            return _anthropic_error(reply.status, reply.error_type, reply.message)

        message = {
            "id": "msg_" + secrets.token_hex(12),
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model", "fake-model")),
            "content": _anthropic_blocks(reply),
            "stop_reason": reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn"),
            "stop_sequence": None,
            "usage": {
                "input_tokens": max(1, len(raw) // 4),
                "output_tokens": _output_tokens(reply),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        headers = {"request-id": "req_" + secrets.token_hex(12)}
        if body.get("stream"):
            return _sse_response(_anthropic_stream_frames(message), reply.chunk_delay, headers)
        return JSONResponse(message, headers=headers)

    async def openai_chat_completions(self, request: Request) -> Response:
        raw = await request.body()
        body = _parse_body(raw)
        self.state.record_request(request, body)
        if not self.state.authorized(request):
            return _openai_error(401, "invalid_request_error", "Incorrect API key provided.", "invalid_api_key")
        if body is None or not isinstance(body.get("messages"), list):
            return _openai_error(400, "invalid_request_error", "body must be a JSON object with 'messages'")
        messages: list[Any] = body["messages"]
        user_text = _latest_user_text(messages)
        reply = self.state.take(user_text) or _default_reply(_openai_tool_result(messages), user_text)
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        if reply.status is not None:
            return _openai_error(reply.status, reply.error_type, reply.message)

        completion_id = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        model = str(body.get("model", "fake-model"))
        default_stop = "tool_use" if reply.tool_calls else "end_turn"
        stop_reason = reply.stop_reason or default_stop
        finish = _FINISH_REASONS.get(stop_reason, stop_reason)
        prompt_tokens = max(1, len(raw) // 4)
        completion_tokens = _output_tokens(reply)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        headers = {"x-request-id": "req_" + secrets.token_hex(12)}
        if body.get("stream"):
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            frames = _openai_stream_frames(
                completion_id, created, model, reply, finish, usage if include_usage else None
            )
            return _sse_response(frames, reply.chunk_delay, headers)

        assistant: JSONDict = {"role": "assistant", "content": reply.text or None, "refusal": None}
        if reply.tool_calls:
            assistant["tool_calls"] = _openai_tool_calls(reply)
        completion = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": assistant, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        }
        return JSONResponse(completion, headers=headers)

    async def control_script(self, request: Request) -> Response:
        body = _parse_body(await request.body())
        items = body.get("items") if body is not None else None
        if not isinstance(items, list):
            return JSONResponse({"error": "body must be {'items': [...]}"}, status_code=400)
        try:
            self.state.script(items)
        except ScriptError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"queued": len(items), "pending": self.state.pending})

    async def control_reset(self, request: Request) -> Response:
        self.state.reset()
        return JSONResponse({"ok": True})

    async def control_requests(self, request: Request) -> Response:
        return JSONResponse({"requests": self.state.requests})


def create_app(state: FakeModelState) -> Starlette:
    """Build the ASGI app serving the provider APIs and the ``/_control`` endpoints for ``state``."""
    endpoints = _Endpoints(state)
    return Starlette(
        routes=[
            Route("/v1/messages", endpoints.anthropic_messages, methods=["POST"]),
            Route("/v1/chat/completions", endpoints.openai_chat_completions, methods=["POST"]),
            Route("/_control/script", endpoints.control_script, methods=["POST"]),
            Route("/_control/reset", endpoints.control_reset, methods=["POST"]),
            Route("/_control/requests", endpoints.control_requests, methods=["GET"]),
        ]
    )


def _listening_socket(host: str, port: int) -> socket.socket:
    # Binding before uvicorn starts means the real port is known up front (port 0 picks a free
    # one) and early connections wait in the backlog instead of being refused.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _uvicorn_server(app: Starlette) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        loop="auto",  # uvloop when installed, else asyncio
        lifespan="off",  # nothing to set up; skipping it makes startup immediate
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config)


class FakeModel:
    """A scripted fake model provider served over real HTTP on 127.0.0.1.

    Serves Anthropic ``POST /v1/messages`` and OpenAI ``POST /v1/chat/completions``, streaming and
    not. Point an Anthropic client at ``url`` and an OpenAI client at ``openai_base_url``.

    Each response comes from the first applicable item of a FIFO script (``script()``), else from
    default rules on the request's last message:

    * tool results (Anthropic ``tool_result`` blocks / OpenAI ``role: tool``) -> text
      ``"done: " + first 200 chars of the first result``;
    * user text ``"bash: CMD"`` -> tool call ``bash`` with input ``{"command": CMD}``;
    * user text ``"tool: NAME {json}"`` -> tool call ``NAME`` with that JSON object as input;
    * anything else -> text ``"echo: " + user text``.

    Script items (all keys optional)::

        {"text": "hi"}
        {"tool_use": {"name": "bash", "input": {...}, "id": "toolu_..."}}   # id optional
        {"tool_uses": [{...}, {...}]}                                       # several calls
        {"status": 529, "error_type": "overloaded_error", "message": "..."} # HTTP error
        {"delay": 0.5}          # seconds to wait before answering
        {"chunk_delay": 0.05}   # seconds between streamed events
        {"stop_reason": "max_tokens"}
        {"match": "marker"}     # only for requests whose latest user text contains "marker"

    Items with ``match`` let concurrent tests script their own sessions; unmatched items go to
    whichever request comes first. If ``api_key`` is set, requests must send it as ``x-api-key``
    or ``Authorization: Bearer``. Every provider request is recorded in ``requests`` as
    ``{"method", "path", "headers" (lower-cased), "body"}``.
    """

    def __init__(
        self, *, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0, record: bool = True
    ) -> None:
        self.state = FakeModelState(api_key=api_key, record=record)
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``; the Anthropic SDK's ``base_url``."""
        if self._socket is None:
            raise RuntimeError("FakeModel is not started")
        return f"http://{self._host}:{self._socket.getsockname()[1]}"

    @property
    def openai_base_url(self) -> str:
        """``url + "/v1"``: the OpenAI SDK appends ``/chat/completions`` to its base URL."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[JSONDict]:
        """Snapshot of recorded provider requests, oldest first."""
        return self.state.requests

    @property
    def pending(self) -> int:
        """Number of scripted items not yet consumed."""
        return self.state.pending

    def script(self, *items: Mapping[str, Any]) -> None:
        """Append items to the response queue; raises ``ScriptError`` on a malformed item."""
        self.state.script(items)

    def reset(self) -> None:
        """Drop queued items and recorded requests."""
        self.state.reset()

    def start(self, timeout: float = 10.0) -> FakeModel:
        """Serve in a background thread; returns once uvicorn is accepting connections."""
        if self._thread is not None:
            raise RuntimeError("FakeModel is already started")
        self._socket = _listening_socket(self._host, self._port)
        self._server = _uvicorn_server(create_app(self.state))
        sockets = [self._socket]
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": sockets}, name="fake-model", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake model server failed to start")
            time.sleep(0.001)
        return self

    def stop(self) -> None:
        """Shut the server down and release its port. Safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: serve until interrupted, after printing the listening URL."""
    parser = argparse.ArgumentParser(description="Scripted fake Anthropic/OpenAI model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8401, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="require this key on provider requests")
    parser.add_argument("--no-record", action="store_true", help="do not keep requests (long benchmarks)")
    args = parser.parse_args(argv)

    state = FakeModelState(api_key=args.api_key, record=not args.no_record)
    sock = _listening_socket(args.host, args.port)
    # The socket already listens, so the URL is usable as soon as it is printed.
    print(f"http://{args.host}:{sock.getsockname()[1]}", flush=True)
    try:
        _uvicorn_server(create_app(state)).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl+C after its graceful shutdown; that is a normal exit here
    finally:
        sock.close()


if __name__ == "__main__":
    main()

"""Helpers for tests that drive sessions through the official SDK and read their event streams.

The SDK's stream iterator swallows keepalives and blocks until the next real event, so `LiveEvents` reads it
on a background thread and every wait has a deadline: a server that never answers fails the test instead of
hanging the run.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

import anthropic
import httpx

from tests.support.server import CorralServer

WAIT_SECONDS = 10.0
_END = object()


def user_message(text: str) -> dict[str, Any]:
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


class LiveEvents:
    """An SDK event stream read on a background thread, so that every wait on it is bounded."""

    def __init__(self, client: anthropic.Anthropic, session_id: str, **params: Any) -> None:
        # Returns once the response headers arrive, i.e. once the server has subscribed this stream.
        self.stream = client.beta.sessions.events.stream(session_id, **params)
        self.ended = False
        self._closing = False
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, name=f"events:{session_id}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for event in self.stream:
                self._queue.put(event)
        except Exception as exc:
            if not self._closing:
                self._queue.put(exc)
        self._queue.put(_END)

    def next(self, timeout: float = WAIT_SECONDS) -> Any:
        """The next event; None once the server has ended the stream."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event arrived on the stream within {timeout}s") from None
        if item is _END:
            self.ended = True
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def until(self, predicate: Callable[[Any], bool], timeout: float = WAIT_SECONDS) -> list[Any]:
        """Events up to and including the first one matching `predicate`."""
        deadline = time.monotonic() + timeout
        seen: list[Any] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event within {timeout}s; saw {[e.type for e in seen]}")
            try:
                event = self.next(remaining)
            except AssertionError:
                raise AssertionError(f"no matching event within {timeout}s; saw {[e.type for e in seen]}") from None
            if event is None:
                raise AssertionError(f"the stream ended before a matching event; saw {[e.type for e in seen]}")
            seen.append(event)
            if predicate(event):
                return seen

    def until_type(self, event_type: str, timeout: float = WAIT_SECONDS) -> list[Any]:
        return self.until(lambda event: event.type == event_type, timeout)

    def until_idle(self, timeout: float = WAIT_SECONDS) -> list[Any]:
        return self.until_type("session.status_idle", timeout)

    def wait_ended(self, timeout: float = WAIT_SECONDS) -> list[Any]:
        """Events until the server closes the stream."""
        deadline = time.monotonic() + timeout
        seen: list[Any] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the stream stayed open for {timeout}s; saw {[e.type for e in seen]}")
            event = self.next(remaining)
            if event is None:
                return seen
            seen.append(event)

    def close(self) -> None:
        # The reader thread notices at its next read (a keepalive at the latest) and exits quietly; it is not
        # joined, so closing costs nothing.
        self._closing = True
        self.stream.close()

    def __enter__(self) -> LiveEvents:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def run_turn(
    client: anthropic.Anthropic,
    session_id: str,
    events: Iterable[dict[str, Any]],
    timeout: float = WAIT_SECONDS,
    **stream_params: Any,
) -> list[Any]:
    """Open a stream, send `events`, and return what the stream carried up to the next `session.status_idle`."""
    with LiveEvents(client, session_id, **stream_params) as live:
        client.beta.sessions.events.send(session_id, events=list(events))
        return live.until_idle(timeout)


def types_of(events: Iterable[Any]) -> list[str]:
    return [event.type for event in events]


def all_events(client: anthropic.Anthropic, session_id: str, **params: Any) -> list[Any]:
    return list(client.beta.sessions.events.list(session_id, **params))


def raw_stream(server: CorralServer, session_id: str, query: str = "") -> Any:
    url = f"{server.url}/v1/sessions/{session_id}/events/stream{query}"
    headers = {"Authorization": f"Bearer {server.api_key}"}
    return httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(WAIT_SECONDS))


def raw_frames(lines: Iterator[str], deadline: float) -> Iterator[list[str]]:
    """SSE frames (their non-empty lines) as they arrive, until `deadline`."""
    frame: list[str] = []
    for line in lines:
        if line:
            frame.append(line)
        elif frame:
            yield frame
            frame = []
        if time.monotonic() > deadline:
            raise AssertionError("deadline passed while reading the raw stream")

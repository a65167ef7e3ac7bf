"""Revoking a key, the way an operator does (`corral keys revoke` in another process), cuts off what the key has
in progress: its open event streams end with an `authentication_error`, an upload it is sending is refused, and
its next request is a 401. Other keys' streams carry on."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anthropic
import httpx
import pytest

from tests.support.live_events import WAIT_SECONDS, LiveEvents, raw_frames
from tests.support.server import CorralServer

pytestmark = pytest.mark.slow  # each test waits for the server's once-a-second revocation check


@dataclass(frozen=True)
class IssuedKey:
    secret: str
    id: str


def _issue_key(server: CorralServer) -> IssuedKey:
    """A key of a brand-new workspace, minted with `corral keys create`."""
    output = server.corral("keys", "create")
    match = re.search(r"\(id (\S+), workspace \S+\)", output)
    assert match is not None, output
    return IssuedKey(secret=output.splitlines()[0].strip(), id=match.group(1))


def _revoke(server: CorralServer, key: IssuedKey) -> None:
    assert server.corral("keys", "revoke", key.id).strip() == f"revoked {key.id}"


def _new_session(server: CorralServer, key: str) -> str:
    with anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0) as client:
        agent = client.beta.agents.create(name="revocable", model="claude-sonnet-4-6")
        environment = client.beta.environments.create(name="revocable-env")
        return client.beta.sessions.create(agent=agent.id, environment_id=environment.id).id


@contextmanager
def _raw_stream(server: CorralServer, key: str, session_id: str) -> Iterator[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{server.url}/v1/sessions/{session_id}/events/stream"
    with httpx.stream("GET", url, headers=headers, timeout=WAIT_SECONDS) as response:
        assert response.status_code == 200, response.read()
        yield response


def _frames_until_closed(response: httpx.Response) -> list[list[str]]:
    """Every frame the server sends until it closes the stream (which must happen within WAIT_SECONDS)."""
    return list(raw_frames(response.iter_lines(), time.monotonic() + WAIT_SECONDS))


def _assert_authentication_error_envelope(body: dict) -> None:
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert "revoked" in body["error"]["message"]


def test_revoking_a_key_ends_its_open_stream_with_an_authentication_error(server: CorralServer) -> None:
    key = _issue_key(server)
    session_id = _new_session(server, key.secret)

    with (
        anthropic.Anthropic(base_url=server.url, api_key=key.secret, max_retries=0) as client,
        LiveEvents(client, session_id) as live,
    ):
        _revoke(server, key)

        with pytest.raises(anthropic.APIStatusError) as raised:
            live.wait_ended()

    assert isinstance(raised.value.body, dict)
    _assert_authentication_error_envelope(raised.value.body)


def test_a_revoked_keys_stream_ends_with_an_error_frame_while_other_keys_streams_stay_open(server, session) -> None:  # type: ignore[no-untyped-def]
    key = _issue_key(server)
    revoked_session = _new_session(server, key.secret)

    with (
        _raw_stream(server, server.api_key, session.id) as kept,
        _raw_stream(server, key.secret, revoked_session) as revoked,
    ):
        _revoke(server, key)

        *_, last = _frames_until_closed(revoked)
        assert last[0] == "event: error"
        _assert_authentication_error_envelope(json.loads(last[1].removeprefix("data: ")))
        # The check that ended the revoked stream has run; the other key's stream still carries keepalives.
        kept_frames = raw_frames(kept.iter_lines(), time.monotonic() + WAIT_SECONDS)
        for _ in range(2):
            assert next(kept_frames)[0].startswith(": ping")


def test_a_fresh_request_with_a_revoked_key_is_401_in_the_error_envelope(server: CorralServer) -> None:
    key = _issue_key(server)
    _new_session(server, key.secret)

    _revoke(server, key)

    response = httpx.get(f"{server.url}/v1/sessions", headers={"x-api-key": key.secret})
    assert response.status_code == 401
    body = response.json()
    _assert_authentication_error_envelope(body)
    assert body["request_id"] == response.headers["request-id"]


def test_revoking_a_key_refuses_the_upload_it_is_sending(server: CorralServer) -> None:
    key = _issue_key(server)

    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_SECONDS) as sock:
        # Announce a body and send only its first byte: the server waits for the rest, which never comes.
        sock.sendall(
            b"POST /v1/agents HTTP/1.1\r\nHost: corral\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key.secret}\r\nContent-Length: 1000\r\n\r\n{{".encode()
        )
        _revoke(server, key)

        response = http.client.HTTPResponse(sock)
        response.begin()  # raises TimeoutError if the server kept waiting for the body
        assert response.status == 401
        _assert_authentication_error_envelope(json.loads(response.read()))

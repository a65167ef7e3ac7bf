"""Query-string plumbing: page cursors bound to their listing, and array parameters in every client form."""

from __future__ import annotations

import base64
import json

import pytest
from starlette.requests import Request

from corral.api.http import decode_cursor, encode_cursor, query_list
from corral.errors import InvalidRequest


def request(query: str) -> Request:
    return Request({"type": "http", "query_string": query.encode(), "headers": []})


@pytest.mark.parametrize(
    ("cursor", "scope"),
    [
        ({"d": "next", "k": ["2026-01-01T00:00:00.000000Z", "sess_01"]}, "sessions:desc"),
        ({"d": "prev", "k": [3, "agent_01"]}, "agent_versions:agent_01"),
        ({"k": 42}, "events:sess_1:asc"),
    ],
)
def test_a_cursor_decodes_back_to_what_was_encoded(cursor: dict[str, object], scope: str) -> None:
    token = encode_cursor(cursor, scope=scope)
    assert token is not None

    decoded = decode_cursor(token, scope=scope)

    assert decoded is not None
    assert {key: decoded[key] for key in cursor} == cursor


def test_an_encoded_cursor_is_url_safe_without_padding() -> None:
    token = encode_cursor({"k": 1}, scope="events:asc")

    assert token is not None
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_no_cursor_encodes_to_none() -> None:
    assert encode_cursor(None, scope="events:asc") is None


@pytest.mark.parametrize("absent", [None, ""])
def test_no_page_parameter_decodes_to_none(absent: str | None) -> None:
    assert decode_cursor(absent, scope="events:asc") is None


def test_a_cursor_from_another_listing_is_rejected() -> None:
    token = encode_cursor({"k": 5}, scope="events:sess_1:asc")

    with pytest.raises(InvalidRequest, match="different listing"):
        decode_cursor(token, scope="events:sess_2:asc")


def test_a_cursor_from_the_same_listing_in_another_order_is_rejected() -> None:
    token = encode_cursor({"k": 5}, scope="events:sess_1:asc")

    with pytest.raises(InvalidRequest, match="different listing"):
        decode_cursor(token, scope="events:sess_1:desc")


@pytest.mark.parametrize("garbage", ["not-a-cursor", "a", "%%%%", "_w"])
def test_a_garbage_cursor_is_rejected(garbage: str) -> None:
    with pytest.raises(InvalidRequest):
        decode_cursor(garbage, scope="events:asc")


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"\xff\xfe\x00"])
def test_base64_that_is_not_a_cursor_object_is_rejected(payload: bytes) -> None:
    token = base64.urlsafe_b64encode(payload).decode().rstrip("=")

    with pytest.raises(InvalidRequest):
        decode_cursor(token, scope="events:asc")


def test_a_cursor_object_without_a_scope_is_rejected() -> None:
    token = base64.urlsafe_b64encode(json.dumps({"k": 5}).encode()).decode().rstrip("=")

    with pytest.raises(InvalidRequest):
        decode_cursor(token, scope="events:asc")


@pytest.mark.parametrize(
    "forged",
    [
        {},
        {"k": "x"},
        {"k": True},
        {"k": [1]},
        {"k": ["a", "b"]},
        {"k": [{}, "b"]},
        {"d": "sideways", "k": 5},
        {"k": 2**63},
        {"k": -(2**63) - 1},
    ],
)
def test_a_cursor_with_the_right_scope_but_a_key_no_listing_issues_is_rejected(forged: dict[str, object]) -> None:
    # Cursors are unsigned base64 JSON, so a client can hand-craft one; a malformed key must be a 400 here,
    # not a KeyError/ValueError/sqlite3.ProgrammingError (a 500) when the store reads it.
    token = base64.urlsafe_b64encode(json.dumps({**forged, "s": "events:sess_1:asc"}).encode()).decode().rstrip("=")

    with pytest.raises(InvalidRequest):
        decode_cursor(token, scope="events:sess_1:asc")


@pytest.mark.parametrize(
    "key",
    [["2026-01-01T00:00:00.000000Z", 10**30], [2**63, "agent_1"], ["agent_\x00", 1], ["agent_\ud800", 1]],
    ids=["huge-int", "huge-first-int", "nul", "surrogate"],
)
def test_a_keyset_cursor_with_a_part_no_store_can_compare_is_rejected(key: list[object]) -> None:
    # SQLite overflows on integers past 64 bits; PostgreSQL refuses NUL, and UTF-8 has no lone surrogates.
    token = base64.urlsafe_b64encode(json.dumps({"k": key, "s": "sessions:desc"}).encode()).decode().rstrip("=")

    with pytest.raises(InvalidRequest):
        decode_cursor(token, scope="sessions:desc")


def test_a_cursor_nesting_past_the_recursion_limit_is_rejected() -> None:
    token = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode().rstrip("=")

    with pytest.raises(InvalidRequest):
        decode_cursor(token, scope="events:asc")


def test_a_position_cursor_is_rejected_by_a_keyset_listing() -> None:
    token = base64.urlsafe_b64encode(json.dumps({"k": 5, "s": "sessions:desc"}).encode()).decode().rstrip("=")

    with pytest.raises(InvalidRequest):
        decode_cursor(token, scope="sessions:desc")


@pytest.mark.parametrize(
    "query",
    [
        "types[]=a&types[]=b",
        "types%5B%5D=a&types%5B%5D=b",
        "types=a&types=b",
        "types=a,b",
        "types=a%2Cb",
        "types[]=a&types=b",
        "types=a,,%20b%20",
    ],
)
def test_query_list_accepts_every_array_form(query: str) -> None:
    assert query_list(request(query), "types") == ["a", "b"]


def test_query_list_without_the_parameter_is_empty() -> None:
    assert query_list(request("other=a"), "types") == []

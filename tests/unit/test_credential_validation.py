"""What a credential validation report shows of an HTTP error response (`corral.services.vaults`)."""

from __future__ import annotations

from corral.services.vaults import MAX_REPORTED_BODY, reported_response
from corral.vault.credentials import HttpReply


def test_a_reported_body_hides_the_credentials_secrets_and_token_fields() -> None:
    body = b'{"error": "invalid_token", "seen": "Bearer tok-123", "refresh_token": "rt-from-the-server"}'

    shown = reported_response(HttpReply(401, "application/json", body), ["tok-123"])

    assert shown is not None
    assert "tok-123" not in shown["body"] and "rt-from-the-server" not in shown["body"]
    assert "invalid_token" in shown["body"]
    assert (shown["status_code"], shown["content_type"]) == (401, "application/json")


def test_a_long_body_is_cut_short_after_scrubbing() -> None:
    secret = "s" * 40
    body = ("x" * (MAX_REPORTED_BODY - 20) + secret + "y" * 100).encode()  # the secret straddles the cut

    shown = reported_response(HttpReply(500, "text/plain", body), [secret])

    assert shown is not None
    assert shown["body_truncated"] is True and len(shown["body"]) == MAX_REPORTED_BODY
    assert "s" not in shown["body"]

"""Vault credentials put into requests by the egress proxy, in place of their placeholders.

Vault credentials of type `environment_variable` (spec §10): the sandbox's variable holds only a placeholder
(`corral.vault.credentials.placeholder_for`). In a plain-HTTP request, or an HTTPS one the proxy intercepts
(see `egress.py`: only to hosts a credential names), to a host that both the environment
and the credential's `networking` allow, the proxy puts the real value where the placeholder appears: in
header values (`injection_location.header`) and in the body (`.body`; bodies up to `max_body_bytes` are read
whole and re-sent with a new Content-Length, larger ones stream through unchanged). It reads the credentials at
each request, so an updated value applies at once. An opaque CONNECT tunnel (to any host no credential names)
is never opened: it carries the placeholder unchanged. The real value never reaches anything the sandbox can
read.

Which credentials were used, and where, is logged; their values never are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from corral.vault.credentials import EnvironmentSecret

log = logging.getLogger("corral.egress")


def substitute_headers(
    session_id: str, host: str, secrets: Sequence[EnvironmentSecret], headers: list[str]
) -> tuple[list[str], list[str]]:
    """The headers with each header credential's placeholder replaced by its value, and what was used."""
    used: list[str] = []
    substituted: list[str] = []
    for line in headers:
        name, sep, value = line.partition(":")
        for secret in secrets:
            if not secret.header or secret.placeholder not in value:
                continue
            if not fits_in_header(secret.value):
                log.warning(
                    "egress: session %s -> %s: credential %s holds characters a header cannot carry; its placeholder "
                    "was sent unchanged",
                    session_id,
                    host,
                    secret.credential_id,
                )
                continue
            value = value.replace(secret.placeholder, secret.value)
            used.append(f"{secret.credential_id} in header {name.strip()}")
        substituted.append(name + sep + value)
    return substituted, used


def substitute_body(
    body: bytearray, secrets: Sequence[EnvironmentSecret]
) -> tuple[list[memoryview | bytes], int, list[str]]:
    """The body with each placeholder replaced by its credential's value, as pieces to send in order (views of
    `body` between the values, so that the body is never copied), their total size, and what was used."""
    values = {secret.placeholder.encode(): secret.value.encode() for secret in secrets}
    # Longest first, so that a placeholder that begins another one never cuts it short.
    pattern = re.compile(b"|".join(re.escape(placeholder) for placeholder in sorted(values, key=len, reverse=True)))
    view = memoryview(body)
    pieces: list[memoryview | bytes] = []
    found: set[bytes] = set()
    start = 0
    for match in pattern.finditer(body):
        found.add(match.group())
        pieces += [view[start : match.start()], values[match.group()]]
        start = match.end()
    pieces.append(view[start:])
    used = [f"{secret.credential_id} in the body" for secret in secrets if secret.placeholder.encode() in found]
    return pieces, sum(len(piece) for piece in pieces), used


def log_substitution(session_id: str, host: str, used: list[str]) -> None:
    """Which credentials went where, never their values."""
    if used:
        log.info("egress: session %s -> %s: substituted credential %s", session_id, host, ", ".join(used))


def fits_in_header(value: str) -> bool:
    """A value that can stand in a header field as it is: Latin-1, no line breaks or other control characters."""
    return all(char == "\t" or (" " <= char <= "\xff" and char != "\x7f") for char in value)

"""Encryption of vault secrets at rest: AES-256-GCM with the server's secret key.

The key comes from `CORRAL_SECRET_KEY` (32 bytes, base64). Without it, the server generates one on first start
into `<data-dir>/secret.key` (mode 0600) and says so in its log. Every node that shares a database must use
the same key; a credential sealed under another key is reported as unusable, never returned or guessed at.

A sealed secret is `v1.<key id>.<base64url(nonce | ciphertext | tag)>`. The credential's id and workspace are
the associated data, so a ciphertext copied onto another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("corral.vault")

KEY_ENV = "CORRAL_SECRET_KEY"
KEY_FILE_NAME = "secret.key"
KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = "v1"


class SecretKeyError(ValueError):
    """The configured secret key is unusable (not base64, wrong length, unreadable key file)."""


class SecretUnavailable(Exception):
    """A sealed secret cannot be opened: another key sealed it, or it was tampered with."""


def parse_key(text: str) -> bytes:
    """A 32-byte key from its base64 (standard or URL-safe, padding optional) text."""
    raw = text.strip()
    padded = raw + "=" * (-len(raw) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            key = decode(padded.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise SecretKeyError(
        f"{KEY_ENV} must be {KEY_BYTES} random bytes in base64 (for example the output of "
        "`python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())'`)"
    )


def load_or_create_key(configured: str | None, data_dir: Path) -> bytes:
    """The configured key, else the one in `<data_dir>/secret.key`, else a new one written there (0600)."""
    if configured:
        return parse_key(configured)
    path = data_dir / KEY_FILE_NAME
    try:
        return parse_key(path.read_text())
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secret key file {path}: {exc}") from exc
    except SecretKeyError as exc:
        raise SecretKeyError(f"the secret key file {path} is not a valid key: {exc}") from exc
    key = secrets.token_bytes(KEY_BYTES)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return parse_key(path.read_text())  # another process created it first
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode("ascii") + "\n")
    log.warning(
        "generated a new secret key for vault credentials at %s (mode 0600): back it up, since stored "
        "credentials cannot be decrypted without it, and give every server that shares this database the "
        "same key through %s",
        path,
        KEY_ENV,
    )
    return key


class SecretBox:
    """Seals and opens JSON secrets with one AES-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretKeyError(f"the secret key must be {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        # Names the key in each sealed value, so a wrong key is told apart from a corrupt value.
        self.key_id = hashlib.sha256(b"corral-vault-key:" + key).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id!r})"

    def seal(self, secret: dict[str, Any], *, context: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        plaintext = json.dumps(secret, separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        token = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{_VERSION}.{self.key_id}.{token}"

    def open(self, sealed: str, *, context: str) -> dict[str, Any]:
        version, _, rest = sealed.partition(".")
        key_id, _, token = rest.partition(".")
        if version != _VERSION or not token:
            raise SecretUnavailable("the stored secret is not in a format this server knows")
        if key_id != self.key_id:
            raise SecretUnavailable(
                f"the stored secret was sealed with another key (id {key_id}; this server's key is {self.key_id}): "
                f"give this server the same {KEY_ENV} as the server that stored it"
            )
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            plaintext = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise SecretUnavailable(
                "the stored secret does not decrypt: it was altered or belongs to another row"
            ) from exc
        value = json.loads(plaintext)
        if not isinstance(value, dict):
            raise SecretUnavailable("the stored secret is not an object")
        return value

"""API keys: how they are minted, stored (a SHA-256 hash and a hint, never the key) and checked."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from corral.clock import now_rfc3339
from corral.ids import new_id
from corral.session.records import ApiKeyRecord
from corral.session.store import Store

KEY_PREFIX = "sk-corral-"


def hash_key(key: str) -> str:
    # Keys are 256-bit random strings, so a fast unsalted hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    return f"{key[: len(KEY_PREFIX) + 4]}...{key[-4:]}"


@dataclass(frozen=True)
class IssuedKey:
    record: ApiKeyRecord
    key: str


async def register_key(store: Store, workspace_id: str, key: str) -> ApiKeyRecord:
    """Store a key (only its hash) for a workspace, unless that exact key is already registered."""
    existing = await store.find_api_key(hash_key(key))
    if existing is not None:
        return existing
    record = ApiKeyRecord(id=new_id("apikey"), workspace_id=workspace_id, hint=key_hint(key), created_at=now_rfc3339())
    await store.add_api_key(record, hash_key(key))
    return record


async def issue_key(store: Store, workspace_id: str | None = None, workspace_name: str = "default") -> IssuedKey:
    """Mint a new key; with no workspace given, it gets a workspace of its own."""
    if workspace_id is None:
        workspace_id = new_id("wrkspc")
        await store.create_workspace(workspace_id, workspace_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return IssuedKey(record=await register_key(store, workspace_id, key), key=key)


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries: `x-api-key: K` or `Authorization: Bearer K` (what SDK 2.x sends)."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None

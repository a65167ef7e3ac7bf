"""Using vault credentials on a session's behalf, outside its sandbox.

`VaultAccess` is what the rest of the server calls; it opens secrets only at the moment they are needed and
hands them out in objects whose `repr` shows no secret:

* the MCP client asks `mcp_credential(session, url)` for the `Authorization` header of an MCP server: the
  first of the session's vaults (in `vault_ids` order) with a live `static_bearer` or `mcp_oauth` credential
  for that server URL wins. An `mcp_oauth` token past its `expires_at` (or rejected by the server) is
  refreshed at the credential's token endpoint when it has a refresh token, and the new token is stored.
* the egress proxy asks `session_environment_secrets(session_id)` for the `environment_variable` credentials,
  at each request (so a rotated value applies at once): each says which variable the sandbox gets (holding
  only a placeholder), which hosts the real value may be sent to, and whether it is substituted in headers
  and/or bodies (see `corral.hands.net.egress`).

Secrets never enter an event, a log line or the sandbox: failures are reported by credential id and reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from corral.clock import now, parse_rfc3339, rfc3339
from corral.session.records import CredentialRecord, Json
from corral.session.store import Store
from corral.vault.crypto import SecretBox, SecretUnavailable

log = logging.getLogger("corral.vault")

# Refresh an OAuth token this long before it expires, so a call does not race the expiry.
REFRESH_MARGIN = timedelta(seconds=60)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_mcp_url(url: str) -> str:
    """The form MCP server URLs are compared in: lower-case scheme and host, no default port, no userinfo,
    no trailing slash, no fragment (`HTTPS://Example.com:443/mcp/` -> `https://example.com/mcp`)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def mcp_identity(url: str) -> str:
    return f"mcp:{normalize_mcp_url(url)}"


def environment_identity(secret_name: str) -> str:
    return f"env:{secret_name}"


def credential_context(workspace_id: str, credential_id: str) -> str:
    """The associated data a credential's secret is sealed with: it opens on that row only."""
    return f"corral-credential:{workspace_id}:{credential_id}"


@dataclass
class McpCredential:
    """The credential an MCP server gets, with its secret opened. Its repr names it without the secret."""

    credential_id: str
    vault_id: str
    auth_type: str
    _token: str = field(repr=False)
    can_refresh: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}


@dataclass(frozen=True)
class EnvironmentSecret:
    """An `environment_variable` credential as the egress proxy applies it.

    The sandbox's environment gets `secret_name=placeholder`; where the placeholder appears in a request to a
    host that `applies_to`, in a header (`header`) or the body (`body`), the proxy puts `value` instead.
    """

    credential_id: str
    vault_id: str
    secret_name: str
    placeholder: str
    value: str = field(repr=False)
    allowed_hosts: tuple[str, ...] | None  # None: any host the environment's networking allows
    header: bool
    body: bool

    def applies_to(self, host: str) -> bool:
        """Whether the value may be sent to `host` (a normalized host name or IPv4 address, no port)."""
        if self.allowed_hosts is None:
            return True
        host = host.rstrip(".").lower()
        for pattern in self.allowed_hosts:
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]):
                    return True
            elif host == pattern:
                return True
        return False


@dataclass(frozen=True)
class HttpReply:
    """An HTTP error response kept to report why a credential failed validation. Its body may hold a
    secret the server echoed back: scrub it before it is shown (`corral.services.vaults`)."""

    status_code: int
    content_type: str
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class RefreshOutcome:
    """What a refresh-token exchange came to: the new credential when it `succeeded`, the token endpoint's
    answer when it `failed`, nothing more on a `connect_error` or when there was `no_refresh_token`."""

    status: Literal["succeeded", "failed", "connect_error", "no_refresh_token"]
    credential: McpCredential | None = None
    reply: HttpReply | None = None


def placeholder_for(credential_id: str) -> str:
    """What the sandbox's variable holds instead of the secret: names the credential, reveals nothing."""
    return f"corral-placeholder-{credential_id}"


class VaultAccess:
    """Opens session credentials for the MCP client and the egress proxy (see the module docstring)."""

    def __init__(self, store: Store, box: SecretBox, *, http_timeout: float = 30.0) -> None:
        self.store = store
        self.box = box
        self._http_timeout = http_timeout

    def _open(self, credential: CredentialRecord) -> Json | None:
        if credential.secret is None:
            return None
        try:
            return self.box.open(credential.secret, context=credential_context(credential.workspace_id, credential.id))
        except SecretUnavailable as exc:
            log.error("credential %s (vault %s) cannot be used: %s", credential.id, credential.vault_id, exc)
            return None

    async def _live(self, workspace_id: str, vault_ids: list[str]) -> list[CredentialRecord]:
        """Live credentials in the order the session's vaults were given."""
        credentials = await self.store.live_credentials(workspace_id, vault_ids)
        rank = {vault_id: index for index, vault_id in enumerate(vault_ids)}
        return sorted(credentials, key=lambda credential: rank.get(credential.vault_id, len(rank)))

    async def mcp_credential(self, workspace_id: str, vault_ids: list[str], url: str) -> McpCredential | None:
        """The credential for the MCP server at `url`, refreshed first if its OAuth token has expired."""
        if not vault_ids:
            return None
        identity = mcp_identity(url)
        for credential in await self._live(workspace_id, vault_ids):
            if credential.identity != identity:
                continue
            secret = self._open(credential)
            if secret is None:
                continue
            auth = credential.body["auth"]
            if auth["type"] == "static_bearer":
                return McpCredential(credential.id, credential.vault_id, "static_bearer", secret["token"])
            if auth["type"] == "mcp_oauth":
                expires_at = auth.get("expires_at")
                if expires_at and parse_rfc3339(expires_at) - REFRESH_MARGIN <= now() and secret.get("refresh_token"):
                    refreshed = await self.refresh(credential)
                    if refreshed is not None:
                        return refreshed
                return self._oauth_credential(credential, secret)
        return None

    def opened_oauth_credential(self, credential: CredentialRecord) -> McpCredential | None:
        """An `mcp_oauth` credential as stored now (no refresh); None when its secret cannot be opened."""
        secret = self._open(credential)
        return None if secret is None else self._oauth_credential(credential, secret)

    @staticmethod
    def _oauth_credential(credential: CredentialRecord, secret: Json) -> McpCredential:
        can_refresh = bool(secret.get("refresh_token"))
        return McpCredential(
            credential.id, credential.vault_id, "mcp_oauth", secret["access_token"], can_refresh=can_refresh
        )

    async def refresh_rejected(self, workspace_id: str, rejected: McpCredential) -> McpCredential | None:
        """A new token for an `mcp_oauth` credential whose token the MCP server rejected, if it can refresh."""
        if not rejected.can_refresh:
            return None
        credential = await self.store.get_credential(workspace_id, rejected.vault_id, rejected.credential_id)
        if credential is None or credential.archived_at is not None:
            return None
        return await self.refresh(credential)

    async def refresh(self, credential: CredentialRecord) -> McpCredential | None:
        """Trade the credential's refresh token for a new access token (OAuth 2.0 `refresh_token` grant) and
        store it. None when it has no refresh token or the token endpoint refuses; the reason is logged."""
        return (await self.exchange_refresh_token(credential)).credential

    async def exchange_refresh_token(self, credential: CredentialRecord) -> RefreshOutcome:
        """`refresh`, saying how it went (for credential validation)."""
        secret = self._open(credential)
        auth = credential.body["auth"]
        refresh = auth.get("refresh")
        if secret is None or not refresh or not secret.get("refresh_token"):
            return RefreshOutcome("no_refresh_token")
        form = {"grant_type": "refresh_token", "refresh_token": secret["refresh_token"]}
        if refresh.get("scope"):
            form["scope"] = refresh["scope"]
        if refresh.get("resource"):
            form["resource"] = refresh["resource"]
        method = refresh["token_endpoint_auth"]["type"]
        basic: httpx.Auth = httpx.Auth()  # the base class adds nothing: no client authentication
        if method == "client_secret_basic":
            basic = httpx.BasicAuth(refresh["client_id"], secret.get("client_secret") or "")
        else:
            form["client_id"] = refresh["client_id"]
            if method == "client_secret_post":
                form["client_secret"] = secret.get("client_secret") or ""
        try:
            async with httpx.AsyncClient(timeout=self._http_timeout) as http:
                response = await http.post(
                    refresh["token_endpoint"], data=form, auth=basic, headers={"Accept": "application/json"}
                )
            payload: Any = response.json() if response.content else {}
        except httpx.HTTPError as exc:
            log.warning("credential %s: the token endpoint could not be reached: %s", credential.id, type(exc).__name__)
            return RefreshOutcome("connect_error")
        except ValueError:
            payload = None  # not JSON: a refusal, reported with the body below
        if response.status_code != 200 or not isinstance(payload, dict) or not payload.get("access_token"):
            log.warning(
                "credential %s: the token endpoint refused the refresh (HTTP %s)", credential.id, response.status_code
            )
            reply = HttpReply(response.status_code, response.headers.get("content-type", ""), response.content)
            return RefreshOutcome("failed", reply=reply)
        new_secret = {**secret, "access_token": str(payload["access_token"])}
        if payload.get("refresh_token"):
            new_secret["refresh_token"] = str(payload["refresh_token"])
        new_auth = dict(auth)
        expires_in = payload.get("expires_in")
        new_auth["expires_at"] = (
            rfc3339(now() + timedelta(seconds=float(expires_in))) if isinstance(expires_in, int | float) else None
        )
        updated = CredentialRecord(
            id=credential.id,
            workspace_id=credential.workspace_id,
            vault_id=credential.vault_id,
            identity=credential.identity,
            body={**credential.body, "auth": new_auth},
            secret=self.box.seal(new_secret, context=credential_context(credential.workspace_id, credential.id)),
            created_at=credential.created_at,
            updated_at=rfc3339(now()),
        )
        await self.store.update_credential(updated)
        log.info("credential %s: refreshed its OAuth access token", credential.id)
        token = new_secret["access_token"]
        return RefreshOutcome("succeeded", McpCredential(credential.id, credential.vault_id, "mcp_oauth", token, True))

    async def session_environment_secrets(self, session_id: str) -> list[EnvironmentSecret]:
        """The `environment_variable` credentials of a session's vaults, read now; none for an unknown session."""
        session = await self.store.get_session(None, session_id)
        vault_ids = list(session.body.get("vault_ids") or []) if session is not None else []
        if session is None or not vault_ids:
            return []
        return await self.environment_secrets(session.workspace_id, vault_ids)

    async def environment_secrets(self, workspace_id: str, vault_ids: list[str]) -> list[EnvironmentSecret]:
        """The session's `environment_variable` credentials; for a variable in several vaults, the first vault's."""
        found: dict[str, EnvironmentSecret] = {}
        for credential in await self._live(workspace_id, vault_ids):
            auth = credential.body["auth"]
            if auth["type"] != "environment_variable" or auth["secret_name"] in found:
                continue
            secret = self._open(credential)
            if secret is None:
                continue
            networking = auth["networking"]
            hosts = None if networking["type"] == "unrestricted" else tuple(networking["allowed_hosts"])
            found[auth["secret_name"]] = EnvironmentSecret(
                credential_id=credential.id,
                vault_id=credential.vault_id,
                secret_name=auth["secret_name"],
                placeholder=placeholder_for(credential.id),
                value=secret["secret_value"],
                allowed_hosts=hosts,
                header=bool(auth["injection_location"]["header"]),
                body=bool(auth["injection_location"]["body"]),
            )
        return list(found.values())

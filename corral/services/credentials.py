"""Vault credentials' auth: the request shapes of each auth type, validated and split into the public part
(what responses show) and the secret part (sealed before it reaches the store).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field

from corral.clock import now, parse_rfc3339, rfc3339
from corral.errors import InvalidRequest
from corral.services.schemas import Metadata, MetadataPatch, Strict
from corral.session.records import Json
from corral.vault.credentials import environment_identity, mcp_identity

MAX_TOKEN_CHARS = 16 * 1024
MAX_SECRET_VALUE_CHARS = 64 * 1024
MAX_URL_CHARS = 2048

DisplayName = Annotated[str, Field(min_length=1, max_length=255)]
Token = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_CHARS)]
Url = Annotated[str, Field(min_length=1, max_length=MAX_URL_CHARS)]
SecretName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")]


class UnrestrictedNetworking(Strict):
    type: Literal["unrestricted"]


class LimitedNetworking(Strict):
    type: Literal["limited"]
    allowed_hosts: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=253)]], Field(min_length=1, max_length=16)
    ]


CredentialNetworking = Annotated[UnrestrictedNetworking | LimitedNetworking, Field(discriminator="type")]


class InjectionLocation(Strict):
    header: bool | None = None
    body: bool | None = None


class TokenEndpointAuthNone(Strict):
    type: Literal["none"]


class TokenEndpointAuthSecret(Strict):
    type: Literal["client_secret_basic", "client_secret_post"]
    client_secret: Token


class OAuthRefreshCreate(Strict):
    client_id: Annotated[str, Field(min_length=1, max_length=1024)]
    refresh_token: Token
    token_endpoint: Url
    token_endpoint_auth: Annotated[TokenEndpointAuthNone | TokenEndpointAuthSecret, Field(discriminator="type")]
    resource: Annotated[str, Field(max_length=MAX_URL_CHARS)] | None = None
    scope: Annotated[str, Field(max_length=4096)] | None = None


class StaticBearerCreate(Strict):
    type: Literal["static_bearer"]
    token: Token
    mcp_server_url: Url


class McpOAuthCreate(Strict):
    type: Literal["mcp_oauth"]
    access_token: Token
    mcp_server_url: Url
    expires_at: str | None = None
    refresh: OAuthRefreshCreate | None = None


class EnvironmentVariableCreate(Strict):
    type: Literal["environment_variable"]
    secret_name: SecretName
    secret_value: Annotated[str, Field(min_length=1, max_length=MAX_SECRET_VALUE_CHARS)]
    networking: CredentialNetworking
    injection_location: InjectionLocation | None = None


AuthCreate = Annotated[StaticBearerCreate | McpOAuthCreate | EnvironmentVariableCreate, Field(discriminator="type")]


class CredentialCreate(Strict):
    auth: AuthCreate
    display_name: Annotated[str, Field(max_length=255)] | None = None
    metadata: Metadata | None = None


class StaticBearerUpdate(Strict):
    type: Literal["static_bearer"]
    token: Token | None = None
    mcp_server_url: Url | None = None


class TokenEndpointSecretUpdate(Strict):
    type: Literal["client_secret_basic", "client_secret_post"]
    client_secret: Token | None = None


class OAuthRefreshUpdate(Strict):
    refresh_token: Token | None = None
    scope: Annotated[str, Field(max_length=4096)] | None = None
    token_endpoint_auth: TokenEndpointSecretUpdate | None = None


class McpOAuthUpdate(Strict):
    type: Literal["mcp_oauth"]
    access_token: Token | None = None
    expires_at: str | None = None
    refresh: OAuthRefreshUpdate | None = None
    mcp_server_url: Url | None = None


class EnvironmentVariableUpdate(Strict):
    type: Literal["environment_variable"]
    secret_value: Annotated[str, Field(min_length=1, max_length=MAX_SECRET_VALUE_CHARS)] | None = None
    networking: CredentialNetworking | None = None
    injection_location: InjectionLocation | None = None
    secret_name: str | None = None


AuthUpdate = Annotated[StaticBearerUpdate | McpOAuthUpdate | EnvironmentVariableUpdate, Field(discriminator="type")]


class CredentialUpdate(Strict):
    auth: AuthUpdate | None = None
    display_name: Annotated[str, Field(max_length=255)] | None = None
    metadata: MetadataPatch | None = None


# --- validation ----------------------------------------------------------------------------------------

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# Variables the sandbox itself depends on: a placeholder there would break it.
_RESERVED_NAMES = frozenset(
    {"PATH", "HOME", "USER", "SHELL", "PWD", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"}
)


def _check_url(url: str, field: str) -> str:
    try:
        parts = urlsplit(url.strip())  # raises on an unbalanced IPv6 bracket: `http://[::1`
    except ValueError as exc:
        raise InvalidRequest(f"{field} is not a valid URL ({exc}): {url[:200]!r}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{field} must be an http:// or https:// URL with a host, got {url[:200]!r}")
    if parts.username or parts.password:
        raise InvalidRequest(f"{field} must not carry a user name or password; put secrets in the credential")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise InvalidRequest(f"{field} has an invalid port: {url[:200]!r}") from exc
    return url.strip()


def _check_host(entry: str) -> str:
    """A credential networking host: a bare hostname, an IPv4 address, or a `*.` wildcard."""
    host = entry.strip().lower().rstrip(".")
    refuse = InvalidRequest(
        f"networking.allowed_hosts: {entry[:100]!r} must be a bare hostname (api.example.com), an IPv4 address "
        "or a *. wildcard (*.example.com); URLs, ports, paths and IPv6 addresses are not accepted"
    )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if address.version != 4:
            raise refuse
        return host
    labels = host[2:].split(".") if host.startswith("*.") else host.split(".")
    if not labels or not all(_HOST_LABEL.match(label) for label in labels):
        raise refuse
    return host


def _resolve_networking(networking: UnrestrictedNetworking | LimitedNetworking) -> Json:
    if isinstance(networking, UnrestrictedNetworking):
        return {"type": "unrestricted"}
    hosts = list(dict.fromkeys(_check_host(host) for host in networking.allowed_hosts))
    return {"type": "limited", "allowed_hosts": hosts}


def _check_expiry(expires_at: str, field: str) -> str:
    try:
        moment = parse_rfc3339(expires_at)
    except ValueError as exc:
        raise InvalidRequest(f"{field} must be an RFC 3339 timestamp, got {expires_at[:100]!r}") from exc
    if moment <= now():
        raise InvalidRequest(f"{field} must be in the future")
    return rfc3339(moment)


def _check_secret_name(name: str) -> str:
    if name.upper() in _RESERVED_NAMES:
        raise InvalidRequest(f"auth.secret_name {name!r} is reserved: the sandbox needs that variable itself")
    return name


def _public_refresh(refresh: OAuthRefreshCreate) -> Json:
    return {
        "client_id": refresh.client_id,
        "token_endpoint": _check_url(refresh.token_endpoint, "auth.refresh.token_endpoint"),
        "token_endpoint_auth": {"type": refresh.token_endpoint_auth.type},
        "resource": refresh.resource,
        "scope": refresh.scope or None,
    }


def resolve_auth(auth: StaticBearerCreate | McpOAuthCreate | EnvironmentVariableCreate) -> tuple[Json, Json, str]:
    """(public auth as responses show it, secret fields to seal, identity) of a create request's auth."""
    if isinstance(auth, StaticBearerCreate):
        url = _check_url(auth.mcp_server_url, "auth.mcp_server_url")
        return {"type": "static_bearer", "mcp_server_url": url}, {"token": auth.token}, mcp_identity(url)
    if isinstance(auth, McpOAuthCreate):
        url = _check_url(auth.mcp_server_url, "auth.mcp_server_url")
        secret: Json = {"access_token": auth.access_token}
        refresh = None
        if auth.refresh is not None:
            refresh = _public_refresh(auth.refresh)
            secret["refresh_token"] = auth.refresh.refresh_token
            if isinstance(auth.refresh.token_endpoint_auth, TokenEndpointAuthSecret):
                secret["client_secret"] = auth.refresh.token_endpoint_auth.client_secret
        public = {
            "type": "mcp_oauth",
            "mcp_server_url": url,
            "expires_at": _check_expiry(auth.expires_at, "auth.expires_at") if auth.expires_at else None,
            "refresh": refresh,
        }
        return public, secret, mcp_identity(url)
    location = auth.injection_location or InjectionLocation()
    injection = {
        "header": True if location.header is None else location.header,
        "body": bool(location.body),
    }
    if not (injection["header"] or injection["body"]):
        raise InvalidRequest("auth.injection_location must enable header or body (or both)")
    public = {
        "type": "environment_variable",
        "secret_name": _check_secret_name(auth.secret_name),
        "networking": _resolve_networking(auth.networking),
        "injection_location": injection,
    }
    return public, {"secret_value": auth.secret_value}, environment_identity(auth.secret_name)


def apply_auth_update(
    current: Json, secret: Json, update: StaticBearerUpdate | McpOAuthUpdate | EnvironmentVariableUpdate
) -> tuple[Json, Json]:
    """The (public auth, secret) after an update; the type and identity fields cannot change."""
    if update.type != current["type"]:
        raise InvalidRequest(f"auth.type cannot change from '{current['type']}' to '{update.type}'")
    public, secret = dict(current), dict(secret)
    if isinstance(update, StaticBearerUpdate | McpOAuthUpdate) and update.mcp_server_url is not None:
        url = _check_url(update.mcp_server_url, "auth.mcp_server_url")
        if mcp_identity(url) != mcp_identity(current["mcp_server_url"]):
            raise InvalidRequest("auth.mcp_server_url cannot change; archive this credential and create another")
    if isinstance(update, StaticBearerUpdate):
        if update.token is not None:
            secret["token"] = update.token
    elif isinstance(update, McpOAuthUpdate):
        if update.access_token is not None:
            secret["access_token"] = update.access_token
        if update.expires_at is not None:
            public["expires_at"] = _check_expiry(update.expires_at, "auth.expires_at")
        if update.refresh is not None:
            if current.get("refresh") is None:
                raise InvalidRequest("auth.refresh: this credential was created without refresh settings")
            refresh = dict(current["refresh"])
            if update.refresh.refresh_token is not None:
                secret["refresh_token"] = update.refresh.refresh_token
            if "scope" in update.refresh.model_fields_set:
                refresh["scope"] = update.refresh.scope or None
            endpoint_auth = update.refresh.token_endpoint_auth
            if endpoint_auth is not None and endpoint_auth.client_secret is not None:
                if refresh["token_endpoint_auth"]["type"] == "none":
                    raise InvalidRequest(
                        "auth.refresh.token_endpoint_auth: this credential's token endpoint takes no client secret"
                    )
                secret["client_secret"] = endpoint_auth.client_secret
            public["refresh"] = refresh
    else:
        if update.secret_name is not None and update.secret_name != current["secret_name"]:
            raise InvalidRequest("auth.secret_name cannot change; archive this credential and create another")
        if update.secret_value is not None:
            secret["secret_value"] = update.secret_value
        if update.networking is not None:
            public["networking"] = _resolve_networking(update.networking)
        if update.injection_location is not None:
            injection = dict(current["injection_location"])
            for place in ("header", "body"):
                value = getattr(update.injection_location, place)
                if value is not None:
                    injection[place] = value
            if not (injection["header"] or injection["body"]):
                raise InvalidRequest("auth.injection_location must keep header or body (or both) enabled")
            public["injection_location"] = injection
    return public, secret

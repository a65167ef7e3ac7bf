"""`/v1/vaults` and `/v1/vaults/{id}/credentials`: credentials sessions use without holding them (spec §10).

Secrets are write-only: they are sealed (`corral.vault.crypto`) before they reach the store, and responses
carry the auth type and its non-secret fields only. A vault holds one live credential per MCP server URL (or
per variable name) and at most 20 live credentials. Archiving a credential purges its secret; archiving a
vault archives every credential in it. Archived vaults and credentials are read-only.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.api.http import ApiRoute, Query, decode_cursor, ok, page_response, read_body, read_query
from corral.api.schemas import Metadata, MetadataPatch, Strict, patch_metadata
from corral.clock import now, now_rfc3339, parse_rfc3339, rfc3339
from corral.errors import Conflict, InvalidRequest, NotFound
from corral.ids import new_id
from corral.runtime import runtime_of, workspace_of
from corral.session.records import CredentialRecord, Json, VaultRecord
from corral.vault.credentials import credential_context, environment_identity, mcp_identity
from corral.vault.crypto import SecretUnavailable

MAX_LIVE_CREDENTIALS = 20
MAX_TOKEN_CHARS = 16 * 1024
MAX_SECRET_VALUE_CHARS = 64 * 1024
MAX_URL_CHARS = 2048

DisplayName = Annotated[str, Field(min_length=1, max_length=255)]
Token = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_CHARS)]
Url = Annotated[str, Field(min_length=1, max_length=MAX_URL_CHARS)]
SecretName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")]


class VaultCreate(Strict):
    display_name: DisplayName
    metadata: Metadata | None = None


class VaultUpdate(Strict):
    display_name: DisplayName | None = None
    metadata: MetadataPatch | None = None


class VaultListQuery(Query):
    """Also the query of a vault's credentials listing."""

    include_archived: bool = False
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    page: str | None = None


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
    current: Json, secret: Json, update: StaticBearerUpdate | McpOAuthUpdate | EnvironmentVariableUpdate, raw: Json
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
            refresh_raw = raw.get("refresh") or {}
            if update.refresh.refresh_token is not None:
                secret["refresh_token"] = update.refresh.refresh_token
            if "scope" in refresh_raw:
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


# --- wire forms and loading ----------------------------------------------------------------------------


def vault_wire(vault: VaultRecord) -> Json:
    return {
        "id": vault.id,
        "type": "vault",
        "display_name": vault.body["display_name"],
        "metadata": vault.body.get("metadata", {}),
        "created_at": vault.created_at,
        "updated_at": vault.updated_at,
        "archived_at": vault.archived_at,
    }


def credential_wire(credential: CredentialRecord) -> Json:
    return {
        "id": credential.id,
        "type": "vault_credential",
        "vault_id": credential.vault_id,
        "display_name": credential.body.get("display_name"),
        "auth": credential.body["auth"],
        "metadata": credential.body.get("metadata", {}),
        "created_at": credential.created_at,
        "updated_at": credential.updated_at,
        "archived_at": credential.archived_at,
    }


async def load_vault(request: Request, vault_id: str) -> VaultRecord:
    vault = await runtime_of(request).store.get_vault(workspace_of(request), vault_id)
    if vault is None:
        raise NotFound(f"vault {vault_id} not found")
    return vault


async def load_credential(request: Request, vault_id: str, credential_id: str) -> CredentialRecord:
    credential = await runtime_of(request).store.get_credential(workspace_of(request), vault_id, credential_id)
    if credential is None:
        raise NotFound(f"credential {credential_id} not found in vault {vault_id}")
    return credential


def _writable(vault: VaultRecord) -> None:
    if vault.archived_at is not None:
        raise Conflict(f"vault {vault.id} is archived and read-only")


# --- vault endpoints -----------------------------------------------------------------------------------


async def create_vault(request: Request) -> JSONResponse:
    params, _ = await read_body(request, VaultCreate)
    timestamp = now_rfc3339()
    body: Json = {"display_name": params.display_name, "metadata": params.metadata or {}}
    vault = VaultRecord(new_id("vlt"), workspace_of(request), body, timestamp, timestamp)
    await runtime_of(request).store.insert_vault(vault)
    return ok(vault_wire(vault))


async def retrieve_vault(request: Request) -> JSONResponse:
    return ok(vault_wire(await load_vault(request, request.path_params["vault_id"])))


async def update_vault(request: Request) -> JSONResponse:
    params, raw = await read_body(request, VaultUpdate)
    vault = await load_vault(request, request.path_params["vault_id"])
    _writable(vault)
    if "display_name" in raw and raw["display_name"] is None:
        raise InvalidRequest("display_name cannot be cleared")
    body = dict(vault.body)
    if params.display_name is not None:
        body["display_name"] = params.display_name
    if "metadata" in raw:
        body["metadata"] = patch_metadata(vault.body.get("metadata", {}), params.metadata)
    if body == vault.body:
        return ok(vault_wire(vault))
    updated = VaultRecord(vault.id, vault.workspace_id, body, vault.created_at, now_rfc3339())
    await runtime_of(request).store.update_vault(updated)
    return ok(vault_wire(updated))


async def list_vaults(request: Request) -> JSONResponse:
    query = read_query(request, VaultListQuery)
    scope = "vaults"
    page = await runtime_of(request).store.list_vaults(
        workspace_of(request),
        include_archived=query.include_archived,
        limit=query.limit,
        cursor=decode_cursor(query.page, scope=scope),
    )
    return page_response(page, [vault_wire(vault) for vault in page.items], scope=scope)


async def delete_vault(request: Request) -> JSONResponse:
    vault = await load_vault(request, request.path_params["vault_id"])
    await runtime_of(request).store.delete_vault(vault.workspace_id, vault.id)
    return ok({"id": vault.id, "type": "vault_deleted"})


async def archive_vault(request: Request) -> JSONResponse:
    vault = await load_vault(request, request.path_params["vault_id"])
    await runtime_of(request).store.archive_vault(vault.workspace_id, vault.id, now_rfc3339())
    return ok(vault_wire(await load_vault(request, vault.id)))


# --- credential endpoints ------------------------------------------------------------------------------


async def create_credential(request: Request) -> JSONResponse:
    params, _ = await read_body(request, CredentialCreate)
    runtime = runtime_of(request)
    vault = await load_vault(request, request.path_params["vault_id"])
    _writable(vault)
    public, secret, identity = resolve_auth(params.auth)
    live = await runtime.store.live_credentials(vault.workspace_id, [vault.id])
    if len(live) >= MAX_LIVE_CREDENTIALS:
        raise InvalidRequest(
            f"vault {vault.id} already holds {MAX_LIVE_CREDENTIALS} live credentials, the most a vault can hold; "
            "archive or delete one first"
        )
    credential_id = new_id("vcrd")
    timestamp = now_rfc3339()
    body: Json = {"display_name": params.display_name, "auth": public, "metadata": params.metadata or {}}
    sealed = runtime.vault.box.seal(secret, context=credential_context(vault.workspace_id, credential_id))
    credential = CredentialRecord(
        credential_id, vault.workspace_id, vault.id, identity, body, sealed, timestamp, timestamp
    )
    if not await runtime.store.insert_credential(credential):
        what = public.get("mcp_server_url") or public.get("secret_name")
        raise Conflict(
            f"vault {vault.id} already has a live credential for {what}; update that one, or archive it first"
        )
    return ok(credential_wire(credential))


async def retrieve_credential(request: Request) -> JSONResponse:
    params = request.path_params
    return ok(credential_wire(await load_credential(request, params["vault_id"], params["credential_id"])))


async def update_credential(request: Request) -> JSONResponse:
    params, raw = await read_body(request, CredentialUpdate)
    runtime = runtime_of(request)
    vault = await load_vault(request, request.path_params["vault_id"])
    credential = await load_credential(request, vault.id, request.path_params["credential_id"])
    if credential.archived_at is not None:
        raise Conflict(f"credential {credential.id} is archived and read-only")
    body = dict(credential.body)
    sealed = credential.secret
    if params.auth is not None:
        context = credential_context(credential.workspace_id, credential.id)
        try:
            current_secret = runtime.vault.box.open(credential.secret, context=context) if credential.secret else {}
        except SecretUnavailable as exc:
            raise Conflict(f"credential {credential.id} cannot be updated: {exc}") from exc
        public, secret = apply_auth_update(credential.body["auth"], current_secret, params.auth, raw["auth"])
        body["auth"] = public
        if secret != current_secret:
            sealed = runtime.vault.box.seal(secret, context=context)
    if "display_name" in raw:
        body["display_name"] = params.display_name
    if "metadata" in raw:
        body["metadata"] = patch_metadata(credential.body.get("metadata", {}), params.metadata)
    if body == credential.body and sealed == credential.secret:
        return ok(credential_wire(credential))
    updated = CredentialRecord(
        credential.id,
        credential.workspace_id,
        credential.vault_id,
        credential.identity,
        body,
        sealed,
        credential.created_at,
        now_rfc3339(),
    )
    if not await runtime.store.update_credential(updated):
        raise Conflict(f"credential {credential.id} was archived or deleted meanwhile")
    return ok(credential_wire(updated))


async def list_credentials(request: Request) -> JSONResponse:
    query = read_query(request, VaultListQuery)
    vault = await load_vault(request, request.path_params["vault_id"])
    scope = f"credentials:{vault.id}"
    page = await runtime_of(request).store.list_credentials(
        vault.workspace_id,
        vault.id,
        include_archived=query.include_archived,
        limit=query.limit,
        cursor=decode_cursor(query.page, scope=scope),
    )
    return page_response(page, [credential_wire(credential) for credential in page.items], scope=scope)


async def delete_credential(request: Request) -> JSONResponse:
    params = request.path_params
    credential = await load_credential(request, params["vault_id"], params["credential_id"])
    await runtime_of(request).store.delete_credential(credential.workspace_id, credential.vault_id, credential.id)
    return ok({"id": credential.id, "type": "vault_credential_deleted"})


async def archive_credential(request: Request) -> JSONResponse:
    params = request.path_params
    credential = await load_credential(request, params["vault_id"], params["credential_id"])
    await runtime_of(request).store.archive_credential(
        credential.workspace_id, credential.vault_id, credential.id, now_rfc3339()
    )
    return ok(credential_wire(await load_credential(request, credential.vault_id, credential.id)))


async def validate_credential(request: Request) -> JSONResponse:
    params = request.path_params
    await load_credential(request, params["vault_id"], params["credential_id"])
    raise InvalidRequest(
        "mcp_oauth_validate is not supported by this server yet; a session reports a rejected credential as "
        "session.error mcp_authentication_failed_error"
    )


CREDENTIAL = "/v1/vaults/{vault_id}/credentials/{credential_id}"

routes = [
    ApiRoute("POST", "/v1/vaults", create_vault, body=VaultCreate),
    ApiRoute("GET", "/v1/vaults", list_vaults, query=VaultListQuery),
    ApiRoute("GET", "/v1/vaults/{vault_id}", retrieve_vault),
    ApiRoute("POST", "/v1/vaults/{vault_id}", update_vault, body=VaultUpdate),
    ApiRoute("DELETE", "/v1/vaults/{vault_id}", delete_vault),
    ApiRoute("POST", "/v1/vaults/{vault_id}/archive", archive_vault),
    ApiRoute("POST", "/v1/vaults/{vault_id}/credentials", create_credential, body=CredentialCreate),
    ApiRoute("GET", "/v1/vaults/{vault_id}/credentials", list_credentials, query=VaultListQuery),
    ApiRoute("GET", CREDENTIAL, retrieve_credential),
    ApiRoute("POST", CREDENTIAL, update_credential, body=CredentialUpdate),
    ApiRoute("DELETE", CREDENTIAL, delete_credential),
    ApiRoute("POST", f"{CREDENTIAL}/archive", archive_credential),
    ApiRoute("POST", f"{CREDENTIAL}/mcp_oauth_validate", validate_credential),
]

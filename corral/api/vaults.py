"""`/v1/vaults` and `/v1/vaults/{id}/credentials` (spec §10). The operations are `corral.services.vaults`.

Responses carry a credential's auth type and its non-secret fields only: secrets are write-only.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.api.http import ApiRoute, Query, decode_cursor, ok, page_response, read_body, read_query
from corral.runtime import runtime_of, workspace_of
from corral.services.credentials import CredentialCreate, CredentialUpdate
from corral.services.vaults import CredentialValidation, VaultCreate, Vaults, VaultUpdate
from corral.session.records import CredentialRecord, Json, VaultRecord


class VaultListQuery(Query):
    """Also the query of a vault's credentials listing."""

    include_archived: bool = False
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    page: str | None = None


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


def _vaults(request: Request) -> Vaults:
    return runtime_of(request).services.vaults


# --- vault endpoints -----------------------------------------------------------------------------------


async def create_vault(request: Request) -> JSONResponse:
    params, _ = await read_body(request, VaultCreate)
    return ok(vault_wire(await _vaults(request).create(workspace_of(request), params)))


async def retrieve_vault(request: Request) -> JSONResponse:
    return ok(vault_wire(await _vaults(request).get(workspace_of(request), request.path_params["vault_id"])))


async def update_vault(request: Request) -> JSONResponse:
    params, _ = await read_body(request, VaultUpdate)
    vault_id = request.path_params["vault_id"]
    return ok(vault_wire(await _vaults(request).update(workspace_of(request), vault_id, params)))


async def list_vaults(request: Request) -> JSONResponse:
    query = read_query(request, VaultListQuery)
    scope = "vaults"
    page = await _vaults(request).list_vaults(
        workspace_of(request),
        include_archived=query.include_archived,
        limit=query.limit,
        cursor=decode_cursor(query.page, scope=scope),
    )
    return page_response(page, [vault_wire(vault) for vault in page.items], scope=scope)


async def delete_vault(request: Request) -> JSONResponse:
    vault = await _vaults(request).delete(workspace_of(request), request.path_params["vault_id"])
    return ok({"id": vault.id, "type": "vault_deleted"})


async def archive_vault(request: Request) -> JSONResponse:
    return ok(vault_wire(await _vaults(request).archive(workspace_of(request), request.path_params["vault_id"])))


# --- credential endpoints ------------------------------------------------------------------------------


async def create_credential(request: Request) -> JSONResponse:
    params, _ = await read_body(request, CredentialCreate)
    vault_id = request.path_params["vault_id"]
    return ok(credential_wire(await _vaults(request).create_credential(workspace_of(request), vault_id, params)))


async def retrieve_credential(request: Request) -> JSONResponse:
    path = request.path_params
    credential = await _vaults(request).get_credential(workspace_of(request), path["vault_id"], path["credential_id"])
    return ok(credential_wire(credential))


async def update_credential(request: Request) -> JSONResponse:
    params, _ = await read_body(request, CredentialUpdate)
    path = request.path_params
    credential = await _vaults(request).update_credential(
        workspace_of(request), path["vault_id"], path["credential_id"], params
    )
    return ok(credential_wire(credential))


async def list_credentials(request: Request) -> JSONResponse:
    query = read_query(request, VaultListQuery)
    vaults = _vaults(request)
    vault = await vaults.get(workspace_of(request), request.path_params["vault_id"])
    scope = f"credentials:{vault.id}"
    page = await vaults.list_credentials(
        vault,
        include_archived=query.include_archived,
        limit=query.limit,
        cursor=decode_cursor(query.page, scope=scope),
    )
    return page_response(page, [credential_wire(credential) for credential in page.items], scope=scope)


async def delete_credential(request: Request) -> JSONResponse:
    path = request.path_params
    credential = await _vaults(request).delete_credential(
        workspace_of(request), path["vault_id"], path["credential_id"]
    )
    return ok({"id": credential.id, "type": "vault_credential_deleted"})


async def archive_credential(request: Request) -> JSONResponse:
    path = request.path_params
    credential = await _vaults(request).archive_credential(
        workspace_of(request), path["vault_id"], path["credential_id"]
    )
    return ok(credential_wire(credential))


def validation_wire(validation: CredentialValidation) -> Json:
    return {
        "type": "vault_credential_validation",
        "credential_id": validation.credential_id,
        "vault_id": validation.vault_id,
        "status": validation.status,
        "has_refresh_token": validation.has_refresh_token,
        "validated_at": validation.validated_at,
        "mcp_probe": validation.mcp_probe,
        "refresh": validation.refresh,
    }


async def validate_credential(request: Request) -> JSONResponse:
    path = request.path_params
    validation = await _vaults(request).validate_credential(
        workspace_of(request), path["vault_id"], path["credential_id"]
    )
    return ok(validation_wire(validation))


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

"""The API's OpenAPI 3.1 document at `GET /v1/openapi.json`, made from the models that validate requests.

Every `ApiRoute` names the pydantic models its handler validates its body and query string with; the document
is generated from those same models, so it cannot drift from what the server accepts. Responses are described
loosely (a JSON object, or the error envelope); spec §1-§10 is the reference for their shapes.

The document needs no API key: like the hosted API's reference, it says nothing about anyone's data.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from corral import __version__
from corral.api.http import ApiRoute, Query
from corral.session.records import Json

OPENAPI_PATH = "/v1/openapi.json"
REF_TEMPLATE = "#/components/schemas/{model}"
_PATH_PARAMETER = re.compile(r"{([^}:]+)(?::[^}]*)?}")


class ErrorDetail(BaseModel):
    type: str
    message: str
    details: dict[str, Any] | None = None


class ErrorEnvelope(BaseModel):
    """What every failed request gets (spec §1.6); `request_id` is also the `request-id` response header."""

    type: Literal["error"]
    error: ErrorDetail
    request_id: str


def openapi_document(routes: list[BaseRoute]) -> Json:
    api_routes = [route for route in routes if isinstance(route, ApiRoute)]
    bodies = sorted({route.body for route in api_routes if route.body is not None}, key=lambda model: model.__name__)
    references, definitions = models_json_schema(
        [(model, "validation") for model in bodies] + [(ErrorEnvelope, "serialization")], ref_template=REF_TEMPLATE
    )
    error_response = {
        "description": "An error, in the API's error envelope",
        "content": {"application/json": {"schema": references[(ErrorEnvelope, "serialization")]}},
    }
    paths: dict[str, dict[str, Json]] = {}
    for route in api_routes:
        operation: Json = {
            "operationId": route.name,
            "summary": _summary(route),
            "tags": [route.path.split("/")[2]],
            "parameters": _path_parameters(route.path) + _query_parameters(route.query),
            "responses": {"200": _success(route), "default": error_response},
        }
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": references[(route.body, "validation")]}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Corral",
            "version": __version__,
            "description": "A self-hosted runtime wire-compatible with Anthropic's Managed Agents API.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"ApiKey": []}, {"Bearer": []}],
    }


def _summary(route: ApiRoute) -> str:
    doc = (route.endpoint.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else route.name.replace("_", " ").capitalize()


def _success(route: ApiRoute) -> Json:
    if route.streams:
        return {"description": "Server-sent events (spec §1.7)", "content": {"text/event-stream": {}}}
    return {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}


def _path_parameters(path: str) -> list[Json]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAMETER.findall(path)
    ]


def _query_parameters(model: type[Query] | None) -> list[Json]:
    """One parameter per field, named as on the wire; array parameters in the SDK's form, `k[]=a&k[]=b`."""
    if model is None:
        return []
    schema = model.model_json_schema(by_alias=True, ref_template=REF_TEMPLATE)
    arrays = model.array_fields()
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema["properties"].items():
        parameter: Json = {"name": name, "in": "query", "required": name in required, "schema": _not_null(prop)}
        if name in arrays:
            parameter.update(name=f"{name}[]", style="form", explode=True)
        parameters.append(parameter)
    return parameters


def _not_null(schema: Json) -> Json:
    """A query parameter is present or absent, never null: drop the `null` alternative pydantic adds."""
    alternatives = [option for option in schema.get("anyOf", []) if option != {"type": "null"}]
    if len(alternatives) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**rest, **alternatives[0]}


async def serve_openapi(request: Request) -> JSONResponse:
    document = getattr(request.app.state, "openapi", None)
    if document is None:
        document = request.app.state.openapi = openapi_document(request.app.routes)
    return JSONResponse(document)

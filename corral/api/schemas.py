"""Request shapes shared by several resources, as pydantic models (unknown fields are rejected)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.errors import InvalidRequest

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PermissionPolicy(Strict):
    type: Literal["always_allow", "always_ask", "auto"]


class TextBlock(Strict):
    type: Literal["text"]
    text: str


class Base64Source(Strict):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(Strict):
    type: Literal["url"]
    url: str


class FileSource(Strict):
    type: Literal["file"]
    file_id: str


class PlainTextSource(Strict):
    type: Literal["text"]
    media_type: Literal["text/plain"] = "text/plain"
    data: str


class ImageBlock(Strict):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource | FileSource, Field(discriminator="type")]


class DocumentBlock(Strict):
    type: Literal["document"]
    source: Annotated[Base64Source | PlainTextSource | UrlSource | FileSource, Field(discriminator="type")]
    title: str | None = None
    context: str | None = None


class SearchResultBlock(Strict):
    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]
    citations: dict[str, Any] | None = None


UserContentBlock = Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]
ToolResultBlock = Annotated[TextBlock | ImageBlock | DocumentBlock | SearchResultBlock, Field(discriminator="type")]


def check_metadata(value: Any, *, field: str = "metadata", patch: bool = False) -> dict[str, str | None]:
    """Validate a metadata map (16 pairs, keys <= 64 chars, values <= 512); on a patch, null deletes a key."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"{field} must be an object of string keys and string values", error_code="invalid_metadata"
        )
    if len(value) > MAX_METADATA_PAIRS:
        raise InvalidRequest(
            f"{field} has {len(value)} keys; at most {MAX_METADATA_PAIRS} are allowed",
            error_code="invalid_metadata",
        )
    for key, item in value.items():
        if not 1 <= len(key) <= MAX_METADATA_KEY:
            raise InvalidRequest(
                f"{field} key {key[:80]!r} must be 1 to {MAX_METADATA_KEY} characters",
                error_code="invalid_metadata",
            )
        if item is None and patch:
            continue
        if not isinstance(item, str):
            raise InvalidRequest(f"{field}.{key} must be a string", error_code="invalid_metadata")
        if len(item) > MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"{field}.{key} is {len(item)} characters; at most {MAX_METADATA_VALUE} are allowed",
                error_code="invalid_metadata",
            )
    return dict(value)


def patch_metadata(current: dict[str, str], patch: Any, *, empty_deletes: bool = False) -> dict[str, str]:
    """Apply a metadata patch: a string upserts, null (or "" where `empty_deletes`) removes the key."""
    changes = check_metadata(patch, patch=True)
    merged = dict(current)
    for key, value in changes.items():
        if value is None or (empty_deletes and value == ""):
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_METADATA_PAIRS:
        raise InvalidRequest(
            f"metadata would have {len(merged)} keys after this update; at most {MAX_METADATA_PAIRS} are allowed",
            error_code="invalid_metadata",
        )
    return merged

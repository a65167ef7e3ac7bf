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


# Metadata (agents, environments, sessions, vaults, credentials): 16 pairs, keys 1-64 characters, values up to
# 512. A failure here is reported with error_code `invalid_metadata` (see `corral.api.errors.invalid`).
MetadataKey = Annotated[str, Field(min_length=1, max_length=MAX_METADATA_KEY)]
MetadataValue = Annotated[str, Field(max_length=MAX_METADATA_VALUE)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_PAIRS)]
# On an update, metadata is a patch: a string upserts its key, null removes it.
MetadataPatch = Annotated[dict[MetadataKey, MetadataValue | None], Field(max_length=MAX_METADATA_PAIRS)]


def patch_metadata(
    current: dict[str, str], patch: dict[str, str | None] | None, *, empty_deletes: bool = False
) -> dict[str, str]:
    """Apply a metadata patch: a string upserts, null (or "" where `empty_deletes`) removes the key."""
    merged = dict(current)
    for key, value in (patch or {}).items():
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

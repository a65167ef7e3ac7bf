"""Checking what Corral serves against the official SDK's models, strictly: validated (not constructed) and with
no field the SDK only keeps as an extra, which is a name the wire protocol does not have."""

from __future__ import annotations

from typing import Any

from anthropic import BaseModel


def unknown_fields(value: Any, where: str = "object") -> list[str]:
    """Fields the SDK's models kept only as extras, anywhere inside `value`."""
    if isinstance(value, BaseModel):
        found = [f"{where}.{name}" for name in value.model_extra or {}]
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{where}.{name}")
        return found
    if isinstance(value, list):
        return [field for index, item in enumerate(value) for field in unknown_fields(item, f"{where}[{index}]")]
    return []

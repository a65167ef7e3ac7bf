"""Timestamps as the wire carries them: UTC RFC 3339 with microseconds and a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_rfc3339() -> str:
    # The same text as rfc3339(now()) (an aware UTC datetime's isoformat ends in "+00:00"), at half the cost.
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse what clients send in `created_at[gte]` and friends (`Z` or an offset; a date alone is midnight UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)

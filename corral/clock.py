"""Timestamps as the wire carries them: UTC RFC 3339 with microseconds and a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    # isoformat, not strftime: glibc's %Y does not pad years before 1000 to four digits, which breaks ordering.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def now_rfc3339() -> str:
    # The same text as rfc3339(now()) (an aware UTC datetime's isoformat ends in "+00:00"), at half the cost.
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse what clients send in `created_at[gte]` and friends (`Z` or an offset; a date alone is midnight UTC).

    Raises ValueError for anything else, including moments outside what a datetime holds.
    """
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first moment a datetime can hold
        raise ValueError(f"{text!r} is out of the range of timestamps (years 1 to 9999 UTC)") from None

"""Times as the Kubernetes API writes them: RFC 3339 in UTC, whole seconds (`2026-11-26T08:00:00Z`). The one
place that reads, writes and takes the current time, for both halves of the operator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def now_seconds() -> datetime:
    """The current time cut to whole seconds: what a decision sees equals what the status records of it."""
    return now().replace(microsecond=0)


def parse_time(text: str | None) -> datetime | None:
    """RFC 3339 -> aware datetime (naive means UTC); None for None, empty or garbage (an annotation a person
    wrote may be anything)."""
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@overload
def format_time(t: datetime) -> str: ...
@overload
def format_time(t: None) -> None: ...
def format_time(t: datetime | None) -> str | None:
    """Aware datetime -> RFC 3339 in UTC, whole seconds; None stays None (a status field to clear)."""
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

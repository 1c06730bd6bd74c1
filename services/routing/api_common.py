"""What both routing APIs (``api``, ``api_admin``) share: the page size and UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

#: The ``limit`` of every list endpoint.
Limit = Annotated[int, Query(ge=1, le=200)]


def aware(value: datetime | None) -> datetime | None:
    """A datetime in UTC; a naive one is taken to be UTC already."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

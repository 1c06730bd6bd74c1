"""Make parsed JSON safe to store and to publish: no NUL, no lone surrogates, exact big ints.

PostgreSQL JSONB refuses ``\\u0000``, orjson refuses lone surrogates and integers beyond 64
bits; an event carrying any of them would be refused by the spool or poison the relay.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32


class UnsafeJson(ValueError):
    """A JSON document that cannot be stored (too deep, NaN, Infinity)."""


def clean_str(text: str) -> str:
    """Drop NUL characters and replace lone surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _int(text: str) -> int | str:
    value = int(text)
    return value if -(2**63) <= value < 2**63 else text


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeJson(f"number {text[:30]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise UnsafeJson(f"{name} is not valid JSON")


def clean(value: Any, depth: int = 0) -> Any:
    """Recursively clean a parsed JSON value (strings and keys)."""
    if depth > MAX_DEPTH:
        raise UnsafeJson(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return clean_str(value)
    if isinstance(value, dict):
        return {clean_str(str(k)): clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v, depth + 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return str(value)
    return value


def loads(raw: bytes) -> Any:
    """Parse JSON bytes into a safe value; raise :class:`UnsafeJson` (a ValueError) if invalid."""
    try:
        parsed = json.loads(raw, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except UnsafeJson:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UnsafeJson(f"not valid JSON: {exc}") from None
    return clean(parsed)

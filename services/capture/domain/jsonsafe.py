"""Make parsed JSON safe to store and to publish: no NUL, no lone surrogates, exact big ints.

PostgreSQL JSONB refuses ``\\u0000``, orjson refuses lone surrogates, ``Decimal`` and integers
beyond 64 bits; an event carrying any of them would be refused by the spool or poison the relay.

Free text is cleaned (NUL dropped, surrogates replaced). Identity fields (``email``, ``phone``)
are not: a control character there is refused (:class:`ControlCharacters`), because silently
dropping it could turn a garbled value into somebody else's address.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Collection
from decimal import Decimal
from typing import Any

import orjson

MAX_DEPTH = 32
#: Keys whose string values identify a person: control characters there are refused.
IDENTITY_KEYS = frozenset({"email", "phone"})


class UnsafeJson(ValueError):
    """A JSON document that cannot be stored (too deep, NaN, Infinity)."""


class ControlCharacters(ValueError):
    """An identity field holds control characters; ``loc`` is its JSON pointer."""

    def __init__(self, loc: str) -> None:
        super().__init__(f"{loc} must not contain control characters")
        self.loc = loc


def has_control_characters(text: str) -> bool:
    """Whether ``text``, without surrounding whitespace, holds a control character (NUL,
    tab, C1 controls...) or a lone surrogate."""
    text = text.strip()
    if text.isprintable():  # neither controls nor surrogates are printable: no need to look
        return False
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


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


def _decimal(value: Decimal) -> int | float | str:
    # ``loads_exact`` keeps numbers as Decimal; orjson cannot serialise those. Whole numbers
    # stay exact (ints, or text beyond 64 bits); others become a float, or text if too large.
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value() and abs(value.adjusted()) < 40:
        return _int(str(int(value)))
    as_float = float(value)
    return as_float if math.isfinite(as_float) else str(value)


def clean(
    value: Any,
    depth: int = 0,
    *,
    identity_keys: Collection[str] = (),
    loc: str = "",
) -> Any:
    """Recursively clean a parsed JSON value (strings, keys and numbers).

    With ``identity_keys``, a string under one of those keys (at any depth) that holds a
    control character raises :class:`ControlCharacters` instead of being cleaned.
    """
    if depth > MAX_DEPTH:
        raise UnsafeJson(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return clean_str(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = str(k)
            if key in identity_keys and isinstance(v, str) and has_control_characters(v):
                raise ControlCharacters(f"{loc}/{key}")
            out[clean_str(key)] = clean(
                v, depth + 1, identity_keys=identity_keys, loc=f"{loc}/{key}"
            )
        return out
    if isinstance(value, list):
        return [
            clean(v, depth + 1, identity_keys=identity_keys, loc=f"{loc}/{i}")
            for i, v in enumerate(value)
        ]
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return str(value)
    return value


#: 19 digits in a row: maybe an integer beyond 64 bits, which orjson would turn into a float.
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def _plain(value: Any, depth: int, identity_keys: Collection[str]) -> bool:
    """Whether orjson's parse of a document is already what :func:`clean` would return: not
    too deep, no identity field with control characters (the rest :func:`loads` checked on
    the bytes)."""
    if isinstance(value, dict):
        if value and depth >= MAX_DEPTH:
            return False
        for k, v in value.items():
            if isinstance(v, str):
                if k in identity_keys and has_control_characters(v):
                    return False
            elif isinstance(v, dict | list) and not _plain(v, depth + 1, identity_keys):
                return False
        return True
    if isinstance(value, list):
        if value and depth >= MAX_DEPTH:
            return False
        return all(_plain(v, depth + 1, identity_keys) for v in value if isinstance(v, dict | list))
    return True


def loads(raw: bytes, identity_keys: Collection[str] = ()) -> Any:
    """Parse JSON bytes into a safe value; raise :class:`UnsafeJson` (a ValueError) if invalid,
    :class:`ControlCharacters` if an ``identity_keys`` value holds control characters."""
    # The usual document needs no cleaning: orjson parses it (refusing lone surrogates, NaN,
    # Infinity and numbers out of range), and the bytes show it has no NUL escape and no
    # integer orjson would round. Anything else, and every error, takes the exact path below.
    if isinstance(raw, bytes) and b"\\u0000" not in raw and not _LONG_NUMBER.search(raw):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            if _plain(parsed, 0, identity_keys):
                return parsed
    try:
        parsed = json.loads(raw, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except UnsafeJson:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UnsafeJson(f"not valid JSON: {exc}") from None
    return clean(parsed, identity_keys=identity_keys)

"""Parsers that turn what people type into forms into clean, comparable values."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email


class InvalidValue(ValueError):
    """A field value that cannot be normalised; the message says why."""


def normalize_email(value: str) -> str:
    """Validate an email address (syntax only) and lower-case it entirely.

    Local parts are case-sensitive in theory, but in practice every mail provider folds case,
    and one lead typing ``Jane@Acme.com`` and ``jane@acme.com`` must be one lead.
    """
    text = value.strip()
    if not text:
        raise InvalidValue("email is empty")
    if len(text) > 254:
        raise InvalidValue("email is longer than 254 characters")
    local, _, domain = text.partition("@")
    if (
        _PLAIN_LOCAL.match(local)
        and _PLAIN_DOMAIN.match(domain)
        and len(local) + len(domain) < _PLAIN_LENGTH
    ):
        # The usual address: a plain local part, which the validator returns as it is, and
        # a domain most posts share, whose verdict is remembered.
        normalized = _email_domain(domain)
        if normalized is not None:
            return f"{local}@{normalized}".lower()
    try:
        info = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidValue(str(exc)) from None
    return info.normalized.lower()


#: A local part the validator accepts and returns unchanged (RFC 5322 dot-atom, ASCII).
_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_PLAIN_LOCAL = re.compile(f"[{_ATEXT}]+(?:\\.[{_ATEXT}]+)*\\Z")
#: A domain of ASCII letters, digits, hyphens and dots only (its verdict is cached).
_PLAIN_DOMAIN = re.compile(r"[a-zA-Z0-9.-]{1,253}\Z")
#: Shorter than this (local part and domain), no length limit of the validator applies.
_PLAIN_LENGTH = 200


@lru_cache(maxsize=4096)
def _email_domain(domain: str) -> str | None:
    """The validator's normalised form of a plain ``domain``, None when it refuses it (the
    whole address is then validated, for the validator's own message)."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


def normalize_phone(value: str, default_region: str | None = None) -> str:
    """Parse a phone number into E.164; ``default_region`` applies to numbers without ``+``."""
    text = value.strip()
    if not text:
        raise InvalidValue("phone is empty")
    if len(text) > 40:
        raise InvalidValue("phone is longer than 40 characters")
    region = (default_region or "").upper() or None
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        hint = "" if region else " (add the country code, e.g. +49…)"
        raise InvalidValue(f"phone is not a recognisable number{hint}") from None
    # "possible" rather than "valid": fictional ranges such as 555-01xx must still pass; but a
    # number dialable only locally (no area code) cannot be written in E.164 meaningfully.
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE and not phonenumbers.is_valid_number(
        parsed
    ):
        raise InvalidValue("phone has the wrong number of digits for its country")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    # Some regions' "possible" lengths exceed E.164's 15 digits; such a key could never be a
    # phone number anywhere else (scoring, CRMs), so refuse it instead of storing it.
    if len(e164) > 16:
        raise InvalidValue("phone has more than the 15 digits E.164 allows")
    return e164


def clean_text(value: str | None, max_length: int = 500) -> str | None:
    """Trim and collapse whitespace; empty becomes None; overlong text is cut."""
    if value is None:
        return None
    text = " ".join(value.split())
    return text[:max_length] or None


_RANGE = re.compile("^(\\d+)\\s*(?:-|\u2013|\u2014|to|bis)\\s*(\\d+)$", re.IGNORECASE)
_PLUS = re.compile(
    r"^(?:>=?|over|more than|mehr als)?\s*(\d+)\s*(?:\+|or more|and more|and above)?$",
    re.IGNORECASE,
)
_THOUSANDS = re.compile(r"(?<=\d)[,.' ](?=\d{3}\b)")


def parse_company_size(value: str | int | None) -> int | None:
    """An employee count from text: ``"51-200"`` → 51, ``"500+"`` → 500, ``"1,000"`` → 1000.

    A range gives its lower bound (the only number the company certainly reaches). Anything
    unrecognisable gives None; callers keep the raw text next to it.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 10**9 else None
    text = _THOUSANDS.sub("", value.strip().lower()).replace("employees", "").strip()
    if not text or len(text) > 40:
        return None
    match = _RANGE.match(text)
    if match:
        low, high = int(match.group(1)), int(match.group(2))
        number = min(low, high)
    else:
        match = _PLUS.match(text)
        if not match:
            return None
        number = int(match.group(1))
    return number if number < 10**9 else None


_COUNTRY_ALIASES = {
    "usa": "US",
    "u.s.": "US",
    "u.s.a.": "US",
    "united states of america": "US",
    "america": "US",
    "uk": "GB",
    "u.k.": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "britain": "GB",
    "holland": "NL",
    "the netherlands": "NL",
    "czech republic": "CZ",
    "south korea": "KR",
    "korea": "KR",
    "russia": "RU",
    "uae": "AE",
    "türkiye": "TR",
    "turkey": "TR",
}


@lru_cache(maxsize=1)
def _alpha2_codes() -> frozenset[str]:
    """Valid alpha-2 codes: ISO 3166-1 (pycountry) plus phonenumbers' regions (AC, TA, XK)."""
    return frozenset(c.alpha_2 for c in pycountry.countries) | phonenumbers.SUPPORTED_REGIONS


@lru_cache(maxsize=1)
def _alpha3_codes() -> dict[str, str]:
    """Every ISO 3166-1 alpha-3 code (pycountry's packaged table) mapped to its alpha-2."""
    codes = {c.alpha_3: c.alpha_2 for c in pycountry.countries}
    codes["XKX"] = "XK"  # Kosovo: user-assigned, but what the EU and IMF use
    return codes


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip()


@lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    """Country names in every language phonenumbers ships, folded, mapped to alpha-2."""
    from phonenumbers.geodata.locale import LOCALE_DATA

    names: dict[str, str] = {}
    for code, by_lang in LOCALE_DATA.items():
        if len(code) != 2:
            continue
        for name in by_lang.values():
            if name and not name.startswith("*"):
                names.setdefault(_fold(name), code)
    for country in pycountry.countries:  # English names phonenumbers lacks, e.g. Czechia
        for attr in ("name", "common_name", "official_name"):
            english = getattr(country, attr, None)
            if isinstance(english, str) and english:
                names.setdefault(_fold(english), country.alpha_2)
    names.update({_fold(k): v for k, v in _COUNTRY_ALIASES.items()})
    return names


def normalize_country(value: str | None) -> str | None:
    """ISO 3166-1 alpha-2 when recognisable (code, alpha-3 or name in many languages), else None."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 80:
        return None
    if len(text) == 2 and text.isascii() and text.isalpha():
        code = text.upper()
        code = "GB" if code == "UK" else code
        return code if code in _alpha2_codes() else None
    if len(text) == 3 and text.isascii() and text.upper() in _alpha3_codes():
        return _alpha3_codes()[text.upper()]
    return _country_names().get(_fold(text))


_TRUE = {"true", "1", "yes", "on", "y", "checked"}
_FALSE = {"false", "0", "no", "off", "n", ""}


def parse_bool(value: object) -> bool:
    """A checkbox value: JSON booleans, or the strings browsers and form tools send."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise InvalidValue("must be a boolean (true/false)")

"""JSON-lines logging for every process, with secrets and personal data kept out of it.

Every record passes :class:`RedactingFilter`: configured secrets (tokens, write keys, platform
secrets: see ``Settings.secrets``), bearer/basic credentials, ``Authorization`` values and
secret-looking query parameters are replaced by ``[redacted]``, and database error text loses
the bound parameters and ``DETAIL`` lines, which hold the personal data of the row.
:func:`shared.deadletters.scrub_error` gives one clean line for an exception (logs, dead-letter
headers), and passes it through :func:`redact` too.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
from opentelemetry import trace

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 6
"""Shorter configured values are not redacted literally (they would mangle ordinary words)."""

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
_secret_re: re.Pattern[str] | None = None

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer xyz / "authorization": "Basic xyz" (headers dumped in any form).
    (
        re.compile(
            r"(?i)(authorization['\"]?\s*[:=,]\s*['\"]?)(?:(?:bearer|basic)\s+)?[^\s'\",)]+"
        ),
        rf"\g<1>{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\g<1> {REDACTED}"),
    # Secrets in URLs: ?access_token=..., &appsecret_proof=..., hub.verify_token=...
    (
        re.compile(
            r"(?i)([?&](?:access_token|token|api_key|key|secret|client_secret|appsecret_proof"
            r"|hub\.verify_token|password|signature)=)[^&\s'\"]+"
        ),
        rf"\g<1>{REDACTED}",
    ),
    # userinfo of a URL: postgresql://user:password@host
    (re.compile(r"(://[^:/@\s]+:)[^@\s/]+@"), rf"\g<1>{REDACTED}@"),
)

# SQLAlchemy/driver error text: the bound values and the DETAIL line carry the row's data.
_DB_NOISE = (
    (re.compile(r"\[parameters: [^\n]*\]"), "[parameters redacted]"),
    (re.compile(r"(?m)^\s*DETAIL:[^\n]*\n?"), ""),
    (re.compile(r"(query argument \$\d+: ).*?( \(|$)", re.M), rf"\g<1>{REDACTED}\g<2>"),
    (re.compile(r'(invalid input (?:syntax|value) for [^:\n]*: )"[^"\n]*"'), rf"\g<1>{REDACTED}"),
    (re.compile(r"\(Background on this error at: [^)]*\)"), ""),
)


def register_secrets(values: Iterable[str | None]) -> None:
    """Add configured secret values to redact from every log record from now on."""
    global _secrets, _secret_re
    with _lock:
        merged = {*_secrets, *(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)}
        _secrets = tuple(sorted(merged, key=len, reverse=True))
        _secret_re = re.compile("|".join(re.escape(s) for s in _secrets)) if _secrets else None


def redact(text: str) -> str:
    """``text`` with configured secrets, credentials and database parameters removed."""
    pattern = _secret_re
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    for regex, replacement in _DB_NOISE:
        text = regex.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Redacts the formatted message of every record (the args are folded into the message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw template, still redacted
            message = str(record.msg)
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the exception if any, and the
    ``trace_id`` / ``span_id`` of the current OpenTelemetry span when there is one (a request,
    or the handling of a traced event), to find a trace from a log line and back."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = trace.format_trace_id(span.trace_id)
            out["span_id"] = trace.format_span_id(span.span_id)
        if record.exc_info:
            # Tracebacks of database errors quote the statement's parameters.
            out["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(out).decode()


def configure_logging(level: str = "INFO", secrets: Iterable[str | None] = ()) -> None:
    """Send redacted JSON lines to stderr at ``level``; quiet the chattiest libraries.

    httpx and httpcore log every request line (URL and query included) at INFO: kept at WARNING
    so tokens in URLs (Meta's ``access_token``) and webhook URLs never reach the log.
    """
    register_secrets(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

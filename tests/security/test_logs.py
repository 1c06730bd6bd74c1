"""Secrets and personal data stay out of the logs (and of scrubbed error text)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Column, MetaData, String, Table, create_engine, insert
from sqlalchemy.exc import IntegrityError

from shared import logs
from shared.deadletters import scrub_error
from shared.logs import configure_logging
from shared.settings import load_settings

ADMIN = "admin-token-0123456789abcdef"
META_TOKEN = "EAAB-SECRET-PAGE-TOKEN-123"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Logging configured as a service process does, into a buffer."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buffer = io.StringIO()
    settings = load_settings(
        leadflow_dev=True, leadflow_api_token=ADMIN, meta_access_token=META_TOKEN
    )
    configure_logging("INFO", settings.secrets)
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield buffer
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_httpx_request_lines_with_tokens_are_not_logged(captured: io.StringIO) -> None:
    # H5: httpx logs "HTTP Request: GET <full URL>" at INFO; the Meta token is in the query.
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json={}))
    with httpx.Client(transport=transport) as client:
        client.get(f"https://graph.facebook.com/v21.0/123?access_token={META_TOKEN}")
    assert META_TOKEN not in captured.getvalue()


def test_configured_secrets_and_bearer_values_are_redacted(captured: io.StringIO) -> None:
    log = logging.getLogger("leadflow.test")
    log.warning("calling with %s", {"Authorization": f"Bearer {ADMIN}"})
    log.warning("token %s in a url https://x.example/a?token=abcdefgh123&b=1", META_TOKEN)
    log.warning("raw header authorization: Bearer some-other-credential-xyz")
    try:
        raise RuntimeError(f"failed with {ADMIN}")
    except RuntimeError:
        log.exception("boom")
    out = captured.getvalue()
    for secret in (ADMIN, META_TOKEN, "abcdefgh123", "some-other-credential-xyz"):
        assert secret not in out
    assert out.count("[redacted]") >= 5


def _integrity_error() -> IntegrityError:
    engine = create_engine("sqlite://")
    table = Table("people", MetaData(), Column("email", String, primary_key=True))
    table.metadata.create_all(engine)
    row = {"email": "dana@acme.example"}
    with engine.begin() as conn:
        conn.execute(insert(table), row)
        try:
            conn.execute(insert(table), row)
        except IntegrityError as exc:
            return exc
    raise AssertionError("no error")


def test_database_error_text_loses_its_parameters(captured: io.StringIO) -> None:
    exc = _integrity_error()
    assert "dana@acme.example" in str(exc)  # what was logged and put into dead-letter headers
    clean = scrub_error(exc)
    assert "dana@acme.example" not in clean
    assert "UNIQUE constraint failed" in clean and "\n" not in clean
    try:
        raise exc
    except IntegrityError:
        logging.getLogger("leadflow.test").exception("batch failed: %s", exc)
    assert "dana@acme.example" not in captured.getvalue()


def test_postgres_detail_lines_are_dropped() -> None:
    text = (
        '(IntegrityError) duplicate key value violates unique constraint "leads_email"\n'
        "DETAIL:  Key (email)=(dana@acme.example) already exists.\n"
        "[SQL: INSERT INTO leads (email) VALUES ($1)]\n"
        "[parameters: ('dana@acme.example',)]"
    )
    clean = logs.redact(text)
    assert "dana@acme.example" not in clean and "duplicate key" in clean

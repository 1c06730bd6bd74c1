"""docs/operations.md: logs are JSON lines. A process that configures logging as every service does
writes one JSON object per record to stderr, tracebacks and multi-line messages included."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import logging
    from shared.logs import configure_logging

    configure_logging("DEBUG")
    log = logging.getLogger("leadflow.test")
    log.debug("debug %s", "detail")
    log.info("plain message")
    log.warning("two\\nlines and ünïcode and a \\"quote\\"")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed: %d", 42)
    logging.getLogger("uvicorn.error").error("from a library")
    print("stdout is not the log")
    """
)


def test_every_log_line_is_a_json_object() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    lines = proc.stderr.splitlines()
    records = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    assert len(records) == 5, proc.stderr
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert record["time"].endswith("Z")
    assert [r["level"] for r in records] == ["debug", "info", "warning", "error", "error"]
    assert records[0]["message"] == "debug detail"
    assert records[2]["message"] == 'two\nlines and ünïcode and a "quote"'
    failed = records[3]
    assert failed["logger"] == "leadflow.test" and failed["message"] == "it failed: 42"
    assert "Traceback" in failed["exception"] and "ValueError: boom" in failed["exception"]
    assert records[4]["logger"] == "uvicorn.error"
    assert proc.stdout == "stdout is not the log\n"

"""capture.js stays small and dependency-free (pure: no browser, no server)."""

from __future__ import annotations

import gzip
import re
from importlib import resources

from services.capture.api_static import _snippet, compact

SOURCE = resources.files("services.capture").joinpath("static/capture.js").read_text("utf-8")


def test_served_snippet_is_under_8_kb() -> None:
    served = _snippet()
    assert len(served) < 8 * 1024, len(served)
    assert len(gzip.compress(served)) < 3 * 1024


def test_snippet_has_no_dependencies() -> None:
    assert not re.search(r"\bimport\b|\brequire\(|<script|document\.write", SOURCE)
    # Only its own capture server is contacted: every URL it posts to starts with ``base``.
    assert "http://" not in SOURCE and "https://" not in SOURCE.split("\n", 1)[1]


def test_compaction_drops_only_whole_comment_lines_and_indentation() -> None:
    source = 'a = "x // y";\n  // gone\n\n    b = /\\/\\//;\n/*! kept */\n'
    assert compact(source) == 'a = "x // y";\nb = /\\/\\//;\n/*! kept */\n'
    kept = [line.strip() for line in SOURCE.splitlines()]
    served = _snippet().decode().splitlines()
    assert served == [line for line in kept if line and not line.startswith("//")]

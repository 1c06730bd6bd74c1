"""Every Markdown link in README.md, SECURITY.md and docs/*.md resolves, and the README stays short.

Relative targets must exist (relative to the file that links them); ``#anchor`` parts must match a
heading's GitHub-style slug in the target (or the same) Markdown file. http(s) links are not
fetched, only checked to be well-formed. No network, no broker, no database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
# 12 kB of prose, plus the generated Performance table (issue 11: `python -m bench.table --readme`).
README_MAX_BYTES = 13_300

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) or ![alt](target); the target may be <bracketed> and carry a "title".
LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\(\s*(?P<target><[^>]*>|[^)\s]*)(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL_SCHEMES = {"http", "https", "mailto"}


@dataclass(frozen=True)
class Link:
    source: Path
    line: int
    target: str

    def where(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}: {self.target!r}"


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    out: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, lower case, punctuation dropped, spaces
    turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor GitHub makes for the headings of ``path`` (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return frozenset(out)


def links(path: Path) -> list[Link]:
    found: list[Link] = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub("", line)
        for match in LINK.finditer(line):
            target = match.group("target").strip("<>")
            found.append(Link(path, number, target))
    return found


def problem(link: Link) -> str | None:
    """Why ``link`` does not resolve, or None when it does."""
    target = link.target
    if not target:
        return "empty target"
    parts = urlsplit(target)
    if parts.scheme:
        if parts.scheme not in EXTERNAL_SCHEMES:
            return f"unexpected scheme {parts.scheme!r}"
        if parts.scheme == "mailto":
            return None if "@" in parts.path else "malformed mailto link"
        if not parts.hostname or any(c.isspace() for c in target):
            return "malformed URL"
        return None
    file_part, _, fragment = target.partition("#")
    resolved = (link.source.parent / unquote(file_part)).resolve() if file_part else link.source
    if not resolved.exists():
        return f"no such file {resolved}"
    if fragment:
        if resolved.suffix != ".md":
            return f"anchor #{fragment} into a file that is not Markdown"
        if unquote(fragment).lower() not in anchors(resolved):
            return f"no heading with anchor #{fragment} in {resolved.name}"
    return None


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(doc: Path) -> None:
    broken = [f"{link.where()}: {why}" for link in links(doc) if (why := problem(link))]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_is_short() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; the reference belongs in docs/"


def test_slugs_follow_github() -> None:
    assert slug("Configuration: the `scoring:` section") == "configuration-the-scoring-section"
    assert slug("Walk-through: a demo request becomes an assigned, hot SQL") == (
        "walk-through-a-demo-request-becomes-an-assigned-hot-sql"
    )
    assert slug("Website forms: `POST /v1/forms/{form_id}/submissions`") == (
        "website-forms-post-v1formsform_idsubmissions"
    )
    assert slug("See [SECURITY.md](../SECURITY.md)") == "see-securitymd"


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n\n## A section\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n"
        "[ok](other.md) [ok](other.md#a-section) [ok](other.md#a-section-1) [ok](#title)\n"
        "[ok](https://example.org/x) `[in code](missing.md)`\n"
        "```\n[in a fence](missing.md)\n```\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) [bad here](#nowhere)\n"
        "[bad url](https://) [bad scheme](ftp://example.org/x)\n"
    )
    broken = [link.target for link in links(doc) if problem(link)]
    assert broken == [
        "missing.md",
        "other.md#nowhere",
        "#nowhere",
        "https://",
        "ftp://example.org/x",
    ]

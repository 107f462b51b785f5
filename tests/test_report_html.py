"""The HTML report: one self-contained file (no scripts, no external URL of any kind), a table a parser can
read back, an inline SVG age chart, and every text from the manifest or audit log escaped."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rotator.keyset import Keyset, KeyVersion, State
from rotator.manifest import parse_manifest
from rotator.report import Activity, AuditCheck, Report, assess, render

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
HOSTILE = '<script src="https://evil.example/x.js"></script><img src=https://evil.example/p.png>'
_REMOTE = re.compile(r"^\s*(https?:)?//", re.I)


@dataclass
class Page:
    """What the parser saw: tables by id (rows of cell texts), tags, attributes, style and script text."""

    tables: dict[str, list[list[str]]] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str, str]] = field(default_factory=list)  # (tag, name, value)
    styles: list[str] = field(default_factory=list)
    scripts: int = 0
    svg_rects: int = 0
    text: list[str] = field(default_factory=list)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.page.tags.append(tag)
        for name, value in attrs:
            self.page.attributes.append((tag, name, value or ""))
            if name == "style":
                self.page.styles.append(value or "")
        if tag == "script":
            self.page.scripts += 1
        elif tag == "style":
            self._in_style = True
        elif tag == "rect":
            self.page.svg_rects += 1
        elif tag == "table":
            self._table = []
            self.page.tables[dict(attrs).get("id") or f"table-{len(self.page.tables)}"] = self._table
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.page.styles.append(data)
        if self._cell is not None:
            self._cell.append(data)
        self.page.text.append(data)


def parse(text: str) -> Page:
    """Parse an HTML report with the stdlib parser."""
    parser = _Parser()
    parser.feed(text)
    parser.close()
    return parser.page


def check_self_contained(page: Page) -> None:
    """No script, no link/iframe/object/embed, no src/href/action/data/xlink to anything remote, no CSS
    import or url() to the network."""
    assert page.scripts == 0
    assert not {"link", "iframe", "object", "embed", "img", "base", "form"} & set(page.tags)
    for tag, name, value in page.attributes:
        if name in ("src", "href", "action", "data", "xlink:href", "srcset", "poster", "background"):
            assert not _REMOTE.match(value), f"<{tag} {name}={value!r}> loads a remote resource"
    for css in page.styles:
        assert "@import" not in css
        assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", css, re.I)
    csp = next(value for tag, name, value in page.attributes if tag == "meta" and value.startswith("default-src"))
    assert "default-src 'none'" in csp


def _report(reason: str = "quarterly rotation") -> Report:
    manifest = """
version: 1
secrets:
  - {name: payments/hmac, kind: hmac}
  - {name: stale, kind: hmac, every: 30d, grace: 1d, notice: 7d}
  - {name: new, kind: hmac}
"""
    policies = parse_manifest(manifest, Path("rotation.yaml"), env={}).secrets

    def keyset(age: timedelta) -> Keyset:
        version = KeyVersion(id="v" * 32, state=State.CURRENT, created_at=NOW - age, promoted_at=NOW - age)
        return Keyset(name="x", revision="1", versions=(version,))

    first = assess(policies["payments/hmac"], keyset(timedelta(days=10)), NOW)
    first.activity.append(Activity(NOW - timedelta(days=10), "rotation.succeeded", "cli:alice", reason, "a" * 32,
                                   "b" * 32, "c" * 32))
    stale = assess(policies["stale"], keyset(timedelta(days=75)), NOW)  # 2.5x the interval: clipped bar
    secrets = [first, stale, assess(policies["new"], None, NOW)]
    return Report(NOW, NOW - timedelta(days=90), Path("/srv/rotation.yaml"), secrets,
                  AuditCheck(Path("/srv/audit.jsonl"), True, 12, "f" * 64))


def test_html_is_self_contained() -> None:
    """The page has inline CSS, no scripts and no external resource, and a CSP that forbids loading any."""
    page = parse(render(_report(), "html"))
    check_self_contained(page)
    assert page.styles
    assert "svg" in page.tags


def test_html_table_reads_back() -> None:
    """The secrets table parses back to one row per secret with status, policy and age."""
    page = parse(render(_report(), "html"))
    header, *rows = page.tables["secrets"]
    assert header[:3] == ["secret", "provider", "kind"]
    assert header[9] == "status"
    assert [(r[0], r[3], r[7], r[9]) for r in rows] == [
        ("payments/hmac", "every 90d", "10d", "compliant"), ("stale", "every 30d", "75d", "overdue"),
        ("new", "every 90d", "-", "missing")]
    audit = dict((row[0], row[1]) for row in page.tables["audit"])
    assert audit["result"] == "OK"
    assert audit["chain head (SHA-256)"] == "f" * 64


def test_chart_has_a_bar_per_aged_secret() -> None:
    """The SVG chart draws a background and an age bar for each secret with an age, and marks clipping."""
    text = render(_report(), "html")
    page = parse(text)
    assert page.svg_rects == 4  # two secrets with an age; `new` has none
    assert "75d / 30d (250%)" in text
    assert "&#187;" in text
    assert "missing: no age to compare" in "".join(page.text)


def test_hostile_text_is_escaped() -> None:
    """A reason or secret name carrying markup appears as text, never as tags or attributes."""
    text = render(_report(reason=HOSTILE), "html")
    page = parse(text)
    check_self_contained(page)
    assert HOSTILE in "".join(page.text)
    assert "&lt;script" in text
    assert "<script" not in text


def test_checker_catches_remote_resources() -> None:
    """The self-containment check itself fails on a script, a remote stylesheet, image or CSS url()."""
    csp = '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'">'
    for bad in ('<script>1</script>', '<link rel="stylesheet" href="https://cdn.example/x.css">',
                '<svg><image href="//cdn.example/x.png"/></svg>', '<style>@import "x.css";</style>',
                '<div style="background: url(https://cdn.example/x.png)"></div>'):
        with pytest.raises(AssertionError):
            check_self_contained(parse(csp + bad))
    check_self_contained(parse(csp + '<a href="#audit">audit</a>'))

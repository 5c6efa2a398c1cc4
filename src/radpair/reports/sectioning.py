"""Section parsers for free-text reports (MIMIC-CXR layout and generic text).

One regular-expression scanner finds header candidates -- ``WORDS:`` at a line start, a
known header alone on its line, and (where the site allows) ``. IMPRESSION:`` inside a
line -- and :mod:`radpair.reports.headers` decides what each is. Sections run from one
accepted header to the next. Line starts are recognised after ``\\n`` and after a bare
``\\r``, so old Mac and mixed line endings section like Unix ones.

IU X-ray reports come as columns or NLM XML and have their own helpers in
:mod:`radpair.reports.iu`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from radpair.errors import ConfigError, unknown_choice_message
from radpair.reports.headers import HeaderKind, HeaderTable, default_header_table
from radpair.reports.report import Report, Section, SectionName
from radpair.reports.sites import SiteRules, layout_names, site_rules

LAYOUTS = ("auto", "mimic", "generic")

_LABEL = r"[A-Za-z][A-Za-z /&()'\-]{0,58}?(?:[ \t]*#[ \t]*\d{1,2})?"
# Line-start patterns begin with the line break itself (so the regex engine can skip
# to line breaks quickly); the text's first line is tried separately with ``match``.
# "HEADER:" at a line start; the colon must not be a clock time
_COLON_HEADER = r"[ \t]*(?P<label>" + _LABEL + r")[ \t]*:(?!\d)"
# a known header alone on its line ("IMPRESSION", "FINAL REPORT")
_ALONE_HEADER = r"[ \t]*(?P<label>[A-Za-z][A-Za-z /&\-]{1,40}?)[ \t]*(?=[\r\n]|\Z)"
_COLON_FIRST, _COLON_NEXT = re.compile(_COLON_HEADER), re.compile(r"[\r\n]" + _COLON_HEADER)
_ALONE_FIRST, _ALONE_NEXT = re.compile(_ALONE_HEADER), re.compile(r"[\r\n]" + _ALONE_HEADER)
# ". IMPRESSION:" inside a line (reports flattened to one line)
_INLINE_HEADER = re.compile(r"[.!?][ \t]+(?P<label>[A-Za-z][A-Za-z /&]{1,38}?)[ \t]*:(?!\d)")
# does the text look like a MIMIC-CXR report?
_MIMIC_HINT = r"[ \t]*(?:FINAL REPORT\b|[A-Z][A-Z /&()\-]{2,40}:)"
_MIMIC_FIRST, _MIMIC_NEXT = re.compile(_MIMIC_HINT), re.compile(r"[\r\n]" + _MIMIC_HINT)
# a blank line; "\r\n" is one line break, never a "\r" break followed by a "\n" one
_BLANK_LINE = re.compile(r"(?:\r\n|\r(?!\n)|\n)[ \t]*(?:\r\n|\r(?!\n)|\n)")

#: sections whose text reads the image; other sections hold the request or admin details
CONTENT_SECTIONS = frozenset(
    s.value
    for s in (
        SectionName.FINDINGS,
        SectionName.IMPRESSION,
        SectionName.CONCLUSION,
        SectionName.RECOMMENDATION,
        SectionName.ADDENDUM,
    )
)
#: headers strong enough to be accepted in the middle of a line
_INLINE_OK = frozenset(
    s.value
    for s in (
        SectionName.FINDINGS,
        SectionName.IMPRESSION,
        SectionName.CONCLUSION,
        SectionName.RECOMMENDATION,
        SectionName.COMPARISON,
        SectionName.INDICATION,
        SectionName.HISTORY,
        SectionName.TECHNIQUE,
        SectionName.ADDENDUM,
    )
)


@dataclass(frozen=True)
class _Header:
    kind: HeaderKind
    name: str | None
    label: str
    start: int  # first character of the label
    end: int  # first character after the header (after the colon)


def strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` to exclude surrounding whitespace (start == end if blank)."""
    seg = text[start:end]
    left = len(seg) - len(seg.lstrip())
    if left == len(seg):
        return start, start
    right = len(seg) - len(seg.rstrip())
    return start + left, end - right


def _line_start_matches(first: re.Pattern, nxt: re.Pattern, text: str) -> list[re.Match]:
    out = []
    m = first.match(text)
    if m is not None:
        out.append(m)
    out.extend(nxt.finditer(text))
    return out


def _candidates(text: str, rules: SiteRules, table: HeaderTable) -> list[_Header]:
    found: list[_Header] = []
    classify = table.classify
    for first, nxt, alone in ((_COLON_FIRST, _COLON_NEXT, False), (_ALONE_FIRST, _ALONE_NEXT, True)):
        for m in _line_start_matches(first, nxt, text):
            label = m.group("label").strip()
            cls = classify(label, alone)
            if cls is not None:
                found.append(_Header(cls.kind, cls.name.value if cls.name else None, label, m.start("label"), m.end()))
    if rules.inline_headers:
        for m in _INLINE_HEADER.finditer(text):
            label = m.group("label").strip()
            cls = classify(label, False)
            if cls is not None and cls.kind is HeaderKind.SECTION and cls.name.value in _INLINE_OK:
                found.append(_Header(cls.kind, cls.name.value, label, m.start("label"), m.end()))
    if len(found) > 1:
        found.sort(key=lambda h: (h.start, -h.end))
    out: list[_Header] = []
    last_end = -1
    for h in found:
        if h.start >= last_end:
            out.append(h)
            last_end = h.end
    return out


def _trim_trailer(text: str, start: int, end: int, rules: SiteRules) -> int:
    """End of ``[start, end)`` once sign-off lines ("dictating") at its end are cut."""
    if rules.trailer is None:
        return end
    for _ in range(3):
        start_s, end_s = strip_span(text, start, end)
        if start_s >= end_s:
            return end_s
        # last line of the stripped region
        cut = max(text.rfind("\n", start_s, end_s), text.rfind("\r", start_s, end_s))
        line_start = start_s if cut < 0 else cut + 1
        if rules.trailer.fullmatch(text, line_start, end_s):
            end = line_start
        else:
            return end_s
    return end


class _Builder:
    """Collects sections in text order, splitting paragraph-only sections."""

    def __init__(self, text: str, rules: SiteRules) -> None:
        self.text = text
        self.rules = rules
        self.parts: list[Section] = []

    def add(self, name: str, start: int, end: int, header: _Header | None) -> None:
        text = self.text
        s, e = strip_span(text, start, end)
        if header is None and s >= e:
            return
        if name in self.rules.paragraph_sections and s < e:
            blank = _BLANK_LINE.search(text, s, e)
            if blank is not None:
                self._emit(name, s, blank.start(), header)
                rest_s, rest_e = strip_span(text, blank.end(), e)
                if rest_s < rest_e:
                    self._emit(SectionName.UNTITLED.value, rest_s, rest_e, None)
                return
        self._emit(name, s, e, header)

    def _emit(self, name: str, start: int, end: int, header: _Header | None) -> None:
        s, e = strip_span(self.text, start, end)
        if header is not None and s == e:
            s = e = header.end  # empty section: zero-width, right after its header
        self.parts.append(
            Section(name, self.text[s:e], s, e, header.label if header else None, header.start if header else None)
        )


def detect_layout(text: str) -> str:
    """``mimic`` when the text has a banner or an ALL-CAPS ``HEADER:`` line, else ``generic``."""
    return "mimic" if _MIMIC_FIRST.match(text) or _MIMIC_NEXT.search(text) else "generic"


def _check_layout(layout: str) -> str:
    if layout == "auto" or layout in layout_names():
        return layout
    hint = ""
    if layout.lower() in ("iu", "iu_xray", "iu-xray", "openi"):
        hint = " (IU X-ray columns and XML: use radpair.reports.iu.parse_iu_row / parse_iu_xml)"
    raise ConfigError(unknown_choice_message("report layout", layout, ["auto", *layout_names()]) + hint)


def as_text(text: str | bytes | None) -> str:
    """Reports as str: bytes are decoded as UTF-8 with undecodable bytes replaced."""
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"report text must be str or bytes, got {type(text).__name__}")
    return text


def parse_report(
    text: str | bytes | None, layout: str = "auto", *, table: HeaderTable | None = None
) -> Report:
    """Split a free-text report into canonical sections.

    ``layout`` is ``auto`` (default; picks ``mimic`` or ``generic`` from the text),
    ``mimic`` or ``generic``. A report without any header gets one ``untitled`` section.
    Bytes are decoded as UTF-8 with replacement characters, so spans index the decoded
    text (``report.text``).
    """
    text = as_text(text)
    layout = _check_layout(layout)
    if layout == "auto":
        layout = detect_layout(text)
    rules = site_rules(layout)
    table = table or default_header_table()
    builder = _Builder(text, rules)
    current: _Header | None = None
    region_start = 0
    body_start = None
    first_banner_end = None

    for h in _candidates(text, rules, table):
        if h.kind in (HeaderKind.VIEW, HeaderKind.UNKNOWN_CAPS):
            open_name = current.name if current is not None else None
            if open_name in CONTENT_SECTIONS:
                continue  # a sub-heading inside findings/impression ("LUNGS:", "CHEST:")
            if h.kind is HeaderKind.UNKNOWN_CAPS and rules.unknown_caps_headers == "ignore":
                continue
        # close whatever is open
        builder.add(current.name if current else SectionName.UNTITLED.value, region_start, h.start, current)
        if h.kind is HeaderKind.BANNER:
            if first_banner_end is None:
                first_banner_end = h.end
            if body_start is None and h.label.lower().split() == ["final", "report"]:
                body_start = h.end
            current = None
        else:
            current = h
        region_start = h.end
    end = _trim_trailer(text, region_start, len(text), rules)
    builder.add(current.name if current else SectionName.UNTITLED.value, region_start, end, current)
    if body_start is None:
        body_start = first_banner_end or 0
    return Report(text=text, parts=tuple(builder.parts), layout=layout, body_start=body_start)


def last_paragraph_span(text: str, body_start: int, parts: Iterable[Section]) -> tuple[int, int] | None:
    """Span of the last paragraph of the final report, without a header or sign-off."""
    parts = list(parts)
    if parts:
        last = parts[-1]
        end = last.end
        floor = last.start if last.header is not None else body_start
    else:
        end = len(text)
        floor = body_start
    start, end = strip_span(text, max(body_start, 0), end)
    if start >= end:
        return None
    cut = start
    for m in _BLANK_LINE.finditer(text, start, end):
        cut = m.end()
    s, e = strip_span(text, max(cut, floor, start), end)
    return (s, e) if s < e else None

"""The :class:`Report` type: raw text plus named sections with character spans.

Every component that reads report text (synthetic corpus, data adapters, labelers,
tokenizers) goes through this one type, so "which part of the report" is a single option
(``text.sections=findings``) rather than a per-dataset preprocessing script.

Invariants (checked by the property tests):
* ``report.text[s.start:s.end] == s.text`` for every section ``s``;
* sections (``report.parts``) are sorted and never overlap, headers included;
* spans lie inside ``report.text``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


class SectionName(str, enum.Enum):
    """Canonical section names. Values are the strings used in configs and CSV columns."""

    INDICATION = "indication"
    HISTORY = "history"
    EXAMINATION = "examination"
    TECHNIQUE = "technique"
    COMPARISON = "comparison"
    FINDINGS = "findings"
    IMPRESSION = "impression"
    CONCLUSION = "conclusion"
    RECOMMENDATION = "recommendation"
    ADDENDUM = "addendum"
    WET_READ = "wet_read"
    NOTIFICATION = "notification"
    OTHER = "other"  # an ALL-CAPS header that is not in the synonym table
    UNTITLED = "untitled"  # text under no header (headerless report, orphan paragraph)
    # fallbacks, computed from the text, never part of ``Report.parts``
    FINAL_REPORT = "final_report"
    LAST_PARAGRAPH = "last_paragraph"

    def __str__(self) -> str:  # so f-strings and CSV headers show the plain name
        return self.value


#: Section names a parser can produce (the fallbacks are derived, not parsed).
PARSED_SECTIONS: tuple[SectionName, ...] = tuple(
    s for s in SectionName if s not in (SectionName.FINAL_REPORT, SectionName.LAST_PARAGRAPH)
)
FALLBACK_SECTIONS = (SectionName.FINAL_REPORT, SectionName.LAST_PARAGRAPH)


@dataclass(frozen=True)
class Section:
    """One section: its canonical name, its content and where the content lies.

    ``text`` is the content without the header and without surrounding whitespace, and
    equals ``report.text[start:end]``. ``header`` is the header as written (``"Findings"``)
    and ``header_start`` its offset, or None for untitled text.
    """

    name: str
    text: str
    start: int
    end: int
    header: str | None = None
    header_start: int | None = None

    @property
    def span_start(self) -> int:
        """Start of the section including its header."""
        return self.start if self.header_start is None else self.header_start


@dataclass(frozen=True)
class Sentence:
    """A sentence with its span in the report text and the section it belongs to."""

    text: str
    start: int
    end: int
    section: str | None


@dataclass
class Report:
    """A radiology report: the text that all spans index into, and its sections.

    ``parts`` keeps every section in text order (a name may occur twice, e.g. two
    addenda); ``sections`` maps each name to its first occurrence; :meth:`section` joins
    all occurrences. ``layout`` names the parser rules used; ``meta`` carries what the
    source knew besides the text (IU X-ray uid and MeSH terms, for instance).
    """

    text: str
    parts: tuple[Section, ...] = ()
    layout: str = "generic"
    body_start: int = 0  # where the final report starts (after a banner such as FINAL REPORT)
    meta: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def sections(self) -> Mapping[str, Section]:
        out: dict[str, Section] = {}
        for part in self.parts:
            out.setdefault(part.name, part)
        return out

    def section(self, name: str | SectionName) -> str | None:
        """Text of section ``name`` (all occurrences joined by a blank line), or None.

        The fallbacks ``final_report`` and ``last_paragraph`` are accepted too.
        """
        name = str(name)
        if name == SectionName.FINAL_REPORT.value:
            return self.final_report.text if self.final_report else None
        if name == SectionName.LAST_PARAGRAPH.value:
            return self.last_paragraph.text if self.last_paragraph else None
        texts = [p.text for p in self.parts if p.name == name]
        if not texts:
            return None
        return texts[0] if len(texts) == 1 else "\n\n".join(texts)

    def parts_named(self, *names: str | SectionName) -> list[Section]:
        wanted = {str(n) for n in names}
        return [p for p in self.parts if p.name in wanted]

    @cached_property
    def final_report(self) -> Section | None:
        """Everything after the report banner (the whole text when there is none)."""
        from radpair.reports.sectioning import strip_span

        start, end = strip_span(self.text, self.body_start, len(self.text))
        if start >= end:
            return None
        return Section(SectionName.FINAL_REPORT.value, self.text[start:end], start, end)

    @cached_property
    def last_paragraph(self) -> Section | None:
        """The last blank-line separated paragraph of the final report (MIMIC-CXR's fallback)."""
        from radpair.reports.sectioning import last_paragraph_span

        span = last_paragraph_span(self.text, self.body_start, self.parts)
        if span is None:
            return None
        start, end = span
        return Section(SectionName.LAST_PARAGRAPH.value, self.text[start:end], start, end)

    @cached_property
    def sentences(self) -> tuple[Sentence, ...]:
        """Sentences of every section (or of the whole text when it has no sections)."""
        from radpair.reports.sentences import split_sentences

        out: list[Sentence] = []
        regions = [(p.start, p.end, p.name) for p in self.parts] or [(0, len(self.text), None)]
        for start, end, name in regions:
            for s, e in split_sentences(self.text, start, end):
                out.append(Sentence(self.text[s:e], s, e, name))
        return tuple(out)

    def select(self, policy: str, **kwargs: Any) -> str:
        """Text chosen by a selection policy; see :func:`radpair.reports.select_sections`."""
        from radpair.reports.selection import select_from_report

        return select_from_report(self, policy, **kwargs)

    def to_dict(self) -> dict[str, str]:
        """One string per parsed section name present (joined occurrences)."""
        return {p.name: self.section(p.name) or "" for p in self.parts}

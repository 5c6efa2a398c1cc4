"""Section selection policies: which part of a report a method reads.

The seed papers disagree: Chauhan et al. (2020) read impression, findings, conclusion and
recommendation and fall back to the final report; RadTex reads FINDINGS only; the ConVIRT
study compares FINDINGS, IMPRESSION and both. Each choice is a named policy here, so a
config says ``text.sections=findings`` instead of shipping its own preprocessing script.

Policies (sections are concatenated in report order):

==================== ====================================================== ==================
policy               sections                                               when none present
==================== ====================================================== ==================
chauhan2020          impression, findings, conclusion, recommendation       final report
findings             findings                                               "" (empty)
impression           impression                                             conclusion, else ""
findings+impression  findings, impression, conclusion                       ""
full                 the whole text                                         --
body                 everything but indication/history/examination/         whole text
                     technique/comparison/wet read/notification
==================== ====================================================== ==================

``a+b`` of canonical section names (``impression+recommendation``) is accepted as an
ad-hoc policy. ``fallback=`` names a policy to use when the chosen one selects nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from radpair.errors import ConfigError, unknown_choice_message
from radpair.reports.deid import normalise_deid
from radpair.reports.report import PARSED_SECTIONS, Report, Section, SectionName

_S = SectionName


@dataclass(frozen=True)
class SectionPolicy:
    """Which sections to read, and what to read when none of them is present."""

    name: str
    sections: tuple[str, ...]  # canonical names; () with whole_text=True means the full text
    fallback: tuple[str, ...] = ()  # tried in order: a section name or "final_report"/"full"
    whole_text: bool = False
    description: str = ""


_ADMIN = (_S.INDICATION, _S.HISTORY, _S.EXAMINATION, _S.TECHNIQUE, _S.COMPARISON, _S.WET_READ, _S.NOTIFICATION)

SECTION_POLICIES: Mapping[str, SectionPolicy] = {
    p.name: p
    for p in (
        SectionPolicy(
            "chauhan2020",
            (_S.IMPRESSION.value, _S.FINDINGS.value, _S.CONCLUSION.value, _S.RECOMMENDATION.value),
            fallback=(_S.FINAL_REPORT.value,),
            description="impression, findings, conclusion and recommendation; else the final report (Chauhan et al. 2020)",
        ),
        SectionPolicy("findings", (_S.FINDINGS.value,), description="FINDINGS only (RadTex)"),
        SectionPolicy(
            "impression",
            (_S.IMPRESSION.value,),
            fallback=(_S.CONCLUSION.value,),
            description="IMPRESSION, else CONCLUSION (sites that call the impression so)",
        ),
        SectionPolicy(
            "findings+impression",
            (_S.FINDINGS.value, _S.IMPRESSION.value, _S.CONCLUSION.value),
            description="FINDINGS and IMPRESSION (and CONCLUSION) in report order",
        ),
        SectionPolicy("full", (), whole_text=True, description="the whole report text"),
        SectionPolicy(
            "body",
            tuple(s.value for s in PARSED_SECTIONS if s not in _ADMIN),
            fallback=("full",),
            description="everything except the request and administrative sections; else the whole text",
        ),
    )
}


def get_policy(policy: str | SectionPolicy) -> SectionPolicy:
    """A policy by name; ``a+b`` of section names builds an ad-hoc one."""
    if isinstance(policy, SectionPolicy):
        return policy
    if policy in SECTION_POLICIES:
        return SECTION_POLICIES[policy]
    names = [p.strip() for p in str(policy).split("+")]
    valid = {s.value for s in PARSED_SECTIONS}
    if len(names) > 1 and all(n in valid for n in names):
        return SectionPolicy(str(policy), tuple(names))
    raise ConfigError(unknown_choice_message("section policy", str(policy), SECTION_POLICIES))


def selected_parts(report: Report, policy: str | SectionPolicy) -> list[Section]:
    """The sections a policy reads, in report order (fallbacks applied)."""
    pol = get_policy(policy)
    if pol.whole_text:
        return _whole(report)
    wanted = set(pol.sections)
    parts = [p for p in report.parts if p.name in wanted and p.text]
    if parts:
        return parts
    for fb in pol.fallback:
        if fb == "full":
            parts = _whole(report)
        elif fb == _S.FINAL_REPORT.value:
            parts = [report.final_report] if report.final_report else []
        elif fb == _S.LAST_PARAGRAPH.value:
            parts = [report.last_paragraph] if report.last_paragraph else []
        elif fb in SECTION_POLICIES:
            parts = selected_parts(report, fb)
        else:
            parts = [p for p in report.parts if p.name == fb and p.text]
        if parts:
            return parts
    return []


def _whole(report: Report) -> list[Section]:
    text = report.text
    left = len(text) - len(text.lstrip())
    right = len(text.rstrip())
    if right <= left:
        return []
    return [Section("full", text[left:right], left, right)]


def _clean(text: str) -> str:
    return " ".join(text.split())


def select_from_report(
    report: Report,
    policy: str | SectionPolicy,
    *,
    fallback: str | None = None,
    clean: bool = True,
    deid: bool = False,
    joiner: str = "\n\n",
) -> str:
    """Text of ``report`` chosen by ``policy``; see :func:`select_sections`."""
    parts = selected_parts(report, policy)
    if not parts and fallback is not None:
        parts = selected_parts(report, fallback)
    texts = [_clean(p.text) if clean else p.text for p in parts]
    out = joiner.join(t for t in texts if t)
    return normalise_deid(out) if deid else out


def select_sections(
    text: str | bytes | None,
    policy: str,
    *,
    layout: str = "auto",
    fallback: str | None = None,
    clean: bool = True,
    deid: bool = False,
) -> str:
    """The part of a report a method reads, as one string.

    ``policy`` is one of :data:`SECTION_POLICIES` (unknown names raise
    :class:`~radpair.errors.ConfigError` naming the closest). Sections are joined with a
    blank line; ``clean`` collapses whitespace inside each section (MIMIC wraps lines);
    ``deid`` maps ``___``/``XXXX`` masks to one token; ``fallback`` is a policy used when
    ``policy`` selects nothing. Returns ``""`` when nothing is selected.
    """
    pol = get_policy(policy)  # validate before parsing
    if fallback is not None:
        get_policy(fallback)
    from radpair.reports.sectioning import as_text, parse_report

    if pol.whole_text:  # no sections needed
        text = as_text(text).strip()
        text = " ".join(text.split()) if clean else text
        return normalise_deid(text) if deid else text

    return select_from_report(parse_report(text, layout), pol, fallback=fallback, clean=clean, deid=deid)

"""Report language: structured reports, section selection, de-identification masks.

>>> from radpair.reports import parse_report, select_sections
>>> r = parse_report("FINDINGS: No effusion.\\n\\nIMPRESSION: Normal chest.")
>>> r.section("impression")
'Normal chest.'
>>> select_sections("FINDINGS: No effusion.\\nIMPRESSION: Normal chest.", "findings")
'No effusion.'

Labelers (edema severity, CheXpert, ChestX-ray14) live in :mod:`radpair.reports.labeling`.
"""

from radpair.reports.deid import DEID_TOKEN, find_deid_masks, normalise_deid
from radpair.reports.iu import parse_iu_row, parse_iu_xml
from radpair.reports.report import Report, Section, SectionName, Sentence
from radpair.reports.sectioning import LAYOUTS, parse_report
from radpair.reports.selection import (
    SECTION_POLICIES,
    SectionPolicy,
    get_policy,
    select_sections,
)

__all__ = [
    "DEID_TOKEN",
    "LAYOUTS",
    "SECTION_POLICIES",
    "Report",
    "Section",
    "SectionName",
    "SectionPolicy",
    "Sentence",
    "find_deid_masks",
    "get_policy",
    "normalise_deid",
    "parse_iu_row",
    "parse_iu_xml",
    "parse_report",
    "select_sections",
]

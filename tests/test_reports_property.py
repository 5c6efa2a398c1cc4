"""Property tests: any input parses without error, spans stay inside the text, sections
never overlap, and every policy and labeler returns a value."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radpair.reports import SECTION_POLICIES, parse_report, select_sections
from radpair.reports.labeling import get_labeler

PIECES = [
    "FINDINGS:", "Findings:", "FINDING:", "IMPRESSION:", "impression", "CONCLUSION:", "FINAL REPORT",
    "INDICATION: ___", "COMPARISON:", "WET READ:", "NOTE TO FILE:", "LUNGS:", "PA AND LATERAL CHEST:",
    "1. ", "2.", "No pneumothorax or effusion.", "cannot exclude pneumonia", "possible", "versus", "Dr.",
    "p.m.", "XXXX", "___", ":", ".", "?", ";", " ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "\u00e9", "\ufffd",
    "heart size is normal", "mild pulmonary edema", "IMPRESSON:", "recommendation(s):",
]

report_like = st.lists(st.sampled_from(PIECES) | st.text(max_size=12), max_size=40).map("".join)
any_input = st.one_of(st.text(max_size=300), report_like, st.binary(max_size=300))

LABELERS = {}


def labelers():
    if not LABELERS:
        LABELERS["edema"] = get_labeler("edema")
        LABELERS["chestxray14"] = get_labeler("chestxray14")
    return LABELERS


def check_report(raw):
    r = parse_report(raw)
    text = r.text
    n = len(text)
    prev_end = 0
    for p in r.parts:
        assert 0 <= p.span_start <= p.start <= p.end <= n
        assert p.span_start >= prev_end, "sections overlap"
        assert text[p.start : p.end] == p.text
        if p.header_start is not None:
            assert p.header_start < p.start or p.start == p.end
        prev_end = p.end
    for s in r.sentences:
        assert 0 <= s.start < s.end <= n and text[s.start : s.end] == s.text
    for fb in (r.final_report, r.last_paragraph):
        if fb is not None:
            assert 0 <= fb.start < fb.end <= n and text[fb.start : fb.end] == fb.text
    return r


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_input)
def test_any_input_parses_with_valid_spans(raw):
    r = check_report(raw)
    for policy in SECTION_POLICIES:
        assert isinstance(select_sections(raw, policy), str)
    for lab in labelers().values():
        result = lab.label(raw)
        assert set(result.values) == set(lab.label_names)
        for ev in result.evidence:
            assert 0 <= ev.start < ev.end <= len(r.text)
            if ev.cue_start is not None:
                assert 0 <= ev.cue_start < ev.cue_end <= len(r.text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "FINDINGS:",
        "FINDINGS:IMPRESSION:CONCLUSION:",
        "FINDINGS:\nIMPRESSION:\r\nCONCLUSION:\rINDICATION:\n\n\n",
        "FINAL REPORT\nFINAL REPORT\n",
        ":::::\n\r\n\r",
        "\r\r\r\n\n\n",
        "IMPRESSION" * 50,
    ],
)
def test_only_headers_and_odd_layouts(text):
    check_report(text)
    for lab in labelers().values():
        lab.label(text)


def test_one_megabyte_report_is_fast_and_valid():
    unit = (
        "FINDINGS: The heart size is normal. No focal consolidation, pleural effusion or pneumothorax.\r\n"
        "Possible small left effusion versus atelectasis. XXXX ___ \n\nIMPRESSION: No acute process.\r"
        "NOTE: \xe9\u4e2d ?pneumonia; cannot exclude edema.\n"
    )
    text = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    t0 = time.perf_counter()
    r = check_report(text)
    assert len(r.parts) > 1000
    select_sections(text, "findings+impression")
    raw = text.encode("utf-8") + b"\xff\xfe\x80"
    check_report(raw)
    result = labelers()["chestxray14"].label(text[:200_000])  # labeling is linear; a fifth keeps the test short
    assert result["Effusion"] == -1 and result["Pneumothorax"] == 0  # "possible ... effusion" wins over "no"
    assert time.perf_counter() - t0 < 30

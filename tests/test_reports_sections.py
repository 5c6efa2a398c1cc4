"""Sectioning, sentences, de-identification masks, IU X-ray helpers and selection policies."""

from __future__ import annotations

import pytest

from radpair.errors import ConfigError, DataError
from radpair.reports import (
    DEID_TOKEN,
    SECTION_POLICIES,
    Report,
    SectionName,
    normalise_deid,
    parse_iu_row,
    parse_iu_xml,
    parse_report,
    select_sections,
)
from radpair.reports.sentences import split_sentences


def names(report: Report) -> list[str]:
    return [p.name for p in report.parts]


def test_interface_shapes():
    r = parse_report("FINDINGS: No effusion.\n\nIMPRESSION: Normal chest.")
    assert isinstance(r, Report)
    assert list(r.sections) == ["findings", "impression"]
    sec = r.sections["findings"]
    assert (sec.name, sec.text, r.text[sec.start : sec.end]) == ("findings", "No effusion.", "No effusion.")
    assert r.section("impression") == "Normal chest."
    assert r.section(SectionName.IMPRESSION) == "Normal chest."
    assert r.section("comparison") is None
    assert set(SECTION_POLICIES) == {"chauhan2020", "findings", "impression", "findings+impression", "full", "body"}


@pytest.mark.parametrize(
    "header",
    ["FINDINGS:", "Findings:", "FINDING:", "findings:", "FINDINGS", "  FINDINGS :", "FIDNINGS:", "FINDNGS:"],
)
def test_findings_header_variants(header):
    r = parse_report(f"INDICATION: cough\n\n{header}\nNo effusion.\n\nIMPRESSION: Normal.")
    assert r.section("findings") == "No effusion."
    assert r.section("impression") == "Normal."


@pytest.mark.parametrize("header", ["IMPRESSION:", "Impression:", "IMPRESSIONS:", "IMPRESION:", "CONCLUSION:", "Conclusions:"])
def test_impression_policy_header_variants(header):
    text = f"FINDINGS: Small effusion.\n{header} Small left effusion."
    assert select_sections(text, "impression") == "Small left effusion."


def test_line_endings_all_work():
    for nl in ("\n", "\r\n", "\r"):
        text = nl.join(["FINAL REPORT", "INDICATION: dyspnea", "", "FINDINGS:", "Clear lungs.", "", "IMPRESSION:", "Normal."])
        r = parse_report(text)
        assert names(r) == ["indication", "findings", "impression"], repr(nl)
        assert r.section("findings") == "Clear lungs."
    mixed = "FINDINGS: a\r\nb\rc\n\nIMPRESSION: d"
    assert parse_report(mixed).section("impression") == "d"


def test_unknown_caps_header_and_subheadings():
    r = parse_report("FINAL REPORT\nNOTE TO CLINICIAN: see below\n\nFINDINGS: PA and lateral.\nLUNGS: Clear.\nHEART: Normal.\n")
    assert names(r) == ["other", "findings"]
    assert r.section("findings") == "PA and lateral.\nLUNGS: Clear.\nHEART: Normal."
    # a view header introduces the findings
    r = parse_report("INDICATION: cough.\n\nPA AND LATERAL CHEST RADIOGRAPHS: The lungs are clear.\n\nIMPRESSION: Normal.")
    assert names(r) == ["indication", "findings", "impression"]


def test_colon_in_text_is_not_a_header():
    r = parse_report("FINDINGS: Discussed with Dr. ___ at 10:30 a.m.\nLungs: clear.\nThe tube tip: at the carina.")
    assert names(r) == ["findings"]


def test_inline_headers_in_flattened_report():
    r = parse_report("Indication: cough. Findings: no effusion. Impression: normal chest.")
    assert names(r) == ["indication", "findings", "impression"]
    assert r.section("findings") == "no effusion."


def test_paragraph_after_admin_section_is_untitled():
    r = parse_report("FINAL REPORT\nCOMPARISON: ___.\n\nThe lungs are clear.\nNo effusion.")
    assert names(r) == ["comparison", "untitled"]
    assert select_sections(r.text, "body") == "The lungs are clear. No effusion."


def test_banner_final_report_and_last_paragraph():
    text = "WET READ: ___ no ptx\n\n FINAL REPORT\n HISTORY: fall\n\n IMPRESSION: No fracture.\n\n dictated by: ___"
    r = parse_report(text)
    assert names(r) == ["wet_read", "history", "impression"]
    assert r.section("impression") == "No fracture."  # the sign-off line is cut
    assert r.final_report.text.startswith("HISTORY: fall")
    assert r.last_paragraph.text == "No fracture."
    assert r.section("final_report") == r.final_report.text


def test_headerless_and_empty_reports():
    r = parse_report("No acute cardiopulmonary process.")
    assert names(r) == ["untitled"] and r.layout == "generic"
    assert select_sections("No acute cardiopulmonary process.", "findings") == ""
    assert select_sections("No acute process.", "chauhan2020") == "No acute process."
    for empty in ("", "   \n\r\n", None, b""):
        r = parse_report(empty)
        assert r.parts == () and r.final_report is None and r.last_paragraph is None
        assert select_sections(empty, "full") == ""


def test_only_headers():
    r = parse_report("FINDINGS:\nIMPRESSION:\n")
    assert names(r) == ["findings", "impression"]
    assert r.section("findings") == "" and r.section("impression") == ""
    assert select_sections("FINDINGS:\nIMPRESSION:\n", "findings+impression") == ""


def test_bytes_are_decoded_with_replacement():
    r = parse_report(b"FINDINGS: caf\xe9 \xff effusion.\nIMPRESSION: ok")
    assert r.section("findings") == "caf\ufffd \ufffd effusion."


def test_repeated_sections_are_joined():
    r = parse_report("ADDENDUM: first.\n\nFINAL REPORT\nFINDINGS: x.\n\nADDENDUM: second.")
    assert r.sections["addendum"].text == "first."
    assert r.section("addendum") == "first.\n\nsecond."


def test_unknown_policy_and_layout_name_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'findings'"):
        select_sections("x", "finding")
    with pytest.raises(ConfigError, match="findings\\+impression"):
        select_sections("x", "findings+impresion")
    with pytest.raises(ConfigError, match="did you mean 'mimic'"):
        parse_report("x", layout="mimc")
    with pytest.raises(ConfigError, match="parse_iu_row"):
        parse_report("x", layout="iu")


def test_adhoc_policy_and_fallback_and_options():
    text = "FINDINGS: a.\nIMPRESSION: b.\nRECOMMENDATION: c."
    assert select_sections(text, "impression+recommendation") == "b.\n\nc."
    assert select_sections("IMPRESSION: x", "findings", fallback="impression") == "x"
    assert select_sections("FINDINGS:  two\n  lines  XXXX", "findings", clean=False) == "two\n  lines  XXXX"
    assert select_sections("FINDINGS:  two\n  lines  XXXX", "findings", deid=True) == f"two lines {DEID_TOKEN}"


def test_deid_masks_normalised_to_one_token():
    assert normalise_deid("___ year old. XXXX-year-old, x-XXXX, [**Hospital 1**] and XXXXPM") == (
        "___ year old. ___-year-old, x-___, ___ and ___PM"
    )
    assert normalise_deid("Xray of XXXX", token="[MASK]") == "Xray of [MASK]"
    assert normalise_deid("XXL and XX") == "XXL and XX"  # not masks


def test_sentences():
    text = "1. Stable mild cardiomegaly. 2. Hyperexpanded lungs.Clear. Dr. ___ notified at 7 p.m.. Size 1.5 cm.\n\nNew"
    got = [text[s:e] for s, e in split_sentences(text)]
    assert got == [
        "1. Stable mild cardiomegaly.",
        "2. Hyperexpanded lungs.",
        "Clear.",
        "Dr. ___ notified at 7 p.m..",
        "Size 1.5 cm.",
        "New",
    ]
    r = parse_report("FINDINGS: No effusion. No pneumothorax.\nIMPRESSION: Normal.")
    assert [(s.text, s.section) for s in r.sentences] == [
        ("No effusion.", "findings"),
        ("No pneumothorax.", "findings"),
        ("Normal.", "impression"),
    ]


def test_iu_row_layout_and_meta():
    row = {"uid": 1, "MeSH": "normal", "Problems": "normal", "image": "Xray", "indication": "Positive TB test",
           "comparison": float("nan"), "findings": "No effusion.", "impression": "Normal chest x-XXXX."}
    r = parse_iu_row(row)
    assert r.text == "INDICATION: Positive TB test\n\nFINDINGS: No effusion.\n\nIMPRESSION: Normal chest x-XXXX."
    assert names(r) == ["indication", "findings", "impression"] and r.layout == "iu"
    assert r.meta["uid"] == 1 and r.meta["MeSH"] == ["normal"]
    assert parse_report(r.text).section("impression") == "Normal chest x-XXXX."  # text re-parses the same
    for p in r.parts:
        assert r.text[p.start : p.end] == p.text


IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR7"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">Cough</AbstractText>
<AbstractText Label="FINDINGS">Heart size normal. No <b>effusion</b>.</AbstractText>
<AbstractText Label="IMPRESSION"/>
</Abstract></Article></MedlineCitation>
<MeSH><major>Cardiomegaly/mild</major><automatic>cardiomegaly</automatic></MeSH>
<parentImage id="CXR7_1_IM-0004-1001"><caption>PA</caption></parentImage>
</eCitation>"""


def test_iu_xml(tmp_path):
    r = parse_iu_xml(IU_XML)
    assert names(r) == ["comparison", "indication", "findings"]
    assert r.section("findings") == "Heart size normal. No effusion."
    assert r.meta == {"uid": "CXR7", "MeSH": ["Cardiomegaly/mild"], "MeSH_automatic": ["cardiomegaly"],
                      "images": ["CXR7_1_IM-0004-1001"]}
    path = tmp_path / "7.xml"
    path.write_text(IU_XML)
    assert parse_iu_xml(path).text == r.text
    assert parse_iu_xml(str(path)).text == r.text
    bad = tmp_path / "bad.xml"
    bad.write_text("<eCitation><AbstractText>")
    with pytest.raises(DataError, match="bad.xml: not valid XML"):
        parse_iu_xml(bad)
    with pytest.raises(DataError, match="missing.xml: cannot read"):
        parse_iu_xml(tmp_path / "missing.xml")

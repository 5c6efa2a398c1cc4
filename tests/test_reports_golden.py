"""Golden tests: real reports from the shared data and hand-written MIMIC-layout reports.

The hand-written reports follow MIMIC-CXR's layout (banner, uppercase headers, wrapped
lines, ``___`` masks) and its variants; the expected sections and labels are what a
radiologist reading them would say (CheXpert conventions for the chexpert schema, e.g.
"no new X" and "heart size is stable" are uncertain there).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from radpair.reports import parse_report, select_sections
from radpair.reports.labeling import get_labeler

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
needs_chexpert = pytest.mark.skipif(
    not (SHARED / "chexpert_labeler" / "phrases" / "mention").is_dir(), reason="chexpert phrase lists not present"
)


@pytest.fixture(scope="module")
def chexpert():
    return get_labeler("chexpert", phrases_dir=str(SHARED / "chexpert_labeler"))


@pytest.fixture(scope="module")
def cxr14():
    return get_labeler("chestxray14")


@pytest.fixture(scope="module")
def edema():
    return get_labeler("edema")


# ------------------------------------------------------------------ shared real data


@needs_chexpert
def test_chexpert_labeled_reports_exact(chexpert):
    df = pd.read_csv(SHARED / "chexpert_labeler" / "labeled_reports.csv")
    assert len(df) == 4
    for _, row in df.iterrows():
        expected = {c: (None if pd.isna(row[c]) else int(row[c])) for c in df.columns[1:]}
        result = chexpert.label(row["Reports"])
        assert result.values == expected, result.explain()
    assert chexpert.label_names == list(df.columns[1:])


@needs_shared
def test_negbio_examples_section():
    ex = SHARED / "negbio" / "examples"
    r = parse_report((ex / "00000086.txt").read_bytes())
    assert [p.name for p in r.parts] == ["findings", "impression"]
    assert r.section("findings").startswith("pa and lat cxr at 7:34 p.m..")
    assert r.section("findings").endswith("osseous structures unchanged scoliosis")
    assert r.section("impression") == "stable chest."  # the trailing "dictating" is a sign-off
    r = parse_report((ex / "00019248.txt").read_bytes())
    assert [p.name for p in r.parts] == ["findings"]  # "chest:" is a sub-heading of findings
    assert r.section("findings").startswith("chest: four images:\r\nright picc")
    assert r.section("findings").endswith("no evidence of focal infiltrate, effusion or pneumothorax.")
    for p in r.parts:
        assert r.text[p.start : p.end] == p.text


# ------------------------------------------------------------------ hand-written MIMIC-layout reports

M1 = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___ year old woman with cough, fever  // ?pneumonia
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  ___
 
 FINDINGS: 
 
 The lungs are clear without focal consolidation.  No pleural effusion or
 pneumothorax is seen.  The cardiac and mediastinal silhouettes are
 unremarkable.
 
 IMPRESSION: 
 
 No acute cardiopulmonary process.
"""

M2 = """                                 FINAL REPORT
 HISTORY:  Shortness of breath, history of CHF.
 
 FINDINGS:  Portable AP upright chest radiograph.  Moderate cardiomegaly is
 unchanged.  There is pulmonary vascular congestion with interstitial edema
 and Kerley B lines.  Small bilateral pleural effusions.  No pneumothorax.
 
 IMPRESSION:  Moderate interstitial pulmonary edema and small bilateral pleural
 effusions, consistent with CHF.
"""

M3 = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)
 
 INDICATION:  ___M with fever and hypoxia.
 
 COMPARISON:  Chest radiograph from ___.
 
 FINDINGS: 
 
 New opacity at the right lung base may represent atelectasis, though pneumonia
 cannot be excluded.  No large pleural effusion.  Heart size is normal.
 
 IMPRESSION: 
 
 Right basilar opacity, atelectasis versus pneumonia.
"""

M4 = """                                 FINAL REPORT
 INDICATION:  Status post right chest tube placement.
 
 COMPARISON:  ___ at 08:14.
 
 Right-sided chest tube is in place.  The previously noted small right apical
 pneumothorax has resolved.  Left lung is clear.  Heart size is normal.
"""

M5 = """WET READ: ___ ___ ___ 4:12 PM
  No pneumothorax.
 ______________________________________________________________________________
                                 FINAL REPORT
 INDICATION:  Line placement.
 
 FINDINGS:  Left subclavian central venous catheter terminates in the mid SVC.
 No pneumothorax.  Lungs are otherwise clear.
 
 IMPESSION:  Left subclavian line in appropriate position, no pneumothorax.
"""

M6 = """FINAL REPORT
EXAMINATION: CHEST (PORTABLE AP)
INDICATION: ___ year old man with acute dyspnea.
COMPARISON: ___.
FINDINGS:
Diffuse bilateral alveolar opacities with air bronchograms, most pronounced in the
perihilar regions. Severe cardiomegaly. Possible small left pleural effusion. No
pneumothorax.
IMPRESSION:
Severe pulmonary edema. Superimposed infection cannot be excluded.
"""

M7 = """Indication: Chest pain.

FINDING: Heart size is normal. The mediastinal and hilar contours are unremarkable.
There is no focal consolidation, pleural effusion or pneumothorax. Mild degenerative
changes of the thoracic spine.

CONCLUSION: No acute cardiopulmonary abnormality.
"""

M8 = (
    "PA and lateral views of the chest.  Compared to ___, there is interval increase in the size "
    "of a left pleural effusion with adjacent atelectasis.  No new consolidation.  Heart size is "
    "stable.  No pneumothorax."
)

M9 = """FINAL REPORT
INDICATION: Trauma.
FINDINGS: Endotracheal tube terminates 4 cm above the carina. Nasogastric tube courses below
the diaphragm. Acute fractures of the left fifth through seventh ribs. Small left
pneumothorax. No pleural effusion.
IMPRESSION: Left rib fractures with small left pneumothorax. Tubes in standard position.
"""

M10 = """FINAL REPORT
EXAMINATION: CHEST (PA AND LAT)
INDICATION: Cough.
FINDINGS: 8 mm nodule in the right upper lobe. No consolidation or effusion.
Cardiomediastinal silhouette is within normal limits.
IMPRESSION: Right upper lobe nodule. Recommend chest CT for further evaluation.
RECOMMENDATION(S): Chest CT.
ADDENDUM: Findings were discussed with Dr. ___ by telephone at 2:30 pm.
"""

M11 = (
    "clinical history: fever. findings: there is a right middle lobe consolidation consistent "
    "with pneumonia. no pleural effusion. impression: right middle lobe pneumonia."
)

M12 = (
    "FINAL REPORT\r\nEXAMINATION:  CHEST (PA AND LAT)\r\n\r\nINDICATION:  ___F with dyspnea\r\n\r\n"
    "COMPARISON:  None.\r\n\r\nFINDINGS:\r\n\r\nThe heart size is top normal.  There is no focal "
    "consolidation to suggest\r\npneumonia.  Possible trace left pleural effusion.  No pulmonary "
    "edema.\r\n\r\nIMPRESSION:\r\n\r\n1.  Possible trace left pleural effusion.\r\n2.  No pneumonia."
)

SECTIONS = {
    "M1": (M1, ["examination", "indication", "technique", "comparison", "findings", "impression"],
           {"impression": "No acute cardiopulmonary process.", "comparison": "___",
            "indication": "___ year old woman with cough, fever  // ?pneumonia"}),
    "M2": (M2, ["history", "findings", "impression"], {"history": "Shortness of breath, history of CHF."}),
    "M3": (M3, ["examination", "indication", "comparison", "findings", "impression"],
           {"impression": "Right basilar opacity, atelectasis versus pneumonia."}),
    "M4": (M4, ["indication", "comparison", "untitled"], {"comparison": "___ at 08:14."}),
    "M5": (M5, ["wet_read", "indication", "findings", "impression"],
           {"impression": "Left subclavian line in appropriate position, no pneumothorax."}),
    "M6": (M6, ["examination", "indication", "comparison", "findings", "impression"],
           {"impression": "Severe pulmonary edema. Superimposed infection cannot be excluded."}),
    "M7": (M7, ["indication", "findings", "conclusion"], {"conclusion": "No acute cardiopulmonary abnormality."}),
    "M8": (M8, ["untitled"], {"untitled": M8}),
    "M9": (M9, ["indication", "findings", "impression"], {}),
    "M10": (M10, ["examination", "indication", "findings", "impression", "recommendation", "addendum"],
            {"recommendation": "Chest CT."}),
    "M11": (M11, ["history", "findings", "impression"], {"impression": "right middle lobe pneumonia."}),
    "M12": (M12, ["examination", "indication", "comparison", "findings", "impression"],
            {"impression": "1.  Possible trace left pleural effusion.\r\n2.  No pneumonia."}),
}


@pytest.mark.parametrize("name", list(SECTIONS))
def test_mimic_layout_sections(name):
    text, names, texts = SECTIONS[name]
    r = parse_report(text)
    assert [p.name for p in r.parts] == names
    for key, value in texts.items():
        assert r.section(key) == value
    for p in r.parts:
        assert text[p.start : p.end] == p.text


def test_selection_policies_on_mimic_reports():
    assert select_sections(M1, "findings") == (
        "The lungs are clear without focal consolidation. No pleural effusion or pneumothorax is seen. "
        "The cardiac and mediastinal silhouettes are unremarkable."
    )
    assert select_sections(M1, "impression") == "No acute cardiopulmonary process."
    assert select_sections(M7, "impression") == "No acute cardiopulmonary abnormality."  # CONCLUSION stands in
    assert select_sections(M4, "findings") == ""
    assert select_sections(M4, "findings", fallback="body").startswith("Right-sided chest tube")
    assert select_sections(M4, "chauhan2020").startswith("INDICATION: Status post")  # final report fallback
    assert "Chest CT." in select_sections(M10, "chauhan2020")  # recommendation is read
    assert "telephone" not in select_sections(M10, "chauhan2020")  # the addendum is not
    assert select_sections(M12, "findings+impression").endswith("2. No pneumonia.")
    assert "FINAL REPORT" in select_sections(M12, "full")


# expected labels: only the observations a radiologist would mark; all others must be blank
CHEXPERT = {
    "M1": {"No Finding": 1, "Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, "Enlarged Cardiomediastinum": 0},
    "M2": {"Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": 1, "Pneumothorax": 0},
    "M3": {"Lung Opacity": 1, "Atelectasis": -1, "Pneumonia": -1, "Pleural Effusion": 0, "Cardiomegaly": 0},
    "M4": {"No Finding": 1, "Support Devices": 1, "Pneumothorax": 0, "Cardiomegaly": 0},
    "M5": {"No Finding": 1, "Support Devices": 1, "Pneumothorax": 0},
    "M6": {"Lung Opacity": 1, "Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": -1, "Pneumothorax": 0, "Pneumonia": -1},
    "M7": {"Cardiomegaly": 0, "Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, "Enlarged Cardiomediastinum": 0},
    "M8": {"Pleural Effusion": 1, "Atelectasis": 1, "Consolidation": -1, "Cardiomegaly": -1, "Pneumothorax": 0},
    "M9": {"Support Devices": 1, "Fracture": 1, "Pneumothorax": 1, "Pleural Effusion": 0},
    "M10": {"Lung Lesion": 1, "Consolidation": 0, "Pleural Effusion": 0, "Enlarged Cardiomediastinum": 0},
    "M11": {"Consolidation": 1, "Pneumonia": 1, "Pleural Effusion": 0},
    "M12": {"No Finding": None, "Cardiomegaly": 0, "Consolidation": 0, "Pneumonia": 0, "Pleural Effusion": -1, "Edema": 0},
}

CXR14 = {
    "M1": {"normal": 1, "Consolidation": 0, "Effusion": 0, "Pneumothorax": 0, "Cardiomegaly": 0},
    "M2": {"normal": 0, "Cardiomegaly": 1, "Edema": 1, "Effusion": 1, "Pneumothorax": 0},
    "M4": {"normal": 0, "Pneumothorax": 0, "Cardiomegaly": 0},  # a chest tube is not a normal study
    "M6": {"normal": 0, "Cardiomegaly": 1, "Edema": 1, "Effusion": -1, "Pneumothorax": 0},
    "M7": {"normal": 0, "Cardiomegaly": 0, "Consolidation": 0, "Effusion": 0, "Pneumothorax": 0},  # degenerative changes
    "M9": {"normal": 0, "Pneumothorax": 1, "Effusion": 0},
    "M10": {"normal": 0, "Nodule": 1, "Consolidation": 0, "Effusion": 0, "Cardiomegaly": 0},
    "M11": {"normal": 0, "Consolidation": 1, "Pneumonia": 1, "Effusion": 0},
    "M12": {"normal": 0, "Cardiomegaly": 0, "Consolidation": 0, "Pneumonia": 0, "Effusion": -1, "Edema": 0},
}

EDEMA = {"M1": 0, "M2": 2, "M3": None, "M4": None, "M6": 3, "M7": None, "M9": None, "M12": 0}


def _check(result, expected):
    got = {k: v for k, v in result.values.items() if v is not None}
    want = {k: v for k, v in expected.items() if v is not None}
    assert got == want, result.explain()


@needs_chexpert
@pytest.mark.parametrize("name", list(CHEXPERT))
def test_mimic_layout_chexpert_labels(chexpert, name):
    _check(chexpert.label(SECTIONS[name][0]), CHEXPERT[name])


@pytest.mark.parametrize("name", list(CXR14))
def test_mimic_layout_chestxray14_labels(cxr14, name):
    _check(cxr14.label(SECTIONS[name][0]), CXR14[name])


@pytest.mark.parametrize("name", list(EDEMA))
def test_mimic_layout_edema_severity(edema, name):
    assert edema.label(SECTIONS[name][0])["edema_severity"] == EDEMA[name]


def test_indication_is_not_read_by_default(cxr14):
    # "?pneumonia" in the indication is a question, not a finding
    assert cxr14.label(M1)["Pneumonia"] is None
    assert cxr14.label(M1, )["normal"] == 1
    full = get_labeler("chestxray14", sections="full")
    assert full.label(M1)["Pneumonia"] == -1

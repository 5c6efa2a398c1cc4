"""The labeling engine: cues and scopes, edema severity, registry, evidence, batch output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from radpair.errors import ConfigError
from radpair.reports.labeling import LabelValue, Status, get_labeler, labeler_names
from radpair.reports.labeling.dispatch import first_words, flexible_spaces

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
needs_chexpert = pytest.mark.skipif(
    not (SHARED / "chexpert_labeler" / "phrases" / "mention").is_dir(), reason="chexpert phrase lists not present"
)
needs_iu = pytest.mark.skipif(not (SHARED / "iu_xray" / "indiana_reports.csv").is_file(), reason="IU X-ray not present")


@pytest.fixture(scope="module")
def cxr14():
    return get_labeler("chestxray14", sections="full")


@pytest.fixture(scope="module")
def chexpert():
    return get_labeler("chexpert", sections="full")


@pytest.mark.parametrize(
    "text, label, value",
    [
        ("No pneumothorax or effusion.", "Pneumothorax", 0),
        ("No pneumothorax or effusion.", "Effusion", 0),
        ("The lungs are clear without focal consolidation.", "Consolidation", 0),
        ("No focal consolidation, pleural effusion, pneumothorax, or pulmonary edema.", "Edema", 0),
        ("Pneumothorax has resolved.", "Pneumothorax", 0),
        ("The previously seen effusion is no longer visualized.", "Effusion", 0),
        ("Cannot exclude pneumonia.", "Pneumonia", -1),
        ("Pneumonia cannot be excluded.", "Pneumonia", -1),
        ("Possible small left effusion.", "Effusion", -1),
        ("Opacity may represent atelectasis.", "Atelectasis", -1),
        ("Left basilar opacity, atelectasis.", "Atelectasis", 1),
        ("No change in the moderate right pleural effusion.", "Effusion", 1),  # pseudo-negation
        ("No effusion, but there is a small pneumothorax.", "Pneumothorax", 1),  # terminator
        ("No effusion; small pneumothorax.", "Pneumothorax", 1),
        ("No effusion, possible atelectasis.", "Atelectasis", -1),  # "possible" ends "no"'s scope
        ("There is no focal opacity to suggest pneumonia.", "Pneumonia", 0),
        ("No suspicious pulmonary nodules.", "Nodule", 0),
        ("The heart is not enlarged.", "Cardiomegaly", 0),
        ("The heart is mildly enlarged.", "Cardiomegaly", 1),
        ("Borderline cardiomegaly.", "Cardiomegaly", -1),
        ("Moderate cardiomegaly with\n  pulmonary edema.", "Edema", 1),
        ("Pericardial effusion.", "Effusion", None),  # an unmention
        ("Hydropneumothorax on the left.", "Pneumothorax", 1),  # allowed prefix
        ("Probable right lower lobe pneumonia.", "Pneumonia", 1),  # chestxray14: favoured diagnosis
    ],
)
def test_chestxray14_cues(cxr14, text, label, value):
    assert cxr14.label(text)[label] == value, cxr14.label(text).explain(label)


@needs_chexpert
@pytest.mark.parametrize(
    "text, label, value",
    [
        ("Atelectasis versus pneumonia.", "Pneumonia", -1),
        ("Atelectasis or consolidation.", "Atelectasis", -1),
        ("No new consolidation.", "Consolidation", -1),
        ("Heart size is stable.", "Cardiomegaly", -1),
        ("Stable mild cardiomegaly.", "Cardiomegaly", 1),
        ("Probable pneumonia.", "Pneumonia", -1),
        ("Mild pulmonary vascular congestion, consistent with CHF.", "Cardiomegaly", -1),  # chf rule
        ("Over the heart there is a line.", "Cardiomegaly", None),  # positional unmention
        ("Kerley B lines.", "Support Devices", None),
        ("No findings.", "No Finding", 1),
        ("Mild scoliosis.", "No Finding", None),  # "other findings" rule out No Finding
        ("Endotracheal tube in place.", "No Finding", 1),  # devices do not
    ],
)
def test_chexpert_conventions(chexpert, text, label, value):
    assert chexpert.label(text)[label] == value, chexpert.label(text).explain(label)


def test_edema_severity_table_and_extended():
    table = get_labeler("edema")
    ext = get_labeler("edema", keywords="extended")
    cases = [
        ("No pulmonary edema.", 0, 0),
        ("No acute cardiopulmonary process.", 0, 0),
        ("Mild pulmonary vascular congestion without overt pulmonary edema.", 1, 1),
        ("Cephalization of the pulmonary vasculature.", 1, 1),
        ("Interstitial edema with Kerley B lines.", 2, 2),
        ("Severe pulmonary edema.", 3, 3),
        ("Vascular congestion and patchy opacities.", 3, 3),  # most severe wins
        ("Mild pulmonary edema.", None, 2),  # not in the paper's table
        ("No edema.", None, 0),
        ("Lungs are clear.", None, None),
        ("", None, None),
    ]
    for text, want_table, want_ext in cases:
        assert table.label(text)["edema_severity"] == want_table, text
        assert ext.label(text)["edema_severity"] == want_ext, text
    assert table.label_names == ["edema_severity"]


def test_edema_uncertain_modes():
    text = "Possible mild interstitial edema."
    assert get_labeler("edema").label(text)["edema_severity"] == 2
    assert get_labeler("edema", uncertain="ignore").label(text)["edema_severity"] is None
    assert get_labeler("edema", uncertain="negate").label("Possible pulmonary edema.")["edema_severity"] == 0
    with pytest.raises(ConfigError, match="uncertain must be one of"):
        get_labeler("edema", uncertain="maybe")
    with pytest.raises(ConfigError, match="keywords must be one of"):
        get_labeler("edema", keywords="paper")


def test_evidence_names_phrase_span_and_cue(cxr14):
    text = "Small effusion. No pneumothorax."
    result = cxr14.label(text)
    (ev,) = result.evidence_for("Pneumothorax")
    assert (ev.phrase, text[ev.start : ev.end], ev.status) == ("pneumothorax", "pneumothorax", Status.NEGATED)
    assert (ev.cue, ev.cue_kind, text[ev.cue_start : ev.cue_end]) == ("No", "negation", "No")
    assert "negation cue 'No'" in result.explain("Pneumothorax")
    assert result["Effusion"] == LabelValue.POSITIVE == 1
    assert result["normal"] == 0


def test_label_many_dataframe(cxr14):
    df = cxr14.label_many(["No effusion.", None, "", float("nan"), "Large effusion.", b"No \xffpneumothorax."])
    assert list(df.columns) == cxr14.label_names and len(df) == 6
    assert str(df["Effusion"].dtype) == "Int64"
    assert df["Effusion"].tolist()[0] == 0 and df["Effusion"].tolist()[4] == 1
    assert df.iloc[1].isna().all() and df.iloc[2].isna().all() and df.iloc[3].isna().all()
    assert df["Pneumothorax"].tolist()[5] == 0


def test_registry_errors(tmp_path, monkeypatch):
    assert labeler_names() == ["chestxray14", "chexpert", "edema"]
    with pytest.raises(ConfigError, match="did you mean 'chexpert'"):
        get_labeler("chexpret")
    with pytest.raises(ConfigError, match="did you mean 'sections'"):
        get_labeler("chestxray14", section="findings")
    with pytest.raises(ConfigError, match="did you mean 'findings'"):
        get_labeler("chestxray14", sections="finding")
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=str(missing)):
        get_labeler("chexpert", phrases_dir=str(missing))
    # default search: names every place it looked
    import radpair.reports.labeling.chexpert as cx

    monkeypatch.setattr(cx, "project_root", lambda: tmp_path / "root")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cx.ENV_VAR, raising=False)
    with pytest.raises(ConfigError, match="chexpert_labeler"):
        get_labeler("chexpert")


def test_pattern_helpers():
    assert flexible_spaces("no (?:evidence) of") == r"no\s+(?:evidence)\s+of"
    assert flexible_spaces("a ?b [ ]c (?<!x )y") == r"a\s*b\s+[ ]c\s+(?<!x )y"  # not in [] or lookbehinds
    assert first_words(r"(?:is|are)? ?not seen") is not None
    assert ("atelecta", False) in first_words(r"atelecta\w*")
    assert first_words(r";") is None


@needs_iu
def test_iu_xray_mesh_agreement():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import labeler_iu_xray as bench
    finally:
        sys.path.pop(0)
    df = bench.load(SHARED / "iu_xray", "all")
    scores, _, _, _ = bench.evaluate(df, "negative")
    assert len(df) == 3759
    assert bench.macro_f1([s for s in scores if s.cls != "normal"]) >= 0.90

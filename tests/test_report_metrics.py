"""Report-generation metrics: n-gram scores, CheXpert clinical efficacy, paired comparisons,
`evaluate_generation` joins and `radpair evaluate generation`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radpair.errors import DataError
from radpair.evaluation import report_metrics as rm
from radpair.evaluation.generation import evaluate_generation, iu_xray_sanity
from radpair.evaluation.report_metrics import (
    compare_generation,
    corpus_metrics,
    score_reports,
    tokenize,
)

IU_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "iu_xray"

GEN = ["Mild cardiomegaly. No pleural effusion.", "Possible left lower lobe atelectasis.",
       "Heart size normal. Lungs clear."]
REF = ["Cardiomegaly. Small left pleural effusion.", "Left lower lobe atelectasis.", "Possible pleural effusion."]


@pytest.fixture(scope="module")
def labeler():
    from radpair.errors import ResourceMissing

    try:
        return rm.chexpert_labeler()
    except ResourceMissing as exc:  # pragma: no cover - the shared phrase lists are absent
        pytest.skip(f"CheXpert phrase lists not available: {exc}")


def _labels(labeler, text):
    return {k: v for k, v in labeler.label(text).values.items() if v is not None}


# ---- tokenisation and n-gram metrics -------------------------------------------------------------
def test_tokenize_is_r2gen_like():
    assert tokenize("The heart, is NORMAL... Effusion 1.5 cm.") == ["the", "heart", "is", "normal", ".",
                                                                    "effusion", "1.5", "cm", "."]
    assert tokenize("") == [] and tokenize(None) == [] and tokenize(float("nan")) == []


def test_identical_reports_score_one(labeler):
    s = score_reports(REF, REF, ["a", "b", "c"], meteor=False, labeler=labeler)
    for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL"):
        assert s.metrics[k] == pytest.approx(1.0, abs=1e-6), k
    assert s.metrics["cider"] == pytest.approx(10.0)  # CIDEr-D's maximum (x10)
    for name in rm.ce_metric_names():
        if name.endswith("_f1"):
            assert s.metrics[name] == pytest.approx(1.0), name
    assert s.meteor_reason == "METEOR not requested" and np.isnan(s.metrics["meteor"])


def test_corpus_bleu_matches_pycocoevalcap_and_is_deterministic(labeler):
    from pycocoevalcap.bleu.bleu import Bleu

    a = score_reports(GEN, REF, meteor=False, labeler=labeler)
    b = score_reports(GEN, REF, meteor=False, labeler=labeler)
    pd.testing.assert_frame_equal(a.per_report, b.per_report)
    assert a.metrics == pytest.approx(b.metrics, nan_ok=True)
    hyps = {i: [" ".join(tokenize(g))] for i, g in enumerate(GEN)}
    refs = {i: [" ".join(tokenize(r))] for i, r in enumerate(REF)}
    expected, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    recomputed = corpus_metrics(a.per_report)
    for k in range(4):
        assert a.metrics[f"bleu{k + 1}"] == pytest.approx(expected[k])
        assert recomputed[f"bleu{k + 1}"][0] == pytest.approx(expected[k], rel=1e-12)


def test_empty_generated_report_scores_zero_and_empty_reference_is_refused(labeler):
    s = score_reports(["", REF[1]], [REF[0], REF[1]], ["x", "y"], meteor=False, labeler=labeler)
    row = s.per_report.set_index("id").loc["x"]
    assert row["bleu1"] == 0 and row["rougeL"] == 0 and row["cider"] == 0 and row["n_tokens_generated"] == 0
    with pytest.raises(DataError, match="no words"):
        score_reports(["a b"], ["  ..."], ["z"], meteor=False, labeler=labeler)


# ---- clinical efficacy ---------------------------------------------------------------------------
def test_ce_hand_computed(labeler):
    # the labeler's own output on these texts (checked here, so the arithmetic below is grounded)
    assert [_labels(labeler, t) for t in GEN] == [
        {"Cardiomegaly": 1, "Pleural Effusion": 0}, {"Atelectasis": -1}, {"No Finding": 1, "Cardiomegaly": 0}]
    assert [_labels(labeler, t) for t in REF] == [
        {"Cardiomegaly": 1, "Pleural Effusion": 1}, {"Atelectasis": 1}, {"Pleural Effusion": -1}]
    s = score_reports(GEN, REF, meteor=False, labeler=labeler)
    m = s.metrics
    # uncertain positive: Card TP1; PE FN2; Atel TP1 (-1 vs 1); No Finding FP1; 10 observations never positive
    assert m["ce_upos_14_micro_precision"] == pytest.approx(2 / 3)
    assert m["ce_upos_14_micro_recall"] == pytest.approx(0.5)
    assert m["ce_upos_14_micro_f1"] == pytest.approx(4 / 7)
    assert (m["ce_upos_14_macro_precision"], m["ce_upos_14_macro_recall"], m["ce_upos_14_macro_f1"]) == \
        pytest.approx((0.5, 0.5, 0.5))
    assert (m["ce_upos_5_micro_precision"], m["ce_upos_5_micro_recall"], m["ce_upos_5_micro_f1"]) == \
        pytest.approx((1.0, 0.5, 2 / 3))
    assert m["ce_upos_5_macro_f1"] == pytest.approx(2 / 3)
    # uncertain negative: Card TP1; PE FN1; Atel FN1 (generated is only uncertain); No Finding FP1
    assert (m["ce_uneg_14_micro_precision"], m["ce_uneg_14_micro_recall"], m["ce_uneg_14_micro_f1"]) == \
        pytest.approx((0.5, 1 / 3, 0.4))
    assert (m["ce_uneg_14_macro_precision"], m["ce_uneg_14_macro_recall"], m["ce_uneg_14_macro_f1"]) == \
        pytest.approx((0.25, 0.25, 0.25))
    assert (m["ce_uneg_5_micro_precision"], m["ce_uneg_5_micro_recall"], m["ce_uneg_5_micro_f1"]) == \
        pytest.approx((1.0, 1 / 3, 0.5))
    assert m["ce_uneg_5_macro_f1"] == pytest.approx(1 / 3)
    # the macro rule: observations positive on neither side are excluded, and listed
    sets = s.clinical_efficacy["policies"]["upos"]["sets"]
    assert sets["14"]["macro"]["n_scored"] == 4 and len(sets["14"]["macro"]["excluded"]) == 10
    assert sets["5"]["macro"]["excluded"] == ["Consolidation", "Edema"]
    per_obs = s.clinical_efficacy["policies"]["uneg"]["per_observation"]
    assert per_obs["Edema"]["f1"] is None and per_obs["Atelectasis"] == {
        "tp": 0, "fp": 0, "fn": 1, "n_ref_positive": 1, "n_gen_positive": 0, "precision": 0.0, "recall": 0.0,
        "f1": 0.0}
    assert rm.COMMON5 == tuple(sorted(set(rm.COMMON5) & set(labeler.label_names)))


def test_macro_undefined_when_no_observation_occurs():
    p, r, f = rm._prf(np.zeros(3), np.zeros(3), np.zeros(3))
    assert np.isnan(p).all() and np.isnan(r).all() and np.isnan(f).all()
    assert np.isnan(rm._nanmean(f[None, :], 1)[0])


# ---- METEOR -------------------------------------------------------------------------------------
def test_meteor_without_java_gives_reason(monkeypatch, labeler):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    s = score_reports(GEN, REF, meteor="auto", labeler=labeler)
    assert s.meteor_reason == "no Java runtime on PATH"
    assert np.isnan(s.metrics["meteor"]) and "meteor" not in s.per_report.columns
    assert s.metrics["bleu1"] > 0  # the rest of the evaluation ran


def test_meteor_hang_and_crash_are_reasons(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: "/usr/bin/java")
    monkeypatch.setattr(rm, "_meteor_command", lambda: ["sleep", "30"])
    score, per, stats, reason = rm.meteor_scores(["a b"], ["a b"], timeout=0.5)
    assert score is None and per is None and stats is None and "timed out" in reason
    monkeypatch.setattr(rm, "_meteor_command", lambda: ["true"])
    score, per, stats, reason = rm.meteor_scores(["a b"], ["a b"], timeout=10)
    assert score is None and reason.startswith("METEOR failed")


# Three statistics lines the METEOR 1.5 jar wrote (-stdio -l en -norm) for the pairs
# ("the heart is enlarged .", "heart size is enlarged ."), ("no acute cardiopulmonary process .",
# "no acute process ."), ("lungs are clear . no effusion .", "there is a small left effusion ."),
# with the jar's segment scores and its EVAL aggregate of all three.
JAR_LINES = ["5.0 5.0 2.0 3.0 2.0 2.0 2.0 2.0" + " 0.0" * 12 + " 2.0 4.0 4.0",
             "4.0 5.0 2.0 2.0 2.0 2.0 2.0 2.0" + " 0.0" * 12 + " 2.0 4.0 4.0",
             "7.0 7.0 4.0 4.0 1.0 1.0 1.0 1.0" + " 0.0" * 12 + " 1.0 2.0 2.0"]
JAR_SEGMENTS = [0.4108986339976993, 0.3622139617230904, 0.146975280622254]
JAR_AGGREGATE = 0.2908186678979151


def test_meteor_from_stats_reproduces_the_jar_per_segment_and_in_aggregate():
    stats = np.array([[float(x) for x in line.split()] for line in JAR_LINES])
    assert stats.shape == (3, len(rm.METEOR_STAT_COLUMNS))
    assert np.allclose(rm.meteor_from_stats(stats), JAR_SEGMENTS, rtol=0, atol=1e-12)
    assert abs(rm.meteor_from_stats(stats.sum(0))[0] - JAR_AGGREGATE) < 1e-12
    # the aggregate is not the mean segment score, which is why the statistics are kept
    assert abs(np.mean(JAR_SEGMENTS) - JAR_AGGREGATE) > 0.01
    # a perfect match has no fragmentation penalty; no match at all scores 0, not NaN
    perfect = np.array([3, 3, 1, 1, 2, 2, 1, 1] + [0] * 12 + [1, 3, 3], dtype=float)
    none = np.array([3, 3, 1, 1] + [0] * 16 + [0, 0, 0], dtype=float)
    assert rm.meteor_from_stats(np.stack([perfect, none])).tolist() == [1.0, 0.0]
    with pytest.raises(DataError, match="23 columns"):
        rm.meteor_from_stats(np.zeros((1, 5)))
    checked = rm._checked_meteor_stats(JAR_LINES, np.asarray(JAR_SEGMENTS), JAR_AGGREGATE)
    assert checked is not None and np.array_equal(checked, stats)
    # statistics that do not give the jar's scores (another jar or settings) are not used
    assert rm._checked_meteor_stats(JAR_LINES, np.asarray(JAR_SEGMENTS) + 1e-3, JAR_AGGREGATE) is None
    assert rm._checked_meteor_stats(JAR_LINES, np.asarray(JAR_SEGMENTS), JAR_AGGREGATE + 1e-3) is None
    assert rm._checked_meteor_stats(["1 2 3"] * 3, np.asarray(JAR_SEGMENTS), JAR_AGGREGATE) is None
    # the jar adds no chunks for a perfectly matched segment ("heart size is normal ." twice);
    # the jar's EVAL of this line with the first one gave 0.5202737176006357
    perfect_line = "5.0 5.0 2.0 2.0 3.0 3.0 2.0 2.0" + " 0.0" * 12 + " 1.0 5.0 5.0"
    kept = rm._checked_meteor_stats([JAR_LINES[0], perfect_line], np.array([JAR_SEGMENTS[0], 1.0]),
                                    0.5202737176006357)
    assert kept is not None and kept[:, rm.METEOR_STAT_COLUMNS.index("meteor_stat_chunks")].tolist() == [2.0, 0.0]


def _meteor_table(with_stats: bool) -> pd.DataFrame:
    stats = np.array([[float(x) for x in line.split()] for line in JAR_LINES])
    table = pd.DataFrame({"id": ["a", "b", "c"], "meteor": JAR_SEGMENTS})
    if with_stats:
        for j, col in enumerate(rm.METEOR_STAT_COLUMNS):
            table[col] = stats[:, j]
    return table


def test_meteor_corpus_value_and_bootstrap_are_the_aggregate_where_statistics_are_kept():
    from radpair.evaluation.paired import BootstrapDraws

    kept, old = _meteor_table(True), _meteor_table(False)
    assert rm.meteor_is_aggregate(kept) and not rm.meteor_is_aggregate(old)
    assert abs(corpus_metrics(kept)["meteor"][0] - JAR_AGGREGATE) < 1e-12
    assert abs(corpus_metrics(old)["meteor"][0] - np.mean(JAR_SEGMENTS)) < 1e-12  # older tables
    # a replicate drawing report "a" three times scores a's summed statistics: a's own score
    assert abs(corpus_metrics(kept, [[3, 0, 0]])["meteor"][0] - JAR_SEGMENTS[0]) < 1e-12
    draws = BootstrapDraws.draw(None, 400, 0, n_images=3)
    lo, hi = rm.bootstrap_intervals(kept, draws, ["meteor"])["meteor"]
    assert min(JAR_SEGMENTS) <= lo <= JAR_AGGREGATE <= hi <= max(JAR_SEGMENTS)
    assert np.isnan(corpus_metrics(kept, [[0, 0, 0]])["meteor"][0])  # nothing drawn: no value
    # a side without statistics makes both sides compare mean segment scores, and says so
    (d,) = compare_generation(kept, old, ["meteor"], n_bootstrap=100, seed=0)
    assert d.a == d.b == pytest.approx(np.mean(JAR_SEGMENTS)) and d.diff == 0 and d.basis == "mean segment"
    (d,) = compare_generation(kept, kept, ["meteor"], n_bootstrap=100, seed=0)
    assert d.a == pytest.approx(JAR_AGGREGATE) and d.basis == "aggregate" and d.to_dict()["basis"] == "aggregate"


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime: METEOR's jar cannot run")
def test_meteor_jar_scores_keep_statistics_that_reproduce_its_aggregate(labeler):
    s = score_reports(GEN + REF + REF[:1], REF + GEN + REF[:1], meteor="auto", labeler=labeler, clinical=False)
    if s.meteor_reason is not None:  # pragma: no cover - a broken Java install
        pytest.skip(f"METEOR did not run: {s.meteor_reason}")
    assert rm.meteor_is_aggregate(s.per_report) and not s.notes
    assert corpus_metrics(s.per_report)["meteor"][0] == pytest.approx(s.metrics["meteor"], abs=1e-9)
    assert np.allclose(rm.meteor_from_stats(s.per_report[list(rm.METEOR_STAT_COLUMNS)].to_numpy()),
                       s.per_report["meteor"], atol=1e-9)


# ---- paired comparison ---------------------------------------------------------------------------
def test_compare_with_itself_is_exactly_zero(labeler):
    s = score_reports(GEN, REF, meteor=False, labeler=labeler)
    diffs = compare_generation(s.per_report, s.per_report, n_bootstrap=200, seed=3)
    assert {d.metric for d in diffs} >= {"bleu4", "rougeL", "cider", "ce_upos_14_micro_f1", "ce_uneg_5_macro_f1"}
    for d in diffs:
        assert d.diff == 0 and d.ci_low == 0 and d.ci_high == 0 and d.p_value == 1.0, d.metric


def test_compare_paired_bootstrap_is_seeded_and_grouped(labeler):
    a = score_reports(GEN, REF, meteor=False, labeler=labeler)
    b = score_reports(REF, REF, meteor=False, labeler=labeler)
    d1 = compare_generation(a.per_report, b.per_report, ["bleu4", "ce_upos_14_micro_f1"], n_bootstrap=300, seed=7,
                            groups=["p1", "p1", "p2"])
    d2 = compare_generation(a.per_report, b.per_report, ["bleu4", "ce_upos_14_micro_f1"], n_bootstrap=300, seed=7,
                            groups=["p1", "p1", "p2"])
    assert [x.to_dict() for x in d1] == [x.to_dict() for x in d2]
    assert d1[0].unit == "patient" and d1[0].diff < 0 and d1[0].ci_high <= 0
    with pytest.raises(DataError, match="same references"):
        compare_generation(a.per_report, b.per_report.iloc[:2])


# ---- evaluate_generation -------------------------------------------------------------------------
def _csv(path: Path, ids, texts, col="report") -> Path:
    pd.DataFrame({"image_id": ids, col: texts}).to_csv(path, index=False)
    return path


def test_evaluate_generation_aligns_rows_by_id_and_writes(tmp_path, labeler):
    pred = _csv(tmp_path / "pred.csv", ["c", "a", "b"], [GEN[2], GEN[0], ""], col="generated")
    ref = _csv(tmp_path / "ref.csv", ["a", "b", "c", "d"], [REF[0], REF[1], REF[2], "Extra."])
    res = evaluate_generation(pred, ref, out_dir=tmp_path / "out", n_bootstrap=50, meteor=False, labeler=labeler)
    per = res.per_report
    assert per["id"].tolist() == ["c", "a", "b"]
    assert per["reference"].tolist() == [REF[2], REF[0], REF[1]] and per["generated"].tolist() == [GEN[2], GEN[0], ""]
    assert res.n_empty_generated == 1 and res.unscored_references == ["d"]
    assert per.set_index("id").loc["a", "gen_Cardiomegaly"] == 1
    data = json.loads((tmp_path / "out" / "generation_metrics.json").read_text())
    assert data["meteor"]["score"] is None and data["meteor"]["reason"] == "METEOR not requested"
    assert data["unscored_references"]["count"] == 1 and data["bootstrap"]["n_bootstrap"] == 50
    saved = pd.read_csv(tmp_path / "out" / "per_report.csv", dtype={"id": str})
    assert saved["id"].tolist() == ["c", "a", "b"]
    assert "BLEU-4" in (tmp_path / "out" / "generation_metrics.md").read_text()


def test_missing_references_are_an_error_naming_file_and_ids(tmp_path):
    pred = _csv(tmp_path / "pred.csv", ["a", "zz1", "zz2"], ["x", "y", "z"])
    ref = _csv(tmp_path / "ref.csv", ["a"], ["Lungs clear."])
    with pytest.raises(DataError, match=r"ref\.csv.*2 of 3.*zz1"):
        evaluate_generation(pred, ref, n_bootstrap=0, meteor=False)
    dup = _csv(tmp_path / "dup.csv", ["a", "a"], ["x", "y"])
    with pytest.raises(DataError, match="more than once"):
        evaluate_generation(dup, ref, n_bootstrap=0, meteor=False)


def test_corpus_reference_uses_section_policy_and_patients(tmp_path, labeler):
    from radpair.data.corpus import CorpusWriter

    reports = ["FINDINGS: Mild cardiomegaly. IMPRESSION: Heart enlarged.",
               "FINDINGS: Lungs are clear. IMPRESSION: Normal.", "IMPRESSION: No acute disease."]
    w = CorpusWriter(tmp_path / "corpus", 3, 4, 4)
    index = pd.DataFrame({"image_index": [0, 1, 2], "image_id": ["i0", "i1", "i2"], "patient_id": ["p0", "p0", "p1"],
                          "study_id": ["s0", "s1", "s2"], "view": "PA", "split": "test", "report": reports})
    w.finalize(index, {"source": "test"})
    pred = _csv(tmp_path / "pred.csv", ["i0", "i1", "i2"], ["Mild cardiomegaly.", "Lungs are clear.", "x"])
    res = evaluate_generation(pred, tmp_path / "corpus", n_bootstrap=20, meteor=False, labeler=labeler)
    assert res.ref_sections == "findings" and res.resampling_unit == "patient"
    assert res.per_report["reference"].tolist() == ["Mild cardiomegaly.", "Lungs are clear."]
    assert res.excluded_empty_references == ["i2"] and res.metrics["bleu1"] == pytest.approx(1.0)
    with pytest.raises(DataError, match="empty under section policy"):
        evaluate_generation(pred, tmp_path / "corpus", n_bootstrap=0, meteor=False, empty_references="error")


def test_cli_end_to_end(tmp_path, capsys):
    from radpair_train.cli import main

    pred = _csv(tmp_path / "pred.csv", ["a", "b", "c"], GEN)
    other = _csv(tmp_path / "other.csv", ["a", "b", "c"], REF)
    ref = _csv(tmp_path / "ref.csv", ["a", "b", "c"], REF)
    out = tmp_path / "eval"
    assert main(["evaluate", "generation", "--pred", str(pred), "--ref", str(ref), "--compare", str(other),
                 "--out", str(out), "--bootstrap", "100", "--seed", "1", "--no-meteor", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| BLEU-4 |" in text and "Paired differences" in text and "not computed: METEOR not requested" in text
    data = json.loads((out / "generation_metrics.json").read_text())
    diffs = {d["metric"]: d for d in data["compare"]["differences"]}
    assert diffs["bleu1"]["diff"] < 0 and diffs["bleu1"]["b"] == pytest.approx(1.0)
    assert data["command"].startswith("radpair")
    bad = _csv(tmp_path / "bad.csv", ["a", "q"], ["x", "y"])
    assert main(["evaluate", "generation", "--pred", str(bad), "--ref", str(ref), "--no-meteor",
                 "--no-progress"]) == 2
    assert "ref.csv" in capsys.readouterr().err


# ---- real reports --------------------------------------------------------------------------------
def test_iu_xray_impression_vs_findings(tmp_path, monkeypatch):
    if not (IU_DIR / "indiana_reports.csv").is_file() or not (IU_DIR / "r2gen_split.csv").is_file():
        pytest.skip(f"IU X-ray reports not found under {IU_DIR}")
    monkeypatch.chdir(tmp_path)  # anything written by mistake lands in tmp, never in the repo
    res = iu_xray_sanity(IU_DIR, split="test", n_bootstrap=20, meteor=False)
    assert 300 < res.n_reports <= 590
    m = res.metrics
    assert 0 < m["bleu4"] < 0.5 and 0 < m["bleu1"] < 1 and 0 < m["rougeL"] < 1 and m["cider"] >= 0
    for name in rm.ce_metric_names():
        assert np.isnan(m[name]) or 0 <= m[name] <= 1, name
    assert list(tmp_path.iterdir()) == []

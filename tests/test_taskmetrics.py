"""Tests for the metric kernels (radpair.evaluation.scores) and task scoring (taskmetrics)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from radpair.errors import DataError
from radpair.evaluation.metrics import ResamplingUnit, SkipReason, evaluate_classification
from radpair.evaluation.paired import BootstrapDraws
from radpair.evaluation.scores import (
    average_precision,
    binary_decision_metrics,
    expected_calibration_error,
    macro_f1,
    rank,
    ranked_binary_metrics,
    reliability_curve,
    roc_auc,
)
from radpair.evaluation.taskmetrics import (
    FITTED,
    TaskMetrics,
    Thresholds,
    choose_thresholds,
    ordinal_cut_names,
    score_task,
)

# ---- a hand-computed ordinal example (K = 4) ---------------------------------------------------
# row: probabilities of levels 0..3          label  argmax
ORD_P = np.array(
    [
        [0.7, 0.2, 0.1, 0.0],  # 0      0
        [0.4, 0.3, 0.2, 0.1],  # 0      0
        [0.5, 0.3, 0.1, 0.1],  # 1      0  (wrong)
        [0.1, 0.6, 0.2, 0.1],  # 1      1
        [0.1, 0.2, 0.6, 0.1],  # 2      2
        [0.0, 0.7, 0.2, 0.1],  # 2      1  (wrong)
        [0.1, 0.1, 0.2, 0.6],  # 3      3
        [0.0, 0.1, 0.8, 0.1],  # 3      2  (wrong)
    ]
)
ORD_Y = np.array([0, 0, 1, 1, 2, 2, 3, 3])


def test_ordinal_dichotomised_aucs_and_macro_f1_by_hand():
    m = score_task("ordinal", ORD_Y, None, ORD_P, ["none", "mild", "moderate", "severe"])
    # cut 0|123, score p1+p2+p3: negatives (y=0) .3, .6; positives .5 .9 .9 1 .9 1.
    # vs .3 all 6 positives win, vs .6 all but .5 win (5): 11 / 12
    assert m.values["auc_0|123"] == pytest.approx(11 / 12)
    # cut 01|23, score p2+p3: negatives .1 .3 .2 .3; positives .7 .3 .8 .9.
    # .7 .8 .9 beat all 4 (12); .3 beats .1 and .2 and ties the two .3 (1 + 1 + .5 + .5): 15 / 16
    assert m.values["auc_01|23"] == pytest.approx(15 / 16)
    # cut 012|3, score p3: negatives 0 .1 .1 .1 .1 .1; positives .6 and .1.
    # .6 beats all 6; .1 beats 0 and ties five .1 (1 + 2.5): 9.5 / 12
    assert m.values["auc_012|3"] == pytest.approx(9.5 / 12)
    # ordinal macro AUC = mean of the dichotomised AUCs
    assert m.values["macro_auc"] == pytest.approx((11 / 12 + 15 / 16 + 9.5 / 12) / 3)
    assert m.primary == m.values["macro_auc"]
    # argmax 0 0 0 1 2 1 3 2 against 0 0 1 1 2 2 3 3:
    # class 0: TP 2 FP 1 FN 0 -> F1 4/5; class 1: TP 1 FP 1 FN 1 -> 1/2;
    # class 2: TP 1 FP 1 FN 1 -> 1/2;   class 3: TP 1 FP 0 FN 1 -> 2/3
    assert m.values["macro_f1"] == pytest.approx((0.8 + 0.5 + 0.5 + 2 / 3) / 4)
    assert m.values["accuracy"] == pytest.approx(5 / 8)
    assert m.per_class["none"]["precision"] == pytest.approx(2 / 3)
    assert m.per_class["none"]["recall"] == pytest.approx(1.0)
    assert m.per_class["severe"]["f1"] == pytest.approx(2 / 3)
    # one-vs-rest AUCs kept separately, and they are scikit-learn's
    ovr = [roc_auc_score(ORD_Y == k, ORD_P[:, k]) for k in range(4)]
    assert m.values["ovr_macro_auc"] == pytest.approx(np.mean(ovr))
    assert m.values["macro_f1"] == pytest.approx(f1_score(ORD_Y, ORD_P.argmax(1), average="macro"))


def test_ordinal_cut_names():
    assert ordinal_cut_names(4) == ["auc_0|123", "auc_01|23", "auc_012|3"]
    assert ordinal_cut_names(3) == ["auc_0|12", "auc_01|2"]


def test_multiclass_has_no_dichotomised_aucs_and_matches_sklearn():
    m = score_task("multiclass", ORD_Y, None, ORD_P)
    assert "auc_0|123" not in m.values and "ovr_macro_auc" not in m.values
    assert set(m.values) == {"macro_auc", "macro_ap", "macro_f1", "accuracy", "ece"}
    assert m.values["macro_auc"] == pytest.approx(np.mean([roc_auc_score(ORD_Y == k, ORD_P[:, k]) for k in range(4)]))
    assert m.values["macro_ap"] == pytest.approx(
        np.mean([average_precision_score(ORD_Y == k, ORD_P[:, k]) for k in range(4)])
    )
    with pytest.raises(DataError, match="argmax"):
        score_task("multiclass", ORD_Y, None, ORD_P, thresholds=[0.5] * 4)


# ---- kernels against scikit-learn -------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_ap_and_auc_equal_sklearn_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    n = 150
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n), 1)  # many ties
    w = rng.integers(0, 4, n)
    assert average_precision(s, y)[0] == pytest.approx(average_precision_score(y, s), rel=1e-12)
    assert average_precision(s, y, w)[0] == pytest.approx(average_precision_score(y, s, sample_weight=w), rel=1e-12)
    # integer weights = the duplicated sample
    dup = average_precision_score(np.repeat(y, w), np.repeat(s, w))
    assert average_precision(s, y, w)[0] == pytest.approx(dup, rel=1e-12)
    assert roc_auc(s, y)[0] == pytest.approx(roc_auc_score(y, s), rel=1e-12)
    assert roc_auc(s, y, w)[0] == pytest.approx(roc_auc_score(y, s, sample_weight=w), rel=1e-12)
    # many replicates at once give each row's own value
    W = rng.integers(0, 3, (5, n))
    many = average_precision(s, y, W)
    assert many == pytest.approx([average_precision_score(y, s, sample_weight=wb) for wb in W], rel=1e-12)


def test_kernels_are_nan_without_positives():
    s = np.array([0.1, 0.5, 0.9])
    assert np.isnan(roc_auc(s, [0, 0, 0])[0]) and np.isnan(average_precision(s, [0, 0, 0])[0])
    # a replicate whose weights drop the only positive
    out = roc_auc(s, [0, 1, 0], np.array([[1, 1, 1], [1, 0, 2]]))
    assert out[0] == pytest.approx(0.5) and np.isnan(out[1])


def test_thresholded_metrics_equal_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    s = np.round(rng.random(80), 2)
    w = rng.integers(0, 3, 80)
    d = s >= 0.4
    m = binary_decision_metrics(y, d, w)
    assert m["f1"][0] == pytest.approx(f1_score(y, d, sample_weight=w))
    fused = ranked_binary_metrics(rank(s, y), w, threshold=0.4, n_bins=10)
    for k in ("f1", "precision", "recall", "accuracy"):
        assert fused[k][0] == pytest.approx(m[k][0])
    assert fused["ece"][0] == pytest.approx(expected_calibration_error(s, y, w)[0])
    # multi-class macro-F1 over a fixed class set
    yk, pk = rng.integers(0, 3, 80), rng.integers(0, 3, 80)
    assert macro_f1(yk, pk, 3)[0] == pytest.approx(f1_score(yk, pk, average="macro"))


# ---- calibration ------------------------------------------------------------------------------
def test_ece_of_perfectly_calibrated_bins_is_zero_and_reliability_curve():
    # bin [0.2, 0.3): four images at 0.25, one positive; bin [0.7, 0.8): four at 0.75, three positive
    conf = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(conf, y)[0] == pytest.approx(0.0, abs=1e-12)
    curve = reliability_curve(conf, y)
    assert curve.edges.shape == (11,) and curve.count.shape == (10,)
    assert curve.count[2] == 4 and curve.count[7] == 4 and curve.count.sum() == 8
    assert curve.observed[2] == pytest.approx(0.25) and curve.mean_predicted[7] == pytest.approx(0.75)
    assert np.isnan(curve.observed[0])  # empty bins are NaN, not 0
    # overconfident: everything at 0.9, half positive -> gap 0.4
    assert expected_calibration_error(np.full(6, 0.9), [1, 0, 1, 0, 1, 0])[0] == pytest.approx(0.4)


def test_score_task_ece_and_reliability_per_class():
    conf = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    m = score_task("binary", y, None, conf, ["edema"])
    assert m.values["macro_ece"] == pytest.approx(0.0, abs=1e-12)
    assert m.reliability["edema"].count[7] == 4
    mc = score_task("multiclass", ORD_Y, None, ORD_P)
    assert set(mc.reliability) == {"top_class"} and mc.reliability["top_class"].count.sum() == 8


# ---- thresholds -------------------------------------------------------------------------------
def _f1(y, d):
    tp = np.sum(y & d)
    return 2 * tp / (np.sum(d) + np.sum(y))


def test_thresholds_maximise_validation_f1():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, (120, 3))
    p = np.clip(0.35 * y + rng.random((120, 3)) * 0.65, 0, 1).round(2)
    t = choose_thresholds("multilabel", y, np.ones_like(y, bool), p)
    assert isinstance(t, Thresholds) and t.source == [FITTED] * 3
    for c in range(3):
        best = max(_f1(y[:, c] == 1, p[:, c] >= v) for v in np.r_[np.unique(p[:, c]), 1.01])
        assert _f1(y[:, c] == 1, p[:, c] >= t.values[c]) == pytest.approx(best)
        assert t.values[c] not in set(p[:, c])  # a midpoint, not a validation score


def test_threshold_ties_take_the_middle_candidate():
    # ascending scores .1 .. .8, labels P N N P N N P P. F1 = 2 TP / (predicted + 4) is 2/3 at
    # "all positive" (t = 0), at t = .35 (TP 3 of 5) and at t = .65 (TP 2 of 2): the middle wins
    s = np.arange(1, 9) / 10
    y = np.array([1, 0, 0, 1, 0, 0, 1, 1])
    t = choose_thresholds("binary", y, None, s)
    assert t.values[0] == pytest.approx(0.35)


def test_threshold_fallback_is_recorded():
    y = np.array([[0, 1], [0, 0], [0, 1], [0, 0]])
    p = np.array([[0.1, 0.8], [0.2, 0.3], [0.7, 0.9], [0.4, 0.2]])
    t = choose_thresholds("multilabel", y, None, p)
    assert t.values[0] == 0.5 and "no positive" in t.source[0]
    assert t.source[1] == FITTED and t.n_fallback == 1
    assert np.asarray(t).shape == (2,)
    assert choose_thresholds("ordinal", ORD_Y, None, ORD_P) is None


def test_thresholded_metrics_only_with_thresholds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (40, 2))
    p = rng.random((40, 2))
    plain = score_task("multilabel", y, None, p)
    assert "macro_f1" not in plain.values and "f1" not in plain.per_class["class_0"]
    with_t = score_task("multilabel", y, None, p, thresholds=np.array([0.5, 0.5]))
    assert {"macro_f1", "macro_precision", "macro_recall", "macro_accuracy"} <= set(with_t.values)
    d = p[:, 0] >= 0.5
    assert with_t.per_class["class_0"]["f1"] == pytest.approx(f1_score(y[:, 0], d))


# ---- masks, skipped classes, discarded replicates ---------------------------------------------
def test_masked_and_unscorable_classes():
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 1, 1]])
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 1]], bool)  # class 1's only positive masked
    p = np.array([[0.9, 0.1, 0.5], [0.2, 0.2, 0.5], [0.6, 0.3, 0.5], [0.4, 0.9, 0.5]])
    m = score_task("multilabel", y, mask, p, ["a", "b", "c"])
    assert m.skipped == {"b": SkipReason.NO_POSITIVES, "c": SkipReason.NO_NEGATIVES}
    assert m.values["macro_auc"] == pytest.approx(1.0)  # only class a: 0.9, 0.6 above 0.2, 0.4
    assert m.n_positive == {"a": 2, "b": 0, "c": 4} and m.n_labelled["b"] == 3


def test_multiclass_class_absent_from_test_set_is_skipped():
    keep = ORD_Y != 3  # no "severe" image left
    p = ORD_P[keep]
    m = score_task("multiclass", ORD_Y[keep], None, p, ["none", "mild", "moderate", "severe"])
    assert m.skipped == {"severe": SkipReason.NO_POSITIVES}
    assert set(m.per_class) == {"none", "mild", "moderate"}
    ovr = [roc_auc_score(ORD_Y[keep] == k, p[:, k]) for k in range(3)]
    assert m.values["macro_auc"] == pytest.approx(np.mean(ovr))
    # ordinal: the cut 012|3 has no positive; it stays a (NaN) column and the macro uses the others
    o = score_task("ordinal", ORD_Y[keep], None, p)
    assert np.isnan(o.values["auc_012|3"]) and o.skipped["auc_012|3"] is SkipReason.NO_POSITIVES
    assert o.values["macro_auc"] == pytest.approx((o.values["auc_0|123"] + o.values["auc_01|23"]) / 2)


def test_replicate_missing_a_class_is_discarded_for_the_macro():
    # class 0 positives in images 0, 2; class 1's only positive is image 3
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 1], [0, 0], [1, 0]])
    p = np.array([[0.9, 0.2], [0.1, 0.3], [0.7, 0.1], [0.4, 0.8], [0.3, 0.4], [0.2, 0.6]])
    counts = np.array(
        [
            [1, 1, 1, 1, 1, 1],  # the sample itself
            [2, 1, 0, 1, 1, 1],  # image 3 kept: valid
            [1, 2, 1, 0, 1, 1],  # image 3 dropped: class 1 has no positive -> discarded
        ]
    )
    draws = BootstrapDraws(counts=counts, codes=np.arange(6), seed=0, unit=ResamplingUnit.IMAGE)
    m = score_task("multilabel", y, None, p, draws=draws)
    assert m.n_bootstrap == 3 and m.n_bootstrap_valid == 2
    rep = m.replicates["macro_auc"]
    assert np.isnan(rep[2])  # not the AUC of class 0 alone
    assert rep[0] == pytest.approx(m.values["macro_auc"])
    w = counts[1]
    expected = np.mean([roc_auc_score(y[:, c], p[:, c], sample_weight=w) for c in range(2)])
    assert rep[1] == pytest.approx(expected)
    # the discard applies to every metric of the result, per-class ones included
    assert np.isnan(m.replicates["macro_ap"][2]) and np.isnan(m.replicates["macro_ece"][2])
    # intervals come from the two valid replicates only, per-class ones included
    assert m.ci["macro_auc"] == pytest.approx(tuple(np.quantile(rep[:2], [0.025, 0.975])))
    class0 = [roc_auc_score(y[:, 0], p[:, 0], sample_weight=counts[b]) for b in range(2)]
    assert m.per_class_ci["class_0"]["auc"] == pytest.approx(tuple(np.quantile(class0, [0.025, 0.975])))


def test_same_draws_reproduce_the_existing_patient_bootstrap():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, (120, 2))
    p = rng.random((120, 2))
    groups = rng.integers(0, 50, 120)
    old = evaluate_classification(y, p, groups=groups, n_bootstrap=100, seed=4)
    new = score_task("multilabel", y, None, p, draws=BootstrapDraws.draw(groups, 100, seed=4))
    # no replicate loses a class here, so the discard rule changes nothing and the CIs agree
    assert new.n_bootstrap_valid == 100
    assert new.ci["macro_auc"] == pytest.approx((old.ci_low, old.ci_high))
    assert new.per_class["class_0"]["auc"] == pytest.approx(old.per_class["class_0"])
    assert new.n_groups == old.n_groups and new.resampling_unit is ResamplingUnit.PATIENT


# ---- subgroups --------------------------------------------------------------------------------
def test_subgroups_split_rows_and_share_draws():
    rng = np.random.default_rng(5)
    n = 60
    y = rng.integers(0, 2, (n, 2))
    p = np.clip(0.4 * y + 0.6 * rng.random((n, 2)), 0, 1)
    view = np.array(["PA", "AP", "LAT"] * 20, dtype=object)
    view[5] = None  # missing: belongs to no subgroup
    sex = np.array(["F"] * 58 + ["M"] * 2)
    y[58:, 0] = 1
    y[58:, 1] = 0
    draws = BootstrapDraws.draw(np.arange(n) // 2, 50, seed=1)
    m = score_task("multilabel", y, None, p, draws=draws, subgroups={"view": view, "sex": sex})
    assert sorted(m.subgroups["view"]) == ["AP", "LAT", "PA"]
    pa_rows = np.flatnonzero(view == "PA")
    pa = m.subgroups["view"]["PA"]
    assert pa.n == pa_rows.size == 20
    alone = score_task("multilabel", y[pa_rows], None, p[pa_rows], draws=draws.restrict(pa_rows))
    assert pa.values == alone.values and pa.ci == alone.ci
    assert pa.n_positive["class_0"] == int(y[pa_rows, 0].sum())
    assert m.subgroups["view"]["LAT"].n == 19  # one LAT image has no view
    # the two "M" images: class 0 all positive, class 1 all negative -> nothing to score
    assert "M" not in m.subgroups["sex"] and "no class can be scored" in m.subgroups_skipped["sex"]["M"]
    assert "F" in m.subgroups["sex"]


# ---- serialisation and validation -------------------------------------------------------------
def test_to_dict_from_dict_round_trip_is_json_safe():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (40, 3))
    y[:, 2] = 0  # a skipped class
    p = rng.random((40, 3))
    p[:, 0] *= 0.5  # upper calibration bins of class 0 are empty (NaN)
    t = choose_thresholds("multilabel", y, None, p)
    draws = BootstrapDraws.draw(np.arange(40) // 2, 30, seed=0)
    m = score_task("multilabel", y, None, p, thresholds=t, draws=draws, subgroups={"sex": ["F", "M"] * 20})
    d = m.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = TaskMetrics.from_dict(json.loads(text))
    assert back.to_dict() == d
    assert back.replicates == {} and "replicates" not in d
    assert back.thresholds.source == t.source and back.skipped == {"class_2": SkipReason.NO_POSITIVES}
    assert np.isnan(back.reliability["class_0"].observed).any()  # NaN survived as null
    mo = score_task("ordinal", ORD_Y, None, ORD_P, draws=BootstrapDraws.draw(None, 20, 0, n_images=8))
    json.dumps(mo.to_dict(), allow_nan=False)
    assert TaskMetrics.from_dict(mo.to_dict()).to_dict() == mo.to_dict()


def test_input_validation():
    with pytest.raises(DataError, match="task kind"):
        score_task("regression", [0, 1], None, [0.1, 0.2])
    with pytest.raises(DataError, match="one label column"):
        score_task("binary", np.zeros((3, 2)), None, np.zeros((3, 2)))
    with pytest.raises(DataError, match="sum to 1"):
        score_task("multiclass", [0, 1], None, [[0.5, 0.6], [0.2, 0.8]])
    with pytest.raises(DataError, match="0 or 1"):
        score_task("multilabel", [[2], [0]], None, [[0.1], [0.2]])
    with pytest.raises(DataError, match="draws cover"):
        score_task("binary", [0, 1], None, [0.1, 0.2], draws=BootstrapDraws.draw(None, 5, 0, n_images=3))
    # masked entries may hold anything (e.g. NaN labels and probabilities)
    m = score_task("multilabel", [[1, np.nan], [0, 1], [1, 0]], [[1, 0], [1, 1], [1, 1]],
                   [[0.9, np.nan], [0.1, 0.7], [0.8, 0.2]])
    assert m.values["macro_auc"] == pytest.approx(1.0)

"""Tests for shared bootstrap draws and paired differences (radpair.evaluation.paired)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radpair.errors import DataError
from radpair.evaluation.metrics import ResamplingUnit
from radpair.evaluation.paired import BootstrapDraws, PairedDifference, paired_difference, paired_table
from radpair.evaluation.taskmetrics import score_task

N_IMAGES = 120
GROUPS = np.arange(N_IMAGES) // 3  # 40 patients, 3 images each


def _task(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (N_IMAGES, 3))
    return y, rng


def _probs(y, rng, signal):
    return np.clip(signal * y + (1 - signal) * rng.random(y.shape), 0, 1)


# ---- draws ------------------------------------------------------------------------------------
def test_draws_are_patient_level_reproducible_and_leave_global_rng_alone():
    state = np.random.get_state()
    d = BootstrapDraws.draw(GROUPS, 50, seed=3)
    assert np.random.get_state()[1].tolist() == state[1].tolist()
    assert d.counts.shape == (50, 40) and d.counts.dtype == np.int32
    assert (d.counts.sum(axis=1) == 40).all()  # each replicate draws 40 patients
    w = d.weights()
    assert w.shape == (50, N_IMAGES)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 1] == w[:, 2]).all()  # a patient's images move together
    assert d.weights([4, 5], start=10, stop=20).shape == (10, 2)
    again = BootstrapDraws.draw(GROUPS, 50, seed=3)
    assert (again.counts == d.counts).all() and again.fingerprint == d.fingerprint
    assert BootstrapDraws.draw(GROUPS, 50, seed=4).fingerprint != d.fingerprint
    assert d.unit is ResamplingUnit.PATIENT
    img = BootstrapDraws.draw(None, 10, seed=0, n_images=7)
    assert img.unit is ResamplingUnit.IMAGE and img.counts.shape == (10, 7)
    with pytest.raises(ValueError):
        d.counts[0, 0] = 5  # frozen: arrays are read-only
    sub = d.restrict([0, 1, 2, 9])
    assert (sub.weights() == d.weights([0, 1, 2, 9])).all()


# ---- paired differences -----------------------------------------------------------------------
def test_arm_against_itself_is_exactly_zero():
    y, rng = _task()
    draws = BootstrapDraws.draw(GROUPS, 100, seed=0)
    arm = [score_task("multilabel", y, None, _probs(y, rng, 0.3), draws=draws) for _ in range(3)]
    d = paired_difference(arm, arm)
    assert d.mean_diff == 0.0 and d.ci_low == 0.0 and d.ci_high == 0.0 and d.p_value == 1.0
    assert d.t_ci_low == 0.0 and d.t_ci_high == 0.0
    for r in d.per_repeat:
        assert r.diff == 0.0 and r.ci_low == r.ci_high == 0.0 and r.p_value == 1.0
    assert not d.significant


def test_clearly_better_arm_is_detected():
    y, rng = _task(1)
    draws = BootstrapDraws.draw(GROUPS, 200, seed=0)
    good = [score_task("multilabel", y, None, _probs(y, rng, 0.5), draws=draws) for _ in range(3)]
    bad = [score_task("multilabel", y, None, _probs(y, rng, 0.02), draws=draws) for _ in range(3)]
    d = paired_difference(good, bad, arm_a="good", arm_b="bad")
    assert d.mean_diff > 0.2 and d.ci_low > 0 and d.significant
    assert d.p_value == pytest.approx(1 / (d.n_valid + 1))  # every replicate favours "good": floor
    assert d.n_repeats == 3 and d.n_bootstrap == 200
    assert d.t_ci_low > 0
    for r in d.per_repeat:
        assert r.ci_low > 0 and r.p_value < 0.01
    reverse = paired_difference(bad, good)
    assert reverse.mean_diff == pytest.approx(-d.mean_diff) and reverse.ci_high < 0
    text = json.dumps(d.to_dict(), allow_nan=False)
    assert PairedDifference.from_dict(json.loads(text)).to_dict() == d.to_dict()


def test_per_repeat_pairing_uses_identical_draws():
    y, rng = _task(2)
    draws = BootstrapDraws.draw(GROUPS, 80, seed=0)
    a = [score_task("multilabel", y, None, _probs(y, rng, 0.3), draws=draws) for _ in range(2)]
    b = [score_task("multilabel", y, None, _probs(y, rng, 0.2), draws=draws) for _ in range(2)]
    d = paired_difference(a, b)
    for r in range(2):
        diffs = a[r].replicates["macro_auc"] - b[r].replicates["macro_auc"]
        lo, hi = np.quantile(diffs[np.isfinite(diffs)], [0.025, 0.975])
        assert (d.per_repeat[r].ci_low, d.per_repeat[r].ci_high) == pytest.approx((lo, hi))
        assert d.per_repeat[r].diff == pytest.approx(a[r].values["macro_auc"] - b[r].values["macro_auc"])
    # an arm scored with other patient draws cannot be paired
    other = BootstrapDraws.draw(GROUPS, 80, seed=1)
    c = [score_task("multilabel", y, None, _probs(y, rng, 0.2), draws=other) for _ in range(2)]
    with pytest.raises(DataError, match="same bootstrap draws"):
        paired_difference(a, c)
    with pytest.raises(DataError, match="same repeats"):
        paired_difference(a, b[:1])
    # the two-level bootstrap is reproducible
    assert paired_difference(a, b).to_dict() == d.to_dict()


def test_replicate_discarded_in_either_arm_is_discarded_for_the_pair():
    y, rng = _task(3)
    draws = BootstrapDraws.draw(GROUPS, 60, seed=0)
    a = score_task("multilabel", y, None, _probs(y, rng, 0.3), draws=draws)
    b = score_task("multilabel", y, None, _probs(y, rng, 0.3), draws=draws)
    a.replicates["macro_auc"] = a.replicates["macro_auc"].copy()
    a.replicates["macro_auc"][:5] = np.nan
    d = paired_difference([a], [b])
    assert d.per_repeat[0].n_valid == 55 and d.n_valid == 55
    assert np.isnan(d.t_ci_low)  # one repeat: no t-interval


def test_paired_table_covers_every_unordered_pair_in_order():
    y, rng = _task(4)
    draws = BootstrapDraws.draw(GROUPS, 40, seed=0)
    results = {
        name: [score_task("multilabel", y, None, _probs(y, rng, s), draws=draws) for _ in range(2)]
        for name, s in [("ours", 0.4), ("imagenet", 0.2), ("random", 0.0)]
    }
    table = paired_table(results, "macro_auc")
    assert [(d.arm_a, d.arm_b) for d in table] == [("ours", "imagenet"), ("ours", "random"), ("imagenet", "random")]
    assert all(d.metric == "macro_auc" for d in table)
    # results without replicates (read back from JSON) are refused with a reason
    from radpair.evaluation.taskmetrics import TaskMetrics

    flat = {k: [TaskMetrics.from_dict(m.to_dict()) for m in v] for k, v in results.items()}
    with pytest.raises(DataError, match="replicates"):
        paired_table(flat)

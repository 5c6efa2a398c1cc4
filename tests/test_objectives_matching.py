"""TIMNet: balanced pairs that never share report text, match features, loss, metrics."""

import math

import numpy as np
import pytest
import torch

from radpair.objectives import match_features, matching_loss, matching_metrics, matching_pairs


def _check_balanced(pairs, codes):
    codes = np.asarray(codes)
    n = len(codes)
    assert len(pairs) == 2 * n and pairs.target.sum() == n  # half true, half false
    true, false = pairs.target == 1, pairs.target == 0
    assert np.array_equal(pairs.image_index[true], np.arange(n))
    assert np.array_equal(pairs.text_index[true], np.arange(n))
    assert np.array_equal(pairs.image_index[false], np.arange(n))  # every image once in each class
    assert not np.any(codes[pairs.text_index[false]] == codes[pairs.image_index[false]])  # never the same text


def test_balanced_pairs_never_share_report_text():
    # rows 0, 3 and 5 carry the same normalised report ("no acute cardiopulmonary process")
    codes = ["normal", "effusion", "edema", "normal", "cardiomegaly", "normal"]
    for epoch in range(10):
        pairs = matching_pairs(codes, seed=3, epoch=epoch)
        _check_balanced(pairs, codes)
        # feasible as a permutation: every text also appears exactly once as a false partner
        assert sorted(pairs.text_index[pairs.target == 0].tolist()) == list(range(6))


def test_pairs_are_a_pure_function_of_seed_epoch_and_batch():
    codes = list(range(20))
    a = matching_pairs(codes, 1, 2, batch_index=3)
    b = matching_pairs(codes, 1, 2, batch_index=3)
    assert all(np.array_equal(x, y) for x, y in ((a.text_index, b.text_index), (a.target, b.target)))
    assert not np.array_equal(a.text_index, matching_pairs(codes, 1, 3, batch_index=3).text_index)
    assert not np.array_equal(a.text_index, matching_pairs(codes, 1, 2, batch_index=4).text_index)


def test_majority_text_falls_back_to_independent_partners_and_all_same_text_raises():
    codes = [7, 7, 7, 7, 1, 2]  # one text in 4 of 6 rows: no valid permutation exists
    for epoch in range(5):
        _check_balanced(matching_pairs(codes, 0, epoch), codes)
    with pytest.raises(ValueError, match="no false partner for row 0: all 3 rows of this batch share its report text"):
        matching_pairs(["same", "same", "same"], 0, 0)


def test_match_features_and_loss_by_hand():
    assert match_features(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])).tolist() == [[2.0, 3.0]]
    image = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    text = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    pairs = matching_pairs([0, 1], 0, 0)  # two rows, distinct texts: the false partner is the other row
    assert pairs.text_index.tolist() == [0, 1, 1, 0]
    # classifier logit = 1 - sum|t - i|:
    #   true (0,0): |0| -> 1, target 1: softplus(-1)     true (1,1): |(0,-1)| = 1 -> 0: ln 2
    #   false (i0,t1): |(1,0)| = 1 -> 0, target 0: ln 2  false (i1,t0): |(1,1)| = 2 -> -1: softplus(-1)
    out = matching_loss(image, text, pairs, lambda f: 1 - f.sum(-1))
    sp = math.log1p(math.exp(-1))
    assert out.loss.item() == pytest.approx((2 * sp + 2 * math.log(2)) / 4)
    assert out.target.tolist() == [1, 1, 0, 0]
    # two-logit classifier [0, logit] gives the same softmax cross-entropy
    two = matching_loss(image, text, pairs, lambda f: torch.stack([torch.zeros(len(f)), 1 - f.sum(-1)], -1))
    assert two.loss.item() == pytest.approx(out.loss.item())
    with pytest.raises(ValueError, match=r"\[P, 2\] or \[P\] logits"):
        matching_loss(image, text, pairs, lambda f: torch.zeros(len(f), 3))


def test_matching_metrics_by_hand():
    target = [1, 1, 0, 0]
    score = [0.9, 0.4, 0.6, 0.1]
    # threshold .5 -> predictions [1, 0, 1, 0]: TP=1 FN=1 FP=1 TN=1
    # AUC: positive above negative in 3 of 4 pairs (0.4 < 0.6); AP: (1 + 2/3) / 2
    m = matching_metrics(target, score)
    assert (m.accuracy, m.precision, m.recall, m.f1) == pytest.approx((0.5, 0.5, 0.5, 0.5))
    assert m.auc == pytest.approx(0.75) and m.average_precision == pytest.approx(5 / 6) and m.n == 4
    assert set(m.to_dict()) == {"accuracy", "auc", "f1", "precision", "recall", "average_precision", "n"}
    assert math.isnan(matching_metrics([1, 1], [0.2, 0.7]).auc)
    with pytest.raises(ValueError, match="must be 0/1"):
        matching_metrics([0, 2], [0.1, 0.2])

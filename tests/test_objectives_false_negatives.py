"""False-negative masks remove exactly the intended negatives; InfoNCE masks or softens them."""

import math

import pytest
import torch

from radpair.objectives import (
    RowCodes,
    bidirectional_info_nce,
    false_negative_mask,
    impostor_false_negatives,
    masked_info_nce,
    ranking_loss,
)

NAN = float("nan")
CODES = RowCodes(
    study=torch.tensor([0, 0, 1, 2]),  # rows 0, 1: PA + lateral of one study
    patient=torch.tensor([5, 5, 5, 6]),
    report=torch.tensor([9, 8, 9, 7]),  # rows 0 and 2: identical normalised text
    labels=torch.tensor([[1.0, 0.0], [1.0, 0.0], [NAN, 1.0], [NAN, 1.0]]),  # NaN (unknown) matches NaN
)


def pairs(mask):
    return {(i, j) for i, j in torch.nonzero(mask).tolist()}


def test_mask_flags_exactly_the_pairs_sharing_a_selected_code():
    assert pairs(false_negative_mask(CODES, ["study"])) == {(0, 1), (1, 0)}
    assert pairs(false_negative_mask(CODES, ["patient"])) == {(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)}
    assert pairs(false_negative_mask(CODES, ["report"])) == {(0, 2), (2, 0)}
    assert pairs(false_negative_mask(CODES, ["labels"])) == {(0, 1), (1, 0), (2, 3), (3, 2)}
    assert pairs(false_negative_mask(CODES, ["study", "report"])) == {(0, 1), (1, 0), (0, 2), (2, 0)}
    empty = false_negative_mask(CODES, [])
    assert empty.shape == (4, 4) and empty.dtype == torch.bool and not empty.any()
    # the diagonal is the positive, never a false negative
    assert not false_negative_mask(CODES, ["study", "patient", "report", "labels"]).diagonal().any()


def test_mask_errors_name_the_problem():
    with pytest.raises(ValueError, match="did you mean 'study'"):
        false_negative_mask(CODES, ["studdy"])
    with pytest.raises(ValueError, match="uses 'report' codes, but none were given"):
        false_negative_mask(RowCodes(study=torch.tensor([0, 1])), ["report"])
    with pytest.raises(ValueError, match="patient codes have 3 rows but the batch has 2"):
        false_negative_mask(RowCodes(study=torch.tensor([0, 1]), patient=torch.tensor([0, 1, 2])), ["study"])


# the 3x3 example of tests/test_objectives.py: sim[i][j] = <img_i, txt_j>
IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
TXT = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
SIM = [[1.0, 0.6, 0.0], [0.0, 0.8, 1.0], [0.6, 1.0, 0.8]]
TAU, LAM = 0.5, 0.75
MASK = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])  # rows 0, 1 share a study


def soft_ce(row, target, flagged, w):
    """Cross-entropy against weights 1 (target), w (flagged), 0 (others); w = 0 drops nothing."""
    logits = [s / TAU for s in row]
    lse = math.log(sum(math.exp(x) for x in logits))
    weights = [1.0 if k == target else (w if k in flagged else 0.0) for k in range(len(row))]
    z = sum(weights)
    return -sum(wk / z * (lk - lse) for wk, lk in zip(weights, logits))


def masked_ce(row, target, dropped):
    logits = [s / TAU for k, s in enumerate(row) if k not in dropped or k == target]
    keep_target = [k for k in range(len(row)) if k not in dropped or k == target].index(target)
    return -(logits[keep_target] - math.log(sum(math.exp(x) for x in logits)))


def test_masked_info_nce_drops_exactly_the_flagged_columns():
    # i2t: row 0 drops text 1, row 1 drops text 0; t2i: text 0 drops image 1, text 1 drops image 0
    col = [[SIM[j][i] for j in range(3)] for i in range(3)]
    i2t = (masked_ce(SIM[0], 0, {1}) + masked_ce(SIM[1], 1, {0}) + masked_ce(SIM[2], 2, set())) / 3
    t2i = (masked_ce(col[0], 0, {1}) + masked_ce(col[1], 1, {0}) + masked_ce(col[2], 2, set())) / 3
    out = masked_info_nce(IMG, TXT, TAU, LAM, false_negatives=MASK)
    assert out.image_to_text.item() == pytest.approx(i2t, rel=1e-5)
    assert out.text_to_image.item() == pytest.approx(t2i, rel=1e-5)
    assert out.loss.item() == pytest.approx(LAM * i2t + (1 - LAM) * t2i, rel=1e-5)
    # no mask (or an all-False one) is exactly ConVIRT's loss
    ref = bidirectional_info_nce(IMG, TXT, TAU, LAM).loss
    assert torch.allclose(masked_info_nce(IMG, TXT, TAU, LAM).loss, ref)
    assert torch.allclose(masked_info_nce(IMG, TXT, TAU, LAM, false_negatives=torch.zeros(3, 3, dtype=torch.bool)).loss, ref)


def test_when_every_negative_is_masked_nothing_is_left_to_contrast():
    # two rows of one study: each softmax keeps only its positive -> loss 0, no gradient at all
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    txt = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)  # deliberately mismatched
    mask = false_negative_mask(RowCodes(study=torch.tensor([4, 4])), ["study"])
    out = masked_info_nce(img, txt, TAU, LAM, false_negatives=mask)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-7) and torch.isfinite(out.logits).all()
    out.loss.backward()
    assert img.grad.abs().sum() == 0 and txt.grad.abs().sum() == 0


def test_soften_mode_treats_flagged_columns_as_partial_positives():
    w = 0.5
    col = [[SIM[j][i] for j in range(3)] for i in range(3)]
    i2t = (soft_ce(SIM[0], 0, {1}, w) + soft_ce(SIM[1], 1, {0}, w) + soft_ce(SIM[2], 2, set(), w)) / 3
    t2i = (soft_ce(col[0], 0, {1}, w) + soft_ce(col[1], 1, {0}, w) + soft_ce(col[2], 2, set(), w)) / 3
    out = masked_info_nce(IMG, TXT, TAU, LAM, false_negatives=MASK, mode="soften", soft_weight=w)
    assert out.loss.item() == pytest.approx(LAM * i2t + (1 - LAM) * t2i, rel=1e-5)
    zero = masked_info_nce(IMG, TXT, TAU, LAM, false_negatives=MASK, mode="soften", soft_weight=0.0)
    assert torch.allclose(zero.loss, bidirectional_info_nce(IMG, TXT, TAU, LAM).loss)
    with pytest.raises(ValueError, match="did you mean 'mask'"):
        masked_info_nce(IMG, TXT, false_negatives=MASK, mode="masks")
    with pytest.raises(ValueError, match=r"false_negatives must be \[3, 3\]"):
        masked_info_nce(IMG, TXT, false_negatives=MASK[:2])


def test_ranking_impostor_false_negatives_are_removed():
    mask = false_negative_mask(CODES, ["study"])
    impostor = torch.tensor([1, 2, 3, 0])  # row 0's impostor is row 1: same study
    fn = impostor_false_negatives(mask, impostor)
    assert fn.tolist() == [True, False, False, False]
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]])
    txt = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.5]])
    full = ranking_loss(img, txt, impostor)
    masked = ranking_loss(img, txt, impostor, false_negative=fn)
    row0 = (full.impostor_text_term[0] + full.impostor_image_term[0]).item()
    assert row0 > 0  # the example does have a false-negative hinge to remove
    assert masked.loss.item() == pytest.approx(full.loss.item() - row0 / 4)

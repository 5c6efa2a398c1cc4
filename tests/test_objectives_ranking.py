"""Chauhan et al. Eq. (1)-(3) pieces on tiny hand-worked examples."""

import math

import numpy as np
import pytest
import torch

from radpair.objectives import (
    direct_similarity_loss,
    impostor_permutation,
    labelled_cross_entropy,
    ranking_loss,
    ranking_margin,
)
from radpair.objectives.ranking import _shift_permutation, constrained_permutation

# Three pairs in 2-D and the impostor map s = [1, 2, 0].
IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
TXT = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.0]])
S = torch.tensor([1, 2, 0])
# dot products D[i][j] = <I_i, R_j>:
#   I0: R0=1  R1=0  R2=0.5
#   I1: R0=0  R1=2  R2=0
#   I2: R0=1  R1=2  R2=0.5          positives: D00=1, D11=2, D22=0.5


def test_margin_rule_labelled_and_unlabelled_mix():
    labels = torch.tensor([0, 3, 1, -1])  # row 3 has no label (negative = unlabelled)
    s = torch.tensor([1, 0, 3, 2])
    # row0: both labelled |0-3| = 3; row1: |3-0| = 3; row2: impostor unlabelled -> 0.5; row3: unlabelled -> 0.5
    got = ranking_margin(labels, None, labels[s], None)
    assert got.tolist() == [3.0, 3.0, 0.5, 0.5]
    # an explicit mask wins over the sign convention; same grade gives margin 0, as in the paper
    labels = torch.tensor([2, 2, 1, 0])
    labelled = torch.tensor([True, True, True, False])
    got = ranking_margin(labels, labelled, labels[s], labelled[s], default_margin=0.25)
    assert got.tolist() == [0.0, 0.0, 0.25, 0.25]


def test_ranking_dot_unlabelled_uses_constant_margin():
    # eta = 0.5 everywhere
    # row0 (s=1): text  max(0, .5 - 1 + D01=0) = 0     image max(0, .5 - 1 + D10=0) = 0
    # row1 (s=2): text  max(0, .5 - 2 + D12=0) = 0     image max(0, .5 - 2 + D21=2) = 0.5
    # row2 (s=0): text  max(0, .5 - .5 + D20=1) = 1    image max(0, .5 - .5 + D02=.5) = 0.5
    out = ranking_loss(IMG, TXT, S, similarity="dot")
    assert out.impostor_text_term.tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert out.impostor_image_term.tolist() == pytest.approx([0.0, 0.5, 0.5])
    assert out.loss.item() == pytest.approx(2.0 / 3.0)


def test_ranking_dot_with_labels_and_mixed_labels():
    # all labelled y = [0, 2, 1]: eta = |y_j - y_s(j)| = [|0-2|, |2-1|, |1-0|] = [2, 1, 1]
    # row0: text 2-1+0 = 1, image 2-1+0 = 1                 -> 2
    # row1: text 1-2+0 < 0 -> 0, image 1-2+2 = 1            -> 1
    # row2: text 1-.5+1 = 1.5, image 1-.5+.5 = 1            -> 2.5      mean 5.5/3
    out = ranking_loss(IMG, TXT, S, labels=torch.tensor([0, 2, 1]), similarity="dot")
    assert out.margin.tolist() == [2.0, 1.0, 1.0]
    assert out.loss.item() == pytest.approx(5.5 / 3)
    # mixed y = [0, 2, unlabelled]: eta = [2 (both labelled), 0.5 (s(1)=2 unlabelled), 0.5]
    # row0 -> 2; row1: image .5-2+2 = .5 -> .5; row2 -> 1.5 (as unlabelled)    mean 4/3
    out = ranking_loss(IMG, TXT, S, labels=torch.tensor([0, 2, 5]), labelled=torch.tensor([True, True, False]))
    assert out.margin.tolist() == [2.0, 0.5, 0.5]
    assert out.loss.item() == pytest.approx(4.0 / 3)


def test_ranking_cosine_and_l2():
    # cosine: I = (1,0), (0,1), (1,1)/r2;  R directions (1,0), (0,1), (1,0);  c = 1/sqrt(2)
    # row0: text .5-1+0 -> 0, image .5-1+cos(I1,R0)=0 -> 0
    # row1: text .5-1+cos(I1,R2)=0 -> 0, image .5-1+cos(I2,R1)=c -> c-.5
    # row2: text .5-c+cos(I2,R0)=c -> .5, image .5-c+cos(I0,R2)=1 -> 1.5-c     sum 1.5, mean .5
    assert ranking_loss(IMG, TXT, S, similarity="cosine").loss.item() == pytest.approx(0.5)
    # l2: Sim = -||I - R||; d(I0,R0)=0, d(I1,R1)=1, d(I2,R2)=sqrt(1.25)
    # row0: text .5-0-d(I0,R1)=.5-sqrt5 -> 0; image .5-0-d(I1,R0)=.5-sqrt2 -> 0
    # row1: text .5+1-d(I1,R2)=1.5-sqrt(1.25); image .5+1-d(I2,R1)=1.5-sqrt2
    # row2: text .5+sqrt(1.25)-d(I2,R0)=.5+sqrt(1.25)-1; image .5+sqrt(1.25)-d(I0,R2)=.5+sqrt(1.25)-.5
    r = math.sqrt(1.25)
    want = (1.5 - r + 1.5 - math.sqrt(2) + (r - 0.5) + r) / 3
    assert ranking_loss(IMG, TXT, S, similarity="l2").loss.item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="did you mean 'cosine'"):
        ranking_loss(IMG, TXT, S, similarity="cosin")


def test_false_negative_impostors_are_masked_or_softened():
    fn = torch.tensor([False, False, True])  # row 2's impostor shares e.g. its study
    # dot, eta .5: row terms [0, .5, 1.5]; weight 0 drops row 2, weight .5 halves it; mean over all 3 rows
    assert ranking_loss(IMG, TXT, S, false_negative=fn).loss.item() == pytest.approx(0.5 / 3)
    assert ranking_loss(IMG, TXT, S, false_negative=fn, false_negative_weight=0.5).loss.item() == pytest.approx(1.25 / 3)


def test_ranking_gradient_only_flows_through_active_hinges():
    img, txt = IMG.clone().requires_grad_(), TXT.clone().requires_grad_()
    ranking_loss(img, txt, S).loss.backward()
    # row0's terms are inactive and I0 appears in row2's image term as the impostor image:
    # d/dI0 of (1/3)*max(.5 - D22 + <I0, R2>) = R2/3
    assert img.grad[0].tolist() == pytest.approx([0.5 / 3, 0.0])
    # I2 appears in row1 image term (+R1/3) and row2 (text: -R2 + R0; image: -R2) / 3
    assert img.grad[2].tolist() == pytest.approx([(1 - 1.0) / 3, 2 / 3])


def test_direct_variants():
    # dot: -(1 + 2 + .5)/3; cosine: -(1 + 1 + 1/sqrt2)/3; l2: (0 + 1 + sqrt(1.25))/3
    assert direct_similarity_loss(IMG, TXT, "dot").loss.item() == pytest.approx(-3.5 / 3)
    assert direct_similarity_loss(IMG, TXT, "cosine").loss.item() == pytest.approx(-(2 + 2 ** -0.5) / 3)
    assert direct_similarity_loss(IMG, TXT, "l2").loss.item() == pytest.approx((1 + math.sqrt(1.25)) / 3)


def test_impostor_permutation_is_a_pure_function_of_seed_epoch_n():
    state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    a = impostor_permutation(7, 3, 50)
    assert np.array_equal(a, impostor_permutation(7, 3, 50))
    assert np.array_equal(a, np.random.default_rng([7, 3]).permutation(50))
    assert sorted(a.tolist()) == list(range(50))
    assert not np.array_equal(a, impostor_permutation(7, 4, 50))  # a fresh map every epoch
    assert not np.array_equal(a, impostor_permutation(8, 3, 50))
    # no global RNG touched
    assert np.array_equal(state[1], np.random.get_state()[1])
    assert torch.equal(torch_state, torch.random.get_rng_state())


def test_impostor_permutation_option_avoids_fixed_points_and_same_study():
    studies = np.repeat(np.array(["s0", "s1", "s2", "s3", "s4", "s5"]), 2)  # PA + lateral per study
    for epoch in range(20):
        plain = impostor_permutation(1, epoch, 12, avoid_same_study=True)
        assert sorted(plain.tolist()) == list(range(12)) and not np.any(plain == np.arange(12))
        s = impostor_permutation(1, epoch, 12, avoid_same_study=True, study_codes=studies)
        assert sorted(s.tolist()) == list(range(12))
        assert not np.any(studies[s] == studies)
        assert np.array_equal(s, impostor_permutation(1, epoch, 12, avoid_same_study=True, study_codes=studies))
    with pytest.raises(ValueError, match="more than half"):
        impostor_permutation(0, 0, 4, avoid_same_study=True, study_codes=[1, 1, 1, 2])
    with pytest.raises(ValueError, match="more than half"):
        impostor_permutation(0, 0, 1, avoid_same_study=True)
    with pytest.raises(ValueError, match="one code per row"):
        impostor_permutation(0, 0, 3, avoid_same_study=True, study_codes=[1, 2])


def test_constructive_fallback_is_valid_at_the_limit():
    # one code holding exactly half the rows: the repair pass may fail, the layout cannot
    codes = np.array([0, 0, 0, 1, 2, 3])
    for seed in range(10):
        for perm in (_shift_permutation(np.random.default_rng(seed), codes),
                     constrained_permutation(np.random.default_rng(seed), codes)):
            assert sorted(perm.tolist()) == list(range(6)) and not np.any(codes[perm] == codes)


def test_labelled_cross_entropy_counts_labelled_rows_only():
    l3 = math.log(3.0)
    img = torch.tensor([[0.0, 0.0], [0.0, l3], [5.0, -5.0]], requires_grad=True)
    txt = torch.tensor([[l3, 0.0], [0.0, 0.0], [1.0, 2.0]], requires_grad=True)
    labels = torch.tensor([0, 1, -1])  # row 2 unlabelled
    # image: row0 uniform -> ln2; row1 p(1) = 3/4 -> ln(4/3).  text: row0 p(0)=3/4 -> ln(4/3); row1 -> ln2
    per = math.log(2) + math.log(4 / 3)
    out = labelled_cross_entropy(img, txt, labels)  # divided by the 3 rows of the batch
    assert out.image.item() == pytest.approx(per / 3) and out.text.item() == pytest.approx(per / 3)
    assert out.loss.item() == pytest.approx(2 * per / 3) and out.n_labelled == 2
    assert labelled_cross_entropy(img, txt, labels, normalize="labelled").loss.item() == pytest.approx(per)
    out.loss.backward()
    assert img.grad[2].abs().sum() == 0 and txt.grad[2].abs().sum() == 0  # unlabelled row: no gradient


def test_labelled_cross_entropy_without_labels_is_zero_with_a_graph():
    img = torch.randn(3, 4, requires_grad=True)
    txt = torch.randn(3, 4, requires_grad=True)
    for normalize in ("batch", "labelled"):
        out = labelled_cross_entropy(img, txt, torch.full((3,), -1), normalize=normalize)
        assert out.loss.item() == 0.0 and out.loss.requires_grad and out.n_labelled == 0
        out.loss.backward()
        assert img.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="has class 4 but the classifiers have 4 outputs"):
        labelled_cross_entropy(img, txt, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="did you mean 'labelled'"):
        labelled_cross_entropy(img, txt, torch.tensor([0, 1, 1]), normalize="labeled")

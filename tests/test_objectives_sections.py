"""ConVIRT section study: L_local with α, and L = λ·L_local + (1−λ)·L_global, by hand."""

import math

import pytest
import torch

from radpair.objectives import bidirectional_info_nce, section_local_loss, section_study_loss

TAU = 0.5
# unit vectors, so cosine = dot
FND = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
IMP = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
# cos(F_i, M_k):   F0: M0=1  M1=0.6      F1: M0=0  M1=0.8
SIM = [[1.0, 0.6], [0.0, 0.8]]


def ce(row, target):
    logits = [s / TAU for s in row]
    return -(logits[target] - math.log(sum(math.exp(x) for x in logits)))


# l(fnd->imp): rows of SIM; l(imp->fnd): columns of SIM
FND_TO_IMP = (ce(SIM[0], 0) + ce(SIM[1], 1)) / 2  # -log(e^2/(e^2+e^1.2)), -log(e^1.6/(e^0+e^1.6))
IMP_TO_FND = (ce([SIM[0][0], SIM[1][0]], 0) + ce([SIM[0][1], SIM[1][1]], 1)) / 2  # -log(e^2/(e^2+e^0)), -log(e^1.6/(e^1.2+e^1.6))


def test_local_loss_weights_the_two_directions_by_alpha():
    for alpha in (0.75, 1.0, 0.0, 0.3):
        out = section_local_loss(FND, IMP, temperature=TAU, alpha=alpha)
        assert out.image_to_text.item() == pytest.approx(FND_TO_IMP, rel=1e-5)
        assert out.text_to_image.item() == pytest.approx(IMP_TO_FND, rel=1e-5)
        assert out.loss.item() == pytest.approx(alpha * FND_TO_IMP + (1 - alpha) * IMP_TO_FND, rel=1e-5)
    with pytest.raises(ValueError, match="alpha must lie in"):
        section_local_loss(FND, IMP, alpha=1.5)


def test_total_loss_mixes_local_and_global_by_lambda():
    img = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # averaged text T = (F + M)/2: T0 = (1, 0), T1 = (0.3, 0.9) -> unit (1, 3)/sqrt(10)
    c = 1 / math.sqrt(10)
    # cos(I_i, T_k):  I0: T0=0  T1=3c      I1: T0=1  T1=c
    g = [[0.0, 3 * c], [1.0, c]]
    i2t = (ce(g[0], 0) + ce(g[1], 1)) / 2
    t2i = (ce([g[0][0], g[1][0]], 0) + ce([g[0][1], g[1][1]], 1)) / 2
    alpha, lam, lam_g = 0.75, 0.25, 0.6
    local = alpha * FND_TO_IMP + (1 - alpha) * IMP_TO_FND
    glob = lam_g * i2t + (1 - lam_g) * t2i
    out = section_study_loss(img, FND, IMP, temperature=TAU, alpha=alpha, lambda_local=lam, lambda_image_to_text=lam_g)
    assert out.local.loss.item() == pytest.approx(local, rel=1e-5)
    assert out.global_.loss.item() == pytest.approx(glob, rel=1e-5)
    assert out.loss.item() == pytest.approx(lam * local + (1 - lam) * glob, rel=1e-5)
    assert torch.allclose(out.text_emb, torch.tensor([[1.0, 0.0], [0.3, 0.9]]))
    # lambda = 0 is plain ConVIRT on the averaged text; lambda = 1 is the local term alone
    zero = section_study_loss(img, FND, IMP, temperature=TAU, lambda_local=0.0, lambda_image_to_text=lam_g)
    plain = bidirectional_info_nce(img, (FND + IMP) / 2, temperature=TAU, lambda_image_to_text=lam_g)
    assert torch.allclose(zero.loss, plain.loss)
    one = section_study_loss(img, FND, IMP, temperature=TAU, alpha=alpha, lambda_local=1.0)
    assert one.loss.item() == pytest.approx(local, rel=1e-5)


def test_gradients_reach_both_sections_and_explicit_text_is_used():
    img = torch.randn(4, 3)
    fnd = torch.randn(4, 3, requires_grad=True)
    imp = torch.randn(4, 3, requires_grad=True)
    section_study_loss(img, fnd, imp).loss.backward()
    assert fnd.grad.abs().sum() > 0 and imp.grad.abs().sum() > 0
    txt = torch.randn(4, 3)
    out = section_study_loss(img, fnd, imp, text_emb=txt, lambda_local=0.0)
    assert torch.allclose(out.loss, bidirectional_info_nce(img, txt, lambda_image_to_text=0.75).loss)
    with pytest.raises(ValueError, match="same \\[B, D\\] shape"):
        section_local_loss(fnd, imp[:3])

import math

import torch

from radpair.objectives import bidirectional_info_nce


def test_info_nce_matches_hand_computed_3x3():
    # Unit vectors so normalisation is a no-op; similarities are easy to write down.
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    tau, lam = 0.5, 0.75
    sim = [[1.0, 0.6, 0.0], [0.0, 0.8, 1.0], [0.6, 1.0, 0.8]]  # sim[i][j] = <img_i, txt_j>

    def ce(row, target):
        logits = [s / tau for s in row]
        return -(logits[target] - math.log(sum(math.exp(x) for x in logits)))

    i2t = sum(ce(sim[i], i) for i in range(3)) / 3
    t2i = sum(ce([sim[j][i] for j in range(3)], i) for i in range(3)) / 3
    out = bidirectional_info_nce(img, txt, temperature=tau, lambda_image_to_text=lam)
    assert math.isclose(out.image_to_text.item(), i2t, rel_tol=1e-5)
    assert math.isclose(out.text_to_image.item(), t2i, rel_tol=1e-5)
    assert math.isclose(out.loss.item(), lam * i2t + (1 - lam) * t2i, rel_tol=1e-5)


def test_info_nce_is_scale_invariant_and_prefers_matches():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, generator=g)
    aligned = bidirectional_info_nce(x, 3 * x).loss
    shuffled = bidirectional_info_nce(x, x[torch.randperm(8, generator=g)]).loss
    assert aligned < shuffled
    assert torch.allclose(bidirectional_info_nce(x, x).loss, aligned, atol=1e-6)

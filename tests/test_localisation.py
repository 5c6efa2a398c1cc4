"""Localisation scores: pointing game and mass share against known regions, with CIs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from radpair.errors import DataError
from radpair.evaluation.localisation import (
    centre_map,
    chance_level,
    evaluate_localisation,
    mass_share,
    pointing_game,
    uniform_map,
    upsample,
)


def _square(h=8, w=8, r0=2, r1=4, c0=2, c1=4):
    m = np.zeros((h, w), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def test_pointing_game_peak_inside_outside_and_empty_mask():
    m = _square()
    inside, outside = np.zeros((8, 8)), np.zeros((8, 8))
    inside[3, 3] = 1.0
    outside[6, 6] = 1.0
    hits = pointing_game(np.stack([inside, outside, inside]), np.stack([m, m, np.zeros_like(m)]))
    assert hits[0] == 1.0 and hits[1] == 0.0 and np.isnan(hits[2])


def test_pointing_game_ties_are_deterministic():
    m = _square()
    s = np.zeros((8, 8))
    s[0, 0] = s[3, 3] = 1.0  # one tied peak outside (first in row-major order), one inside
    assert pointing_game(s, m)[0] == 0.5  # the expected hit of a random tie-break
    assert pointing_game(s, m, ties="first")[0] == 0.0
    assert pointing_game(uniform_map(1, (8, 8)), m)[0] == pytest.approx(chance_level(m)[0])
    with pytest.raises(DataError, match="ties"):
        pointing_game(s, m, ties="random")


def test_pointing_game_tolerance_grows_the_mask():
    m = _square()
    s = np.zeros((8, 8))
    s[3, 5] = 1.0  # two columns right of the mask's last column (3)
    assert pointing_game(s, m)[0] == 0.0
    assert pointing_game(s, m, tolerance=1)[0] == 0.0
    assert pointing_game(s, m, tolerance=2)[0] == 1.0
    assert chance_level(m, tolerance=1)[0] > chance_level(m)[0] == pytest.approx(4 / 64)


def test_mass_share_clips_normalises_and_treats_a_zero_map_as_uniform():
    m = _square()
    s = np.zeros((8, 8))
    s[2, 2], s[7, 7], s[0, 0] = 3.0, 1.0, -5.0  # the negative value is clipped away
    shares = mass_share(np.stack([s, np.zeros((8, 8)), -np.ones((8, 8))]), np.stack([m, m, m]))
    np.testing.assert_allclose(shares, [0.75, 4 / 64, 4 / 64])
    assert np.isnan(mass_share(s, np.zeros_like(m))[0])
    with pytest.raises(DataError, match="NaN"):
        mass_share(np.full((8, 8), np.nan), m)
    with pytest.raises(DataError, match="same images"):
        mass_share(np.zeros((2, 8, 8)), np.stack([m, m, m]))


def test_upsample_matches_torch_bilinear():
    rng = np.random.default_rng(0)
    s = rng.random((3, 5, 7))
    ours = upsample(s, (20, 21))
    ref = torch.nn.functional.interpolate(torch.from_numpy(s)[:, None], size=(20, 21), mode="bilinear",
                                          align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    # a coarse map's peak cell lands on the mask at full resolution
    coarse = np.zeros((4, 4))
    coarse[1, 2] = 1.0
    m = np.zeros((32, 32), dtype=bool)
    m[8:16, 16:24] = True
    assert pointing_game(coarse, m)[0] == 1.0


def _study(n=140, seed=0):
    """Masks of one finding, a good and a bad map per image, two images per patient."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, 16, 16), dtype=bool)
    good = rng.random((n, 16, 16)) * 0.1
    for i in range(n):
        r, c = rng.integers(0, 12, 2)
        masks[i, r:r + 4, c:c + 4] = True
        good[i, r + 1, c + 2] = 1.0 if i % 5 else 0.0  # misses on every fifth image
    bad = rng.random((n, 16, 16))
    return masks, good, bad, np.repeat(np.arange(n // 2), 2)


def test_evaluate_localisation_cis_bracket_the_point_and_pair_methods():
    masks, good, bad, groups = _study()
    res = evaluate_localisation({"good": {"opacity": good}, "bad": {"opacity": bad}}, {"opacity": masks}, groups,
                                n_bootstrap=300, seed=1)
    for s in res.scores:
        assert s.ci_low <= s.value <= s.ci_high, s
    g = res.score("good", "opacity")
    assert g.value == pytest.approx(0.8, abs=0.05) and g.n_images == len(masks)
    assert res.score("uniform", "opacity").value == pytest.approx(res.chance["opacity"])
    assert res.score("uniform", "opacity", "mass_share").value == pytest.approx(res.chance["opacity"])
    d = res.difference("good", "bad", "opacity")
    assert d.diff > 0 and d.ci_low > 0
    assert res.difference("good", "uniform", "opacity", "mass_share").ci_low > 0
    payload = json.loads(json.dumps(res.to_dict()))
    assert payload["unit"] == "patient" and len(payload["scores"]) == 4 * 2
    md = res.to_markdown()
    assert "**opacity**" in md and "| good |" in md and "chance level" in md


def test_a_method_against_itself_differs_by_exactly_zero():
    masks, good, _, groups = _study()
    res = evaluate_localisation({"a": {"x": good}, "b": {"x": good.copy()}}, {"x": masks}, groups, n_bootstrap=200,
                                seed=0, baselines=(), pairs=[("a", "b")])
    for d in res.differences:
        assert d.diff == 0.0 and (d.ci_low, d.ci_high) == (0.0, 0.0) and d.p_value == 1.0


def test_evaluate_localisation_skips_images_without_the_finding_and_checks_inputs():
    masks, good, _, groups = _study(n=20)
    masks[:5] = False
    res = evaluate_localisation({"m": {"x": good}}, {"x": masks}, groups, n_bootstrap=50)
    assert res.n_images["x"] == 15
    with pytest.raises(DataError, match="baselines"):
        evaluate_localisation({"centre": {"x": good}}, {"x": masks})
    with pytest.raises(DataError, match="maps for"):
        evaluate_localisation({"m": {"x": good[:3]}}, {"x": masks})
    with pytest.raises(DataError, match="unknown baselines"):
        evaluate_localisation({"m": {"x": good}}, {"x": masks}, baselines=("middle",))


def test_centre_map_peaks_in_the_middle():
    c = centre_map(2, (9, 9))
    assert c.shape == (2, 9, 9) and np.unravel_index(np.argmax(c[0]), (9, 9)) == (4, 4)
    m = np.zeros((9, 9), dtype=bool)
    m[4, 4] = True
    assert pointing_game(c[:1], m)[0] == 1.0


# ---- acceptance: Grad-CAM of a small CNN points at the opacity ----------------------------------
SIZE, SIGMA = 64, 3.5


def _blobs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images, half with one bright blob ("opacity") at a random place; the blob's mask."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    images = rng.normal(0.0, 0.35, (n, SIZE, SIZE)).astype(np.float32)
    labels = np.arange(n) % 2
    masks = np.zeros((n, SIZE, SIZE), dtype=bool)
    for i in np.flatnonzero(labels):
        cy, cx = rng.uniform(8, SIZE - 8, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * SIGMA ** 2))
        images[i] += blob.astype(np.float32)
        masks[i] = blob > 0.25
    return images, labels.astype(np.float32), masks


@pytest.fixture
def one_thread():
    """Tiny convolutions run fastest on one thread, and far faster than two on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_gradcam_of_a_small_cnn_points_inside_the_opacity(one_thread):
    from monai.visualize import GradCAM

    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    x_tr, y_tr, _ = _blobs(512, rng)
    x_te, y_te, m_te = _blobs(120, rng)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),  # "7": 16 x 16 cells
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 1),
    )
    for p in net.parameters():  # seeded initialisation, never the global generator
        if p.dim() > 1:
            torch.nn.init.kaiming_normal_(p, nonlinearity="relu", generator=gen)
        else:
            torch.nn.init.zeros_(p)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_tr)[:, None], torch.from_numpy(y_tr)
    for _ in range(150):
        idx = torch.randint(0, len(xt), (32,), generator=gen)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[idx])[:, 0], yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    pos = np.flatnonzero(y_te == 1)
    with torch.no_grad():
        acc = ((net(torch.from_numpy(x_te)[:, None])[:, 0] > 0).numpy() == (y_te == 1)).mean()
    assert acc > 0.9, acc
    cam = GradCAM(nn_module=net, target_layers="7")
    raw = cam.compute_map(torch.from_numpy(x_te[pos])[:, None], class_idx=0)  # (n, 1, 16, 16)
    maps = raw[:, 0].detach().numpy()
    assert maps.shape[1:] == (16, 16)
    hits = pointing_game(maps, m_te[pos])  # upsampled to 64 x 64 here
    chance = float(np.mean(chance_level(m_te[pos])))
    assert hits.mean() > 0.7 and hits.mean() > 5 * chance, (hits.mean(), chance)
    res = evaluate_localisation({"gradcam": {"opacity": maps}}, {"opacity": m_te[pos]}, n_bootstrap=200)
    assert res.difference("gradcam", "centre", "opacity").ci_low > 0

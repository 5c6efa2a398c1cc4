"""Tests for radpair.evaluation: metrics, sampling, features, probe, run figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from radpair.data.corpus import CorpusWriter
from radpair.data.tensors import images_to_tensor
from radpair.errors import DataError
from radpair.evaluation import (
    ALL,
    FitStatus,
    LabelPolicy,
    LinearProbe,
    ProbeConfig,
    ResamplingUnit,
    SkipReason,
    apply_label_policy,
    draw_subset,
    draw_subsets,
    evaluate_classification,
    subset_indices,
)
from radpair.evaluation.features import extract_features
from radpair.evaluation.metrics import _sorted_class_data, fast_auc, weighted_auc
from radpair.evaluation.probe import CSelection, grouped_stratified_folds

NAN = float("nan")


# ---- metrics -------------------------------------------------------------------------------
def test_auc_matches_hand_computed_example():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: pairs won 1, 0, 1, 1 -> 3/4
    m = evaluate_classification([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], n_bootstrap=0)
    assert m.per_class["class_0"] == pytest.approx(0.75)
    assert m.macro == pytest.approx(0.75)
    # a tie counts one half: pos {0.5, 0.9} vs neg {0.5, 0.2} -> (0.5 + 1 + 1 + 1) / 4
    assert fast_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])) == pytest.approx(0.875)


def test_weighted_auc_equals_auc_of_duplicated_sample():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # many ties
    w = rng.integers(0, 4, 200)
    order, starts, ys = _sorted_class_data(s, y)
    got = weighted_auc(ys, starts, w[order])[0]
    assert got == pytest.approx(roc_auc_score(np.repeat(y, w), np.repeat(s, w)))


def test_missing_and_uncertain_labels_are_masked_per_class():
    y = np.array([[1, 0], [0, NAN], [1, -1], [0, 1], [NAN, 0], [-1, 1]], dtype=float)
    p = np.array([[0.9, 0.2], [0.1, 0.99], [0.8, 0.99], [0.3, 0.7], [0.99, 0.1], [0.0, 0.6]])
    m = evaluate_classification(y, p, class_names=["a", "b"], n_bootstrap=0)
    keep_a = [0, 1, 2, 3]
    keep_b = [0, 3, 4, 5]
    assert m.per_class["a"] == pytest.approx(roc_auc_score(y[keep_a, 0], p[keep_a, 0]))
    assert m.per_class["b"] == pytest.approx(roc_auc_score(y[keep_b, 1], p[keep_b, 1]))
    assert m.n_labelled == {"a": 4, "b": 4}
    # U-Zeros: the uncertain row of "a" (score 0.0) becomes a negative
    zeros = evaluate_classification(y, p, class_names=["a", "b"], policy=LabelPolicy.parse("zeros"), n_bootstrap=0)
    assert zeros.n_labelled["a"] == 5
    masked = apply_label_policy(y, LabelPolicy.parse("ones", "negative"))
    assert masked.mask.all() and masked.values[5, 0] == 1 and masked.values[1, 1] == 0


def test_classes_without_both_values_are_skipped_with_reason():
    y = np.array([[1, 0, NAN], [1, 0, NAN], [0, 0, NAN], [1, 0, -1]], dtype=float)
    m = evaluate_classification(y, np.random.default_rng(0).random((4, 3)), class_names=["x", "y", "z"], n_bootstrap=10)
    assert list(m.per_class) == ["x"]
    assert m.skipped == {"y": SkipReason.NO_POSITIVES, "z": SkipReason.NO_LABELS}
    assert m.macro == m.per_class["x"]
    json.dumps(m.to_dict(), allow_nan=False)


def test_invalid_label_values_raise():
    with pytest.raises(DataError, match="1, 0, -1"):
        evaluate_classification([0, 1, 2], [0.1, 0.2, 0.3])


def _patient_data(n_patients: int, images_per_patient: int, seed: int):
    rng = np.random.default_rng(seed)
    y_pat = rng.integers(0, 2, n_patients)
    s_pat = y_pat * 0.8 + rng.normal(size=n_patients)
    groups = np.repeat(np.arange(n_patients), images_per_patient)
    y = y_pat[groups]
    s = s_pat[groups] + 0.05 * rng.normal(size=groups.size)
    return y, s, groups


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_patients():
    y, s, g = _patient_data(40, 3, seed=1)
    small = evaluate_classification(y, s, groups=g, n_bootstrap=400, seed=0)
    y, s, g = _patient_data(800, 3, seed=1)
    large = evaluate_classification(y, s, groups=g, n_bootstrap=400, seed=0)
    for m in (small, large):
        assert m.ci.contains(m.macro)
        assert m.resampling_unit is ResamplingUnit.PATIENT
    assert large.ci.width < small.ci.width / 2
    assert small.n_groups == 40 and small.n == 120


def test_patient_bootstrap_is_wider_than_image_bootstrap_for_correlated_images():
    # ten near-identical images per patient: image resampling pretends there are 10x more data
    y, s, g = _patient_data(60, 10, seed=2)
    by_patient = evaluate_classification(y, s, groups=g, n_bootstrap=400)
    by_image = evaluate_classification(y, s, groups=None, n_bootstrap=400)
    assert by_image.resampling_unit is ResamplingUnit.IMAGE
    assert by_patient.ci.width > 2 * by_image.ci.width


def test_bootstrap_is_deterministic_and_leaves_global_rng_alone():
    y, s, g = _patient_data(50, 2, seed=3)
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    a = evaluate_classification(y, s, groups=g, n_bootstrap=200, seed=7)
    assert np.random.random() == before
    b = evaluate_classification(y, s, groups=g, n_bootstrap=200, seed=7)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)


# ---- sampling ------------------------------------------------------------------------------
def _rare_labels(n: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = np.array([0.5, 0.1, 0.02, 0.005, 0.95])
    y = (rng.random((n, rates.size)) < rates).astype(float)
    y[rng.random(y.shape) < 0.05] = NAN
    return y


def test_subsets_are_deterministic_and_seed_dependent():
    y = _rare_labels()
    a = subset_indices(y, 100, repeats=3, seed=5)
    b = subset_indices(y, 100, repeats=3, seed=5)
    c = subset_indices(y, 100, repeats=3, seed=6)
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[0], c[0])
    assert all(len(np.unique(x)) == 100 for x in a)
    # a subset does not depend on which other budgets were requested
    only = draw_subsets(y, [100], repeats=1, seed=5)[0].indices
    mixed = [s for s in draw_subsets(y, [10, 100, ALL], repeats=1, seed=5) if s.n_requested == 100][0].indices
    assert np.array_equal(only, mixed)


def test_subsets_have_a_positive_and_a_negative_per_class_where_possible():
    y = _rare_labels()
    masked = apply_label_policy(y)
    for repeat in range(10):
        sub = draw_subset(y, 10, seed=0, repeat=repeat)
        assert sub.n_drawn == 10
        assert (masked.take(sub.indices).positives() >= 1).all()
        assert (masked.take(sub.indices).negatives() >= 1).all()
        assert sub.lacking_positive == [] and sub.lacking_negative == []
    # impossible: 2 images cannot cover 5 classes' positives and negatives -> reported
    tiny = draw_subset(y, 2, seed=0)
    assert tiny.n_drawn == 2 and (tiny.lacking_positive or tiny.lacking_negative)


def test_all_budget_is_whole_pool_and_drawn_once():
    y = _rare_labels(300)
    y[0] = NAN  # unlabelled row: not part of the pool
    subs = draw_subsets(y, [10, ALL], repeats=4, seed=0)
    alls = [s for s in subs if s.n_requested == ALL]
    assert len(alls) == 1 and alls[0].n_drawn == 299 and 0 not in alls[0].indices
    assert len([s for s in subs if s.n_requested == 10]) == 4
    capped = draw_subset(y, 5000, seed=0)
    assert capped.is_whole_pool and capped.n_drawn == 299
    with pytest.raises(DataError):
        draw_subset(y, 0)


# ---- features ------------------------------------------------------------------------------
class _TinyEncoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x)).relu().mean(dim=(2, 3))
        return self.head(self.drop(h))


def test_extract_features_matches_forward_and_restores_modes():
    torch.manual_seed(0)
    enc = _TinyEncoder()
    enc.train()
    enc.conv.eval()  # a part kept in eval mode on purpose must stay so
    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16), dtype=np.uint8)
    feats = extract_features(enc, images, batch_size=4)
    assert enc.training and enc.bn.training and enc.drop.training and not enc.conv.training
    assert feats.shape == (10, 6) and feats.dtype == np.float32
    enc.eval()
    with torch.no_grad():
        direct = enc(images_to_tensor(images)).numpy()
    np.testing.assert_allclose(feats, direct, rtol=1e-5, atol=1e-5)
    sub = extract_features(enc, images, batch_size=3, indices=[7, 2])
    np.testing.assert_allclose(sub, direct[[7, 2]], rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match="uint8"):
        extract_features(enc, images.astype(np.float32))


# ---- probe ---------------------------------------------------------------------------------
def _separable(n: int, seed: int, d: int = 8):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0.5], axis=1).astype(float)
    return X, Y


def test_probe_learns_separable_problem_and_is_deterministic():
    X, Y = _separable(200, 0)
    Xt, Yt = _separable(300, 1)
    groups = np.arange(200) // 2
    p1 = LinearProbe(ProbeConfig(seed=0)).fit(X, Y, groups=groups)
    p2 = LinearProbe(ProbeConfig(seed=0)).fit(X, Y, groups=groups)
    probs = p1.predict_proba(Xt)
    assert np.array_equal(probs, p2.predict_proba(Xt))
    for c in range(2):
        assert roc_auc_score(Yt[:, c], probs[:, c]) > 0.95
    assert all(f.c_selection is CSelection.GROUPED_CV for f in p1.fits)


def test_probe_small_n_uses_default_c_and_flags_single_value_classes():
    X, Y = _separable(12, 2)
    Y = np.concatenate([Y, np.zeros((12, 1)), np.full((12, 1), NAN)], axis=1)
    Y[0, 0] = -1  # masked by default
    probe = LinearProbe(ProbeConfig(default_c=0.5), class_names=["a", "b", "never", "unlabelled"]).fit(X, Y)
    assert probe.fits[0].c == 0.5 and probe.fits[0].c_selection is CSelection.DEFAULT
    assert probe.fits[0].n_labelled == 11
    assert probe.flagged == {"never": FitStatus.CONSTANT, "unlabelled": FitStatus.NO_LABELS}
    probs = probe.predict_proba(X)
    assert (probs[:, 2] == 0.0).all() and (probs[:, 3] == 0.5).all()


def test_grouped_folds_keep_patients_together():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 200)
    y = rng.integers(0, 2, 200)
    folds = grouped_stratified_folds(y, groups, 5, np.random.default_rng(0))
    seen = np.zeros(200, dtype=int)
    for train, val in folds:
        assert not set(groups[train]) & set(groups[val])
        seen[val] += 1
    assert (seen == 1).all()


# ---- report page ---------------------------------------------------------------------------
def _tiny_corpus(root):
    n = 3
    writer = CorpusWriter(root, n, 32, 32)
    writer.images[:] = np.random.default_rng(0).integers(0, 256, (n, 32, 32), dtype=np.uint8)
    index = pd.DataFrame(
        {
            "image_index": range(n),
            "image_id": [f"img{i}" for i in range(n)],
            "patient_id": ["p0", "p0", "p1"],
            "study_id": ["s0", "s1", "s2"],
            "view": ["PA"] * n,
            "split": ["train", "train", "test"],
            "report": ["FINDINGS: mild pulmonary edema with | pipes. " * 8, "", "IMPRESSION: no acute disease."],
        }
    )
    return writer.finalize(index, {"source": "test"})


def test_run_figures_write_valid_pngs(tmp_path):
    from PIL import Image as PILImage

    from radpair.evaluation.run_figures import machine_info, plot_loss_curve, plot_sample_grid, read_loss_log

    log = tmp_path / "train_log.jsonl"
    lines = [json.dumps({"step": s, "loss": 2.0 / (s + 1), "loss_components": {"i2t": 1.0 / (s + 1)}, "lr": 1e-3}) for s in range(20)]
    log.write_text("\n".join(lines) + '\n{"event": "checkpoint"}\n{"step": 21, "lo')
    parsed = read_loss_log(log)
    assert parsed.skipped_lines == 2 and len(parsed.steps) == 20
    corpus = _tiny_corpus(tmp_path / "corpus")
    figs = [plot_loss_curve(parsed, tmp_path / "loss.png"), plot_sample_grid(corpus, [0, 1, 2], tmp_path / "s.png")]
    for fig in figs:
        with PILImage.open(fig) as im:
            im.verify()
            assert im.format == "PNG"
    with pytest.raises(DataError, match="outside the corpus index"):
        plot_sample_grid(corpus, [7], tmp_path / "bad.png")
    assert machine_info().python

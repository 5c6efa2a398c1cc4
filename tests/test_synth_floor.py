"""The synthetic corpus's floor: at conspicuity 0 no finding may be learnable from pixels.

``SynthConfig.conspicuity = 0`` promises images whose findings are invisible. If a sign
survives, or something drawn travels with a finding, a probe on image features beats
chance on held-out patients. This test fits the evaluation's linear probe on features of
a random-init encoder and on plain pooled pixels and requires the macro AUC's 95%
interval, and each well-populated finding's (Bonferroni) interval, to contain 0.5.

Its power is for gross leaks: drawing only the cardiothoracic ratio at full strength
makes it fail (macro 0.58-0.60, cardiomegaly 0.73-0.88). Leaks confined to a rare finding
(a pneumothorax once still erased the vessel markings at conspicuity 0) or to thin lines
(ECG leads linked to illness) are below it at this size; ``tests/test_synth.py`` checks
every finding's render at conspicuity 0 directly, and ``benchmarks/synth_shortcut.py``
measures the ECG-lead shortcut.

Two things that legitimately differ between patients with and without findings are held
fixed, as one would in a real confounding analysis: the view (AP films are of sicker
patients and magnify the heart; only PA rows are used) and support devices (tubes, lines
and pacemakers are ground truth, drawn at every conspicuity; rows with devices are left
out). A positive control at conspicuity 1 shows that the same pipeline does see findings.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from radpair.data.synth import FINDINGS, SynthConfig, generate_corpus
from radpair.evaluation import (
    ClassificationMetrics,
    LinearProbe,
    ProbeConfig,
    evaluate_classification,
    extract_features,
)
from radpair.models.image_encoders import IMAGE_ENCODERS

N_IMAGES, SIZE, SEED = 1200, 64, 0
SPLITS = [0.5, 0.0, 0.5]  # patients: train / validate / test; a big test half for usable intervals
PER_FINDING_CONFIDENCE = 1 - 0.05 / len(FINDINGS)  # Bonferroni: 7 intervals at 95% jointly
MIN_POSITIVES = 10  # per-finding intervals only where the test rows hold this many positives


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _corpus(root, base: SynthConfig, conspicuity: float):
    cfg = replace(base, conspicuity=conspicuity, split_fractions=SPLITS)
    return generate_corpus(root, n_images=N_IMAGES, size=SIZE, seed=SEED, workers=1, config=cfg)


@pytest.fixture(scope="module")
def invisible(tmp_path_factory):
    """The shipped (calibrated) corpus with every sign switched off."""
    return _corpus(tmp_path_factory.mktemp("floor") / "c0", SynthConfig(), 0.0)


@pytest.fixture(scope="module")
def visible(tmp_path_factory):
    """Signs at full strength on the classic preset: this pipeline and size can see them."""
    return _corpus(tmp_path_factory.mktemp("floor") / "c1", SynthConfig.preset("classic"), 1.0)


def _features(images: np.ndarray, kind: str) -> np.ndarray:
    if kind == "pixels":  # 8x8 average-pooled brightness
        n, s = images.shape[0], images.shape[1]
        return images.astype(np.float32).reshape(n, 8, s // 8, 8, s // 8).mean(axis=(2, 4)).reshape(n, -1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        encoder = IMAGE_ENCODERS.build("resnet_tiny")
    return extract_features(encoder, images)


def _probe(corpus, kind: str) -> dict[float, ClassificationMetrics]:
    """Probe on PA rows without support devices: train patients -> test patients.

    Returns the test metrics at 95% and at the per-finding (Bonferroni) confidence. C is
    the probe's fixed default, without the grouped-CV search: the search costs ~20 s here
    and cannot create signal where there is none.
    """
    idx, gt = corpus.index, corpus.labels("ground_truth")
    keep = (idx["view"] == "PA").to_numpy() & (gt["support_devices"] == 0).to_numpy()
    train = np.flatnonzero(keep & (idx["split"] == "train").to_numpy())
    test = np.flatnonzero(keep & (idx["split"] == "test").to_numpy())
    X = _features(np.asarray(corpus.images), kind)
    Y = gt[list(FINDINGS)].to_numpy(dtype=np.float64)
    patients = idx["patient_id"].to_numpy()
    probe = LinearProbe(ProbeConfig(min_samples_for_cv=10**9), class_names=list(FINDINGS))
    probs = probe.fit(X[train], Y[train], groups=patients[train]).predict_proba(X[test])
    return {conf: evaluate_classification(Y[test], probs, groups=patients[test], class_names=list(FINDINGS),
                                          n_bootstrap=1000, confidence=conf, seed=SEED)
            for conf in (0.95, PER_FINDING_CONFIDENCE)}


@pytest.mark.parametrize("kind", ["resnet_tiny", "pixels"])
def test_no_finding_is_learnable_at_conspicuity_zero(invisible, one_thread, kind):
    result = _probe(invisible, kind)
    macro, each = result[0.95], result[PER_FINDING_CONFIDENCE]
    assert macro.n >= 150 and macro.n_groups >= 100, (macro.n, macro.n_groups)
    assert macro.ci.contains(0.5), f"{kind}: macro AUC {macro.macro:.3f}, 95% CI {macro.ci}"
    # findings with a handful of test positives give degenerate bootstrap intervals
    checked = [n for n in FINDINGS if each.n_positive[n] >= MIN_POSITIVES and n in each.per_class_ci]
    assert len(checked) >= 4, each.n_positive
    for name in checked:
        ci = each.per_class_ci[name]
        assert ci.contains(0.5), f"{kind}: {name} AUC {each.per_class[name]:.3f}, CI {ci}"


def test_positive_control_findings_are_learnable_at_conspicuity_one(visible, one_thread):
    """The same pipeline and size do detect findings once they are drawn."""
    m = _probe(visible, "pixels")[PER_FINDING_CONFIDENCE]
    assert m.ci_low > 0.5, f"macro AUC {m.macro:.3f}, CI {m.ci}"
    for name in ("edema", "cardiomegaly"):
        assert m.per_class_ci[name].low > 0.55, (name, m.per_class[name], m.per_class_ci[name])

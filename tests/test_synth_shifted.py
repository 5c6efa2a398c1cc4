"""The shifted synthetic corpus (TIMNet's pediatric stand-in) and the knobs that make it.

The knobs must not move the other presets by one byte: at their defaults they draw no
random numbers and leave every operation as it was. Most checks here use the cohort and
anatomy draws, which cost no rendering.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from radpair.data.corpus import Corpus
from radpair.data.synth import FINDINGS, Acquisition, Findings, SynthConfig, generate_corpus, render_image
from radpair.data.synth.anatomy import sample_anatomy
from radpair.data.synth.cohort import sample_patient
from radpair.data.synth.generate import plan_cohort
from radpair.errors import ConfigError
from radpair_train.cli import main

SHIFT_DEFAULTS = dict(body_scale=1.0, chest_aspect=1.0, heart_scale=1.0, exposure_gamma=1.0, exposure_contrast=1.0,
                      exposure_brightness=0.0, noise_grain=0.0, device_rate=1.0, findings_only=[],
                      finding_prevalence=None)
FILES = ("images.npy", "index.csv", "ground_truth.csv")


def _studies(cfg: SynthConfig, n_images: int = 800, seed: int = 0):
    return [st for p in plan_cohort(n_images, seed, cfg) for st in p.studies]


def _lung_height(an) -> float:
    return 0.5 * (an.dome_right + an.dome_left) - an.lung_top


# --- the knobs at their defaults change nothing ---------------------------------------------

def test_new_knobs_at_defaults_draw_nothing_and_change_nothing(tmp_path):
    explicit = SynthConfig(**SHIFT_DEFAULTS)
    assert explicit.to_dict() == SynthConfig().to_dict()
    # anatomy: same patient and the generator left in the same state
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    assert sample_anatomy(r1, 1.5) == sample_anatomy(r2, 1.5, body_scale=1.0, chest_aspect=1.0, heart_scale=1.0)
    assert r1.random() == r2.random()
    # cohort: knobs set explicitly (a different object, not the preset) give the same patients
    for number in range(40):
        assert sample_patient(0, number, explicit) == sample_patient(0, number, SynthConfig())
    # a whole corpus, every preset that existed before the knobs
    for name in ("classic", "default"):
        base = SynthConfig.preset(name)
        a = generate_corpus(tmp_path / f"{name}_a", n_images=24, size=64, seed=0, workers=1, config=base)
        b = generate_corpus(tmp_path / f"{name}_b", n_images=24, size=64, seed=0, workers=1,
                            config=replace(base, **SHIFT_DEFAULTS))
        for f in FILES:
            assert (a.root / f).read_bytes() == (b.root / f).read_bytes(), (name, f)


# --- the preset ------------------------------------------------------------------------------

def test_pediatric_shift_draws_only_consolidation_at_its_prevalence():
    cfg = SynthConfig.preset("pediatric_shift")
    studies = _studies(cfg)
    labels = np.array([[st.findings.labels()[f] for f in FINDINGS] for st in studies])
    others = [i for i, f in enumerate(FINDINGS) if f != "consolidation"]
    assert labels[:, others].sum() == 0
    share = labels[:, FINDINGS.index("consolidation")].mean()
    assert abs(share - 0.73) < 0.06, share  # 800 studies: sd 0.016
    assert all(not st.findings.devices for st in studies), "no tubes or lines"
    assert all(st.views in (("PA",), ("AP",)) for st in studies), "one frontal image per study"
    assert all(st.index == 0 for st in studies), "one study per patient"
    # the default cohort draws every finding
    default = np.array([[st.findings.labels()[f] for f in FINDINGS] for st in _studies(SynthConfig())])
    assert (default.sum(axis=0) > 0).all()


def test_findings_only_without_prevalence_keeps_the_cohort_model():
    studies = _studies(SynthConfig(findings_only=["pleural_effusion", "edema"]))
    counts = {f: sum(st.findings.labels()[f] for st in studies) for f in FINDINGS}
    assert counts["pleural_effusion"] > 0 and counts["edema"] > 0
    assert all(v == 0 for f, v in counts.items() if f not in ("pleural_effusion", "edema")), counts
    # chest tubes come with pneumothoraces and drained effusions only
    studies = _studies(SynthConfig(findings_only=["edema"]))
    assert not any(d.startswith("chest_tube") for st in studies for d in st.findings.devices)
    assert any(st.findings.devices for st in studies), "other devices are still drawn"
    # a patient-level finding with a forced prevalence
    studies = _studies(SynthConfig(findings_only=["nodule"], finding_prevalence=1.0), n_images=100)
    assert all(st.findings.labels() == {f: int(f == "nodule") for f in FINDINGS} for st in studies)


def test_pediatric_chests_are_smaller_rounder_with_larger_hearts():
    ped, default = SynthConfig.preset("pediatric_shift"), SynthConfig()
    pairs = [(sample_patient(1, k, default).anatomy, sample_patient(1, k, ped).anatomy) for k in range(150)]
    d, p = ([a for a, _ in pairs], [b for _, b in pairs])

    def mean(f, ans):
        return float(np.mean([f(a) for a in ans]))

    # smaller on the film: the chest width the film shows (thorax width x magnification)
    assert mean(lambda a: a.thorax_width * a.scale, p) < 0.95 * mean(lambda a: a.thorax_width * a.scale, d)
    assert {a.scale for a in p} == {0.85} and {a.scale for a in d} == {1.0}
    # rounder: width-to-height ratio about chest_aspect squared
    ratio = mean(lambda a: a.thorax_width / _lung_height(a), p) / mean(lambda a: a.thorax_width / _lung_height(a), d)
    assert 1.15 < ratio < 1.28, ratio
    # relatively larger heart and mediastinum
    assert {a.heart_scale for a in p} == {1.15}
    assert mean(lambda a: a.heart_height, p) > 1.1 * mean(lambda a: a.heart_height, d)
    assert mean(lambda a: a.mediastinum_half_width / a.thorax_width, p) > \
        1.1 * mean(lambda a: a.mediastinum_half_width / a.thorax_width, d)
    # the same patient reshaped: the anatomy stream draws nothing extra (texture seeds equal)
    assert all(a.texture_seed == b.texture_seed and a.female == b.female for a, b in pairs)


def test_body_scale_shrinks_the_drawn_body():
    an = sample_anatomy(np.random.default_rng(0), variation=0.0)

    def body_width(body_scale: float) -> int:
        cfg = SynthConfig(distractor_rate=0.0)
        a = sample_anatomy(np.random.default_rng(0), variation=0.0, body_scale=body_scale)
        img = render_image(a, Findings(), "PA", 64, seed=0, config=cfg, acquisition=Acquisition(), distractors=())
        return int((img[32] > 40).sum())  # lit columns across the mid-chest row

    assert an.scale == 1.0
    assert body_width(0.8) <= 0.88 * body_width(1.0)


def test_exposure_and_grain_knobs_change_the_image():
    an = sample_anatomy(np.random.default_rng(0), variation=0.0)

    def img(**knobs):
        cfg = SynthConfig(distractor_rate=0.0, **knobs)
        return render_image(an, Findings(), "PA", 64, seed=0, config=cfg, acquisition=Acquisition(),
                            distractors=()).astype(float)

    base = img()
    assert img(exposure_brightness=0.1).mean() > base.mean() + 10
    assert img(exposure_contrast=1.5).std() > base.std() * 1.2
    assert img(exposure_gamma=1.5).mean() < base.mean() - 5
    # grain: neighbouring pixels' noise correlates (the same white draw, blurred)
    noise0, noise1 = img(noise=1.0) - img(noise=0.0), img(noise=1.0, noise_grain=0.03) - img(noise=0.0)
    corr = [np.corrcoef(n[8:56, 8:55].ravel(), n[8:56, 9:56].ravel())[0, 1] for n in (noise0, noise1)]
    assert corr[0] < 0.5 and corr[1] > 0.8, corr  # (the smooth exposure drift correlates a little)


def test_pediatric_shift_corpus_is_deterministic_and_has_reports(tmp_path):
    cfg = SynthConfig.preset("pediatric_shift")
    one = generate_corpus(tmp_path / "w1", n_images=40, size=64, seed=3, workers=1, config=cfg)
    two = generate_corpus(tmp_path / "w2", n_images=40, size=64, seed=3, workers=2, chunk_size=8, config=cfg)
    for f in FILES:
        assert (one.root / f).read_bytes() == (two.root / f).read_bytes(), f
    assert one.meta["generator"]["difficulty"] == "pediatric_shift"
    gt = one.ground_truth
    assert set(gt["view"]) <= {"PA", "AP"} and gt[[f for f in FINDINGS if f != "consolidation"]].sum().sum() == 0
    reports = one.index["report"].astype(str)
    assert (reports.str.len() > 50).all() and reports.nunique() > 20
    assert one.index["consolidation"].notna().any(), "reports state the finding"
    default = generate_corpus(tmp_path / "d", n_images=40, size=64, seed=3, workers=1)
    assert not np.array_equal(np.asarray(one.images), np.asarray(default.images))


def test_cli_accepts_the_pediatric_preset(tmp_path):
    out = tmp_path / "corpus"
    assert main(["synth", "--n", "6", "--size", "64", "--out", str(out), "--workers", "1",
                 "--difficulty", "pediatric_shift", "--no-progress"]) == 0
    assert Corpus.open(out).meta["generator"]["config"]["findings_only"] == ["consolidation"]


@pytest.mark.parametrize("knobs, match", [
    ({"body_scale": 0.2}, r"body_scale.*outside \[0.5, 1.5\]"),
    ({"chest_aspect": 2.0}, "chest_aspect"),
    ({"heart_scale": 0.0}, "heart_scale"),
    ({"exposure_gamma": 0.1}, "exposure_gamma"),
    ({"exposure_contrast": 5.0}, "exposure_contrast"),
    ({"exposure_brightness": 0.9}, "exposure_brightness"),
    ({"noise_grain": -0.01}, "noise_grain"),
    ({"device_rate": 1.5}, "device_rate"),
    ({"findings_only": ["pneumonia"]}, r"unknown finding 'pneumonia'"),
    ({"findings_only": ["consolidaton"]}, r"did you mean 'consolidation'"),
    ({"findings_only": ["edema", "edema"]}, "twice"),
    ({"finding_prevalence": 0.7}, "exactly one finding"),
    ({"findings_only": ["edema", "nodule"], "finding_prevalence": 0.7}, "exactly one finding"),
    ({"findings_only": ["edema"], "finding_prevalence": 1.2}, "finding_prevalence"),
])
def test_shift_knobs_are_validated(knobs, match):
    with pytest.raises(ConfigError, match=match):
        SynthConfig(**knobs)

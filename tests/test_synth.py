"""The synthetic radiograph-report corpus: determinism, structure, signs and labels."""

from __future__ import annotations

import re

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from radpair.config import from_dict
from radpair.data.corpus import Corpus
from radpair.data.synth import (
    FINDINGS,
    Acquisition,
    Findings,
    Nodule,
    SynthConfig,
    generate_corpus,
    load_synth_config,
    render_image,
    sample_anatomy,
)
from radpair.data.synth.generate import _image_jobs, assign_splits, plan_cohort
from radpair.data.synth.overlays import DISTRACTOR_P, SICK_SHARE, distractor_probabilities
from radpair.data.synth.shortcuts import distractor_rates, planned_truth
from radpair.data.synth.reports import EDEMA_PHRASES, SECTION_HEADERS
from radpair.errors import ConfigError
from radpair_train.cli import main

FILES = ("images.npy", "index.csv", "ground_truth.csv")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    one = generate_corpus(root / "w1", n_images=60, size=64, seed=7, workers=1)
    two = generate_corpus(root / "w2", n_images=60, size=64, seed=7, workers=2, chunk_size=8)
    other = generate_corpus(root / "s8", n_images=60, size=64, seed=8, workers=1)
    return one, two, other


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return generate_corpus(tmp_path_factory.mktemp("synth_big") / "c", n_images=360, size=64, seed=3, workers=2)


def _region(img: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> float:
    """Mean brightness of a box given in normalised image coordinates ([-1, 1], y down)."""
    n = img.shape[0]
    c0, c1 = int((x0 + 1) / 2 * n), int((x1 + 1) / 2 * n)
    r0, r1 = int((y0 + 1) / 2 * n), int((y1 + 1) / 2 * n)
    return float(img[r0:r1, c0:c1].astype(float).mean())


def _render(findings: Findings, size: int = 128, view: str = "PA", patient: int = 0, conspicuity: float = 1.0):
    an = sample_anatomy(np.random.default_rng(patient), variation=0.0)
    # pixel-level checks of each sign at full strength: the classic preset's knobs
    cfg = replace(SynthConfig.preset("classic"), distractor_rate=0.0, conspicuity=conspicuity)
    return render_image(an, findings, view, size, seed=patient, detail_seed=patient, config=cfg,
                        acquisition=Acquisition()), an


# --- determinism ---------------------------------------------------------------------------

def test_same_seed_same_bytes_for_any_worker_count(corpora):
    one, two, _ = corpora
    for name in FILES:
        assert (one.root / name).read_bytes() == (two.root / name).read_bytes(), name


def test_different_seed_differs(corpora):
    one, _, other = corpora
    assert not np.array_equal(np.asarray(one.images), np.asarray(other.images))
    assert (one.root / "index.csv").read_bytes() != (other.root / "index.csv").read_bytes()


def test_same_patient_looks_the_same_at_every_size():
    f = Findings(ctr=0.6, effusion_side="left", effusion_size="moderate")
    small, _ = _render(f, 64)
    large, _ = _render(f, 128)
    pooled = large.astype(float).reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.corrcoef(pooled.ravel(), small.astype(float).ravel())[0, 1] > 0.93


# --- corpus format and structure -------------------------------------------------------------

def test_corpus_shape_columns_and_meta(corpora):
    c = corpora[0]
    reopened = Corpus.open(c.root)
    assert reopened.images.shape == (60, 64, 64) and reopened.images.dtype == np.uint8
    assert list(c.index.columns[:7]) == ["image_index", "image_id", "patient_id", "study_id", "view", "split",
                                         "report"]
    assert c.index["image_index"].tolist() == list(range(60))
    expected = ["image_id", "edema_severity", "edema", "cardiomegaly", "pleural_effusion", "effusion_side",
                "effusion_size", "pneumothorax", "pneumothorax_side", "consolidation", "atelectasis", "nodule",
                "support_devices", "view"] + [f"written_{f}" for f in FINDINGS] + ["written_edema_severity"]
    assert list(c.ground_truth.columns[: len(expected)]) == expected
    assert set(c.index["view"]) <= {"PA", "AP", "LATERAL"}
    assert c.meta["generator"]["seed"] == 7 and c.meta["seed"] == 7
    assert c.meta["generator"]["config"] == SynthConfig().to_dict()
    assert set(c.meta["report_agreement"]["per_finding"]) == set(FINDINGS)
    assert c.label_columns == list(FINDINGS)
    gt = c.labels("ground_truth")
    assert (gt["edema"] == (gt["edema_severity"] > 0).astype(int)).all()


def test_studies_patients_and_reports(big):
    idx, gt = big.index, big.labels("ground_truth")
    assert len(idx) == 360
    per_study = idx.groupby("study_id")
    assert (per_study["report"].nunique() == 1).all(), "all images of a study share one report"
    assert (per_study.size() > 1).any(), "some studies have more than one image"
    assert (idx.groupby("patient_id")["study_id"].nunique() > 1).any(), "some patients have follow-ups"
    follow = gt[gt["prior_study_id"].notna()]
    assert len(follow) > 0
    comparison = re.compile(r"unchanged|stable|persistent|interval|again seen|prior|previous|new |improv|worsen|"
                            r"increase|decrease|resolution|redemonstrated", re.I)
    share = idx.set_index("image_id").loc[follow["image_id"], "report"].str.contains(comparison).mean()
    assert share > 0.6
    assert idx["report"].str.contains("___").mean() > 0.3, "MIMIC-style de-identification masks"
    normal = gt[list(FINDINGS)].sum(axis=1) == 0
    assert 0.25 < normal.mean() < 0.6
    assert gt["pneumothorax"].mean() < 0.12 and gt["nodule"].mean() < 0.12


def test_section_headers_appear_exactly_as_drawn(big):
    gt = big.labels("ground_truth")[["report_style", "report_sections", "report_headers"]].fillna("")
    reports = big.index["report"]
    styles = set(gt["report_style"])
    assert "sectioned" in styles
    for report, style, sections, headers in zip(reports, gt["report_style"], gt["report_sections"],
                                                gt["report_headers"]):
        drawn = dict(zip(sections.split("|"), headers.split("|"))) if sections else {}
        if style == "paragraph":
            assert report.startswith("FINAL REPORT") and not drawn
        else:
            assert "FINDINGS" in drawn or "IMPRESSION" in drawn
        for name, variants in SECTION_HEADERS.items():
            if name in drawn:
                assert drawn[name] in variants and drawn[name] in report
            else:
                assert not any(v in report for v in variants), (name, report)


def test_header_variants_and_missing_sections_occur(big):
    gt = big.labels("ground_truth")[["report_style", "report_sections", "report_headers"]].fillna("")
    headers = set("|".join(gt["report_headers"]).split("|"))
    assert {"FINDINGS:", "IMPRESSION:"} <= headers
    assert len(headers & {"Findings:", "FINDING:", "Impression:", "CONCLUSION:", "HISTORY:"}) >= 2
    sections = gt.loc[gt["report_style"] == "sectioned", "report_sections"]
    assert (~sections.str.contains("FINDINGS")).any() or (~sections.str.contains("IMPRESSION")).any()
    assert big.index["report"].str.contains("No acute cardiopulmonary").sum() >= 20, "near-identical normals"


def test_patient_level_splits(big):
    idx = big.index
    assert (idx.groupby("patient_id")["split"].nunique() == 1).all()
    assert set(idx["split"]) == {"train", "validate", "test"}
    cfg = SynthConfig()
    patients = plan_cohort(3000, 11, cfg)
    assert sum(p.n_images for p in patients) == 3000
    splits = np.array(assign_splits(len(patients), 11, cfg.split_fractions))
    frac = [(splits == s).mean() for s in ("train", "validate", "test")]
    assert abs(frac[0] - 0.8) < 0.01 and abs(frac[1] - 0.1) < 0.01 and abs(frac[2] - 0.1) < 0.01
    assert assign_splits(len(patients), 11, cfg.split_fractions) == list(splits), "deterministic"


# --- labels: truth vs what the report says ---------------------------------------------------

def test_written_labels_agree_with_truth_about_ninety_percent(big):
    agreement = big.meta["report_agreement"]
    assert 0.8 <= agreement["overall"]["agreement"] <= 0.97
    gt = big.labels("ground_truth")
    for f in FINDINGS:
        written = gt[f"written_{f}"]
        assert set(written.dropna().astype(int)) <= {-1, 0, 1}
        assert (big.index[f].fillna(-9).to_numpy() == written.fillna(-9).to_numpy()).all(), "index = written"


def test_perfect_reports_when_report_noise_is_zero(tmp_path):
    c = generate_corpus(tmp_path / "c", n_images=80, size=64, seed=5, workers=1,
                        config=SynthConfig(report_noise=0.0))
    assert c.meta["report_agreement"]["overall"]["agreement"] == 1.0
    gt = c.labels("ground_truth")
    present = gt["edema"] == 1
    assert (gt.loc[present, "written_edema_severity"] == gt.loc[present, "edema_severity"]).all()


def _keyword_edema_level(report: str) -> int | None:
    """A minimal Chauhan-style labeler: highest affirmed level keyword, negation/hedge aware."""
    keywords = {1: ("vascular congestion", "cephalization", "vascular engorgement", "hilar engorgement",
                    "vascular plethora", "vascular prominence"),
                2: ("interstitial edema", "interstitial pulmonary edema"),
                3: ("alveolar edema", "severe pulmonary edema", "alveolar infiltrates", "alveolar opacities")}
    best = None
    for sent in re.split(r"(?<=\.)\s+|\d\.\s", " ".join(report.split())):
        s = sent.lower()
        if re.search(r"\b(no|without|negative for|resolution|resolved|possible|cannot|may|questionable)\b", s):
            continue
        for level, words in keywords.items():
            if any(w in s for w in words):
                best = max(best or 0, level)
    return best


def test_edema_words_follow_chauhan_levels(big):
    gt = big.labels("ground_truth")
    rows = gt["written_edema"] == 1
    assert rows.sum() >= 20
    found = [_keyword_edema_level(r) for r in big.index.loc[rows, "report"]]
    written = gt.loc[rows, "written_edema_severity"].astype(int).tolist()
    assert np.mean([a == b for a, b in zip(found, written)]) > 0.95
    for level, phrases in EDEMA_PHRASES.items():
        for p in phrases:
            assert _keyword_edema_level(p.capitalize() + ".") == level, p


# --- images: findings drawn where they belong ------------------------------------------------

def test_cardiomegaly_widens_the_heart():
    small, an = _render(Findings(ctr=0.42))
    big_heart, _ = _render(Findings(ctr=0.64))
    # the left heart border moves laterally into the left lower lung (image right)
    assert _region(big_heart, 0.3, 0.55, 0.05, 0.25) > _region(small, 0.3, 0.55, 0.05, 0.25) + 8


def test_effusion_brightens_its_costophrenic_angle():
    base, an = _render(Findings())
    eff, _ = _render(Findings(effusion_side="right", effusion_size="moderate"))
    x_lat = -(an.lung_center + an.lung_half_width)
    box = (x_lat + 0.02, x_lat + 0.25, an.dome_right - 0.1, an.dome_right + 0.18)
    assert _region(eff, *box) > _region(base, *box) + 10
    other = (-box[1], -box[0], box[2], box[3])  # the left angle is untouched
    assert abs(_region(eff, *other) - _region(base, *other)) < 2


def test_findings_visible_at_64_px():
    base, an = _render(Findings(), 64)
    hx, hy = an.hilum_right
    assert _region(_render(Findings(edema_severity=3), 64)[0], hx - 0.2, hx + 0.05, hy - 0.12, hy + 0.15) > \
        _region(base, hx - 0.2, hx + 0.05, hy - 0.12, hy + 0.15) + 6
    upper = (-0.6, -0.25, an.lung_top + 0.15, an.hilum_right[1] - 0.05)
    assert _region(_render(Findings(consolidation_lobe="RUL", consolidation_pattern="lobar"), 64)[0], *upper) > \
        _region(base, *upper) + 8
    nod = Nodule("left", 0.3, -0.3, 20.0)
    nx = an.lung_center + an.lung_half_width * 0.75 * 0.3
    ny = (an.lung_top + an.dome_left + 1.6 * an.cp_depth) / 2 + \
        (an.dome_left + 1.6 * an.cp_depth - an.lung_top) / 2 * 0.7 * -0.3
    box = (nx - 0.05, nx + 0.05, ny - 0.05, ny + 0.05)
    assert _region(_render(Findings(nodule=nod), 64)[0], *box) > _region(base, *box) + 5


def test_pneumothorax_removes_markings_and_conspicuity_zero_hides_findings():
    base, an = _render(Findings(), 128)
    ptx, _ = _render(Findings(pneumothorax_side="left", pneumothorax_size="large"), 128)
    assert not np.array_equal(base, ptx)
    hidden, _ = _render(Findings(edema_severity=3, effusion_side="bilateral", effusion_size="large",
                                 consolidation_lobe="RLL", consolidation_pattern="lobar"), 128, conspicuity=0.0)
    plain, _ = _render(Findings(), 128, conspicuity=0.0)
    assert np.abs(hidden.astype(int) - plain.astype(int)).max() <= 2


@pytest.mark.parametrize("view", ["PA", "AP", "LATERAL"])
def test_conspicuity_zero_hides_every_finding_on_every_view(view):
    """Each finding alone, drawn at conspicuity 0, leaves the film as it is without it
    (a pneumothorax once still erased the vessel markings beyond its pleural line)."""
    cases = [Findings(ctr=0.68), Findings(ctr=0.38), Findings(edema_severity=1), Findings(edema_severity=3),
             Findings(effusion_side="right", effusion_size="large"),
             Findings(effusion_side="bilateral", effusion_size="small"),
             Findings(pneumothorax_side="left", pneumothorax_size="large"),
             Findings(pneumothorax_side="right", pneumothorax_size="small"),
             Findings(consolidation_lobe="LLL", consolidation_pattern="patchy"),
             Findings(atelectasis_kind="lobar_RUL"), Findings(atelectasis_kind="bibasilar"),
             Findings(nodule=Nodule("left", 0.3, -0.3, 25.0))]
    cfg = SynthConfig(conspicuity=0.0, distractor_rate=0.0)
    for patient in (0, 1):
        an = sample_anatomy(np.random.default_rng(patient))
        plain = render_image(an, Findings(), view, 64, seed=patient, detail_seed=patient, config=cfg).astype(int)
        for f in cases:
            img = render_image(an, f, view, 64, seed=patient, detail_seed=patient, config=cfg).astype(int)
            assert np.abs(img - plain).max() <= 1, (view, patient, f)


# --- ECG leads and oxygen tubing: distractors, linked to illness only on request -----------

def test_distractors_follow_illness_only_when_linked():
    off = distractor_rates(planned_truth(4000, 11))
    on = distractor_rates(planned_truth(4000, 11, SynthConfig(distractor_illness_link=1.0)))
    assert off["n_with"] > 400 and off["n_without"] > 1500
    for name in ("ecg", "tubing", "any"):
        assert off["rates"][name]["p_value"] > 0.01, (name, off["rates"][name])  # indistinguishable
        assert on["rates"][name]["p_value"] < 1e-6, (name, on["rates"][name])
        assert on["rates"][name]["ci95"][0] > 0.05
    assert on["rates"]["ecg"]["difference"] > 0.15
    # unlinked, every frontal image gets the prevalence-weighted mean of the linked rates
    for name, (well, ill) in DISTRACTOR_P.items():
        flat = well + SICK_SHARE["frontal"] * (ill - well)
        assert distractor_probabilities(True, 0.0)[name] == distractor_probabilities(False, 0.0)[name] == flat
        assert distractor_probabilities(True, 1.0)[name] == ill and distractor_probabilities(False, 1.0)[name] == well
        n = off["n_with"] + off["n_without"]
        seen_off = (off["rates"][name]["with"] * off["n_with"] + off["rates"][name]["without"] * off["n_without"]) / n
        seen_on = (on["rates"][name]["with"] * on["n_with"] + on["rates"][name]["without"] * on["n_without"]) / n
        assert abs(seen_off - flat) < 0.03 and abs(seen_on - seen_off) < 0.04, (name, seen_off, seen_on, flat)
    half = distractor_probabilities(True, 0.5)["ecg"]
    assert distractor_probabilities(True, 0.0)["ecg"] < half < distractor_probabilities(True, 1.0)["ecg"]


def test_distractor_column_matches_what_is_drawn(corpora):
    c = corpora[0]
    raw = pd.read_csv(c.root / "ground_truth.csv")
    drawn = raw["distractors"].fillna("")
    assert set(drawn) <= {"", "ecg", "tubing", "ecg;tubing"} and (drawn != "").any() and (drawn == "").any()
    assert planned_truth(60, 7)["distractors"].tolist() == list(drawn)
    assert distractor_rates(c.labels("ground_truth"))["n_with"] == int(c.labels("ground_truth").query(
        "view != 'LATERAL'")["edema"].sum())
    cfg = SynthConfig()
    jobs = _image_jobs(plan_cohort(60, 7, cfg), 7, cfg)
    for j in jobs[:12]:  # render_image alone chooses the same distractors as the corpus
        img = render_image(j.anatomy, j.findings, j.view, 64, seed=j.seed, detail_seed=j.detail_seed, config=cfg,
                           sick=j.sick)
        assert np.array_equal(img, np.asarray(c.images)[j.row]), j.row
    an = sample_anatomy(np.random.default_rng(0))
    plain = render_image(an, Findings(), "PA", 64, seed=1, distractors=())
    assert not np.array_equal(plain, render_image(an, Findings(), "PA", 64, seed=1, distractors=("ecg",)))
    with pytest.raises(ValueError, match="distractors"):
        render_image(an, Findings(), "PA", 64, seed=1, distractors=("telemetry",))


def test_link_changes_only_the_images_whose_distractors_change(tmp_path):
    """Same seed with and without the link: common random numbers, so every other pixel
    of the corpus is the same."""
    off = generate_corpus(tmp_path / "off", n_images=80, size=64, seed=2, workers=1)
    on = generate_corpus(tmp_path / "on", n_images=80, size=64, seed=2, workers=1,
                         config=SynthConfig(distractor_illness_link=1.0))
    d_off = off.labels("ground_truth")["distractors"].fillna("").to_numpy()
    d_on = on.labels("ground_truth")["distractors"].fillna("").to_numpy()
    same_image = np.array([np.array_equal(a, b) for a, b in zip(np.asarray(off.images), np.asarray(on.images))])
    assert (same_image == (d_off == d_on)).all()
    assert 0 < (d_off != d_on).sum() < 40
    assert (off.root / "index.csv").read_bytes() == (on.root / "index.csv").read_bytes()


# --- configuration, CLI and errors -----------------------------------------------------------

def test_config_loading_and_presets(tmp_path):
    cfg = from_dict(SynthConfig, {"conspicuity": 0.7, "noise": 2})
    assert cfg.conspicuity == 0.7 and cfg.noise == 2.0
    with pytest.raises(ConfigError, match="conspicuity"):
        from_dict(SynthConfig, {"conspicuty": 0.7})
    with pytest.raises(ConfigError, match="report_noise"):
        SynthConfig(report_noise=1.5)
    with pytest.raises(ConfigError, match="distractor_illness_link"):
        SynthConfig(distractor_illness_link=1.5)
    assert all(SynthConfig.preset(d).distractor_illness_link == 0.0 for d in ("easy", "default", "hard"))
    assert SynthConfig.preset("hard").conspicuity < SynthConfig().conspicuity < SynthConfig.preset("easy").conspicuity
    path = tmp_path / "synth.yaml"
    path.write_text("synth:\n  noise: 0.25\n")
    assert load_synth_config("hard", path).noise == 0.25
    with pytest.raises(ConfigError, match="medium"):
        SynthConfig.preset("medium")


def test_cli_smoke(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("distractor_rate: 0.5\n")
    out = tmp_path / "corpus"
    rc = main(["synth", "--n", "24", "--size", "64", "--seed", "1", "--out", str(out), "--workers", "1",
               "--difficulty", "easy", "--config", str(tmp_path / "s.yaml"), "--no-progress"])
    assert rc == 0
    c = Corpus.open(out)
    assert len(c) == 24 and c.image_size == (64, 64)
    assert c.meta["generator"]["config"]["distractor_rate"] == 0.5
    assert c.meta["generator"]["config"]["conspicuity"] == SynthConfig.preset("easy").conspicuity
    assert "wrote 24 images" in capsys.readouterr().out


@pytest.mark.parametrize("difficulty", ["classic", "hard"])
def test_cli_accepts_every_preset(tmp_path, difficulty):
    out = tmp_path / "corpus"
    assert main(["synth", "--n", "6", "--size", "64", "--out", str(out), "--workers", "1",
                 "--difficulty", difficulty, "--no-progress"]) == 0
    assert Corpus.open(out).meta["generator"]["config"]["conspicuity"] == SynthConfig.preset(difficulty).conspicuity


def test_unwritable_out_dir_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "corpus"
    with pytest.raises(ConfigError, match=re.escape(str(target))):
        generate_corpus(target, n_images=10, size=64)
    rc = main(["synth", "--n", "10", "--size", "64", "--out", str(target), "--no-progress"])
    assert rc == 2
    assert str(target) in capsys.readouterr().err


@pytest.mark.parametrize("size", [32, 63, 513, 1024])
def test_size_out_of_range_errors_before_any_work(tmp_path, capsys, size):
    out = tmp_path / "c"
    with pytest.raises(ConfigError, match="64 and 512"):
        generate_corpus(out, n_images=10, size=size)
    assert not out.exists()
    assert main(["synth", "--n", "10", "--size", str(size), "--out", str(out), "--no-progress"]) == 2
    assert "64 and 512" in capsys.readouterr().err
    with pytest.raises(ValueError, match="64-512"):
        render_image(sample_anatomy(np.random.default_rng(0)), Findings(), "PA", size)


def test_bad_arguments(tmp_path):
    for kwargs in ({"n_images": 0}, {"seed": -1}, {"workers": 0}):
        with pytest.raises(ConfigError):
            generate_corpus(tmp_path / "x", **{"n_images": 5, "size": 64, **kwargs})
    with pytest.raises(ValueError, match="view"):
        render_image(sample_anatomy(np.random.default_rng(0)), Findings(), "OBLIQUE", 64)
    with pytest.raises(ValueError, match="lobe"):
        Findings(consolidation_lobe="XYZ")


def test_ground_truth_csv_round_trips_empty_cells(corpora):
    raw = pd.read_csv(corpora[0].root / "ground_truth.csv")
    written = raw["written_nodule"]
    assert written.isna().any(), "unmentioned findings are empty cells"
    assert set(raw["view"]) <= {"PA", "AP", "LATERAL"}


_GENERATE = """
import hashlib, sys
from radpair.data.synth import generate_corpus
c = generate_corpus(sys.argv[1], n_images=200, size=64, seed=3, workers=1)
print(hashlib.sha256((c.root / 'images.npy').read_bytes() + (c.root / 'index.csv').read_bytes()).hexdigest())
"""


def test_corpus_does_not_depend_on_the_process_hash_seed(tmp_path):
    """String hashing differs between processes (PYTHONHASHSEED); iterating a set of
    strings while drawing random numbers once made two runs of the same seed differ."""
    import os
    import subprocess
    import sys

    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-c", _GENERATE, str(tmp_path / hash_seed)], env=env, check=True,
                             capture_output=True, text=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_shallow_breath_makes_a_normal_heart_look_larger_only_when_confounded():
    from radpair.data.synth.anatomy import Acquisition as Acq

    an = sample_anatomy(np.random.default_rng(0), variation=0.0)
    box = (0.3, 0.55, 0.05, 0.25)  # the left heart border in the left lower lung

    def heart(confounding: float, inspiration: float) -> float:
        cfg = SynthConfig(distractor_rate=0.0, heart_size_confounding=confounding)
        img = render_image(an, Findings(ctr=0.45), "PA", 128, seed=0, detail_seed=0, config=cfg,
                           acquisition=Acq(inspiration=inspiration))
        return _region(img, *box)

    # shallow breath (negative inspiration): the true CTR is unchanged, the drawn heart grows
    assert heart(1.0, -0.08) > heart(0.0, -0.08) + 3
    # a PA film at neutral breath: the knob changes nothing
    neutral = [render_image(an, Findings(ctr=0.45), "PA", 128, seed=0, detail_seed=0, acquisition=Acq(),
                            config=SynthConfig(distractor_rate=0.0, heart_size_confounding=k)) for k in (0.0, 1.0)]
    assert np.array_equal(*neutral)


def test_neutral_shift_knobs_are_the_defaults_and_stay_out_of_cache_keys():
    """A knob added at a value that draws nothing must not re-make cached corpora."""
    from radpair.data.synth.config import NEUTRAL_KNOBS

    for name, neutral in NEUTRAL_KNOBS.items():
        assert getattr(SynthConfig(), name) == neutral, name
    default = SynthConfig.preset("default")
    assert set(default.key_dict()) == set(default.to_dict()) - set(NEUTRAL_KNOBS)
    shifted = SynthConfig.preset("pediatric_shift").key_dict()
    assert shifted["body_scale"] != 1.0 and shifted["findings_only"]  # a shift is keyed

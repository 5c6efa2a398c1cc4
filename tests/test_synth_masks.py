"""Ground-truth regions of the synthetic corpus: byte-neutral, deterministic, aligned, readable."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from radpair.data.corpus import Corpus
from radpair.data.synth import Acquisition, Findings, Nodule, generate_corpus, sample_anatomy
from radpair.data.synth.masks import CHANNELS, MASKS_FILE, MASKS_META_FILE, CorpusMasks, remove_masks
from radpair.data.synth.render import render_image, render_image_with_masks
from radpair.errors import DataError

# SHA-256 of images.npy for generate_corpus(n_images=40, size=64, seed=7, workers=1),
# produced by the generator *before masks existed* (commit dde450a, on an AMD EPYC CPU).
# The images are float32 arithmetic rounded to uint8, so another CPU or numpy build could
# in principle round one pixel differently; the enabled/disabled comparison below does not
# depend on that and is the real guarantee.
IMAGES_SHA256_BEFORE_MASKS = "3c4cde8c7e3c9f5765c50f12459a12c70cbe5ddf45e03252b306b40157654d5d"
LABELS = ("edema", "cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "atelectasis", "nodule")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The same corpus three times: without masks, with masks (1 worker), with masks (2 workers)."""
    base = tmp_path_factory.mktemp("masks")
    off = generate_corpus(base / "off", n_images=40, size=64, seed=7, workers=1, masks=False)
    on = generate_corpus(base / "on", n_images=40, size=64, seed=7, workers=1)
    on2 = generate_corpus(base / "on2", n_images=40, size=64, seed=7, workers=2, chunk_size=8)
    return off, on, on2


def test_masks_leave_every_image_byte_unchanged(corpora):
    off, on, _ = corpora
    assert not (off.root / MASKS_FILE).exists() and not (off.root / MASKS_META_FILE).exists()
    for name in ("images.npy", "index.csv", "ground_truth.csv"):
        assert (off.root / name).read_bytes() == (on.root / name).read_bytes(), name
    assert _sha(on.root / "images.npy") == IMAGES_SHA256_BEFORE_MASKS


def test_masks_are_deterministic_across_generations_and_workers(corpora):
    _, on, on2 = corpora
    assert (on.root / MASKS_FILE).read_bytes() == (on2.root / MASKS_FILE).read_bytes()
    assert json.loads((on.root / MASKS_META_FILE).read_text()) == json.loads((on2.root / MASKS_META_FILE).read_text())


def test_masks_are_non_empty_exactly_where_the_finding_is_drawn(corpora):
    _, on, _ = corpora
    truth = on.labels()
    masks = CorpusMasks.open(on.root, on.images.shape)
    n, h, w = on.images.shape
    rows = np.arange(n)
    assert masks.shape == (n, h, w)
    for channel in CHANNELS:
        m = on.masks(rows, channel)
        assert m.shape == (n, h, w) and m.dtype == bool
        label = "pneumothorax" if channel.startswith("pneumothorax") else channel
        present = truth[label].to_numpy().astype(bool)
        non_empty = m.reshape(n, -1).any(axis=1)
        np.testing.assert_array_equal(non_empty, masks.present(channel))
        assert not np.any(non_empty & ~present), f"{channel}: a mask where the ground truth has no finding"
        missing = present & ~non_empty
        np.testing.assert_array_equal(missing, masks.not_drawn(channel))
        if label == "pneumothorax":  # the lateral view does not draw a pneumothorax; frontal views always do
            np.testing.assert_array_equal(missing, present & (truth["view"] == "LATERAL").to_numpy())
        else:
            assert missing.sum() <= 0.1 * max(1, present.sum()), channel
    union = on.masks(rows, "pneumothorax")
    np.testing.assert_array_equal(union, on.masks(rows, "pneumothorax_line") | on.masks(rows, "pneumothorax_space"))


def test_masks_sit_where_the_anatomy_puts_the_finding(corpora):
    _, on, _ = corpora
    truth = on.labels()
    n, h, w = on.images.shape
    frontal = (truth["view"] != "LATERAL").to_numpy()
    eff = np.flatnonzero(truth["pleural_effusion"].to_numpy().astype(bool) & frontal)
    heart = np.flatnonzero(truth["cardiomegaly"].to_numpy().astype(bool) & frontal)
    assert eff.size and heart.size
    yy, xx = np.mgrid[0:h, 0:w]
    for m in on.masks(eff, "pleural_effusion"):  # fluid collects at the bases
        assert yy[m].mean() > 0.5 * h
    for m in on.masks(heart, "cardiomegaly"):  # the heart is central and low
        assert abs(xx[m].mean() - w / 2) < 0.2 * w and yy[m].mean() > 0.4 * h


CASES = {
    "cardiomegaly": Findings(ctr=0.62),
    "pleural_effusion": Findings(effusion_side="right", effusion_size="moderate"),
    "pneumothorax": Findings(pneumothorax_side="left", pneumothorax_size="large"),
    "consolidation": Findings(consolidation_lobe="RLL", consolidation_pattern="lobar"),
    "atelectasis": Findings(atelectasis_kind="lobar_RUL"),
    "nodule": Findings(nodule=Nodule("left", 0.2, 0.1, 20.0)),
    "edema": Findings(edema_severity=3),
}


@pytest.mark.parametrize("finding", sorted(CASES))
@pytest.mark.parametrize("view", ["PA", "AP", "LATERAL"])
def test_a_finding_changes_the_image_inside_its_mask(finding, view):
    """Render the same film with and without the finding: the change lies in the mask."""
    an = sample_anatomy(np.random.default_rng(3))
    kw = dict(seed=5, detail_seed=5, acquisition=Acquisition(), distractors=())
    plain = render_image(an, Findings(), view, 128, **kw).astype(float)
    img, masks = render_image_with_masks(an, CASES[finding], view, 128, **kw)
    np.testing.assert_array_equal(img, render_image(an, CASES[finding], view, 128, **kw))
    if view == "LATERAL" and finding == "pneumothorax":
        assert "pneumothorax" not in masks  # not drawn on the lateral film
        return
    m = masks[finding]
    assert m.shape == (128, 128) and 0 < m.mean() < 0.5
    diff = np.abs(img.astype(float) - plain)
    assert diff[m].mean() > 3.0 * diff[~m].mean(), (diff[m].mean(), diff[~m].mean())


def test_a_sub_pixel_nodule_keeps_one_pixel():
    an = sample_anatomy(np.random.default_rng(0))
    _, masks = render_image_with_masks(an, Findings(nodule=Nodule("right", 0.0, 0.0, 5.0)), "PA", 64, seed=1)
    assert 1 <= masks["nodule"].sum() <= 4


def test_corpus_masks_errors_name_the_file(tmp_path, corpora):
    off, on, _ = corpora
    assert not off.has_masks and on.has_masks
    with pytest.raises(DataError, match=MASKS_META_FILE):
        off.masks([0], "edema")
    with pytest.raises(DataError, match="did you mean 'edema'"):
        on.masks([0], "oedema")
    with pytest.raises(DataError, match="rows outside"):
        on.masks([40], "edema")
    # a generation interrupted after masks.npy: no masks.json, so nothing is read
    c = generate_corpus(tmp_path / "c", n_images=6, size=64, seed=1, workers=1)
    (c.root / MASKS_META_FILE).unlink()
    with pytest.raises(DataError, match=MASKS_META_FILE):
        Corpus.open(c.root).masks([0], "edema")
    # masks that describe other images are refused
    c = generate_corpus(tmp_path / "d", n_images=6, size=64, seed=1, workers=1)
    meta = json.loads((c.root / MASKS_META_FILE).read_text())
    meta["shape"][0] = 7
    (c.root / MASKS_META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match=MASKS_FILE):
        Corpus.open(c.root).masks([0], "edema")


def test_regenerating_without_masks_removes_stale_ones(tmp_path):
    generate_corpus(tmp_path, n_images=6, size=64, seed=1, workers=1)
    assert CorpusMasks.exists(tmp_path)
    c = generate_corpus(tmp_path, n_images=6, size=64, seed=2, workers=1, masks=False)
    assert not c.has_masks and not (tmp_path / MASKS_FILE).exists()
    remove_masks(tmp_path)  # idempotent

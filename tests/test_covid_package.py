"""Real chest X-rays through ``radpair export`` -> ``radpair predict`` -> ``radpair explain``.

The synthetic corpus is what every other test feeds a package; real files differ in what
the generator never makes (scanner contrast, burnt-in text, borders, odd crops), and the
promise is that each of them gets a row with finite probabilities or a reason. The images
are the ieee8023 COVID-19 collection's as converted in ``../shared/data/covid_cxr``
(256 x 256 8-bit grey PNG); the package itself is a tiny synthetic-trained one, because the
point is the path real files take, not what the model says about them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from radpair_train.cli import main

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "covid_cxr"

pytestmark = pytest.mark.skipif(not (DATA / "pairs.csv").is_file() or not (DATA / "images").is_dir(),
                                reason=f"the real COVID images are not at {DATA} (../shared/data/covid_cxr)")


def _real_pngs(n: int) -> list[Path]:
    """The first ``n`` images pairs.csv lists that are on disk, in its order."""
    with open(DATA / "pairs.csv", newline="", encoding="utf-8") as f:
        names = list(dict.fromkeys(r["image_256"] for r in csv.DictReader(f) if r.get("image_256")))
    files = [DATA / "images" / name for name in names if (DATA / "images" / name).is_file()]
    if len(files) < n:
        pytest.skip(f"{DATA / 'images'}: {len(files)} of the images pairs.csv lists are present, {n} needed")
    return files[:n]


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """A random-feature linear arm on a small synthetic corpus, exported by the CLI."""
    from radpair.data.synth import generate_corpus
    from radpair.transfer import TransferConfig, run_transfer

    root = tmp_path_factory.mktemp("covid")
    corpus = generate_corpus(root / "corpus", n_images=80, size=64, seed=5, workers=1)
    cfg = TransferConfig(n=["all"], repeats=1, n_bootstrap=0, encoders=["random"], protocols=["linear"],
                         train_labels="truth", subgroups=[])
    cfg.linear.c_grid = [1.0]
    run_transfer(cfg, corpus, root / "transfer", log=lambda s: None, progress=False)
    pkg = root / "pkg"
    assert main(["export", "--transfer", str(root / "transfer"), "--arm", "random:linear", "--out", str(pkg)]) == 0
    return pkg


def test_real_covid_images_get_a_row_each_and_two_are_explained(package, tmp_path):
    files = _real_pngs(20)
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--model", str(package), *map(str, files), "-o", str(out), "--no-progress"]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(p) for p in files]  # one row per file, in input order
    # valid PNGs are all predicted; flagged says how they differ from the synthetic training input
    assert {r["status"] for r in rows} <= {"ok", "flagged"}, [(r["path"], r["reason"]) for r in rows]
    names = json.loads((package / "labels.json").read_text())["class_names"]
    probs = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows])
    assert probs.shape == (20, len(names)) and np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()
    assert all(r["format"].lower() == "png" and r["width"] == "256" and r["height"] == "256" for r in rows)

    exp = tmp_path / "explain"
    assert main(["explain", "--checkpoint", str(package), "--images", *map(str, files[:2]), "--out", str(exp),
                 "--no-progress"]) == 0
    record = json.loads((exp / "explanations.json").read_text())
    items = record["items"]
    assert [i["input"] for i in items] == [str(p) for p in files[:2]]
    for item in items:
        assert item["status"] == "ok" and item["target"] in names
        assert Path(item["files"]["Grad-CAM"]).is_file() and min(item["gradcam_cells"]) >= 1
    assert (exp / "index.html").is_file()

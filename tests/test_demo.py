"""The quick demo end to end on CPU: corpus, tokenizer, pretraining, transfer, results page."""

import json

import pytest
from PIL import Image

from radpair_train.cli import main


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-progress", "--out", str(out), "n_images=400"]) == 0
    results = json.loads((out / "results.json").read_text())
    headline = results["headline"]
    assert {"convirt (linear probe)", "random init (linear probe)", "from scratch (supervised)"} <= set(headline)
    for row in headline.values():
        assert set(row) >= {"10", "100"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    assert results["corpus"]["n_images"] == 400
    page = (out / "report.md").read_text()
    assert "macro" in page.lower()
    pngs = sorted(p for p in out.rglob("*.png") if "corpus" not in p.parts)
    assert len(pngs) >= 3
    for p in pngs:
        Image.open(p).verify()
    assert (out / "pretrain" / "config.yaml").is_file() and (out / "demo_config.yaml").is_file()
    # A second run resumes from the finished stages instead of redoing them.
    assert main(["demo", "--quick", "--no-progress", "--out", str(out), "n_images=400"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert "ConVIRT pretraining" not in again["stage_seconds"]
    assert again["headline"] == headline


def test_demo_rejects_bad_settings(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "n_imagez=10"]) == 2
    assert "did you mean 'n_images'" in capsys.readouterr().err
    blocker = tmp_path / "f"
    blocker.write_text("x")
    assert main(["demo", "--quick", "--out", str(blocker / "sub")]) == 2
    assert "not writable" in capsys.readouterr().err

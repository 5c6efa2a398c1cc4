"""benchmarks/localisation_study.py --train: one corpus, runs trained at equal epochs, every
run scored against the baselines, and a second call reuses what the first trained."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import localisation_study


def test_train_mode_scores_a_classifier_and_a_report_writer_and_resumes(tmp_path, capsys):
    args = ["--train", str(tmp_path), "--image-size", "64", "--images", "120", "--epochs", "1", "--max-steps", "2",
            "--methods", "scratch,chauhan_ranking,radtex_captioning", "--n-bootstrap", "20", "--threads", "1"]
    threads = torch.get_num_threads()  # --threads sets torch's process-wide count
    try:
        _run_and_check(tmp_path, args, capsys)
    finally:
        torch.set_num_threads(threads)


def _run_and_check(tmp_path, args, capsys):
    assert localisation_study.main(args) == 0
    data = json.loads((tmp_path / "study" / "localisation.json").read_text())
    assert (tmp_path / "study" / "pointing_game.png").stat().st_size > 0
    assert set(data["runs"]) == set(data["train_seconds"]) == {"scratch", "chauhan_ranking", "radtex_captioning"}
    methods = {s["method"] for s in data["scores"]}
    assert {"scratch", "chauhan_ranking", "radtex_captioning", "centre", "uniform"} <= methods
    # Chauhan's classifier grades edema severity: the findings go through its joint embedding
    assert any(n.startswith("chauhan_ranking: its classifier has no") and "joint embedding" in n
               for n in data["notes"])
    assert any("log-likelihood of its own generated report" in n for n in data["notes"])
    auc = data["detection_auc"]
    assert all(v is None for v in auc["radtex_captioning"].values())  # it explains its report, not a finding
    for name in ("scratch", "chauhan_ranking"):
        assert all(v is None or 0.0 <= v <= 1.0 for v in auc[name].values())
        assert sum(v is not None for v in auc[name].values()) >= 3
    for name in ("scratch", "chauhan_ranking", "radtex_captioning"):
        cfg = (tmp_path / name / "config.yaml").read_text()
        assert "epochs: 1" in cfg and "max_steps: 2" in cfg
    stamp = (tmp_path / "scratch" / "image_encoder.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert localisation_study.main(args) == 0  # trained runs are reused, not retrained
    assert (tmp_path / "scratch" / "image_encoder.safetensors").stat().st_mtime_ns == stamp

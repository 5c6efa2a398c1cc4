"""benchmarks/synth_calibration.py joins a rerun of one budget into an earlier run's row."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synth_calibration import join_rows  # noqa: E402


def _row(seed, macro, n_images=25000, source="a.json"):
    per = {b: {"edema": v, "nodule": v - 0.01} for b, v in macro.items()}
    return {"seed": seed, "n_images": n_images, "image_size": 64, "difficulty": "default",
            "scratch_macro_auc": dict(macro), "scratch_per_finding": per, "scratch_repeat_ci": {},
            "label_agreement": 0.9, "floor": {"contains_half": True}, "pretraining_pairs": 20100, "source": source}


def test_a_later_budget_replaces_the_earlier_and_targets_are_checked_again():
    first = _row(1, {"10": 0.51, "100": 0.56, "1000": 0.69, "all": 0.772})
    rerun = _row(1, {"all": 0.791}, source="b.json")
    (row,) = join_rows([first, rerun])
    assert row["scratch_macro_auc"] == {"10": 0.51, "100": 0.56, "1000": 0.69, "all": 0.791}
    assert row["scratch_per_finding"]["all"]["edema"] == 0.791 and row["sources"] == ["a.json", "b.json"]
    assert row["budget_sources"] == {"10": "a.json", "100": "a.json", "1000": "a.json", "all": "b.json"}
    assert row["targets_met"]["scratch_all"] is True and row["targets_met"]["scratch_gap"] is True
    assert join_rows([first])[0]["targets_met"]["scratch_all"] is False


def test_runs_on_different_corpora_are_not_joined():
    with pytest.raises(SystemExit, match="different corpora"):
        join_rows([_row(0, {"100": 0.6}), _row(0, {"all": 0.8}, n_images=8000)])

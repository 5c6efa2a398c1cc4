"""benchmarks/preset_selection.py chooses a preset from validate scores alone."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import preset_selection  # noqa: E402
from preset_selection import parse_candidates, rank, validate_scores  # noqa: E402


def _cell(arm, repeat, chosen_c, scores, test_auc=0.99):
    return {"arm": arm, "repeat": repeat, "chosen": {"C": chosen_c},
            "selection": [{"C": c, "val_score": s, "val_loss": 0.5} for c, s in scores.items()],
            "metrics": {"values": {"macro_auc": test_auc}}}


def test_candidates_are_a_name_then_overrides():
    got = parse_candidates([["preset"], ["fast", "optim.lr=3e-3", "data.batch_size=32"]])
    assert got == {"preset": [], "fast": ["optim.lr=3e-3", "data.batch_size=32"]}
    with pytest.raises(SystemExit, match="given twice"):
        parse_candidates([["a"], ["a", "optim.lr=1"]])
    with pytest.raises(SystemExit, match="first word is the candidate's name"):
        parse_candidates([["optim.lr=1"]])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_candidates([["a", "optim.lr"]])


def test_the_score_is_the_chosen_settings_validate_score_and_never_the_test_metric():
    cells = [_cell("a:linear", 1, 1.0, {0.1: 0.60, 1.0: 0.70}, test_auc=0.10),
             _cell("a:linear", 0, 0.1, {0.1: 0.65, 1.0: 0.55}, test_auc=0.99),
             _cell("b:linear", 0, 1.0, {0.1: 0.80, 1.0: 0.75})]
    assert validate_scores(cells, "a:linear") == [0.65, 0.70]  # by repeat, the chosen C's validate score
    assert validate_scores(cells, "b:linear") == [0.75]
    broken = [_cell("a:linear", 0, 10.0, {0.1: 0.6})]
    with pytest.raises(SystemExit, match="not once in its selection"):
        validate_scores(broken, "a:linear")


def test_ranking_is_by_mean_with_ties_to_the_first_given_and_nan_last():
    assert rank({"a": [0.6, 0.6], "b": [0.7, 0.5], "c": [0.7, 0.7]}) == ["c", "a", "b"]
    assert rank({"n": [math.nan], "x": [0.5]}) == ["x", "n"]


def test_end_to_end_on_a_tiny_corpus_writes_every_candidates_validate_score(tmp_path, monkeypatch):
    from radpair.data.synth import generate_corpus
    from radpair.text import train_wordpiece_tokenizer

    seed_dir = tmp_path / "demo" / "seed5"
    corpus = generate_corpus(seed_dir / "corpus", n_images=200, size=64, seed=5, workers=1)
    train_wordpiece_tokenizer(corpus.index["report"].astype(str).tolist(), seed_dir / "tokenizer", vocab_size=300,
                              min_frequency=1)
    out = tmp_path / "sel"
    argv = ["preset_selection.py", "--method", "timnet_matching", "--demo-dir", str(tmp_path / "demo"), "--seed", "5",
            "--n", "20", "--repeats", "2", "--out", str(out), "--no-progress",
            "--candidate", "preset", "train.max_steps=2", "train.epochs=1",
            "--candidate", "wide", "train.max_steps=2", "train.epochs=1", "method.embedding_dim=32"]
    monkeypatch.setattr(sys, "argv", argv)
    assert preset_selection.main() == 0
    result = json.loads((out / "timnet_matching" / "seed5" / "selection.json").read_text())
    assert set(result["candidates"]) == {"preset", "wide"} and result["chosen"] == result["ranking"][0]
    for c in result["candidates"].values():
        assert len(c["validate_macro_auc"]) == 2 and all(0.0 <= v <= 1.0 for v in c["validate_macro_auc"])
    assert result["candidates"]["wide"]["overrides"][-1] == "method.embedding_dim=32"
    # a second launch pretrains nothing again and reuses every transfer cell
    assert preset_selection.main() == 0

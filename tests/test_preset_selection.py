"""benchmarks/preset_selection.py chooses a preset from validate scores alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import preset_selection  # noqa: E402
from preset_selection import parse_candidates, rank, validate_scores  # noqa: E402


def _cell(arm, repeat, chosen_c, scores, test_auc=0.99, budget="100"):
    return {"arm": arm, "budget": budget, "repeat": repeat, "chosen": {"c": chosen_c},
            "selection": [{"c": c, "val_score": s, "val_loss": 0.5} for c, s in scores.items()],
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
    for bad in ("random", "a/b", "../x"):
        with pytest.raises(SystemExit, match="a name is"):
            parse_candidates([[bad]])


def test_the_score_is_the_chosen_settings_validate_score_and_never_the_test_metric():
    cells = [_cell("a:linear", 1, 1.0, {0.1: 0.60, 1.0: 0.70}, test_auc=0.10),
             _cell("a:linear", 0, 0.1, {0.1: 0.65, 1.0: 0.55}, test_auc=0.99),
             _cell("b:linear", 0, 1.0, {0.1: 0.80, 1.0: 0.75})]
    # by repeat, the chosen C's validate score: not the best validate score, not the test metric
    assert validate_scores(cells, "a:linear", "100", 2) == [0.65, 0.70]
    assert validate_scores(cells + [_cell("b:linear", 1, 0.1, {0.1: 0.7, 1.0: 0.6})], "b:linear", "100", 2) == [0.75, 0.7]
    # a cell of another budget (an older study in the same folder) never counts
    other = _cell("a:linear", 0, 1.0, {0.1: 0.1, 1.0: 0.9}, budget="10")
    assert validate_scores(cells + [other], "a:linear", "100", 2) == [0.65, 0.70]
    with pytest.raises(SystemExit, match="not once in its selection"):
        validate_scores([_cell("a:linear", 0, 10.0, {0.1: 0.6})], "a:linear", "100", 1)
    with pytest.raises(SystemExit, match=r"repeats \[0\] scored"):
        validate_scores(cells, "b:linear", "100", 2)
    with pytest.raises(SystemExit, match="given twice"):
        validate_scores(cells + cells, "a:linear", "100", 2)
    for undefined in (None, float("nan")):
        with pytest.raises(SystemExit, match="no validate score"):
            validate_scores([_cell("a:linear", 0, 0.1, {0.1: undefined})], "a:linear", "100", 1)


def test_ranking_is_by_mean_with_ties_to_the_first_given():
    assert rank({"a": [0.6, 0.6], "b": [0.7, 0.5], "c": [0.7, 0.7]}) == ["c", "a", "b"]
    assert rank({"x": [0.5, 0.7], "y": [0.55, 0.6]}) == ["x", "y"]


def test_end_to_end_on_a_tiny_corpus_writes_every_candidates_validate_score(tmp_path, monkeypatch, capsys):
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
    assert capsys.readouterr().out.count("pretrained in") == 2
    root = out / "timnet_matching" / "seed5"
    result = json.loads((root / "selection.json").read_text())
    assert set(result["candidates"]) == {"preset", "wide"}
    means = {k: c["mean"] for k, c in result["candidates"].items()}
    assert result["ranking"] == sorted(means, key=lambda k: (-means[k], ["preset", "wide"].index(k)))
    assert result["chosen"] == result["ranking"][0]
    for c in result["candidates"].values():
        assert len(c["validate_macro_auc"]) == 2 and all(0.0 <= v <= 1.0 for v in c["validate_macro_auc"])
        assert c["mean"] == pytest.approx(sum(c["validate_macro_auc"]) / 2)
    assert result["candidates"]["wide"]["overrides"][-1] == "method.embedding_dim=32"

    # the test scores cannot move the choice: turn the winner's test predictions upside down and
    # flatten the others' (reused cells are scored again from these), then launch again
    def test_auc():
        r = json.loads((root / "transfer_validate" / "results.json").read_text())
        return {s["arm"]: s["mean"] for s in r["summaries"] if s["metric"] == "macro_auc"}

    before = test_auc()
    winner = result["chosen"]
    for f in (root / "transfer_validate" / "cells").rglob("predictions.npz"):
        with np.load(f) as z:
            val, test = z["val"], z["test"]
        test = 1.0 - test if f.parts[-3] == f"{winner}__linear" else np.full_like(test, 0.5)
        np.savez(f, val=val, test=test)
    weights = root / "wide" / "image_encoder.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert preset_selection.main() == 0
    assert "pretrained in" not in capsys.readouterr().out  # nothing pretrained again
    assert weights.stat().st_mtime_ns == stamp
    again = json.loads((root / "selection.json").read_text())
    assert test_auc()[f"{winner}:linear"] == pytest.approx(1.0 - before[f"{winner}:linear"], abs=1e-6)  # the rewrite bit
    assert again["ranking"] == result["ranking"]
    assert [c["validate_macro_auc"] for c in again["candidates"].values()] == \
        [c["validate_macro_auc"] for c in result["candidates"].values()]

    # a candidate whose settings changed under the same name is refused, not reused
    changed = [a if a != "method.embedding_dim=32" else "method.embedding_dim=48" for a in argv]
    monkeypatch.setattr(sys, "argv", changed)
    with pytest.raises(SystemExit, match="trained with other settings"):
        preset_selection.main()


def test_a_run_folder_is_reused_only_for_the_same_settings(tmp_path, monkeypatch):
    """What may differ (display, threads, a path spelled from another folder, a key added to the
    config later at its default) is not a change; a changed rate is."""
    import yaml

    from method_quality import check_run_folder, preset_config
    from radpair.config import save_config

    config = Path(__file__).resolve().parents[1] / "configs" / "timnet_matching_cpu.yaml"
    (tmp_path / "demo" / "corpus").mkdir(parents=True)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(tmp_path)
    asked = preset_config(config, Path("demo/corpus"), Path("demo/tok"), run, 0, ["optim.lr=3e-4"])
    check_run_folder(run, asked)  # no config.yaml yet: a fresh run
    written = preset_config(config, tmp_path / "demo" / "corpus", tmp_path / "demo" / "tok", tmp_path / "elsewhere", 0,
                            ["optim.lr=3e-4", "train.threads=1", "train.progress=true", "train.log_every=5"])
    save_config(written, run / "config.yaml")
    check_run_folder(run, asked)  # absolute against relative paths, threads, progress, logging, out_dir
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["optim"]["betas"]  # as if written before the key existed (the default is asked)
    saved["train"]["a_key_since_removed"] = 1
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    check_run_folder(run, asked)
    for seed, over, key in ((0, ["optim.lr=1e-3"], "optim.lr"), (1, ["optim.lr=3e-4"], "train.seed")):
        other = preset_config(config, Path("demo/corpus"), Path("demo/tok"), run, seed, over)
        with pytest.raises(SystemExit, match=f"{key}: .* there"):
            check_run_folder(run, other)
    moved = preset_config(config, Path("demo/other_corpus"), Path("demo/tok"), run, 0, ["optim.lr=3e-4"])
    with pytest.raises(SystemExit, match="data.corpus"):
        check_run_folder(run, moved)

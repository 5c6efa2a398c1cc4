"""Zero-shot classification and image<->text retrieval of joint-embedding runs (issue 11, part 6)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from math import comb

import numpy as np
import pytest

from radpair.errors import ConfigError, DataError
from radpair.evaluation.retrieval import (
    first_hit_probabilities,
    rank_by_similarity,
    rank_queries,
    summarise_ranks,
)
from radpair.evaluation.zeroshot import choose_prompt_sets, load_prompts
from radpair_train.cli import main


# ---- retrieval arithmetic -------------------------------------------------------------------------
def test_hand_worked_recall_median_rank_and_chance_with_duplicate_texts():
    # four pairs; pairs 0 and 1 share a report text (code 0)
    codes = np.array([0, 0, 1, 2])
    scores = np.array([
        [0.1, 0.5, 0.9, 0.3],  # hits: cands 0, 1; best hit 0.5 has one non-hit above -> rank 2
        [0.2, 0.1, 0.3, 0.4],  # best hit 0.2, two non-hits above -> rank 3
        [0.9, 0.8, 0.7, 0.1],  # hit 0.7, two non-hits above -> rank 3
        [0.0, 0.0, 0.0, 0.5],  # hit first -> rank 1
    ])
    r = rank_queries(scores, codes, codes, ks=(1, 2, 3))
    assert r["rank"].tolist() == [2, 3, 3, 1]
    assert r["n_hits"].tolist() == [2, 2, 1, 1]
    s = summarise_ranks(r, ks=(1, 2, 3))
    assert s["recall@1"] == pytest.approx(0.25) and s["recall@2"] == pytest.approx(0.5)
    assert s["recall@3"] == pytest.approx(1.0) and s["median_rank"] == pytest.approx(2.5)
    # chance: 1 - C(n-h, K) / C(n, K) per query; two hits among 4 for queries 0-1, one for 2-3
    assert s["chance@1"] == pytest.approx((0.5 + 0.5 + 0.25 + 0.25) / 4)
    assert s["chance@2"] == pytest.approx((5 / 6 + 5 / 6 + 0.5 + 0.5) / 4)
    assert s["chance@3"] == pytest.approx((1 + 1 + 0.75 + 0.75) / 4)
    # chance rank (n + 1) / (h + 1): 5/3, 5/3, 5/2, 5/2
    assert s["chance_median_rank"] == pytest.approx((5 / 3 + 5 / 2) / 2)


def test_chance_matches_enumerating_every_ranking():
    n, h, ks = 6, 2, (1, 2, 3, 5)
    firsts = []
    for perm in itertools.permutations(range(n)):
        firsts.append(min(pos for pos, item in enumerate(perm, 1) if item < h))  # items 0..h-1 are hits
    firsts = np.array(firsts)
    rank, probs = first_hit_probabilities([0], [n - h], [h], ks)
    assert rank[0] == pytest.approx(firsts.mean())
    for j, k in enumerate(ks):
        assert probs[0, j] == pytest.approx((firsts <= k).mean())
        assert probs[0, j] == pytest.approx(1 - comb(n - h, k) / comb(n, k))


def test_fully_tied_scores_score_exactly_chance_and_ties_count_by_expectation():
    codes = np.array([0, 0, 1, 2, 3])
    r = rank_queries(np.zeros((5, 5)), codes, codes, ks=(1, 5))
    np.testing.assert_allclose(r["recall"], r["chance_recall"])
    np.testing.assert_allclose(r["rank"], r["chance_rank"])
    # one non-hit ahead, then the hit tied with one non-hit: rank 1 + 1.5, R@2 = 1/2
    r = rank_queries(np.array([[0.5, 0.9, 0.5]]), [0], [0, 1, 2], ks=(1, 2, 3))
    assert r["rank"][0] == pytest.approx(2.5) and r["recall"][0].tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_perfect_embeddings_give_recall_one_even_with_duplicate_texts():
    codes = np.array([0, 1, 1, 2, 3, 3, 3, 4])
    emb = np.eye(5)[codes]  # a perfect model: identical texts embed identically, images on their text
    s = summarise_ranks(rank_by_similarity(emb, emb, codes, codes))
    assert s["recall@1"] == s["recall@5"] == s["recall@10"] == 1.0 and s["median_rank"] == 1.0
    assert s["chance@1"] < 1.0


# ---- prompt selection ------------------------------------------------------------------------------
def test_prompt_set_with_the_best_validation_auc_is_chosen():
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    mask = np.ones_like(y, dtype=bool)
    scores = {"a": np.array([[0.1, 0.9], [0.8, 0.2], [0.2, 0.7], [0.9, 0.1]]),  # set 1 ranks a perfectly
              "b": np.array([[0.0], [1.0], [0.0], [1.0]])}
    chosen, aucs = choose_prompt_sets(scores, y, mask, ["a", "b"])
    assert chosen == {"a": 1, "b": 0} and aucs["a"] == [0.0, 1.0] and aucs["b"] == [1.0]
    # a class without both label values on validate keeps its first set
    chosen, aucs = choose_prompt_sets(scores, np.zeros_like(y), mask, ["a", "b"])
    assert chosen == {"a": 0, "b": 0} and np.isnan(aucs["a"]).all()


def test_builtin_prompts_cover_findings7_and_bad_prompt_files_are_named(tmp_path):
    from radpair.tasks import load_task

    pf = load_prompts("findings7")
    assert set(load_task("findings7").output_columns) <= set(pf.classes)
    assert all(len(sets) >= 2 and all(s.positive and s.negative for s in sets) for sets in pf.classes.values())
    with pytest.raises(ConfigError, match="did you mean 'findings7'"):
        load_prompts("findings8")
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  edema:\n    - name: x\n      positive: [Edema.]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: classes.edema\[0\].negative"):
        load_prompts(bad)


# ---- a tiny ConVIRT run ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from radpair.config import load_config
    from radpair.data.synth import generate_corpus
    from radpair.text import train_wordpiece_tokenizer
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer
    from radpair_train.testing import tiny_overrides

    root = tmp_path_factory.mktemp("joint")
    corpus = generate_corpus(root / "corpus", n_images=240, size=64, seed=3, workers=1)
    train_wordpiece_tokenizer(corpus.index["report"].tolist(), root / "tok", vocab_size=300, min_frequency=1)
    cfg = load_config(PretrainConfig, None, tiny_overrides(
        root / "corpus", root / "tok", root / "run", **{"train.max_steps": 3, "data.text_sections": "chauhan2020",
                                                         "method.learn_temperature": True}))
    Trainer(cfg).fit()
    return {"root": root, "corpus": root / "corpus", "tok": root / "tok", "run": root / "run"}


@pytest.fixture(scope="module")
def joint(tiny):
    from radpair.evaluation.joint import load_joint_run

    return load_joint_run(tiny["run"])


def test_embeddings_are_deterministic_and_text_keys_follow_the_tokenizer(joint, tiny):
    from radpair.data.corpus import Corpus
    from radpair.evaluation.joint import embed_images, embed_texts, text_keys

    corpus = Corpus.open(tiny["corpus"])
    a = embed_images(joint, corpus, [3, 1, 2], batch_size=2)
    b = embed_images(joint, corpus, [3, 1, 2], batch_size=3)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    t = embed_texts(joint, ["No effusion.", "Moderate cardiomegaly."])
    assert t.shape == (2, a.shape[1]) and joint.model.training is False
    assert text_keys(joint, ["No effusion.", "no   EFFUSION.", "No effusion"], sections=False).tolist() == [0, 0, 1]


def test_pool_is_drawn_deterministically_from_the_seed(joint, tiny):
    from radpair.evaluation.retrieval import evaluate_retrieval

    a = evaluate_retrieval(joint, tiny["corpus"], pool_size=12, seed=1)
    b = evaluate_retrieval(joint, tiny["corpus"], pool_size=12, seed=1)
    c = evaluate_retrieval(joint, tiny["corpus"], pool_size=12, seed=2)
    assert a.pool["image_ids"] == b.pool["image_ids"] != c.pool["image_ids"]
    assert a.directions == b.directions and a.pool["pool_size"] == 12
    for d in a.directions.values():
        assert 0 <= d["chance@1"] <= d["chance@5"] <= d["chance@10"] <= 1
    with pytest.raises(ConfigError, match="at least 2"):
        evaluate_retrieval(joint, tiny["corpus"], pool_size=1)


def test_zero_shot_chooses_on_validate_and_reads_test_labels_only_afterwards(joint, tiny, monkeypatch):
    import radpair.tasks
    from radpair.evaluation import zeroshot

    events: list[str] = []
    real_labels, real_choose = radpair.tasks.task_labels, zeroshot.choose_prompt_sets

    def labels(corpus, spec, source, rows, test=False):
        events.append(f"labels:{'test' if test else 'val'}:{source}")
        out = real_labels(corpus, spec, source, rows, test=test)
        if test and flip:
            # inverted test labels must not change the choice
            out = dataclasses.replace(out, y=np.where(out.mask, 1 - out.y, out.y).astype(out.y.dtype))
        return out

    def choose(*args, **kw):
        events.append("choose")
        return real_choose(*args, **kw)

    monkeypatch.setattr(radpair.tasks, "task_labels", labels)
    monkeypatch.setattr(zeroshot, "choose_prompt_sets", choose)
    flip = False
    plain = zeroshot.evaluate_zeroshot(joint, tiny["corpus"], n_bootstrap=50)
    assert events == ["labels:val:report", "choose", "labels:test:truth"]
    flip = True
    flipped = zeroshot.evaluate_zeroshot(joint, tiny["corpus"], n_bootstrap=50)
    assert flipped.chosen == plain.chosen and flipped.validation["thresholds"] == plain.validation["thresholds"]
    assert plain.metrics.per_class
    for c, m in plain.metrics.per_class.items():
        assert flipped.metrics.per_class[c]["auc"] == pytest.approx(1 - m["auc"])
    assert set(plain.chosen) == set(radpair.tasks.load_task("findings7").output_columns)
    assert plain.against_chance["difference"] == pytest.approx(plain.macro_auc - 0.5)


def test_zero_shot_rejects_tasks_and_prompts_it_cannot_score(joint, tiny, tmp_path):
    from radpair.evaluation.zeroshot import evaluate_zeroshot

    with pytest.raises(ConfigError, match="ordinal"):
        evaluate_zeroshot(joint, tiny["corpus"], task="edema_severity")
    partial = tmp_path / "two.yaml"
    partial.write_text("classes:\n  edema:\n    positive: [Edema.]\n    negative: [No edema.]\n")
    with pytest.raises(ConfigError, match=r"no prompts for classes \['cardiomegaly'"):
        evaluate_zeroshot(joint, tiny["corpus"], prompts=partial)


# ---- the command ------------------------------------------------------------------------------------
def test_cli_retrieval_and_zeroshot_write_json_and_markdown(tiny, tmp_path, capsys):
    out = tmp_path / "ret"
    rc = main(["evaluate", "retrieval", "--checkpoint", str(tiny["run"]), "--corpus", str(tiny["corpus"]),
               "--out", str(out), "--pool-size", "20", "--device", "cpu", "--no-progress"])
    assert rc == 0
    res = json.loads((out / "retrieval.json").read_text())
    assert res["pool"]["pool_size"] == 20 and set(res["directions"]) == {"image_to_text", "text_to_image"}
    assert {"recall@1", "chance@1", "recall@10", "chance@10", "median_rank"} <= set(res["directions"]["text_to_image"])
    assert "R@10 (chance)" in (out / "retrieval.md").read_text() and "image→text" in capsys.readouterr().out

    out = tmp_path / "zs"
    rc = main(["evaluate", "zeroshot", "--checkpoint", str(tiny["run"]), "--corpus", str(tiny["corpus"]),
               "--tokenizer", str(tiny["tok"]), "--out", str(out), "--bootstrap", "50", "--no-progress"])
    assert rc == 0
    res = json.loads((out / "zeroshot.json").read_text())
    assert res["task"]["name"] == "findings7" and res["test"]["labels"] == "truth"
    assert res["metrics"]["primary_metric"] == "macro_auc" and "macro auc against 0.5" in \
        (out / "zeroshot.md").read_text().lower()


def _broken_copy(tiny, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(tiny["run"], dst)
    return dst


def _fails(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_cli_errors_name_the_missing_file(tiny, tmp_path, capsys, tokenizer_dir):
    base = ["--corpus", str(tiny["corpus"]), "--no-progress"]
    run = _broken_copy(tiny, tmp_path, "no_text")
    (run / "text_encoder.safetensors").unlink()
    err = _fails(capsys, ["evaluate", "retrieval", "--checkpoint", str(run), *base])
    assert "no text_encoder.safetensors" in err and str(run) in err

    run = _broken_copy(tiny, tmp_path, "no_tok")
    cfg = (run / "config.yaml").read_text().replace(str(tiny["tok"]), str(tmp_path / "gone"))
    (run / "config.yaml").write_text(cfg)
    err = _fails(capsys, ["evaluate", "zeroshot", "--checkpoint", str(run), *base])
    assert "config.yaml (text_encoder.tokenizer) does not exist" in err and "--tokenizer" in err
    err = _fails(capsys, ["evaluate", "zeroshot", "--checkpoint", str(run), "--tokenizer", str(tokenizer_dir), *base])
    assert "pass the tokenizer the run was trained with" in err

    run = _broken_copy(tiny, tmp_path, "no_ckpt")
    shutil.rmtree(run / "checkpoints")
    err = _fails(capsys, ["evaluate", "retrieval", "--checkpoint", str(run), *base])
    assert "projection heads" in err and "step-00000003.pt" in err

    err = _fails(capsys, ["evaluate", "retrieval", "--checkpoint", str(tmp_path / "nowhere"), *base])
    assert "run folder" in err and "does not exist" in err
    err = _fails(capsys, ["evaluate", "retrieval", "--checkpoint", str(tiny["run"]), "--corpus", str(tmp_path / "x")])
    assert "corpus folder" in err
    with pytest.raises(DataError, match="not a run folder"):
        from radpair.evaluation.joint import load_joint_run

        load_joint_run(tmp_path)

"""The replicate runner carries a paper file out: corpora, pretraining, transfer, tables, claims.

End to end on ``convirt_sections`` in quick mode, shrunk further (a 240-image corpus, 4
pretraining steps per model) so the test stays short; the real ``--quick`` run takes about
two minutes on 2 cores.
"""

from __future__ import annotations

import json

import pytest
import yaml

from radpair.errors import ConfigError
from radpair.replicate import load_paper
from radpair.replicate.runner import pretrain_overrides, run_paper, transfer_studies
from radpair.replicate.schema import CorpusSpec, MethodSpec


def _shrink(monkeypatch, steps: int) -> None:
    """Quick mode, smaller still: a 240-image corpus and ``steps`` pretraining steps per model."""
    real_preset, real_settings = CorpusSpec.preset, MethodSpec.settings
    monkeypatch.setattr(CorpusSpec, "preset", lambda self, mode: {**real_preset(self, mode), "n": 240})
    monkeypatch.setattr(MethodSpec, "settings", lambda self, mode: {**real_settings(self, mode), "max_steps": steps})


def test_method_settings_and_options_become_config_overrides():
    paper = load_paper("convirt_sections")
    findings = paper.method("findings")
    cpu = dict(o.split("=", 1) for o in pretrain_overrides(paper, findings, "cpu"))
    assert cpu["method.name"] == "convirt" and cpu["method.text_sections"] == "findings"
    assert cpu["method.require_sections"] == '["findings", "impression"]'
    assert cpu["image_encoder.name"] == "resnet_tiny" and cpu["text_encoder.hidden_size"] == "64"
    modified = dict(o.split("=", 1) for o in pretrain_overrides(paper, paper.method("modified"), "data"))
    assert modified["method.name"] == "convirt_sections" and modified["method.lambda_local"] == "0.75"
    assert modified["image_encoder.name"] == "resnet18" and "text_encoder.hidden_size" not in modified
    bad = MethodSpec(id="x", method="convirt", label="x", options={"branches": 2}, paper={}, cpu={}, quick={},
                     corpus="main", notes="")
    with pytest.raises(ConfigError, match="option 'branches' of method 'x' is not a key"):
        pretrain_overrides(paper, bad, "cpu")


def test_radtex_cpu_pretraining_is_the_measured_adam_preset_and_data_mode_keeps_virtex():
    # the cpu preset states one Adam rate; merged into the recipe, its lr_scale={} once kept
    # VirTex's 0.005 scale on the decoder (and LookAhead), and the decoder learned nothing
    from radpair.config import load_config
    from radpair.replicate import runner, vocab
    from radpair_train.config import PretrainConfig

    paper = load_paper("radtex")
    recipe = runner._repo_root() / paper.info.recipe
    cpu = load_config(PretrainConfig, recipe, pretrain_overrides(paper, paper.method("radtex"), "cpu")).optim
    assert (cpu.name, cpu.lr, cpu.lr_scale, cpu.lookahead_steps, cpu.grad_clip) == ("adam", 1e-3, {}, 0, 1.0)
    data = load_config(PretrainConfig, recipe, pretrain_overrides(paper, paper.method("radtex"), "data")).optim
    assert (data.name, data.lr, data.lookahead_steps) == ("sgd", 0.2, 5)
    assert data.lr_scale == {"textual": 0.005, "visual_projection": 0.005}
    cxr14 = load_config(PretrainConfig, recipe, pretrain_overrides(paper, paper.method("cxr14"), "cpu")).optim
    assert (cxr14.name, cxr14.lookahead_steps) == ("adamw", 0)  # the stand-in's AdamW, not VirTex's LookAhead
    assert set(runner._OPTIMIZERS) == set(vocab.OPTIMIZERS)
    for name in ("chauhan2020", "convirt_sections", "tienet", "timnet"):  # their recipes have no LookAhead
        other = load_paper(name)
        for spec in other.methods:
            assert not any(o.startswith("optim.lookahead_steps=") for o in pretrain_overrides(other, spec, "cpu"))


def test_radtex_downstream_trains_sgd_and_no_other_paper_changes_optimiser():
    # the harness trained AdamW whatever a paper file said; RadTex's 0.2 from random init is an SGD rate
    from dataclasses import replace

    from radpair.replicate import list_papers

    radtex = load_paper("radtex")
    for mode in ("cpu", "quick", "data"):
        for protocol in radtex.transfer:
            for _, settings in transfer_studies(protocol, mode):
                assert settings["finetune.optimizer"] == settings["frozen_head.optimizer"] == "sgd"
    for info in list_papers():
        name = getattr(info, "name", info)
        if name == "radtex":
            continue
        for protocol in load_paper(name).transfer:  # AdamW (the default) is never emitted: cached cells stay valid
            assert not any("optimizer" in k for _, st in transfer_studies(protocol, "cpu") for k in st)
    protocol = radtex.protocol("pathology9")
    arm = replace(protocol.arms[0], cpu={**protocol.arms[0].cpu, "optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match="downstream optimizer 'rmsprop'"):
        transfer_studies(replace(protocol, arms=(arm, *protocol.arms[1:])), "cpu")


def test_arms_with_the_same_downstream_settings_share_one_study():
    paper = load_paper("convirt_sections")
    studies = transfer_studies(paper.protocol("chexpert"), "cpu")
    assert len(studies) == 1 and len(studies[0][0]) == 8
    settings = studies[0][1]
    assert settings["finetune.max_steps"] == 600 and settings["finetune.lr"] == [1e-3]
    assert settings["finetune.epochs"] == 10  # the paper's epochs, within the stated 600-step cap


def test_a_papers_downstream_epochs_reach_fine_tuned_arms():
    from radpair.replicate.runner import NO_STEP_CAP

    # chauhan2020 states epochs and no step cap: the epochs alone set the limit
    (arms, settings), = transfer_studies(load_paper("chauhan2020").protocol("edema"), "cpu")
    assert [a.id for a in arms] == ["image-only"]
    assert settings["finetune.epochs"] == 10 and settings["finetune.max_steps"] == NO_STEP_CAP
    # timnet states both: 20 epochs, at most 400 steps
    (_, t), = transfer_studies(load_paper("timnet").protocol("binary"), "cpu")
    assert t["finetune.epochs"] == 20 and t["finetune.max_steps"] == 400 and t["finetune.min_epochs"] == 0


def test_quick_run_writes_tables_and_claims(tmp_path, monkeypatch):
    _shrink(monkeypatch, 4)
    paper = load_paper("convirt_sections")
    report = run_paper(paper, "quick", None, tmp_path / "rep", progress=False, log=lambda m: None)
    text = report.read_text()
    assert "Quick mode is a smoke run" in text and "| Modified ConVIRT / linear |" in text
    results = json.loads((tmp_path / "rep" / "results.json").read_text())
    cells = results["measured"]["table2"]
    assert set(cells) == {"baseline.ft", "baseline.lin", "findings.ft", "findings.lin", "impression.ft",
                          "impression.lin", "modified.ft", "modified.lin"}
    assert all(set(c) == {"chexpert.100", "chexpert.10"} for c in cells.values())
    assert {c["id"] for c in results["claims"]} == {"sections-equal", "both-sections-best", "modified-no-gain"}
    for m in ("baseline", "findings", "impression", "modified"):
        assert (tmp_path / "rep" / "pretrain" / m / "image_encoder.safetensors").is_file()
    # a rerun finds everything done and rewrites the same tables
    again = run_paper(paper, "quick", None, tmp_path / "rep", progress=False, log=lambda m: None)
    assert json.loads((tmp_path / "rep" / "results.json").read_text())["measured"] == results["measured"]
    assert again == report


def test_chauhan_joint_arms_score_the_methods_own_classifier(tmp_path, monkeypatch):
    from radpair.replicate.runner import joint_protocol

    paper = load_paper("chauhan2020")
    semi = dict(o.split("=", 1) for o in pretrain_overrides(paper, paper.method("ranking-dot-semi"), "cpu",
                                                            joint_protocol(paper, "ranking-dot-semi")))
    # generic schedule names go where the method says; the protocol's labels become the method's
    assert semi["method.ranking_epochs"] == "2" and semi["method.joint_epochs"] == "10"
    assert semi["method.labelled_fraction"] == "0.15" and semi["method.label_source"] == "report"
    assert semi["optim.schedule"] == "linear" and semi["method.variant"] == "semi_supervised"  # warmup-linear
    labelled_only = dict(o.split("=", 1) for o in pretrain_overrides(paper, paper.method("l2"), "cpu"))
    assert labelled_only["method.joint_epochs"] == "10" and "train.epochs" not in labelled_only

    _shrink(monkeypatch, 3)
    report = run_paper(paper, "quick", None, tmp_path / "c", progress=False, log=lambda m: None)
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    table1, table2 = results["measured"]["table1"], results["measured"]["table2"]
    assert set(table1) == {"l2", "ranking-l2", "cosine", "ranking-cosine", "dot", "ranking-dot"}
    assert set(table2) == {"image-only", "ranking-dot", "ranking-dot-semi"}
    for cells in (*table1.values(), *table2.values()):
        assert set(cells) == {"auc_0|123", "auc_01|23", "auc_012|3", "macro_f1"}
    assert "drawn truth here" in report.read_text()


def test_a_method_without_its_own_classifier_is_refused(tmp_path):
    from radpair.evaluation.own_classifier import evaluate_own_classifier
    from radpair_train.testing import corpus_and_tokenizer, run_and_record, tiny_overrides

    corpus, tok = corpus_and_tokenizer(tmp_path / "d", n=48, size=64, seed=1)
    run_and_record(tiny_overrides(corpus, tok, tmp_path / "run", **{"train.max_steps": 1}), tmp_path / "rec")
    with pytest.raises(ConfigError, match="no classifier of its own"):
        evaluate_own_classifier(tmp_path / "run", corpus, "edema_severity")


def test_label_savings_from_fraction_curves():
    from radpair.replicate.runner import label_savings

    paper = load_paper("timnet")

    def study(base, ours):
        rows = [{"arm": "random:finetune", "budget": b, "metric": "macro_auc", "mean": v} for b, v in base.items()]
        rows += [{"arm": "timnet:finetune", "budget": b, "metric": "macro_auc", "mean": v} for b, v in ours.items()]
        return [{"arms": {"random:finetune": "base", "timnet:finetune": "ours"}, "results": {"summaries": rows}}]

    lines = label_savings(paper, {"binary": study({"10%": 0.70, "30%": 0.74, "100%": 0.73},
                                                  {"10%": 0.75, "30%": 0.76, "100%": 0.77}),
                                  "pediatric": study({"10%": 0.8, "100%": 0.9}, {"10%": 0.7, "100%": 0.85})})
    assert any("base peaks at 30.0%" in s and "reaches it at 10.0%" in s and "reduced by 67%" in s for s in lines)
    assert any("`pediatric`" in s and "never reaches" in s for s in lines)


def test_timnet_quick_run_fills_table_i_and_the_fraction_tables(tmp_path, monkeypatch):
    _shrink(monkeypatch, 3)
    paper = load_paper("timnet")
    report = run_paper(paper, "quick", None, tmp_path / "t", progress=False, log=lambda m: None)
    measured = json.loads((tmp_path / "t" / "results.json").read_text())["measured"]
    assert set(measured["table_i"]["mimic"]) == {"accuracy", "auroc", "f1", "prec", "recall", "ap"}
    assert set(measured["table_s1"]["prec.ours"]) == {"f5", "f100"}  # quick budgets: 5 % and 100 %
    assert set(measured["table_s3"]["auc.base"]) == {"f5", "f100"}  # the shifted corpus
    text = report.read_text()
    assert "Labels needed" in text and "linear head here" in text


def test_tienet_chooses_alpha_on_validate_and_never_on_test(tmp_path, monkeypatch):
    """Every candidate of the grid is trained and scored on validate; the best is kept and
    all scores are recorded (the runs themselves are faked: this checks the bookkeeping)."""
    from radpair.replicate import runner

    paper = load_paper("tienet")
    spec = paper.method("tienet")
    assert runner.method_candidates(paper, spec, "cpu") == [{"alpha": 0.5}, {"alpha": 0.9}]
    assert runner.method_candidates(paper, spec, "quick") == [{"alpha": 0.5}]
    assert runner.method_candidates(paper, paper.method("tienet-r"), "cpu") == []
    over = dict(o.split("=", 1) for o in pretrain_overrides(paper, spec, "cpu", runner.joint_protocol(paper, "tienet"),
                                                            {"alpha": 0.9}))
    assert over["method.alpha"] == "0.9" and over["method.variant"] == "tienet"
    assert over["method.label_task"] == "findings7" and over["method.grid_channels"] == "128"
    ir = dict(o.split("=", 1) for o in pretrain_overrides(paper, paper.method("tienet-ir"), "cpu"))
    assert ir["method.alpha"] == "1.0"  # auto-annotation: the classification loss only

    def fake_pretrain(paper, spec, mode, corpus, text, run_dir, progress, device, log, choice=None):
        run_dir.mkdir(parents=True)
        return run_dir

    seen = []

    def fake_score(paper, spec, run_dir, corpora, device, log):
        seen.append(run_dir.name)
        return "macro_auc", {"alpha=0.5": 0.61, "alpha=0.9": 0.66}[run_dir.name]

    monkeypatch.setattr(runner, "_pretrain", fake_pretrain)
    monkeypatch.setattr(runner, "_validate_score", fake_score)
    run_dir, record = runner._pretrain_method(paper, spec, "cpu", {"main": None}, tmp_path / "tok", tmp_path, False,
                                              "cpu", lambda m: None)
    assert run_dir == tmp_path / "pretrain" / "tienet" / "alpha=0.9" and seen == ["alpha=0.5", "alpha=0.9"]
    assert record["chosen"] == {"alpha": 0.9} and record["split"] == "validate"
    assert [r["validate"] for r in record["candidates"]] == [0.61, 0.66]
    assert json.loads((tmp_path / "pretrain" / "tienet" / "selection.json").read_text()) == record


def test_tienet_quick_run_fills_tables_1_and_2(tmp_path, monkeypatch):
    """Every stage of Tables 1 and 2 on a 240-image corpus, 3 steps per model and 24-token
    reports; METEOR (a Java process, ~25 s a call) is switched off, so its cells are missing
    with the reason written under Table 2."""
    import radpair.evaluation.generation as generation

    _shrink(monkeypatch, 3)
    real_settings, real_scoring = MethodSpec.settings, generation.evaluate_generation
    monkeypatch.setattr(MethodSpec, "settings", lambda self, mode: {**real_settings(self, mode), "max_length": 24})
    monkeypatch.setattr(generation, "evaluate_generation", lambda *a, **k: real_scoring(*a, **{**k, "meteor": False}))
    paper = load_paper("tienet")
    report = run_paper(paper, "quick", None, tmp_path / "tn", progress=False, log=lambda m: None)
    results = json.loads((tmp_path / "tn" / "results.json").read_text())
    table1, table2 = results["measured"]["table1"], results["measured"]["table2"]
    findings = {"atelectasis", "cardiomegaly", "effusion", "nodule", "pneumothorax", "consolidation", "edema"}
    assert set(table1) == findings | {"avg", "wavg"}
    every = {f"{s}.{a}" for s in ("cx14", "hand", "openi") for a in ("r", "ir", "i", "igr", "n")}
    for row_id, row in table1.items():  # every arm on every test set: R, I+R, I [35], I+GR and the positives
        # (a finding without test positives has no AUC on that set, only its count of 0)
        empty = {c.split(".")[0] for c, v in row.items() if c.endswith(".n") and v[0] == 0}
        assert set(row) == {c for c in every if c.endswith(".n") or c.split(".")[0] not in empty}, row_id
    assert set(table1["avg"]) == every and table1["avg"]["cx14.igr"][1] is not None  # macro AUC with its CI
    assert table1["avg"]["hand.n"][0] == sum(table1[f]["hand.n"][0] for f in findings)
    # METEOR off: not measured; CE-F1 needs the CheXpert phrase lists, which a fresh clone lacks
    from test_demo import chexpert_available

    ce = {"ce_f1"} if chexpert_available() else set()
    assert set(table2) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l"} | ce
    assert all(set(cells) == {"captioning", "tienet"} for cells in table2.values())
    selection = results["selection"]["tienet"]
    assert selection["chosen"] == {"alpha": 0.5} and selection["candidates"][0]["validate"] is not None
    assert results["evaluations"]["generation"]["differences"]["tienet - captioning"]
    verdicts = {c["id"]: c["verdict"] for c in results["claims"]}
    assert set(verdicts) == {"igr-beats-image-only", "image-plus-report-best-annotation",
                             "generation-beats-captioning", "generation-states-findings-better"}
    assert all(v.startswith(("holds here", "does not hold here")) for k, v in verdicts.items()
               if ce or k != "generation-states-findings-better")
    if not ce:
        assert verdicts["generation-states-findings-better"].startswith("undecided")
    text = report.read_text()
    assert "Settings chosen on the validate split" in text and "| alpha=0.5 |" in text
    assert "Paired difference of generated reports: tienet - captioning" in text
    assert "METEOR of `tienet` not computed" in text
    # the paper's vocabulary (words seen twice) and word2vec start, 64-d as the quick preset's word_dim
    out = tmp_path / "tn"
    assert json.loads((out / "tokenizer" / "tokenizer.json").read_text())["model"]["type"] == "WordLevel"
    assert json.loads((out / "tokenizer" / "corpus_meta.json").read_text())["tokenizer"] == {
        "kind": "word", "size": None, "min_count": 2}
    vectors = out / "word_vectors" / "word2vec-64d-seed0.safetensors"
    summary = json.loads(vectors.with_suffix(".vectors.json").read_text())
    assert summary["dim"] == 64 and summary["coverage"] > 0.9 and summary["source"]["split"] == "train"
    for run, reads_text in (("tienet/alpha=0.5", True), ("tienet-ir", True), ("tienet-r", True),
                            ("captioning", True), ("tienet-i", False)):
        cfg = yaml.safe_load((out / "pretrain" / run / "config.yaml").read_text())
        assert cfg["text_encoder"]["tokenizer"] == str(out / "tokenizer")
        assert cfg["method"]["word_vectors"] == (str(vectors) if reads_text else None), run
        done = json.loads((out / "pretrain" / run / "DONE").read_text())
        assert done["tokenizer"]["kind"] == "word" and ("word_vectors" in done) == reads_text, run


def test_a_paper_without_text_settings_keeps_wordpiece_and_its_stamps(tmp_path):
    """Papers that state no vocabulary keep the tokenizer and the stamps they were run
    with before papers could choose: the tokenizer stamp is the corpus alone and a run's
    DONE stamp has exactly the corpus, overrides and recipe."""
    from radpair.replicate import runner
    from radpair.replicate.shared_text import WORDPIECE_DEFAULT, SharedText, paper_vocabulary
    from radpair_train.testing import corpus_and_tokenizer

    paper = load_paper("convirt_sections")
    assert paper_vocabulary(paper, "quick") == dict(WORDPIECE_DEFAULT) == paper_vocabulary(paper, "data")
    assert runner.word_vector_plan(paper, "quick") == {}
    from radpair.data.corpus import Corpus

    corpus = Corpus.open(corpus_and_tokenizer(tmp_path / "d", n=48, size=64, seed=1)[0])
    folder = runner._tokenizer(corpus, tmp_path / "rep", paper_vocabulary(paper, "quick"))
    assert (folder / "corpus_meta.json").read_text() == runner._corpus_stamp(corpus)
    assert json.loads((folder / "tokenizer.json").read_text())["model"]["type"] == "WordPiece"
    spec = paper.method("baseline")
    text = SharedText(folder, paper_vocabulary(paper, "quick"))
    done, overrides = runner._done_stamp(paper, spec, "quick", corpus, text)
    legacy = pretrain_overrides(paper, spec, "quick", runner.joint_protocol(paper, spec.id))
    recipe = (runner._repo_root() / paper.info.recipe).read_text()
    assert done == json.dumps({"corpus": runner._corpus_stamp(corpus), "overrides": legacy, "recipe": recipe})
    assert overrides == legacy + [f"text_encoder.tokenizer={folder}"]
    # asking for words retrains the folder (emptied first: no file of the old one is left) under a stamp that says so
    (folder / "stale.txt").write_text("left by an older tokenizer")
    word = {"kind": "word", "size": None, "min_count": 2}
    runner._tokenizer(corpus, tmp_path / "rep", word)
    assert json.loads((folder / "tokenizer.json").read_text())["model"]["type"] == "WordLevel"
    assert not (folder / "stale.txt").exists()
    from radpair.text import load_tokenizer

    assert type(load_tokenizer(folder)).__name__ != "BertTokenizerFast"  # the word tokenizer's config was saved
    assert json.loads((folder / "corpus_meta.json").read_text())["tokenizer"] == word
    assert runner._done_stamp(paper, spec, "quick", corpus, SharedText(folder, word))[0] != done


def test_conflicting_vocabularies_in_one_paper_fail_before_any_work(tmp_path):
    from dataclasses import replace

    from radpair.replicate.shared_text import paper_vocabulary

    paper = load_paper("tienet")
    methods = tuple(replace(m, quick={**m.quick, "vocabulary": {"kind": "wordpiece"}}) if m.id == "captioning" else m
                    for m in paper.methods)
    mixed = replace(paper, methods=methods)
    message = (r"tienet.yaml: the methods of paper 'tienet' share one tokenizer, but their quick 'vocabulary' "
               r"settings differ: words seen >= 2 times \(tienet, tienet-ir, tienet-r, tienet-i\); WordPiece, at "
               r"most 3000 tokens, pairs seen >= 2 times \(captioning\)")
    with pytest.raises(ConfigError, match=message):
        paper_vocabulary(mixed, "quick")
    assert paper_vocabulary(mixed, "cpu")["kind"] == "word"  # the cpu settings agree
    with pytest.raises(ConfigError, match="share one tokenizer"):
        run_paper(mixed, "quick", None, tmp_path / "x", progress=False, log=lambda m: None)
    assert not (tmp_path / "x" / "corpora").exists()


def test_word_vectors_must_be_as_wide_as_the_word_embedding():
    from dataclasses import replace

    from radpair.replicate.runner import word_vector_plan

    paper = load_paper("tienet")
    methods = tuple(replace(m, cpu={**m.cpu, "word_vectors": {"dim": 200}}) if m.id == "tienet-r" else m
                    for m in paper.methods)
    with pytest.raises(ConfigError, match=r"method 'tienet-r' cpu setting word_vectors: dim is 200, but the "
                                          r"method's word_dim is 64"):
        word_vector_plan(replace(paper, methods=methods), "cpu")
    convirt = load_paper("convirt_sections")
    methods = (replace(convirt.methods[0], cpu={**convirt.methods[0].cpu, "word_vectors": {"dim": 64}}),
               *convirt.methods[1:])
    with pytest.raises(ConfigError, match="has no word embedding"):
        word_vector_plan(replace(convirt, methods=methods), "cpu")


def test_quick_with_data_smoke_tests_the_supplied_corpus(random_corpus, tmp_path):
    # --quick --data once generated the synthetic quick corpus and never read DIR
    from radpair.replicate.runner import _corpus

    paper = load_paper("convirt_sections")
    logs: list[str] = []
    corpus = _corpus(paper, "main", "quick", random_corpus.root, tmp_path, logs.append)
    assert corpus.root.resolve() == random_corpus.root.resolve() and not logs
    assert not (tmp_path / "corpora").exists()

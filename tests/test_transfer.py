"""The transfer protocol: tasks and schemas, budgets and manifests, protocols, arms, paired statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from radpair.errors import ConfigError, DataError, LabelFallbackWarning
from radpair.tasks import LabelSchema, load_task, task_labels
from radpair.transfer import Budget, SubsetManifest, TransferConfig, parse_budgets, run_transfer
from radpair.transfer.subsets import draw_rows
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from radpair.data.synth import generate_corpus

    return generate_corpus(tmp_path_factory.mktemp("synth") / "c", n_images=480, size=64, seed=3, workers=1)


def _quick(**kw) -> TransferConfig:
    kw.setdefault("encoders", ["random"])
    cfg = TransferConfig(n=["10", "all"], repeats=2, n_bootstrap=100, **kw)
    cfg.linear.c_grid = [1e-2, 1.0]
    cfg.frozen_head.lr, cfg.frozen_head.weight_decay, cfg.frozen_head.max_epochs = [1e-3, 1e-2], [1e-4], 30
    cfg.finetune.lr, cfg.finetune.weight_decay = [1e-3, 3e-3], [1e-4]
    cfg.finetune.max_steps, cfg.finetune.min_steps, cfg.finetune.eval_every, cfg.finetune.patience = 20, 5, 5, 2
    return cfg


# ---- schemas and tasks --------------------------------------------------------------------------
def test_binary_schema_names_the_column_and_bad_values():
    schema = LabelSchema.make("multilabel")
    with pytest.raises(DataError, match=r"label column 'edema_severity' holds values \[2.0, 3.0\]"):
        schema.encode(np.array([[0, 1], [1, 2], [0, 3]], dtype=float), ["edema", "edema_severity"], "")


def test_ordinal_schema_reads_codes_and_rejects_out_of_range():
    schema = LabelSchema.make("ordinal", levels=["none", "mild", "moderate", "severe"])
    labels = schema.encode(np.array([0, 3, np.nan, -1, 2], dtype=float), ["sev"])
    assert labels.y.tolist() == [0, 3, 0, 0, 2] and labels.mask.tolist() == [True, True, False, False, True]
    with pytest.raises(DataError, match="'sev' holds values \\[4.0\\]"):
        schema.encode(np.array([0, 4], dtype=float), ["sev"])
    with pytest.raises(ConfigError, match="at least two levels"):
        LabelSchema.make("ordinal")


def test_uncertainty_policies():
    raw = np.array([[1], [0], [-1], [np.nan]], dtype=float)
    ign = LabelSchema.make("binary").encode(raw, ["x"])
    assert ign.mask[:, 0].tolist() == [True, True, False, False]
    ones = LabelSchema.make("binary", uncertain="ones", blank="negative").encode(raw, ["x"])
    assert ones.y[:, 0].tolist() == [1, 0, 1, 0] and ones.mask.all()


def test_one_hot_multiclass_columns():
    schema = LabelSchema.make("multiclass", levels=["a", "b", "c"])
    labels = schema.encode(np.array([[1, 0, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0]], dtype=float), ["a", "b", "c"])
    assert labels.y[:2].tolist() == [0, 2] and labels.mask.tolist() == [True, True, False, False]


def test_builtin_tasks_load_and_unknown_task_suggests():
    for name in ("findings7", "edema_severity", "abnormal", "covid19", "chexpert5"):
        assert load_task(name).name == name
    with pytest.raises(ConfigError, match="did you mean 'findings7'"):
        load_task("findings8")


def test_task_file_with_a_typo_names_file_and_key(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("mine:\n  schema: binary\n  columns: [edema]\n  view: [PA]\n")
    with pytest.raises(ConfigError, match=r"mine.yaml.*views"):
        load_task(f)


def test_report_labels_agree_with_truth_mostly(synth):
    spec = load_task("findings7")
    rows = np.arange(len(synth.index))
    report = task_labels(synth, spec, "report", rows)
    truth = task_labels(synth, spec, "truth", rows)
    assert report.mask.mean() > 0.95  # blank read as absent; only "possible X" (U-Ignore) is masked
    agree = (report.y == truth.y).mean()
    assert 0.85 < agree < 1.0
    abnormal = task_labels(synth, load_task("abnormal"), "truth", rows)
    assert abnormal.y[:, 0].tolist() == (truth.y.max(axis=1)).tolist()


def test_without_chexpert_phrase_lists_the_fallback_stands_in_loudly(synth, monkeypatch, tmp_path):
    """A fresh machine has no chexpert-labeler checkout: report labels must still come out,
    from radpair's own rules, announced, and a labeler with no fallback must fail clearly."""
    import radpair.reports.labeling.chexpert as chexpert
    from radpair.tasks.spec import raw_labels

    spec = load_task("findings7")
    rows = np.arange(len(synth.index))
    with_phrases = chexpert.candidate_dirs("../shared/data/chexpert_labeler")
    monkeypatch.delenv(chexpert.ENV_VAR, raising=False)
    monkeypatch.setattr(chexpert, "candidate_dirs", lambda default_rel: [tmp_path / "none"])
    with pytest.warns(LabelFallbackWarning, match="fallback labelers .*chestxray14"):
        values, where = raw_labels(synth, spec, "report", rows)
    assert "chestxray14" in where and "CheXpert phrase lists not found" in where
    truth = task_labels(synth, spec, "truth", rows)
    y = np.where(np.isnan(values), 0.0, values)
    assert ((y == 1) == (truth.y == 1)).mean() > 0.85  # the rules still read the reports
    for name in ("abnormal", "consolidation", "chexpert8"):  # every built-in fallback column exists
        other = load_task(name)
        if any(rc.fallback for rc in other.report.values()):
            with pytest.warns(LabelFallbackWarning):
                raw_labels(synth, other, "report", rows[:50])
    spec.report["cardiomegaly"].fallback = None
    with pytest.raises(ConfigError, match="cardiomegaly.*CheXpert phrase lists not found"):
        raw_labels(synth, spec, "report", rows)
    if any((d / "phrases" / "mention").is_dir() for d in with_phrases):  # the real lists agree closely
        monkeypatch.undo()
        real, _ = raw_labels(synth, load_task("findings7"), "report", rows)
        same = (np.nan_to_num(real, nan=-9) == np.nan_to_num(values, nan=-9))[:, 1:6]
        assert same.mean() >= 0.97


def test_ordinal_task_to_a_binary_loss_fails_clearly(synth):
    bad = load_task("findings7").with_sources("truth", "truth")
    bad.columns = ["edema_severity"]
    with pytest.raises(DataError, match="edema_severity"):
        task_labels(synth, bad, "truth", np.arange(len(synth.index)))


# ---- budgets and subsets ------------------------------------------------------------------------
def test_budgets_parse_counts_all_and_fractions():
    b = parse_budgets("100,10,all", "0.5,0.005")
    assert [x.key for x in b] == ["10", "100", "all", "0.5%", "50%"]
    assert Budget.parse("all").size(37) == 37 and Budget.fraction(0.1).size(37) == 4
    with pytest.raises(ConfigError):
        Budget.parse("ten")
    with pytest.raises(ConfigError):
        Budget.fraction(1.5)


def test_draws_are_patient_level_stratified_and_reproducible():
    rng = np.random.default_rng(0)
    n = 300
    patients = np.repeat(np.arange(100), 3).astype(str)
    y = (rng.random((n, 3)) < [0.4, 0.1, 0.02]).astype(float)
    labels = LabelSchema.make("multilabel").encode(y, ["a", "b", "c"])
    draw = draw_rows(labels, patients, 20, np.random.default_rng(5))
    again = draw_rows(labels, patients, 20, np.random.default_rng(5))
    assert np.array_equal(draw.rows, again.rows) and draw.rows.size == 20
    got = labels.take(draw.rows)
    assert ((got.y == 1) & got.mask).any(axis=0).all()  # every class has a positive
    counts = np.unique(patients[draw.rows], return_counts=True)[1]
    assert (counts == 3).sum() >= 4  # whole patients, not scattered images


def test_manifest_round_trip_and_tamper_detection(tmp_path):
    m = SubsetManifest("findings7", "10", 0, 0, ["b", "a"], ["c"])
    path = m.save(tmp_path)
    assert SubsetManifest.load(path).train_sha256 == m.train_sha256
    data = json.loads(path.read_text())
    data["train"]["image_ids"].append("z")
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="SHA-256"):
        SubsetManifest.load(path)


# ---- protocols -------------------------------------------------------------------------------------
def test_linear_grid_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    from radpair.transfer.linear import fit_linear_grid

    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 8))
    y = (x[:, :2] @ [1.0, -1.0] + rng.normal(size=120) > 0).astype(float)
    labels = LabelSchema.make("binary").encode(y, ["y"])
    models = fit_linear_grid(x, labels, [0.01, 1.0], max_iter=1000, tolerance=1e-9)
    xs = (x - x.mean(0)) / x.std(0)
    for m in models:
        ref = LogisticRegression(C=m.c, tol=1e-10, max_iter=5000).fit(xs, y).predict_proba(xs)[:, 1]
        assert np.abs(m.predict_proba(x)[:, 0] - ref).max() < 1e-4


def test_frozen_encoder_is_bit_identical_after_feature_extraction(synth):
    from radpair.transfer.heads import build_start_encoder
    from radpair.transfer.sweep import encoder_features

    enc = build_start_encoder(None, "resnet_tiny", 0)
    enc.train()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    encoder_features(enc, synth, np.arange(64), maps=False, batch_size=16, device=torch.device("cpu"))
    encoder_features(enc, synth, np.arange(64), maps=True, batch_size=16, device=torch.device("cpu"))
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats included
    assert enc.training  # the caller's mode is restored


def test_random_start_does_not_touch_the_global_rng():
    from radpair.transfer.heads import build_start_encoder

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_start_encoder(None, "resnet_tiny", 7)
    assert torch.equal(torch.rand(3), expected)
    b = build_start_encoder(None, "resnet_tiny", 7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ---- the sweep ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    cfg = _quick(protocols=["linear", "frozen-head", "finetune"])
    return run_transfer(cfg, synth, out, log=lambda s: None), out


def test_every_arm_uses_identical_subsets_and_validation_draws(sweep):
    result, out = sweep
    by_repeat: dict = {}
    for c in result.cells:
        by_repeat.setdefault((c.budget, c.repeat), set()).add((c.subset["train_sha256"], c.subset["val_sha256"]))
    assert all(len(v) == 1 for v in by_repeat.values())
    assert {c.arm for c in result.cells} == {"random:linear", "random:frozen-head", "random:finetune"}
    # "all" covers the whole pool: it runs once; the validation draw is as large as the subset
    assert sorted({(c.budget, c.repeat) for c in result.cells}) == [("10", 0), ("10", 1), ("all", 0)]
    ten = [s for s in result.subsets if s["budget"] == "10"]
    assert all(s["n_train"] == 10 and s["n_val"] == 10 for s in ten)


def test_results_hold_selection_metrics_and_paired_differences(sweep):
    result, out = sweep
    cell = result.cells[0]
    assert cell.selection and all("val_score" in row for row in cell.selection)
    assert 0.0 <= cell.value("macro_auc") <= 1.0 and cell.metrics["ci"]["macro_auc"][0] is not None
    p = result.paired_difference("random:linear", "random:finetune", "10")
    flipped = result.paired_difference("random:finetune", "random:linear", "10")
    assert p["mean_diff"] == pytest.approx(-flipped["mean_diff"])
    assert p["ci_low"] == pytest.approx(-flipped["ci_high"])
    assert (out / "manifests").is_dir() and len(list((out / "manifests").glob("*.json"))) == 3
    assert any((out / "cells").rglob("head.safetensors")) and any((out / "cells").rglob("model.safetensors"))
    loaded = type(result).load(out / "results.json")
    assert loaded.mean("random:linear", "10") == pytest.approx(result.mean("random:linear", "10"))


def test_rerun_reuses_cells_and_manifest_rerun_gives_same_scores(sweep, synth, tmp_path):
    result, out = sweep
    logs: list[str] = []
    again = run_transfer(_quick(protocols=["linear", "frozen-head", "finetune"]), synth, out, log=logs.append)
    assert any("cells done by an earlier run" in line for line in logs)
    assert again.mean("random:finetune", "10") == result.mean("random:finetune", "10")
    # a new folder, the saved manifests, another sampling seed: the same subsets and scores
    cfg = _quick(protocols=["linear"], manifest=str(out / "manifests"))
    rerun = run_transfer(cfg, synth, tmp_path / "rerun", log=lambda s: None)
    for c in rerun.cells:
        old = next(x for x in result.cells if (x.arm, x.budget, x.repeat) == (c.arm, c.budget, c.repeat))
        assert c.subset == old.subset and c.value("macro_auc") == pytest.approx(old.value("macro_auc"))


def test_an_arm_against_itself_differs_by_exactly_zero(synth, tmp_path):
    from radpair.models.export import save_encoder_weights
    from radpair.transfer.heads import build_start_encoder

    enc = build_start_encoder(None, "resnet_tiny", 0)
    path = save_encoder_weights(enc, tmp_path / "copy.safetensors",
                                {"config": {"image_encoder": {"name": "resnet_tiny", "weights": None}}})
    cfg = _quick(protocols=["linear"])
    cfg.encoders = ["random", f"copy={path}"]
    result = run_transfer(cfg, synth, tmp_path / "out", log=lambda s: None)
    for budget in result.budgets:
        p = result.paired_difference("random:linear", "copy:linear", budget)
        assert p["mean_diff"] == 0.0 and p["ci_low"] == 0.0 and p["ci_high"] == 0.0


def test_ordinal_task_reports_dichotomised_aucs(synth, tmp_path):
    result = run_transfer(_quick(task="edema_severity", protocols=["linear"]), synth, tmp_path, log=lambda s: None)
    values = result.cells[0].metrics["values"]
    assert {"auc_0|123", "auc_01|23", "auc_012|3", "macro_f1"} <= set(values)


def test_bad_inputs_fail_with_clear_messages(synth, tmp_path):
    with pytest.raises(DataError, match="do not exist"):
        run_transfer(_quick(protocols=["linear"], encoders=["x=/nope/enc.safetensors"]), synth, tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'frozen-head'"):
        run_transfer(_quick(protocols=["frozen_head"]), synth, tmp_path)
    from tests.conftest import make_random_corpus

    corpus = make_random_corpus(tmp_path / "rc")  # train and test splits only, truth for 'edema' only
    with pytest.raises(DataError, match="no 'validate' split"):
        run_transfer(_quick(task="findings7", protocols=["linear"]), corpus, tmp_path / "x")


@pytest.mark.skipif(not (SHARED_DATA / "covid_cxr" / "pairs.csv").is_file(), reason="needs ../shared/data/covid_cxr")
def test_transfer_runs_on_the_real_covid_pairs(tmp_path):
    from radpair_train.cli import main

    corpus = tmp_path / "covid"
    assert main(["preprocess", "--dataset", "covid", "--root", str(SHARED_DATA / "covid_cxr"), "--out", str(corpus),
                 "--size", "64", "--no-progress"]) == 0
    out = tmp_path / "t"
    assert main(["transfer", "--corpus", str(corpus), "--task", "covid19", "--encoder", "random", "--protocol",
                 "linear,frozen-head", "--n", "20,all", "--repeats", "2", "--bootstrap", "100", "--out", str(out),
                 "--no-progress", "frozen_head.max_epochs=20"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["task"]["name"] == "covid19" and result["test"]["n_images"] > 10
    assert (out / "report.md").is_file()


# ---- review fixes -------------------------------------------------------------------------------------
def test_a_changed_corpus_is_never_served_from_the_cache(synth, tmp_path):
    import os
    import shutil as sh

    from radpair.data.corpus import Corpus

    root = tmp_path / "copy"
    sh.copytree(synth.root, root)
    corpus = Corpus.open(root)
    cfg = _quick(protocols=["linear"])
    run_transfer(cfg, corpus, tmp_path / "out", log=lambda s: None)
    st = (root / "images.npy").stat()
    os.utime(root / "images.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "regenerated"
    logs: list[str] = []
    run_transfer(cfg, Corpus.open(root), tmp_path / "out", log=logs.append)
    assert not any("done by an earlier run" in line for line in logs)
    assert any("rows extracted" in line and "0 cached" in line for line in logs)


def test_config_file_values_survive_unset_flags(tmp_path):
    from radpair_train.cli import build_parser
    from radpair_train.commands.transfer import build_config

    f = tmp_path / "t.yaml"
    f.write_text("task: edema_severity\nrepeats: 2\nseed: 7\nval: full\nprotocols: [finetune]\nn: [10, all]\n")
    args = build_parser().parse_args(["transfer", "--corpus", "c", "--out", "o", "--config", str(f)])
    cfg = build_config(args)
    assert (cfg.task, cfg.repeats, cfg.seed, cfg.val, cfg.protocols, cfg.n) == \
        ("edema_severity", 2, 7, "full", ["finetune"], [10, "all"])
    args = build_parser().parse_args(["transfer", "--corpus", "c", "--out", "o", "--config", str(f), "--repeats", "3"])
    assert build_config(args).repeats == 3


def test_protocol_settings_are_validated():
    cfg = _quick(protocols=["frozen-head"])
    cfg.frozen_head.head = "mlp"
    with pytest.raises(ConfigError, match="unknown frozen_head.head 'mlp'"):
        cfg.validate()


def test_any_positive_keeps_unknown_findings_unknown():
    from radpair.tasks.spec import _derive_any

    schema = LabelSchema.make("binary")
    raw = np.array([[0, np.nan], [0, 0], [1, np.nan], [-1, 0], [np.nan, np.nan]], dtype=float)
    assert np.array_equal(_derive_any(raw, schema)[:, 0], [np.nan, 0, 1, -1, np.nan], equal_nan=True)
    neg = LabelSchema.make("binary", blank="negative")
    assert _derive_any(raw, neg)[:, 0].tolist() == [0, 0, 1, -1, 0]


def test_linear_grid_converges_for_every_c_of_a_wide_grid():
    from sklearn.linear_model import LogisticRegression

    from radpair.transfer.linear import fit_linear_grid

    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 20))
    y = (x[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(float)
    labels = LabelSchema.make("binary").encode(y, ["y"])
    xs = (x - x.mean(0)) / x.std(0)
    for m in fit_linear_grid(x, labels, [1e-3, 0.1, 10.0, 1000.0], max_iter=2000, tolerance=1e-9):
        ref = LogisticRegression(C=m.c, tol=1e-12, max_iter=20000).fit(xs, y).predict_proba(xs)[:, 1]
        assert np.abs(m.predict_proba(x)[:, 0] - ref).max() < 0.02, m.c


def test_finetune_step_limit_rises_to_min_epochs_on_large_draws_only():
    from radpair.transfer.config import FinetuneSettings

    s = FinetuneSettings(max_steps=3000, batch_size=32, min_epochs=10)
    # the calibrated demo: 1,000 labels keep 3,000 steps (96 passes); all 15,625 get 10 passes
    assert s.step_limit(10) == 3000 and s.step_limit(1000) == 3000 and s.step_limit(15625) == 4880
    assert FinetuneSettings(min_epochs=0).step_limit(15625) == 3000
    for bad in (-1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="min_epochs"):
            FinetuneSettings(min_epochs=bad).validate()


def test_finetune_stated_epochs_set_the_step_limit_within_max_steps():
    from radpair.transfer.config import FinetuneSettings
    from radpair.transfer.sweep import _settings
    from radpair.transfer.arms import RANDOM, Arm, Protocol, Start

    # chauhan2020 cpu: 10 epochs over 2,998 labelled images (the 25,000-image corpus) at batch 32 (93 steps a pass); the
    # 10-pass floor and the 3,000-step default no longer apply
    s = FinetuneSettings(max_steps=10**9, batch_size=32, epochs=10)
    assert s.step_limit(2998) == 930 and s.step_limit(5) == 10  # 5 rows: one step a pass
    # timnet cpu: 20 epochs at batch 16, capped at the stated 400 steps
    t = FinetuneSettings(max_steps=400, batch_size=16, epochs=20, min_epochs=0)
    assert t.step_limit(77) == 80 and t.step_limit(1543) == 400
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="finetune.epochs"):
            FinetuneSettings(epochs=bad).validate()
    # the cell fingerprint holds the limit, not the rule: unset epochs leave old fingerprints alone
    cfg = _quick(protocols=["finetune"])
    arm = Arm(Start(RANDOM, None, "resnet_tiny"), Protocol.FINETUNE)
    assert "epochs" not in _settings(arm, cfg, 100)
    cfg.finetune.epochs, cfg.finetune.max_steps = 10, 10**9
    assert _settings(arm, cfg, 100)["max_steps"] == 10 * (100 // cfg.finetune.batch_size)


def test_a_changed_step_rule_reruns_only_the_cells_whose_limit_changes(sweep, synth, tmp_path):
    import shutil

    _, out = sweep
    shutil.copytree(out, tmp_path / "copy")
    cfg = _quick(protocols=["finetune"])
    cfg.finetune.min_epochs = 1  # 10 passes -> 1: the 10-label limit stays 20 steps, the all-label one drops
    logs: list[str] = []
    result = run_transfer(cfg, synth, tmp_path / "copy", log=logs.append)
    assert any("2 of 3 cells done by an earlier run" in line for line in logs), logs
    n_all = next(c.n_train for c in result.cells if c.budget == "all")
    assert cfg.finetune.step_limit(n_all) == 20 < _quick().finetune.step_limit(n_all)


def test_batched_sgd_steps_each_grid_value_as_torch_sgd_does():
    # one learning rate and decay per grid value, side by side, must equal G separate torch SGDs
    from radpair.transfer.training import _BatchedSGD

    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(2, 3, 4, generator=gen)
    grads = [torch.randn(2, 3, 4, generator=gen) for _ in range(3)]
    lr, wd = torch.tensor([0.2, 0.01]), torch.tensor([0.0, 1e-2])
    w = w0.clone().requires_grad_(True)
    opt = _BatchedSGD([w], lr, decay=[wd])
    for g in grads:
        w.grad = g.clone()
        opt.step()
    for j in range(2):
        ref = w0[j].clone().requires_grad_(True)
        ref_opt = torch.optim.SGD([ref], lr=float(lr[j]), momentum=0.9, weight_decay=float(wd[j]))
        for g in grads:
            ref.grad = g[j].clone()
            ref_opt.step()
        torch.testing.assert_close(w.detach()[j], ref.detach())


def test_protocol_optimizer_is_validated_and_the_default_keeps_cached_cells_valid():
    from radpair.transfer.arms import Arm, Protocol, Start
    from radpair.transfer.sweep import _settings
    from radpair.transfer.training import make_optimizer

    cfg = _quick(protocols=["finetune"])
    cfg.finetune.optimizer = "sdg"
    with pytest.raises(ConfigError, match="finetune.optimizer 'sdg'.*sgd"):
        cfg.validate()
    cfg.finetune.optimizer = "adamw"
    random = Start.parse("random", "resnet_tiny")
    for protocol in (Protocol.FINETUNE, Protocol.FROZEN_HEAD):
        # cells fingerprinted before the choice existed keep their fingerprint
        assert "optimizer" not in _settings(Arm(random, protocol), cfg, 100)
    cfg.finetune.optimizer = cfg.frozen_head.optimizer = "sgd"
    for protocol in (Protocol.FINETUNE, Protocol.FROZEN_HEAD):
        assert _settings(Arm(random, protocol), cfg, 100)["optimizer"] == "sgd"
    p = torch.nn.Parameter(torch.zeros(2))
    opt = make_optimizer("sgd", [{"params": [p], "lr": 0.2, "weight_decay": 0.0}])
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    assert isinstance(make_optimizer("adamw", [{"params": [p], "lr": 1e-3, "weight_decay": 0.0}]), torch.optim.AdamW)


def test_linear_heads_learn_under_sgd():
    from radpair.transfer.training import train_linear_heads

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(float)
    tr, va = LabelSchema.make("binary").encode(y[:300], ["y"]), LabelSchema.make("binary").encode(y[300:], ["y"])
    fits = train_linear_heads(x[:300], tr, x[300:], va, [{"lr": 0.02, "weight_decay": 0.0}], 32, 50, 10, (0,),
                              optimizer="sgd")
    assert fits[0].best[0] > 0.97  # validation AUC of a separable problem


def test_sgd_gives_each_output_of_a_multilabel_head_a_one_finding_models_step():
    # the task loss averages over outputs; under SGD a 7-finding head would otherwise learn 7x slower
    # than the per-finding models whose rates a paper states
    from radpair.transfer.training import _BatchedSGD, output_rate_scale

    assert output_rate_scale("sgd", False, 7) == 7.0
    assert output_rate_scale("sgd", True, 4) == output_rate_scale("adamw", False, 7) == output_rate_scale("sgd", False, 1) == 1.0
    w = torch.zeros(2, 3, 1, requires_grad=True)
    opt = _BatchedSGD([w], torch.tensor([0.1, 0.1]), decay=[torch.zeros(2)])
    opt.freeze(1)
    w.grad = torch.ones(2, 3, 1)
    opt.step()
    assert torch.all(w.detach()[0] == -0.1) and torch.all(w.detach()[1] == 0.0)  # a frozen grid value stays put


def test_the_configured_optimiser_reaches_finetune_and_frozen_heads(synth, tmp_path, monkeypatch):
    from radpair.transfer import training

    made: list[tuple[str, list[float]]] = []
    real = training.make_optimizer
    monkeypatch.setattr(training, "make_optimizer",
                        lambda name, groups: made.append((name, [g["lr"] for g in groups])) or real(name, groups))
    batched: list[str] = []
    real_sgd = training._BatchedSGD
    monkeypatch.setattr(training, "_BatchedSGD", lambda *a, **k: batched.append("sgd") or real_sgd(*a, **k))
    cfg = _quick(protocols=["finetune", "frozen-head"], workers=1)
    cfg.n, cfg.repeats = ["10"], 1
    cfg.finetune.optimizer = cfg.frozen_head.optimizer = "sgd"
    run_transfer(cfg, synth, tmp_path / "out", log=lambda s: None)
    assert batched  # the frozen linear heads
    n_out = 7  # findings7: the head's rate is per finding
    assert made and all(name == "sgd" for name, _ in made)
    assert all(lrs[-1] == pytest.approx(lrs[0] * n_out) for _, lrs in made)

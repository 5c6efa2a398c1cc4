"""The quick demo end to end on CPU: corpus, tokenizer, pretraining, transfer, results page."""

import json

import pytest
from PIL import Image

from radpair_train.cli import main
from radpair_train.demo import StageCache


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """One quick demo for every test that reads its outputs (it is the slow part)."""
    out = tmp_path_factory.mktemp("quick") / "demo"
    assert main(["demo", "--quick", "--no-progress", "--out", str(out), "n_images=400"]) == 0
    return out


@pytest.mark.slow
def test_quick_demo_end_to_end(quick_demo):
    out = quick_demo
    results = json.loads((out / "results.json").read_text())
    means = results["headline"]["means"]
    from radpair.methods import report_methods

    # the quick demo compares every method that learns from reports, as `make demo` does
    assert set(means) == {"convirt:linear", "convirt:frozen-head", "random:linear", "random:finetune",
                          *(f"{m}:linear" for m in report_methods() if m != "convirt")}
    for row in means.values():
        assert set(row) >= {"10", "100"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in row.values())
    paired = results["headline"]["paired"]["convirt:linear - random:finetune"]
    assert {"10", "100"} <= set(paired) and all(p["ci"][0] <= p["mean_diff"] <= p["ci"][1] for p in paired.values())
    assert results["corpus"]["n_images"] == 400
    page = (out / "report.md").read_text()
    assert "macro" in page.lower() and "random × finetune" in page
    pngs = sorted(p for p in out.rglob("*.png") if "corpus" not in p.parts)
    assert len(pngs) >= 3
    for p in pngs:
        Image.open(p).verify()
    assert (out / "pretrain" / "config.yaml").is_file() and (out / "demo_config.yaml").is_file()
    assert (out / "transfer" / "manifests").is_dir()
    # A second run resumes from the finished stages instead of redoing them.
    assert main(["demo", "--quick", "--no-progress", "--out", str(out), "n_images=400"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert "ConVIRT pretraining" not in again["stage_seconds"] and "synthetic corpus" not in again["stage_seconds"]
    assert not {"model package", "explanations", "localisation"} & set(again["stage_seconds"])
    assert again["headline"] == results["headline"] and again["package"] == results["package"]


@pytest.mark.slow
def test_quick_demo_page_ends_with_explanations_localisation_and_package(quick_demo):
    out = quick_demo
    page, page_html = (out / "report.md").read_text(), (out / "report.html").read_text()
    heads = [line for line in page.splitlines() if line.startswith("## ")]
    assert heads[-3:] == ["## Explanations", "## Localisation against the drawn findings", "## Model package"]
    overlays = [line[line.index("](") + 2:-1] for line in page.splitlines()
                if line.startswith("![") and "gradcam" in line]
    assert len(overlays) == 6 and all((out / f).is_file() for f in overlays)
    for f in overlays:
        Image.open(out / f).verify()
    assert page_html.count("data:image/png;base64") >= 6 + 3 and "<h2>Model package</h2>" in page_html
    assert "![pointing game per finding" in page and (out / "localisation" / "pointing_game.png").is_file()
    assert "| finding | images | chance | model | pointing game | mass share |" in page
    results = json.loads((out / "results.json").read_text())
    loc = results["localisation"]
    assert loc["available"] and loc["images"] > 0
    arm = results["package"]["arm"]
    rows = [line for line in page.splitlines() if line.startswith("| ") and line.count("|") == 7]
    assert any(f"| {arm} (package) |" in r for r in rows) and any("| centre |" in r for r in rows)
    if arm != "random:finetune":
        assert any("| random:finetune (from scratch) |" in r for r in rows)
    for s in loc["scores"]:
        assert 0.0 <= s["value"] <= 1.0 and s["ci_low"] is not None and s["ci_high"] is not None
    assert f"radpair predict --model {out / 'package'}" in page


@pytest.mark.slow
def test_quick_demo_package_loads_and_predicts_png_files(quick_demo, tmp_path):
    import numpy as np
    import pandas as pd

    from radpair.data.corpus import Corpus
    from radpair.package import load_package, predict

    pkg = load_package(quick_demo / "package")
    corpus = Corpus.open(quick_demo / "corpus")
    test = corpus.split_index("test")
    files = []
    for k, row in enumerate(test.iloc[:2].itertuples()):
        f = tmp_path / f"img{k}.png"
        Image.fromarray(corpus.read_images(np.array([row.image_index]))[0]).save(f)
        files.append(f)
    csv = tmp_path / "pred.csv"
    predict(pkg, files, csv, log=lambda m: None)
    frame = pd.read_csv(csv)
    assert frame["path"].tolist() == [str(f) for f in files]
    assert set(frame["status"]) <= {"ok", "flagged"}
    probs = frame[[f"p_{c}" for c in pkg.class_names]].to_numpy(dtype=float)
    assert probs.shape == (2, 7) and np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()


@pytest.mark.slow
def test_quick_demo_package_arm_was_chosen_on_validate(quick_demo):
    import copy

    from radpair.transfer.results import TransferResult
    from radpair_train.demo import choose_package_arm

    results = json.loads((quick_demo / "results.json").read_text())
    chosen = results["package"]
    assert chosen["split"] == "validate" and chosen["test_used"] is False and chosen["budget"] == "all"
    card = json.loads((quick_demo / "package" / "card.json").read_text())
    labels = json.loads((quick_demo / "package" / "labels.json").read_text())
    assert card["provenance"]["arm"] == chosen["arm"] and card["provenance"]["budget"] == "all"
    assert labels["thresholds"]["split"] == "validate"
    # the recorded validation scores of the kept settings decide, and nothing else
    transfer = TransferResult.load(quick_demo / "transfer" / "results.json")
    means = {}
    for arm in transfer.arm_keys:
        vals = [e["val_score"] for c in transfer.cells_for(arm, "all") for e in c.selection
                if all(e.get(k) == v for k, v in c.chosen.items()) and e["val_score"] is not None]
        means[arm] = sum(vals) / len(vals)
    assert chosen["arm"] == max(means, key=means.get)
    assert chosen["val_scores"] == pytest.approx(means, abs=1e-4)
    # test scores that rank the arms the other way round change nothing
    flipped = copy.deepcopy(transfer)
    for c in flipped.cells:
        c.metrics = {"values": {k: -means[c.arm] for k in ("macro_auc", "macro_ap")}}
    flipped.summaries = [{**s, "mean": -means[s["arm"]]} for s in flipped.summaries]
    assert choose_package_arm(flipped)["arm"] == chosen["arm"]


def test_localisation_without_masks_says_so(tmp_path):
    from types import SimpleNamespace

    from radpair.evaluation.transfer_page import render_markdown
    from radpair_train.demo import DemoExplainConfig, _localise, explanation_blocks

    corpus = SimpleNamespace(has_masks=False, root=tmp_path / "old_corpus")
    loc = _localise(tmp_path / "loc", DemoExplainConfig(), None, {"arm": "a:linear"}, corpus, tmp_path, print)
    assert loc["available"] is False and "old_corpus" in loc["reason"] and "masks" in loc["reason"]
    page = render_markdown(explanation_blocks(tmp_path, None, loc, None))
    assert "## Localisation against the drawn findings" in page and "Not scored: the corpus at" in page


def test_a_changed_stage_config_is_redone_and_says_why(tmp_path):
    lines: list[str] = []
    cache = StageCache(tmp_path, lines.append)
    stage = tmp_path / "tokenizer"
    settings = {"vocab_size": 1000}
    key = cache.key(settings, "corpus-a")
    assert not cache.fresh("tokenizer", key, settings, [stage])
    stage.mkdir()
    (stage / "vocab.txt").write_text("x")
    cache.done("tokenizer", key, settings)
    assert StageCache(tmp_path, lines.append).fresh("tokenizer", key, settings, [stage])
    # a changed setting: the stage is redone, its old output removed, and the log names the key
    changed = {"vocab_size": 2000}
    cache = StageCache(tmp_path, lines.append)
    assert not cache.fresh("tokenizer", cache.key(changed, "corpus-a"), changed, [stage])
    assert not stage.exists() and any("vocab_size 1000 -> 2000" in line for line in lines)
    # a changed upstream stage invalidates it too
    stage.mkdir()
    cache.done("tokenizer", key, settings)
    assert not cache.fresh("tokenizer", cache.key(settings, "corpus-b"), settings, [stage])
    assert any("an earlier stage changed" in line for line in lines)


def test_an_interrupted_stage_keeps_its_outputs_and_resumes(tmp_path):
    lines: list[str] = []
    stage = tmp_path / "pretrain"
    settings = {"epochs": 3}
    cache = StageCache(tmp_path, lines.append)
    key = cache.key(settings)
    assert not cache.fresh("pretrain", key, settings, [stage])
    stage.mkdir()
    (stage / "checkpoint-100.pt").write_text("half way")  # killed before `done`
    again = StageCache(tmp_path, lines.append)
    assert not again.fresh("pretrain", key, settings, [stage])
    assert (stage / "checkpoint-100.pt").is_file() and any("resuming" in line for line in lines)


def test_demo_rejects_bad_settings(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "n_imagez=10"]) == 2
    assert "did you mean 'n_images'" in capsys.readouterr().err
    blocker = tmp_path / "f"
    blocker.write_text("x")
    assert main(["demo", "--quick", "--out", str(blocker / "sub")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_demo_compares_several_methods_on_one_page(tmp_path):
    from radpair.config import from_dict, to_dict
    from radpair.errors import ConfigError
    from radpair_train.demo import DemoConfig, quick_config, run_demo

    cfg = quick_config()
    cfg.n_images = 300
    cfg.methods = ["convirt", "timnet_matching"]
    cfg.pretrain.train.max_steps = 6
    cfg.transfer.n, cfg.transfer.repeats, cfg.transfer.arms = ["10"], 1, ["convirt:linear", "random:linear"]
    out = run_demo(cfg, tmp_path / "d", progress=False, log=lambda m: None)
    result = json.loads((tmp_path / "d" / "transfer" / "results.json").read_text())
    assert {a["key"] for a in result["arms"]} == {"convirt:linear", "random:linear", "timnet_matching:linear"}
    page = (tmp_path / "d" / "report.md").read_text()
    assert "Pretraining compute per method" in page and "| timnet_matching |" in page
    assert out["stage_keys"]["pretrain_timnet_matching"]
    with pytest.raises(ConfigError, match="did you mean 'timnet_matching'"):
        from_dict(DemoConfig, {**to_dict(quick_config()), "methods": ["convirt", "timnet_matchin"]})


def test_demo_writes_scores_and_shows_generated_reports(tmp_path):
    """Methods with a decoder write reports for the first test images; the page shows them
    beside the originals with CheXpert labels, results.json carries the metrics."""
    import html

    from radpair_train.demo import quick_config, run_demo

    cfg = quick_config()
    cfg.n_images = 300
    cfg.methods = ["convirt", "radtex_captioning", "tienet"]
    cfg.pretrain.train.max_steps = 6
    cfg.transfer.n, cfg.transfer.repeats, cfg.transfer.arms = ["10"], 1, ["convirt:linear", "random:linear"]
    g = cfg.generation
    g.sample, g.n_scored, g.n_bootstrap, g.meteor = 3, 8, 0, False
    g.decoding.strategy, g.decoding.max_length = "greedy", 10  # untrained decoders never stop on their own
    out = tmp_path / "d"
    results = run_demo(cfg, out, progress=False, log=lambda m: None)
    gen = results["generation"]
    assert set(gen) == {"radtex_captioning", "tienet"}  # ConVIRT has no decoder
    arms = {a["key"] for a in json.loads((out / "transfer" / "results.json").read_text())["arms"]}
    assert {"radtex_captioning:linear", "tienet:linear"} <= arms
    assert json.loads((out / "results.json").read_text())["generation"] == json.loads(json.dumps(gen))
    page_md, page_html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## Generated reports" in page_md and "<h2>Generated reports</h2>" in page_html
    for name, sections in (("radtex_captioning", "FINDINGS"), ("tienet", "FINDINGS+IMPRESSION")):
        g = gen[name]
        assert g["ref_sections"].upper() == sections and g["n_generated"] == 8 and len(g["sample"]) == 3
        assert {"bleu4", "rougeL"} <= set(g["metrics"])
        if chexpert_available():  # the CheXpert phrase lists are not shipped: without them CE says why
            assert "ce_upos_5_macro_f1" in g["metrics"]
        else:
            assert g["clinical_efficacy_reason"] and "no CheXpert labels" in g["sample"][0]["original_labels"]
        info = json.loads((out / f"pretrain_{name}" / "run_info.json").read_text())
        assert info["total_steps"] <= 6  # the quick run's step cap reaches every method
        folder = out / "generation" / name
        for f in ("reports.csv", "sample.csv", "generation_metrics.json", "summary.json"):
            assert (folder / f).is_file()
        assert f"### {name}" in page_md and f"| image | original ({sections}) | CE labels | generated |" in page_md
        assert "BLEU-4 " in page_md and f"n = {g['n_scored']}" in page_md
        row = next(r for r in g["sample"] if r["original"])
        assert row["original"] in page_md and row["original_labels"] in page_md
        assert html.escape(row["original"], quote=False) in page_html
        assert all(r["generated"] in page_md for r in g["sample"] if r["generated"])
    # a second run reads the stored reports instead of decoding again
    again = run_demo(cfg, out, progress=False, log=lambda m: None)
    assert not any("report generation" in k for k in again["stage_seconds"]) and again["generation"] == gen


def test_generated_report_texts_are_escaped_on_the_page(tmp_path):
    import pandas as pd

    from radpair.evaluation.transfer_page import render_html, render_markdown
    from radpair_train.demo import ce_label_text, generated_reports_blocks

    row = pd.Series({"Cardiomegaly": 1, "Edema": -1, "Atelectasis": 0, "Pneumonia": pd.NA})
    assert ce_label_text(row) == "+Cardiomegaly, ?Edema"
    assert ce_label_text(pd.Series({"Edema": pd.NA})) == "none"
    gen = {"m": {"ref_sections": "findings", "n_generated": 2, "n_scored": 1, "decoding": {"strategy": "greedy"},
                 "metrics": {"bleu4": 0.25}, "folder": "x/generation/m",
                 "sample": [{"image_id": "a", "original": "Heart <b>big</b> | x", "original_labels": "+Cardiomegaly",
                             "generated": "", "generated_labels": "none"}]}}
    blocks = generated_reports_blocks(gen)
    md, page = render_markdown(blocks), render_html(blocks, tmp_path, "t")
    assert "Heart &lt;b&gt;big&lt;/b&gt; \\| x" in md and "(empty)" in md and "BLEU-4 0.250" in md
    assert "CE macro-F1 (common 5) –" in md and "less 1 whose report has no FINDINGS" in md
    assert "Heart &lt;b&gt;big&lt;/b&gt; | x" in page and "<b>" not in page
    assert generated_reports_blocks({}) == []


def test_demo_method_options_match_the_cpu_presets():
    """The demo's RadTex and TieNet sizes are the CPU presets' (configs/*_cpu.yaml)."""
    from pathlib import Path

    import yaml

    from radpair_train.demo import DEMO_CHAUHAN_OPTIONS, DEMO_METHOD_OPTIONS

    root = Path(__file__).resolve().parents[1] / "configs"
    for name, options in DEMO_METHOD_OPTIONS.items():
        preset = yaml.safe_load((root / f"{name}_cpu.yaml").read_text())["method"]
        assert {k: v for k, v in preset.items() if k != "name"} == options, name
    # Chauhan's, less the epochs the demo sets (the same passes as every other method)
    preset = yaml.safe_load((root / "chauhan_ranking_cpu.yaml").read_text())["method"]
    skip = {"name", "ranking_epochs", "joint_epochs"}
    assert {k: v for k, v in preset.items() if k not in skip} == DEMO_CHAUHAN_OPTIONS


def test_the_default_demo_compares_every_report_method_and_the_study_keeps_its_settings():
    """`radpair demo` compares every method that learns from reports within 30 minutes;
    `--study` is the ConVIRT study the docs quote, with the settings its numbers came from."""
    from radpair.methods import report_methods
    from radpair_train.demo import DemoConfig, study_config

    cfg = DemoConfig()
    assert cfg.methods[0] == "convirt" and sorted(cfg.methods) == sorted(report_methods())
    assert "supervised" not in cfg.methods
    assert {"convirt", "chauhan_ranking", "convirt_sections", "timnet_matching", "radtex_captioning",
            "tienet"} <= set(cfg.methods)
    assert cfg.pretrain.train.epochs == 1 and cfg.transfer.n == ["10", "100"] and cfg.n_images == 12500
    assert cfg.transfer.n_bootstrap == 500 and cfg.method_options["chauhan_ranking"]["impostors"] == "batch"
    study = study_config()
    assert study.methods == ["convirt"] and study.pretrain.train.epochs == 6
    assert study.transfer.n == ["10", "100", "1000", "all"] and study.n_images == 25000
    assert study.transfer.n_bootstrap == 1000 and "chauhan_ranking" not in study.method_options
    assert cfg.equal_phase_epochs and not study.equal_phase_epochs  # the study keeps Chauhan's 50 joint epochs
    assert study.transfer.arms == cfg.transfer.arms and study.pretrain.data == cfg.pretrain.data


def test_demo_study_flag_runs_the_study(tmp_path, monkeypatch):
    import radpair_train.demo as demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda cfg, out, progress=True: seen.append(cfg))
    assert main(["demo", "--study", "--no-progress", "--out", str(tmp_path / "s"), "seed=2"]) == 0
    assert seen[0].methods == ["convirt"] and seen[0].pretrain.train.epochs == 6 and seen[0].seed == 2
    assert main(["demo", "--no-progress", "--out", str(tmp_path / "d"), "--methods", "convirt,tienet"]) == 0
    assert seen[1].methods == ["convirt", "tienet"] and seen[1].pretrain.train.epochs == 1


def test_demo_methods_make_equal_passes_in_every_phase(tmp_path):
    """Chauhan's joint phase over the labelled pairs gets the demo's epochs too (50 by
    default); without ``labelled_epochs`` (the localisation study's runs) it keeps 50, and an
    explicit option wins."""
    from radpair_train.demo import DemoConfig, method_pretrain_config

    base = DemoConfig().pretrain
    base.train.epochs = 2
    cfg = method_pretrain_config(base, "chauhan_ranking", {}, tmp_path / "c", labelled_epochs=2)
    assert (cfg.method.ranking_epochs, cfg.method.joint_epochs) == (2, 2)
    kept = method_pretrain_config(base, "chauhan_ranking", {}, tmp_path / "c")
    assert (kept.method.ranking_epochs, kept.method.joint_epochs) == (2, 50)
    opt = method_pretrain_config(base, "chauhan_ranking", {"joint_epochs": 7}, tmp_path / "c", labelled_epochs=2)
    assert opt.method.joint_epochs == 7
    assert method_pretrain_config(base, "timnet_matching", {}, tmp_path / "t", labelled_epochs=2).train.epochs == 2


def chexpert_available() -> bool:
    """Whether radpair's CheXpert labeler finds its phrase lists here (../shared/data or
    RADPAIR_CHEXPERT_DIR); a fresh clone on CI has none."""
    from radpair.errors import ResourceMissing
    from radpair.evaluation.report_metrics import chexpert_labeler

    try:
        chexpert_labeler()
    except ResourceMissing:
        return False
    return True


def test_corpus_stage_key_ignores_neutral_knobs_but_keeps_an_older_full_key(tmp_path):
    """Knobs added at neutral values re-make no cached corpus: a folder keyed on every knob
    keeps that key, a new folder is keyed on the knobs that change the corpus."""
    from radpair.data.synth import SynthConfig
    from radpair.data.synth.config import NEUTRAL_KNOBS
    from radpair_train.demo import DemoConfig, corpus_stage_settings

    cfg, synth = DemoConfig(), SynthConfig.preset("default")
    new = corpus_stage_settings(cfg, synth, StageCache(tmp_path, print))
    assert not set(NEUTRAL_KNOBS) & set(new["synth"])
    full = {**new, "synth": synth.to_dict()}
    cache = StageCache(tmp_path, print)
    cache.done("corpus", cache.key(full), full)
    assert corpus_stage_settings(cfg, synth, StageCache(tmp_path, print)) == full
    assert StageCache(tmp_path, print).fresh("corpus", cache.key(full), full, [])


def test_the_corpus_stages_alone_write_what_the_demo_then_reuses(tmp_path):
    """`benchmarks/demo_seeds.py --corpus-only`: the corpus and tokenizer stages, cached as run_demo caches them."""
    from radpair_train.demo import quick_config, write_corpus_and_tokenizer

    cfg = quick_config()
    cfg.n_images, cfg.workers = 60, 1
    logs: list[str] = []
    corpus, tokenizer = write_corpus_and_tokenizer(cfg, tmp_path / "d", log=logs.append)
    assert any("synthetic corpus ..." in line for line in logs)
    assert len(corpus.index) == 60 and tokenizer.vocab_size > 10
    assert {"corpus", "tokenizer"} <= set(json.loads((tmp_path / "d" / "stages.json").read_text()))
    made = (tmp_path / "d" / "corpus" / "images.npy").stat().st_mtime_ns
    logs.clear()
    write_corpus_and_tokenizer(cfg, tmp_path / "d", log=logs.append)
    assert (tmp_path / "d" / "corpus" / "images.npy").stat().st_mtime_ns == made
    assert not any("synthetic corpus ..." in line for line in logs)  # reused, not made again


def test_demo_seeds_corpus_only_writes_the_corpora_and_no_table(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import demo_seeds

    assert demo_seeds.main(["--seeds", "3", "--out", str(tmp_path), "--corpus-only", "n_images=60", "workers=1"]) == 0
    assert (tmp_path / "seed3" / "corpus" / "index.csv").is_file() and (tmp_path / "seed3" / "tokenizer").is_dir()
    assert not (tmp_path / "demo_seeds.json").exists() and not (tmp_path / "seed3" / "results.json").exists()
    assert "seed 3: corpus and tokenizer in" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # --reuse and --corpus-only exclude each other
        demo_seeds.main(["--seeds", "3", "--out", str(tmp_path), "--corpus-only", "--reuse"])

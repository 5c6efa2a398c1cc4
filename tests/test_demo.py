"""The quick demo end to end on CPU: corpus, tokenizer, pretraining, transfer, results page."""

import json

import pytest
from PIL import Image

from radpair_train.cli import main
from radpair_train.demo import StageCache


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-progress", "--out", str(out), "n_images=400"]) == 0
    results = json.loads((out / "results.json").read_text())
    means = results["headline"]["means"]
    assert set(means) == {"convirt:linear", "convirt:frozen-head", "random:linear", "random:finetune"}
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
    assert again["headline"] == results["headline"]


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
        assert {"bleu4", "rougeL", "ce_upos_5_macro_f1"} <= set(g["metrics"])
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

    from radpair_train.demo import DEMO_METHOD_OPTIONS, DemoConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    for name, options in DEMO_METHOD_OPTIONS.items():
        preset = yaml.safe_load((root / f"{name}_cpu.yaml").read_text())["method"]
        assert {k: v for k, v in preset.items() if k != "name"} == options, name
    assert DemoConfig().methods == ["convirt"]  # the default demo is unchanged

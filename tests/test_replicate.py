"""`radpair replicate`: the paper registry (YAML data), its loader, tables, claims and CLI.

Nothing here imports torch: the live method registry is replaced by a fixed set.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from radpair.errors import ConfigError
from radpair.replicate import (
    PaperFileError,
    check_published_claims,
    describe_plan,
    evaluate_claim,
    list_papers,
    load_paper,
    load_paper_file,
    paper_status,
    paper_text_path,
    published_values,
    registry,
    render_table,
    vocab,
)
from radpair.replicate.schema import derived_requirements

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ["chauhan2020", "convirt_sections", "radtex", "tienet", "timnet"]
TODAY = {"convirt", "supervised"}  # methods registered in radpair.methods today


@pytest.fixture(scope="module")
def papers():
    return {name: load_paper(name) for name in list_papers()}


@pytest.fixture(autouse=True)
def _no_torch(monkeypatch):
    """paper_status() sees a fixed method list and capabilities, not the live registries.

    The transfer harness registers its capabilities into ``registry.CAPABILITIES`` when first
    imported; imported first under this fixture's stand-in set, it would leave the real set
    empty for every later test in the process (test_replicate_runner.py, when pytest-xdist
    puts both files in one worker). So it is imported before the stand-in goes in."""
    import radpair.transfer  # noqa: F401

    monkeypatch.setattr(registry, "registered_methods", lambda: set(TODAY))
    monkeypatch.setattr(registry, "CAPABILITIES", set())


# --------------------------------------------------------------------------- the registry


def test_paper_names_are_the_recipe_stems(papers):
    recipes = sorted(p.stem for p in (ROOT / "configs" / "recipes").glob("*.yaml"))
    assert list_papers() == PAPERS
    assert list_papers() == recipes
    for name, paper in papers.items():
        assert paper.name == paper.info.name == name
        recipe = ROOT / paper.info.recipe
        assert recipe.is_file() and recipe.stem == name


def test_every_paper_loads_with_its_parts(papers):
    for paper in papers.values():
        assert paper.methods and paper.transfer and paper.tables and paper.claims and paper.deviations
        assert paper.requires.methods and "transfer" in paper.requires.capabilities
        for table in paper.tables:
            assert set(table.published) == {r.id for r in table.rows}
            for row in table.published.values():
                assert list(row) == [c.id for c in table.columns]


def test_paper_text_files_exist(papers):
    if not (ROOT.parent / "shared" / "papers").is_dir():
        pytest.skip("shared/papers is not next to this checkout")
    for paper in papers.values():
        assert paper_text_path(paper).is_file(), paper.info.file


def test_cpu_and_quick_presets_are_complete(papers):
    for paper in papers.values():
        for mode in ("cpu", "quick"):
            assert paper.corpora["main"].preset(mode)["n"] > 0
            for m in paper.methods:
                s = m.settings(mode)
                assert s["backbone"] in vocab.BACKBONES and 32 <= s["image_size"] <= 512
                assert s["epochs"] >= 1 and s["batch_size"] >= 1
            for p in paper.transfer:
                plan = p.plan(mode)
                assert plan["repeats"] >= 1 and plan["budgets"].values
                for arm in p.arms:
                    assert isinstance(p.hyper(arm, mode), dict)
        assert paper.corpora["main"].preset("data") is None


def test_quick_values_beat_an_arms_stated_epochs(papers):
    # RadTex's random arm states 50 epochs (cpu 30); its protocol's quick block says 2
    pathology9 = papers["radtex"].protocol("pathology9")
    assert pathology9.hyper("random", "cpu")["epochs"] == 30
    quick = pathology9.hyper("random", "quick")
    assert quick["epochs"] == 2 and quick["max_steps"] == 20 and quick["lr"] == 0.2
    assert "repeats" not in quick and "budgets" not in quick
    assert pathology9.hyper("radtex-frozen", "quick")["epochs"] == 2


def test_published_numbers_decide_the_claims_as_the_files_say(papers):
    # a transcription error in a table usually flips one of these
    for paper in papers.values():
        assert check_published_claims(paper) == []


def test_declared_requirements_cover_what_the_paper_uses(papers):
    for paper in papers.values():
        methods, caps = derived_requirements(paper)
        assert methods <= set(paper.requires.methods)
        assert caps <= set(paper.requires.capabilities)


def test_spot_checks_of_published_numbers(papers):
    assert papers["chauhan2020"].table("table2").published["ranking-dot-semi"]["auc_012|3"] == 0.90
    assert papers["radtex"].table("table1").published["radtex-frozen"]["n100.auc"] == 0.752
    assert papers["timnet"].table("table_s3").published["auc.ours"]["f0.5"] == 0.9352
    assert papers["tienet"].table("table1").published["edema"]["hand.igr"] == 0.834
    assert papers["tienet"].table("table1").published["hernia"]["openi.r"] is None
    assert papers["convirt_sections"].table("table2").published["modified.lin"]["chexpert.100"] == 27.78


def test_vocabularies_match_the_code():
    encoders = re.findall(r'IMAGE_ENCODERS\.register\("([^"]+)"\)',
                          (ROOT / "src/radpair/models/image_encoders.py").read_text())
    assert set(vocab.BACKBONES) <= set(encoders)
    methods = [m for f in sorted((ROOT / "src/radpair/methods").glob("*.py"))
               for m in re.findall(r'@register_method\("([^"]+)"\)', f.read_text())]
    assert {"convirt", "supervised"} <= set(methods)
    assert set(methods) <= set(vocab.PLANNED_METHODS)
    from radpair.data.synth.config import SynthConfig
    import dataclasses

    # every generator knob can be set from a paper's YAML, and nothing else
    assert set(vocab.SYNTH_KNOBS) == {f.name for f in dataclasses.fields(SynthConfig)}


def test_unknown_paper_gets_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown paper 'radtx'; did you mean 'radtex'\?"):
        load_paper("radtx")


# --------------------------------------------------------------------------- malformed files


def _broken(tmp_path: Path, name: str, edit) -> Path:
    data = yaml.safe_load((registry.PAPERS_DIR / f"{name}.yaml").read_text())
    edit(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "edit, key, text",
    [
        (lambda d: d["transfer"][0]["arms"][0].update(protocol="fine-tune"),
         "transfer[0].arms[0].protocol", "did you mean 'finetune'"),
        (lambda d: d.update(tabels=d.pop("tables")), "tabels", "did you mean 'tables'"),
        (lambda d: d["paper"].pop("year"), "paper.year", "required key is missing"),
        (lambda d: d["tables"][0]["published"]["random"].pop(), "tables[0].published.random", "has 7 values"),
        (lambda d: d["tables"][0]["rows"][0]["select"].update(arm="randm"),
         "tables[0].rows/random/columns/all.auc", "did you mean 'random'"),
        (lambda d: d["methods"][0]["cpu"].update(backbone="resnet_huge"), "methods[0].cpu.backbone", "resnet_tiny"),
        (lambda d: d["methods"][0]["paper"].update(text_sections="findngs"), "methods[0].paper.text_sections",
         "did you mean 'findings'"),
        (lambda d: d["transfer"][0]["metrics"].append("auc_0|123"), "transfer[0].metrics[2]", "ordinal task"),
        (lambda d: d["claims"][0]["expect"][0].update(higher="table1/radtex-frozn/n1*"), "claims[0].expect[0]",
         "did you mean 'radtex-frozen'"),
        (lambda d: d["requires"].update(capabilities=["transfer"]), "requires.capabilities", "frozen_head"),
        (lambda d: d["paper"].update(name="radtex2"), "paper.name", "must equal the file name"),
        (lambda d: d["methods"][0]["cpu"].update(vocabulary={"kind": "words"}), "methods[0].cpu.vocabulary.kind",
         "did you mean 'word'"),
        (lambda d: d["methods"][0]["cpu"].update(vocabulary={"min_cont": 2}), "methods[0].cpu.vocabulary.min_cont",
         "did you mean 'min_count'"),
        (lambda d: d["methods"][0]["paper"].update(word_vectors={"dim": 0}), "methods[0].paper.word_vectors.dim",
         "must be at least 1"),
    ],
)
def test_malformed_paper_names_file_and_key(tmp_path, edit, key, text):
    path = _broken(tmp_path, "radtex", edit)
    with pytest.raises(PaperFileError) as info:
        load_paper_file(path)
    err = info.value
    assert err.file == str(path) and err.key == key
    assert str(path) in str(err) and repr(key) in str(err) and text in str(err)


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "radtex.yaml"
    path.write_text("paper: [unclosed\n")
    with pytest.raises(PaperFileError, match="radtex.yaml: is not valid YAML"):
        load_paper_file(path)


# --------------------------------------------------------------------------- tables and claims


def test_render_table_sets_published_beside_measured(papers):
    paper = papers["radtex"]
    measured = {"radtex-frozen": {"n100.auc": (0.7312, 0.70, 0.76), "n10.auc": 0.61},
                "random": {"all.auc": None}}
    md = render_table(paper, "table1", measured)
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("|  |"))
    assert "100 Ex. AUC: paper | 100 Ex. AUC: here" in header
    frozen = next(line for line in lines if line.startswith("| RadTex Frozen"))
    assert "| 0.752 | 0.731 (0.700–0.760) |" in frozen  # paper, then here with its interval
    assert "| 0.675 | 0.610 |" in frozen  # a bare number has no interval
    assert "| 0.785 | not run |" in frozen
    imagenet = next(line for line in lines if line.startswith("| IN-Pretrained"))
    assert imagenet.count("N/A here") == 8 and "0.763" in imagenet
    assert "N/A here: no ImageNet weights here" in md
    assert "Table 1" in md and "Units:" in md


def test_render_table_scales_and_marks_unreadable(papers):
    md = render_table(papers["convirt_sections"], "table2", {"baseline.ft": {"chexpert.100": (0.4, 0.35, 0.45)}})
    assert "| 41.66 | 40.00 (35.00–45.00) |" in md
    empty = render_table(papers["radtex"], "figure2a")
    assert "| – | not run |" in empty and "not readable" in empty


def test_render_table_rejects_unknown_cells(papers):
    with pytest.raises(ConfigError, match="did you mean 'radtex-frozen'"):
        render_table(papers["radtex"], "table1", {"radtex-frozn": {"all.auc": 0.8}})
    with pytest.raises(ConfigError, match="unknown table"):
        render_table(papers["radtex"], "table9")


def test_claims_on_measured_values(papers):
    paper = papers["radtex"]
    claim = next(c for c in paper.claims if c.id == "radtex-beats-supervised-few-labels")
    cols = ["n1000.auc", "n1000.aucpr", "n100.auc", "n100.aucpr", "n10.auc", "n10.aucpr"]
    values = {"table1": {"radtex-frozen": {c: 0.8 for c in cols}, "cxr14": {c: 0.7 for c in cols},
                         "random": {c: 0.6 for c in cols}}}
    assert evaluate_claim(paper, claim, values).holds is True
    values["table1"]["cxr14"]["n10.auc"] = 0.9
    result = evaluate_claim(paper, claim, values)
    assert result.holds is False
    assert [(f.a[2], f.b[1]) for f in result.failures()] == [("n10.auc", "cxr14")]
    del values["table1"]["random"]
    values["table1"]["cxr14"]["n10.auc"] = 0.7
    assert evaluate_claim(paper, claim, values).holds is None  # undecided: cells missing
    # measured F1 in 0-1 is scaled to the paper's percent before the 2-point tolerance
    cs = papers["convirt_sections"]
    equal = next(c for c in cs.claims if c.id == "sections-equal")
    f1 = {arm: {"chexpert.100": 0.40, "chexpert.10": 0.30} for arm in
          ("findings.ft", "findings.lin", "impression.ft", "impression.lin")}
    f1["impression.lin"] = {"chexpert.100": 0.41, "chexpert.10": 0.30}
    assert evaluate_claim(cs, equal, {"table2": f1}).holds is True
    f1["impression.lin"]["chexpert.10"] = 0.33
    assert evaluate_claim(cs, equal, {"table2": f1}).holds is False


def test_published_values_and_wildcard_pairing(papers):
    timnet = papers["timnet"]
    claim = next(c for c in timnet.claims if c.id == "binary-30pct-all-metrics")
    result = evaluate_claim(timnet, claim, published_values(timnet), published=True)
    metrics = {f.a[1] for f in result.failures()}
    assert metrics == {"auc.ours", "ap.ours", "prec.ours", "recall.ours"}  # accuracy and F1 hold
    assert all(f.a[1].split(".")[0] == f.b[1].split(".")[0] for f in result.comparisons)


# --------------------------------------------------------------------------- status


def test_status_today_lists_what_is_missing(papers):
    status = paper_status(papers["chauhan2020"])
    assert not status.runnable
    assert status.missing_methods == ("chauhan_ranking",)
    assert "joint" in status.missing_capabilities and "ordinal_metrics" in status.missing_capabilities
    assert status.summary().startswith("needs: chauhan_ranking")


def test_status_runs_when_everything_exists(papers, monkeypatch):
    monkeypatch.setitem(registry.ISSUES, "caption_metrics", "issue 14")
    tienet = papers["tienet"]
    status = paper_status(tienet, methods={"tienet"}, capabilities={"transfer", "finetune", "joint",
                                                                     "shifted_corpus"})
    assert status.runnable
    assert "table table2" in status.skipped and "arm findings/R" in status.skipped
    assert "caption_metrics (issue 14)" in status.summary()
    every = set(vocab.CAPABILITY_NAMES)
    for paper in papers.values():
        assert paper_status(paper, methods=set(vocab.PLANNED_METHODS), capabilities=every).summary() == "runs"


def test_register_capability_checks_the_name():
    registry.register_capability("transfer", "finetune")
    assert {"transfer", "finetune"} <= registry.CAPABILITIES
    with pytest.raises(ConfigError, match="did you mean 'finetune'"):
        registry.register_capability("fine_tune")


def test_describe_plan_follows_the_mode(papers):
    timnet = papers["timnet"]
    assert any("fraction=0.5%,1%,2%,5%,10%,15%,30%,50%,70%,90%,100% x 3 repeats" in s
               for s in describe_plan(timnet, "data"))
    assert any("fraction=5%,100% x 1 repeat;" in s for s in describe_plan(timnet, "quick"))
    assert not any(s.startswith(("tokenizer", "word2vec")) for s in describe_plan(timnet, "quick"))
    tienet = describe_plan(papers["tienet"], "quick")
    assert "tokenizer: words seen >= 2 times" in tienet
    assert any(s.startswith("word2vec on the training reports starts the word embedding of tienet,") for s in tienet)


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    """The subcommand on its own parser (independent of the other subcommands' imports)."""
    from radpair_train.commands import replicate

    parser = argparse.ArgumentParser(prog="radpair")
    replicate.register(parser.add_subparsers(dest="command"))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(["replicate", *argv])
    return args.func(args)


def test_radpair_cli_has_the_subcommand(capsys):
    from radpair_train import cli

    if "replicate" not in cli.COMMANDS:
        pytest.skip("replicate is not in radpair_train.cli.COMMANDS yet")
    assert cli.main(["replicate", "radtx"]) == 2
    assert "did you mean 'radtex'" in capsys.readouterr().err


def test_list_names_every_paper_with_status(capsys):
    assert _run(["--list"]) == 0
    out = capsys.readouterr().out
    for name in PAPERS:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert "needs: " in line
    assert re.search(r"^radtex +needs: radtex_captioning", out, re.M)
    assert "pretrain 7 models (chauhan_ranking x7)" in out
    assert "transfer pathology9: task findings7" in out


def test_list_says_runs_when_all_exists(capsys, monkeypatch):
    monkeypatch.setattr(registry, "registered_methods", lambda: set(vocab.PLANNED_METHODS))
    monkeypatch.setattr(registry, "CAPABILITIES", set(vocab.CAPABILITY_NAMES))
    assert _run(["--list"]) == 0
    out = capsys.readouterr().out
    for name in PAPERS:
        assert re.search(rf"^{name} +runs$", out, re.M)


def test_list_marks_a_broken_paper_and_fails(capsys, monkeypatch, tmp_path):
    for name in PAPERS:
        (tmp_path / f"{name}.yaml").write_text((registry.PAPERS_DIR / f"{name}.yaml").read_text())
    (tmp_path / "timnet.yaml").write_text("schema: 1\n")
    monkeypatch.setattr(registry, "PAPERS_DIR", tmp_path)
    assert _run(["--list"]) == 2
    out = capsys.readouterr().out
    assert re.search(r"^timnet +broken: .*timnet.yaml: key 'paper': required key is missing", out, re.M)
    assert re.search(r"^radtex +needs: ", out, re.M)


def test_show_prints_published_tables(capsys):
    assert _run(["chauhan2020", "--show"]) == 0
    out = capsys.readouterr().out
    assert "| ranking-dot-semi | 0.82 | not run | 0.81 | not run | 0.90 | not run | 0.51 | not run |" in out
    assert "Claims:" in out and "unlabelled-pairs-help" in out


def test_unknown_paper_on_the_command_line():
    with pytest.raises(ConfigError, match="did you mean 'tienet'"):
        _run(["tienett"])


def test_not_runnable_exits_2_with_what_is_missing(capsys):
    assert _run(["timnet", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "timnet cannot run yet" in err and "timnet_matching" in err and "label_fractions" in err


def test_runnable_paper_reaches_the_runner(monkeypatch, tmp_path):
    from radpair.replicate import runner

    monkeypatch.setattr(registry, "registered_methods", lambda: set(vocab.PLANNED_METHODS))
    monkeypatch.setattr(registry, "CAPABILITIES", set(vocab.CAPABILITY_NAMES))
    calls = []
    monkeypatch.setattr(runner, "run_paper", lambda *a, **k: calls.append((a, k)))
    assert _run(["radtex", "--quick", "--no-progress"]) == 0
    assert _run(["radtex", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 0
    assert _run(["radtex"]) == 0
    (p1, mode1, data1, out1), k1 = calls[0]
    assert p1.name == "radtex" and mode1 == "quick" and data1 is None and out1 == "runs/replicate/radtex-quick"
    assert k1 == {"progress": False, "device": "cpu"}
    assert calls[1][0][1:] == ("data", str(tmp_path), str(tmp_path / "o")) and calls[1][1]["device"] == "cuda"
    assert calls[2][0][1] == "cpu" and calls[2][0][3] == "runs/replicate/radtex"
    with pytest.raises(ConfigError, match="is not a folder"):
        _run(["radtex", "--data", str(tmp_path / "missing")])


def test_runner_refuses_a_paper_whose_methods_do_not_exist_yet(papers):
    import radpair.transfer  # noqa: F401 - registers the harness's capabilities
    from radpair.errors import ConfigError
    from radpair.replicate.runner import run_paper

    with pytest.raises(ConfigError, match=r"radtex cannot run yet; needs: radtex_captioning"):
        run_paper(papers["radtex"], "quick", None, "out")

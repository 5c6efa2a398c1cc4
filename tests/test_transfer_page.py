"""The transfer results page: files, paired-difference numbers that match results.json,
ROC curves that match the stored AUCs, and the graceful paths (one arm, no bootstrap,
fraction budgets, a result read back from JSON)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from radpair.errors import DataError

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One small synthetic corpus and one two-arm run of a multi-label task: budgets 10, all
    and 5% (a fraction), 2 repeats, 50 bootstrap draws; grids kept short for speed."""
    from radpair.data.synth import generate_corpus
    from radpair.transfer import TransferConfig, run_transfer

    root = tmp_path_factory.mktemp("transfer_page")
    corpus = generate_corpus(root / "corpus", n_images=300, size=64, seed=0, workers=1)
    cfg = TransferConfig(task="findings7", encoders=["random"], protocols=["linear", "frozen-head"], n=["10", "all"],
                         fractions=[0.05], repeats=2, n_bootstrap=50)
    cfg.linear.c_grid = [0.01, 1.0]
    cfg.frozen_head.max_epochs = 60
    cfg.save_models = False  # also makes the page find predictions by the folder layout alone
    main = run_transfer(cfg, corpus, root / "run", log=lambda s: None)
    return root, main


def _one_arm(result, arm):
    """The result as a one-arm run would have written it (no pairs)."""
    from radpair.transfer.results import TransferResult

    d = json.loads(json.dumps(result.to_dict()))
    d["arms"] = [a for a in d["arms"] if a["key"] == arm]
    d["cells"] = [c for c in d["cells"] if c["arm"] == arm]
    d["summaries"] = [s for s in d["summaries"] if s["arm"] == arm]
    d["paired"] = []
    return TransferResult.from_dict(d)


@pytest.fixture(scope="module")
def page(runs):
    from radpair.evaluation.transfer_page import write_transfer_report

    root, main = runs
    files = write_transfer_report(root / "page", root / "run" / "results.json", title="test page",
                                  notes=["a note"], highlight=[("random:frozen-head", "random:linear")],
                                  extra_markdown="## Appendix\n\nSome *extra* text.")
    return root, main, files


def _section(md: str, heading: str) -> str:
    start = md.index(f"\n## {heading}")
    end = md.find("\n## ", start + 4)
    return md[start:] if end < 0 else md[start:end]


def test_files_and_figures(page):
    root, _, files = page
    for key in ("markdown", "html", "label_efficiency", "paired_differences", "roc", "calibration"):
        assert files[key].is_file(), key
    for key, path in files.items():
        if path.suffix == ".png":
            assert path.parent == root / "page" / "figures"
            assert path.read_bytes()[:8] == PNG
    md = files["markdown"].read_text()
    for name in ("label_efficiency", "paired_differences", "roc", "calibration"):
        assert f"](figures/{name}.png)" in md
    html = files["html"].read_text()
    assert html.count("data:image/png;base64,") == 4 and 'src="figures/' not in html  # self-contained
    assert "<h2>Appendix</h2>" in html and "<em>extra</em>" in html
    assert md.rstrip().endswith("Some *extra* text.") and "a note" in md
    for heading in ("What was compared", "Label efficiency", "Paired differences", "Summary", "Per class",
                    "ROC curves at", "Calibration", "Subgroups at", "Selection on validation"):
        assert f"\n## {heading}" in md, heading


def test_paired_section_matches_results_json(page):
    root, main, files = page
    md = files["markdown"].read_text()
    data = json.loads((root / "run" / "results.json").read_text())
    paired = _section(md, "Paired differences")
    labels = {a["key"]: a["label"] for a in data["arms"]}
    rows = [line for line in paired.splitlines() if line.startswith("| ")]
    entries = [p for p in data["paired"] if p["metric"] == "macro_auc"]
    assert entries and {p["budget"] for p in entries} == {"10", "all", "5%"}
    where = {"10": "N=10", "all": "all labels", "5%": "5% of the labels"}
    for p in entries:
        # highlighted as frozen-head − linear: the stored linear − frozen-head, read the other way
        flipped = p["arm_a"] == "random:linear"
        a, b = (p["arm_b"], p["arm_a"]) if flipped else (p["arm_a"], p["arm_b"])
        sign = -1.0 if flipped else 1.0
        lo, hi = (-p["ci_high"], -p["ci_low"]) if flipped else (p["ci_low"], p["ci_high"])
        row = [r for r in rows if r.startswith(f"| {p['budget']} | {labels[a]} − {labels[b]} ★ |")]
        assert len(row) == 1, (p["budget"], rows)
        assert f"| {sign * p['mean_diff']:+.3f} |" in row[0]
        assert f"| {lo:+.3f} to {hi:+.3f} |" in row[0]
        assert f"r0: {sign * p['per_repeat'][0]['diff']:+.3f}" in row[0]
        # in words, with the same numbers
        words = [line for line in paired.splitlines() if line.startswith("- ") and labels[a] in line
                 and f"at {where[p['budget']]}" in line]
        assert len(words) == 1
        assert f"{sign * p['mean_diff']:+.3f} ({lo:+.3f} to {hi:+.3f})" in words[0]
        holds = lo > 0 or hi < 0
        assert ("does not hold here" in words[0]) != holds
    # the t-interval is there where a budget ran twice, and absent where it ran once
    t10 = next(p for p in entries if p["budget"] == "10")
    assert f"{-t10['t_ci_high']:+.3f} to {-t10['t_ci_low']:+.3f}" in paired
    assert "macro AP" in paired and "macro F1" in paired


def test_summary_and_per_class_tables(page):
    _, main, files = page
    md = files["markdown"].read_text()
    summary = _section(md, "Summary")
    for s in main.summaries:
        if s["metric"] in ("macro_auc", "macro_ap", "macro_f1") and s["mean"] is not None:
            assert f"| {s['mean']:.3f} |" in summary, (s["arm"], s["budget"], s["metric"])
            if s["n_repeats"] > 1:
                assert f"| {s['min']:.3f}–{s['max']:.3f} |" in summary
    per_class = _section(md, "Per class")
    cells = main.cells_for("random:linear", "10")
    for name in main.class_names:
        vals = [c.metrics["per_class"][name]["auc"] for c in cells if name in c.metrics["per_class"]]
        if len(vals) == len(cells):
            assert f"{np.mean(vals):.3f}" in per_class
    selection = _section(md, "Selection on validation")
    for c in main.cells:
        chosen = [e for e in c.selection if all(e.get(k) == x for k, x in c.chosen.items())]
        if chosen and chosen[0]["val_score"] is not None:
            assert f"{chosen[0]['val_score']:.3f} *" in selection


def test_roc_curves_match_stored_aucs(runs):
    from pathlib import Path

    from radpair.evaluation.transfer_page import _View, plot_roc

    root, main = runs
    view = _View(main, root / "run")
    png, notes, aucs = plot_roc(view, "10", root / "roc_check.png")
    assert png is not None and not notes and aucs
    for (arm, name), auc in aucs.items():
        cell = next(c for c in main.cells_for(arm, "10") if c.repeat == 0)
        assert auc == pytest.approx(cell.metrics["per_class"][name]["auc"], abs=1e-9)
    # without the run folder the section says why instead of failing
    png, notes, _ = plot_roc(_View(main, Path(root / "nowhere")), "10", root / "roc_none.png")
    assert png is None and "test_labels.npz" in notes[0]


def test_graceful_paths(runs, tmp_path):
    from radpair.evaluation.transfer_page import _budget_ticks, _View, write_transfer_report
    from radpair.transfer.results import TransferResult

    root, main = runs
    # one arm (no paired entries), with a fraction budget among the counts
    single = _one_arm(main, "random:linear")
    files = write_transfer_report(tmp_path / "single", single, run_dir=root / "run")
    md = files["markdown"].read_text()
    assert "One arm only" in md and "paired_differences" not in files
    assert "| 5% |" in md and any("5%" in t for t in _budget_ticks(_View(single, None)).values())
    assert files["label_efficiency"].is_file() and files["roc"].is_file()
    # two arms read back from JSON, paired entries removed as n_bootstrap = 0 would leave them
    data = json.loads((root / "run" / "results.json").read_text())
    data["paired"] = []
    data["test"]["n_bootstrap"] = 0
    no_boot = TransferResult.from_dict(data)
    md = write_transfer_report(tmp_path / "noboot", no_boot, run_dir=root / "run")["markdown"].read_text()
    assert "n_bootstrap = 0" in md
    with pytest.raises(DataError, match="highlight"):
        write_transfer_report(tmp_path / "bad", main, highlight=[("random:linear", "convirt:linear")])
    with pytest.raises(DataError, match="focus_budget"):
        write_transfer_report(tmp_path / "bad", main, focus_budget="1000")


def test_markdown_subset_to_html():
    from radpair.evaluation.transfer_page import markdown_to_html

    out = markdown_to_html("# T\n\npara `x` and **b**\n\n- one\n- two\n\n"
                           "| a | b |\n|---|---|\n| 1 | 2 |\n\n```\n<c>\n```")
    assert "<h1>T</h1>" in out and "<code>x</code>" in out and "<strong>b</strong>" in out
    assert "<ul><li>one</li><li>two</li></ul>" in out and "<td>1</td>" in out and "&lt;c&gt;" in out
    assert not re.search(r"<script", markdown_to_html("<script>alert(1)</script>"))

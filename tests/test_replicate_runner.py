"""The replicate runner carries a paper file out: corpora, pretraining, transfer, tables, claims.

End to end on ``convirt_sections`` in quick mode, shrunk further (a 240-image corpus, 4
pretraining steps per model) so the test stays short; the real ``--quick`` run takes about
two minutes on 2 cores.
"""

from __future__ import annotations

import json

import pytest

from radpair.errors import ConfigError
from radpair.replicate import load_paper
from radpair.replicate.runner import pretrain_overrides, run_paper, transfer_studies
from radpair.replicate.schema import CorpusSpec, MethodSpec


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


def test_arms_with_the_same_downstream_settings_share_one_study():
    paper = load_paper("convirt_sections")
    studies = transfer_studies(paper.protocol("chexpert"), "cpu")
    assert len(studies) == 1 and len(studies[0][0]) == 8
    settings = studies[0][1]
    assert settings["finetune.max_steps"] == 600 and settings["finetune.lr"] == [1e-3]


def test_quick_run_writes_tables_and_claims(tmp_path, monkeypatch):
    real_preset, real_settings = CorpusSpec.preset, MethodSpec.settings
    monkeypatch.setattr(CorpusSpec, "preset", lambda self, mode: {**real_preset(self, mode), "n": 240})
    monkeypatch.setattr(MethodSpec, "settings", lambda self, mode: {**real_settings(self, mode), "max_steps": 4})
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

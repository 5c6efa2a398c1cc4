"""Every joint method on the real COVID-19 image-text pairs (skips without ../shared/data/covid_cxr).

A few steps each at 64 px, then retrieval (and matching for TIMNet): the point is that
real, section-less clinical notes go through every method and evaluation end to end,
and that the section study refuses them with a clear error. The measurement at full
length is ``benchmarks/covid_methods.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "covid_cxr"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = pytest.mark.skipif(not (SHARED / "pairs.csv").is_file(), reason="needs ../shared/data/covid_cxr")


def test_every_joint_method_runs_on_the_real_covid_pairs(tmp_path):
    import covid_methods as cm

    corpus, tok = cm.prepare(tmp_path, 64)
    results = {name: cm.run_method(name, corpus, tok, tmp_path, epochs=1, batch=16, extra=extra)
               for name, extra in cm.RUNS.items()}
    for name in ("convirt", "chauhan_ranking", "timnet_matching"):
        r = results[name]
        assert r["ran"], (name, r)
        assert r["steps"] > 0 and r["retrieval"]["image_to_text"]["chance@10"] > 0
    assert 0.0 <= results["timnet_matching"]["matching"]["accuracy"] <= 1.0
    refused = results["convirt_sections"]
    assert not refused["ran"] and "findings" in refused["error"] and "impression" in refused["error"]

"""How well the labels stated in the reports match the drawn truth.

Report-derived labels are what a labeler or a contrastive model learns from, so their
noise is part of the benchmark; the generator measures it on every corpus it writes and
stores it in ``meta.json``.

Headline number, per finding and overall: agreement on *finding-present decisions*,
counted over images. Every (image, finding) pair where the truth or the report says
"present" is one decision; the agreement is the share of those decisions on which both
say present. A report counts as saying present only when it affirms the finding
(written label 1); an uncertain mention (-1) or silence does not. This ignores the
many pairs where both sources agree the finding is absent, which would otherwise make
every corpus look ~97% clean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from radpair.data.synth.findings import FINDINGS


def _stats(truth: np.ndarray, written: np.ndarray) -> dict[str, float | int]:
    said = written == 1
    both = int((truth & said).sum())
    either = int((truth | said).sum())
    pos = int(truth.sum())
    return {
        "agreement": round(both / either, 4) if either else 1.0,
        "accuracy": round(float((truth == said).mean()), 4) if len(truth) else 1.0,
        "sensitivity": round(both / pos, 4) if pos else 1.0,
        "precision": round(both / int(said.sum()), 4) if said.sum() else 1.0,
        "uncertain": int((written == -1).sum()),
        "positives": pos,
    }


def measure_agreement(truth: pd.DataFrame) -> dict[str, Any]:
    """Agreement of ``written_<finding>`` with ``<finding>`` columns of a ground-truth table."""
    per: dict[str, Any] = {}
    all_t, all_w = [], []
    for name in FINDINGS:
        t = truth[name].to_numpy().astype(bool)
        w = pd.to_numeric(truth[f"written_{name}"], errors="coerce").fillna(-9).to_numpy().astype(int)
        per[name] = _stats(t, w)
        all_t.append(t)
        all_w.append(w)
    overall = _stats(np.concatenate(all_t), np.concatenate(all_w))
    sev_t = truth["edema_severity"].to_numpy()
    sev_w = pd.to_numeric(truth["written_edema_severity"], errors="coerce").to_numpy()
    mask = (sev_t > 0) & (sev_w > 0)
    return {
        "definition": "per finding-present decision over images: |true & affirmed| / |true | affirmed|; "
                      "'affirmed' = written label 1 (uncertain -1 and unmentioned count as not affirmed)",
        "overall": overall,
        "per_finding": per,
        "edema_severity_exact": round(float((sev_t[mask] == sev_w[mask]).mean()), 4) if mask.any() else 1.0,
    }


__all__ = ["measure_agreement"]

"""Measure shortcuts in a generated corpus: things on the film that travel with a finding.

ECG leads and oxygen tubing are not findings, but when they follow illness
(``SynthConfig.distractor_illness_link`` > 0) they appear more often on images with
edema, and a model can learn "leads, hence edema". :func:`distractor_rates` compares how
often each distractor appears on images with and without a finding, from the
``distractors`` column of ``ground_truth.csv`` (generator version 2 on).

    from radpair.data.corpus import Corpus
    from radpair.data.synth.shortcuts import distractor_rates
    distractor_rates(Corpus.open("corpus").labels("ground_truth"))

:func:`planned_truth` gives the same table for a corpus that is only planned, not
rendered, so rates can be measured on 20,000 images in seconds.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from radpair.data.synth.config import SynthConfig
from radpair.data.synth.overlays import DISTRACTORS
from radpair.errors import DataError

FRONTAL = ("PA", "AP")


def planned_truth(n_images: int, seed: int = 0, config: SynthConfig | None = None) -> pd.DataFrame:
    """The rows ``generate_corpus`` would write, without rendering or reports (seconds for
    tens of thousands of images): view, care setting, the binary findings, support
    devices, whether the study counts as sick, and the ``distractors`` column exactly as
    ``ground_truth.csv`` would hold it."""
    from radpair.data.synth.generate import _image_jobs, plan_cohort

    cfg = config if config is not None else SynthConfig()
    cfg.validate()
    patients = plan_cohort(int(n_images), int(seed), cfg)
    jobs = iter(_image_jobs(patients, int(seed), cfg))  # row order: patient, study, image
    rows = []
    for p in patients:
        for st in p.studies:
            for _ in st.views:
                job = next(jobs)
                f = job.findings
                rows.append({"image_index": job.row, "patient_id": p.patient_id, "study_id": st.study_id,
                             "view": job.view, "setting": st.setting, **f.labels(),
                             "support_devices": f.support_devices, "sick": int(job.sick),
                             "distractors": ";".join(job.distractors)})
    return pd.DataFrame(rows)


def distractor_table(truth: pd.DataFrame) -> pd.DataFrame:
    """One 0/1 column per distractor (and ``any``) from the ``distractors`` column."""
    if "distractors" not in truth.columns:
        raise DataError("ground truth has no 'distractors' column; it is written by radpair.data.synth "
                        "generator version 2 and later (regenerate the corpus)")
    drawn = truth["distractors"].fillna("").astype(str).str.split(";")
    out = pd.DataFrame({name: drawn.map(lambda d, n=name: int(n in d)) for name in DISTRACTORS}, index=truth.index)
    out["any"] = out[list(DISTRACTORS)].max(axis=1)
    return out


def _compare(hit: np.ndarray, pos: np.ndarray) -> dict[str, Any]:
    from scipy.stats import fisher_exact

    a, b = int(hit[pos].sum()), int(pos.sum())
    c, d = int(hit[~pos].sum()), int((~pos).sum())
    r1 = a / b if b else float("nan")
    r0 = c / d if d else float("nan")
    diff = r1 - r0
    se = math.sqrt(r1 * (1 - r1) / b + r0 * (1 - r0) / d) if b and d else float("nan")
    p = float(fisher_exact([[a, b - a], [c, d - c]])[1]) if b and d else float("nan")
    return {"with": round(r1, 4), "without": round(r0, 4), "difference": round(diff, 4),
            "ci95": [round(diff - 1.96 * se, 4), round(diff + 1.96 * se, 4)], "p_value": p}


def distractor_rates(truth: pd.DataFrame, finding: str = "edema", views: Sequence[str] = FRONTAL) -> dict[str, Any]:
    """How often ECG leads / tubing / either appear on images with and without ``finding``.

    Rows are the images of ``views``. For each distractor: the two rates, their
    difference with a 95% Wald interval, and Fisher's exact two-sided p-value. Images are
    counted one by one; that is exact for the null hypothesis this tests (each image's
    distractors drawn independently of everything, as at ``distractor_illness_link=0``),
    while under a link the interval ignores within-patient correlation.
    """
    if finding not in truth.columns:
        raise DataError(f"ground truth has no column {finding!r}")
    rows = truth["view"].isin(list(views)).to_numpy()
    if not rows.any():
        raise DataError(f"no images with view in {list(views)}")
    table = distractor_table(truth.loc[rows])
    pos = truth.loc[rows, finding].to_numpy().astype(int) > 0
    return {
        "finding": finding,
        "views": list(views),
        "n_with": int(pos.sum()),
        "n_without": int((~pos).sum()),
        "rates": {name: _compare(table[name].to_numpy().astype(bool), pos) for name in (*DISTRACTORS, "any")},
    }


def format_rates(result: dict[str, Any]) -> str:
    """A small text table of :func:`distractor_rates`."""
    f = result["finding"]
    lines = [f"{'distractor':<10} {'with ' + f:>14} {'without':>9} {'difference (95% CI)':>26} {'p':>9}"]
    for name, r in result["rates"].items():
        ci = f"{r['difference']:+.3f} ({r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f})"
        lines.append(f"{name:<10} {r['with']:>14.3f} {r['without']:>9.3f} {ci:>26} {r['p_value']:>9.2g}")
    lines.append(f"images: {result['n_with']} with {f}, {result['n_without']} without ({'/'.join(result['views'])})")
    return "\n".join(lines)


__all__ = ["distractor_rates", "distractor_table", "format_rates", "planned_truth", "FRONTAL"]

"""Evaluation: metrics with patient-level confidence intervals, paired comparisons, pages.

Modules, one job each:

* :mod:`~radpair.evaluation.metrics` - per-class / macro ROC AUC with missing-label
  masking and patient-level bootstrap CIs (the label policies and AUC kernels).
* :mod:`~radpair.evaluation.scores` - vectorised weighted kernels (AUC, AP, thresholded
  decisions, calibration) evaluated on many bootstrap replicates at once.
* :mod:`~radpair.evaluation.taskmetrics` - every metric of a task (binary, multi-label,
  multi-class, ordinal with dichotomised AUCs), thresholds chosen on validation labels,
  subgroups, bootstrap CIs over a fixed set of classes.
* :mod:`~radpair.evaluation.paired` - shared bootstrap draws of test patients and paired
  differences between arms (per repeat and pooled over repeats).
* :mod:`~radpair.evaluation.sampling` - deterministic few-label subsets (the training
  engine's ``data.subset_size``); :mod:`radpair.transfer.subsets` is the patient-level,
  manifest-backed version the transfer protocol uses.
* :mod:`~radpair.evaluation.features` - frozen-encoder feature extraction.
* :mod:`~radpair.evaluation.joint` - a finished joint-embedding run (encoders, projection
  heads, tokenizer) loaded for evaluation; :mod:`~radpair.evaluation.retrieval` -
  image<->text Recall@K and median rank with chance rates; :mod:`~radpair.evaluation.zeroshot`
  - classification from prompt files, prompt sets chosen on validation only
  (``docs/retrieval.md``).
* :mod:`~radpair.evaluation.probe` - per-class L2 logistic-regression probe with grouped CV.
* :mod:`~radpair.evaluation.transfer_page` - the results page of a transfer study;
  :mod:`~radpair.evaluation.run_figures` - loss curves and sample grids (matplotlib,
  imported on demand).

``extract_features`` is resolved lazily so that scoring predictions does not import torch.
"""

from typing import Any

from radpair.evaluation.metrics import (
    BlankPolicy,
    ClassificationMetrics,
    ConfidenceInterval,
    LabelPolicy,
    MaskedLabels,
    ResamplingUnit,
    SkipReason,
    UncertainPolicy,
    apply_label_policy,
    evaluate_classification,
)
from radpair.evaluation.probe import ClassFit, CSelection, FitStatus, LinearProbe, ProbeConfig
from radpair.evaluation.sampling import ALL, FewLabelSubset, draw_subset, draw_subsets, rows_in_split, subset_indices

__all__ = [
    "ALL",
    "BlankPolicy",
    "CSelection",
    "ClassFit",
    "ClassificationMetrics",
    "ConfidenceInterval",
    "FewLabelSubset",
    "FitStatus",
    "LabelPolicy",
    "LinearProbe",
    "MaskedLabels",
    "ProbeConfig",
    "ResamplingUnit",
    "SkipReason",
    "UncertainPolicy",
    "apply_label_policy",
    "draw_subset",
    "draw_subsets",
    "evaluate_classification",
    "extract_features",
    "rows_in_split",
    "subset_indices",
]


def __getattr__(name: str) -> Any:
    if name == "extract_features":
        from radpair.evaluation.features import extract_features

        return extract_features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

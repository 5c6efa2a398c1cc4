"""Evaluation: how well do frozen encoders transfer when only a few labels exist?

Modules, one job each:

* :mod:`~radpair.evaluation.metrics` - per-class / macro ROC AUC with missing-label
  masking and patient-level bootstrap CIs.
* :mod:`~radpair.evaluation.sampling` - deterministic few-label training subsets.
* :mod:`~radpair.evaluation.features` - frozen-encoder feature extraction.
* :mod:`~radpair.evaluation.probe` - per-class L2 logistic-regression probe.
* :mod:`~radpair.evaluation.transfer` - the label-efficiency sweep and its result table.
* :mod:`~radpair.evaluation.report_page` - ``report.md`` / ``report.html`` of a run
  (imported on demand: it pulls in matplotlib).

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
from radpair.evaluation.transfer import CIKind, LabelEfficiencyResult, RunRecord, RunSource, Summary, label_efficiency

__all__ = [
    "ALL",
    "BlankPolicy",
    "CIKind",
    "CSelection",
    "ClassFit",
    "ClassificationMetrics",
    "ConfidenceInterval",
    "FewLabelSubset",
    "FitStatus",
    "LabelEfficiencyResult",
    "LabelPolicy",
    "LinearProbe",
    "MaskedLabels",
    "ProbeConfig",
    "ResamplingUnit",
    "RunRecord",
    "RunSource",
    "SkipReason",
    "Summary",
    "UncertainPolicy",
    "apply_label_policy",
    "draw_subset",
    "draw_subsets",
    "evaluate_classification",
    "extract_features",
    "label_efficiency",
    "rows_in_split",
    "subset_indices",
]


def __getattr__(name: str) -> Any:
    if name == "extract_features":
        from radpair.evaluation.features import extract_features

        return extract_features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

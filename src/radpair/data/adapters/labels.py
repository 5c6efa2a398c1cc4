"""Label conventions: 1 positive, 0 negative, -1 uncertain, NaN not mentioned.

CheXpert-style labelers emit -1 for "possible ..."; papers differ in what they do with it
(U-Zeros, U-Ones, U-Ignore, Irvin et al. 2019), so the policy is explicit and recorded.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import pandas as pd

from radpair.errors import ConfigError, unknown_choice_message

CHEXPERT_LABELS = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
]


class UncertaintyPolicy(str, Enum):
    """What -1 (uncertain) becomes: kept, 0, 1, or NaN (ignored in the loss)."""

    KEEP = "keep"
    ZEROS = "zeros"
    ONES = "ones"
    IGNORE = "ignore"

    @classmethod
    def parse(cls, value: object) -> UncertaintyPolicy:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value))
        except ValueError:
            raise ConfigError(unknown_choice_message("uncertainty policy", str(value), [p.value for p in cls])) from None


def apply_uncertainty(labels: pd.DataFrame, columns: list[str], policy: UncertaintyPolicy) -> pd.DataFrame:
    """Return a copy with -1 in ``columns`` replaced according to ``policy``."""
    policy = UncertaintyPolicy.parse(policy)
    if policy is UncertaintyPolicy.KEEP or not columns:
        return labels
    out = labels.copy()
    replacement = {UncertaintyPolicy.ZEROS: 0.0, UncertaintyPolicy.ONES: 1.0, UncertaintyPolicy.IGNORE: np.nan}[policy]
    for col in columns:
        values = out[col].to_numpy(dtype=np.float32, copy=True)
        values[values == -1] = replacement
        out[col] = values
    return out

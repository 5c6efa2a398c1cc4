"""Report labelers: one mention engine with NegEx/ConText-style negation and uncertainty,
run with rule packs (data files) for three schemas.

>>> from radpair.reports.labeling import get_labeler
>>> lab = get_labeler("chestxray14")
>>> lab.label("No pneumothorax. Small left pleural effusion.")["Effusion"]
1

``get_labeler("edema" | "chexpert" | "chestxray14", **opts)`` returns a :class:`Labeler`:
``label(text)`` gives a :class:`LabelResult` (values 1/0/-1/None, or 0-3 for edema, plus
evidence: phrase, span, cue); ``label_many(texts)`` a DataFrame with one column per label.
"""

from radpair.reports.labeling.base import Labeler, aggregate_statuses
from radpair.reports.labeling.edema import EdemaLabeler
from radpair.reports.labeling.engine import Mention, MentionEngine
from radpair.reports.labeling.observation import ObservationLabeler
from radpair.reports.labeling.registry import LABELERS, get_labeler, labeler_names
from radpair.reports.labeling.result import Evidence, LabelResult
from radpair.reports.labeling.values import CueKind, Direction, LabelValue, Status

__all__ = [
    "LABELERS",
    "CueKind",
    "Direction",
    "EdemaLabeler",
    "Evidence",
    "LabelResult",
    "LabelValue",
    "Labeler",
    "Mention",
    "MentionEngine",
    "ObservationLabeler",
    "Status",
    "aggregate_statuses",
    "get_labeler",
    "labeler_names",
]

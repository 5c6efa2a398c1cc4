"""The labeler interface shared by every schema.

A labeler reads the part of the report chosen by a section policy (default ``body``:
everything except the indication, history, technique and comparison, whose "?pneumonia"
is a question, not a finding) and returns a :class:`LabelResult`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from radpair.reports.labeling.engine import Mention, MentionEngine
from radpair.reports.labeling.result import Evidence, LabelResult
from radpair.reports.sectioning import as_text, parse_report
from radpair.reports.selection import get_policy, selected_parts

DEFAULT_SECTIONS = "body"


def mention_evidence(m: Mention, label: str | None = None, detail: str | None = None) -> Evidence:
    cue = m.cue
    return Evidence(
        label=label or m.observation,
        phrase=m.text,
        start=m.start,
        end=m.end,
        status=m.status,
        cue=cue.text if cue else None,
        cue_kind=cue.rule.kind.value if cue else None,
        cue_id=cue.rule.id if cue else None,
        cue_start=cue.start if cue else None,
        cue_end=cue.end if cue else None,
        detail=detail,
    )


class Labeler(abc.ABC):
    """Base class: section selection, batch labeling; subclasses implement :meth:`decide`."""

    name: str = "labeler"

    def __init__(self, engine: MentionEngine, sections: str = DEFAULT_SECTIONS, layout: str = "auto") -> None:
        self.engine = engine
        self.policy = get_policy(sections)
        self.layout = layout

    @property
    @abc.abstractmethod
    def label_names(self) -> list[str]:
        """Output columns, in order."""

    @abc.abstractmethod
    def decide(self, mentions: list[Mention]) -> LabelResult:
        """Label values from the mentions of one report."""

    def regions(self, text: str) -> list[tuple[int, int]]:
        """Character spans of ``text`` that the section policy selects."""
        if not text or not text.strip():
            return []
        if self.policy.whole_text:
            left = len(text) - len(text.lstrip())
            return [(left, len(text.rstrip()))]
        report = parse_report(text, self.layout)
        return [(p.start, p.end) for p in selected_parts(report, self.policy)]

    def empty(self) -> LabelResult:
        return LabelResult({name: None for name in self.label_names})

    def label(self, text: str | bytes | None) -> LabelResult:
        """Label one report. Spans in the evidence index ``text`` (decoded, for bytes)."""
        if text is None or (isinstance(text, float) and math.isnan(text)):
            return self.empty()
        text = as_text(text)
        regions = self.regions(text)
        if not regions:
            return self.empty()
        return self.decide(self.engine.find(text, regions))

    def label_many(self, texts: Iterable[Any]) -> pd.DataFrame:
        """One row per text, one nullable-integer column per label (blank = <NA>)."""
        names = self.label_names
        rows = []
        for text in texts:
            values = self.label(text).values
            rows.append([values[n] for n in names])
        return pd.DataFrame(rows, columns=names).astype("Int64")

    def describe(self) -> dict[str, Any]:
        return {"schema": self.name, "sections": self.policy.name, "labels": list(self.label_names)}


def aggregate_statuses(values: Sequence[int], mode: str) -> int:
    """Combine mention values (1/0/-1) of one label.

    ``max``: positive, else uncertain, else negative. ``chexpert``: the CheXpert
    labeler's rule -- negative with uncertain is uncertain (even when a positive is also
    present), negative with positive is positive, uncertain with positive is positive.
    """
    s = set(values)
    if len(s) == 1:
        return values[0]
    if mode == "chexpert" and 0 in s and -1 in s:
        return -1
    if 1 in s:
        return 1
    if -1 in s:
        return -1
    return 0


__all__ = ["DEFAULT_SECTIONS", "Evidence", "LabelResult", "Labeler", "aggregate_statuses", "mention_evidence"]

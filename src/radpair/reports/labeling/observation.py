"""Labelers that output one 1/0/-1/blank value per observation (CheXpert, ChestX-ray14)."""

from __future__ import annotations

from radpair.reports.labeling.base import DEFAULT_SECTIONS, Labeler, aggregate_statuses
from radpair.reports.labeling.engine import Mention
from radpair.reports.labeling.packs import ObservationPack
from radpair.reports.labeling.result import LabelResult
from radpair.reports.labeling.values import Status


class ObservationLabeler(Labeler):
    """Per-label aggregation of mention statuses, plus a "no finding"/"normal" label.

    The no-finding label is 1 when no mention of any other observation (the pack's
    ``blockers`` included, e.g. scoliosis or granuloma) is positive or uncertain; when
    one is, it is 0 (``binary`` mode) or blank (``chexpert`` mode, as the original).
    """

    def __init__(self, pack: ObservationPack, sections: str = DEFAULT_SECTIONS, layout: str = "auto") -> None:
        super().__init__(pack.engine(), sections=sections, layout=layout)
        self.pack = pack
        self.name = pack.name
        self._labels = list(pack.labels)
        self._label_set = set(pack.labels)

    @property
    def label_names(self) -> list[str]:
        return list(self._labels)

    def decide(self, mentions: list[Mention]) -> LabelResult:
        pack = self.pack
        collected: dict[str, list[int]] = {}
        evidence = []
        finding = False
        blocking = []
        for m in mentions:
            value = int(m.status.value_label)
            if m.observation in self._label_set and m.observation != pack.no_finding_label:
                collected.setdefault(m.observation, []).append(value)
                evidence.append((m, None, None))
            if m.status is not Status.NEGATED and m.observation not in pack.no_finding_ignore:
                finding = True
                blocking.append(m)
            for imp in pack.implies:
                if m.observation == imp.source and m.status in imp.statuses and m.text.lower() in imp.phrases:
                    collected.setdefault(imp.target, []).append(imp.value)
                    evidence.append((m, imp.target, f"implied by {m.text!r}"))
        values: dict[str, int | None] = {}
        for label in self._labels:
            if label == pack.no_finding_label:
                if not finding:
                    values[label] = 1
                else:
                    values[label] = 0 if pack.no_finding_mode == "binary" else None
                    evidence.extend((m, label, f"{m.observation} rules out {label}") for m in blocking)
            elif label in collected:
                values[label] = aggregate_statuses(collected[label], pack.aggregation)
            else:
                values[label] = None
        return LabelResult(values, pending=evidence)

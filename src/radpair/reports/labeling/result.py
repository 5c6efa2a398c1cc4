"""What a labeler returns: one value per label, and the evidence behind each value."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from radpair.reports.labeling.values import Status


@dataclass(frozen=True)
class Evidence:
    """One mention that contributed to a label: the phrase, where, and the deciding cue."""

    label: str
    phrase: str
    start: int
    end: int
    status: Status
    cue: str | None = None  # the cue text ("no", "cannot exclude")
    cue_kind: str | None = None  # negation, uncertainty, pre_negation_uncertainty
    cue_id: str | None = None  # the cue rule id in the cue table
    cue_start: int | None = None
    cue_end: int | None = None
    detail: str | None = None  # e.g. "level 2" for edema keywords, "implied by 'chf'"

    def describe(self) -> str:
        where = f"[{self.start}:{self.end}]"
        cue = f", {self.cue_kind} cue {self.cue!r} at [{self.cue_start}:{self.cue_end}]" if self.cue else ""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.label}: {self.phrase!r} {where} {self.status.value}{cue}{extra}"


class LabelResult:
    """Label values (1/0/-1/None, or 0-3 for edema severity) and their evidence.

    Evidence objects are built on first access: batch labeling never pays for them.
    """

    __slots__ = ("_evidence", "_pending", "values")

    def __init__(
        self,
        values: dict[str, int | None],
        evidence: list[Evidence] | None = None,
        pending: list[tuple[Any, str | None, str | None]] | None = None,
    ) -> None:
        self.values = values
        self._evidence = list(evidence) if evidence is not None else None
        self._pending = pending or []

    @property
    def evidence(self) -> list[Evidence]:
        if self._evidence is None or self._pending:
            from radpair.reports.labeling.base import mention_evidence

            built = [mention_evidence(m, label, detail) for m, label, detail in self._pending]
            self._evidence = (self._evidence or []) + built
            self._pending = []
        return self._evidence

    def __getitem__(self, label: str) -> int | None:
        return self.values[label]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.values.items() if v is not None}
        return f"LabelResult({shown})"

    def get(self, label: str, default: int | None = None) -> int | None:
        return self.values.get(label, default)

    def evidence_for(self, label: str) -> list[Evidence]:
        return [e for e in self.evidence if e.label == label]

    def explain(self, label: str | None = None) -> str:
        """Readable account of one label (or all labels with a value)."""
        labels = [label] if label is not None else [k for k, v in self.values.items() if v is not None]
        lines = []
        for name in labels:
            lines.append(f"{name} = {self.values.get(name)}")
            for ev in self.evidence_for(name):
                lines.append("  " + ev.describe())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, int | None]:
        return dict(self.values)

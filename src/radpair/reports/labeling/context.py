"""ConText-style scope resolution: is a mention negated, uncertain or affirmed?

A cue applies to a mention in the same sentence when it lies on the side its direction
allows (or overlaps the mention), within its word window, with no terminator ("but",
"however", ";") and no cue of the other polarity between them -- in "no effusion,
possible atelectasis" the "possible" ends the scope of "no". Conjunction cues ("or",
"versus") do not end scopes, so "no pneumothorax or effusion" negates both.

Decision order, as in NegBio and the CheXpert labeler: pre-negation uncertainty
("cannot exclude", "no new"), then negation, then uncertainty, else affirmed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from radpair.reports.labeling.cues import CueHit
from radpair.reports.labeling.values import CueKind, Direction, Status

_POLARITY = {
    CueKind.NEGATION: "neg",
    CueKind.PRE_NEGATION_UNCERTAINTY: "unc",
    CueKind.UNCERTAINTY: "unc",
    CueKind.PSEUDO: "pseudo",
}
_DECISION = (
    (CueKind.PRE_NEGATION_UNCERTAINTY, Status.UNCERTAIN),
    (CueKind.NEGATION, Status.NEGATED),
    (CueKind.UNCERTAINTY, Status.UNCERTAIN),
)


@dataclass(frozen=True)
class Resolution:
    status: Status
    cue: CueHit | None


class ScopeResolver:
    """Resolves mention statuses for one text, given its sentences, cues and word starts."""

    def __init__(self, text: str, sentences: list[tuple[int, int]], cues: list[CueHit], word_starts: list[int]):
        self.text = text
        self.sentences = sentences
        self.sentence_starts = [s for s, _ in sentences]
        self.word_starts = word_starts
        self.sentence_cues: list[list[CueHit]] = [[] for _ in sentences]
        for cue in cues:
            i = self.sentence_index(cue.start)
            if i is not None:
                self.sentence_cues[i].append(cue)

    def sentence_index(self, pos: int) -> int | None:
        i = bisect_right(self.sentence_starts, pos) - 1
        if i < 0 or pos >= self.sentences[i][1]:
            return None
        return i

    def _words(self, a: int, b: int) -> int:
        return bisect_left(self.word_starts, b) - bisect_left(self.word_starts, a)

    def _blocked(self, cue: CueHit, a: int, b: int, cues: list[CueHit]) -> bool:
        pol = _POLARITY.get(cue.rule.kind)
        for other in cues:
            if other is cue or other.start < a or other.end > b:
                continue
            if other.rule.kind is CueKind.TERMINATOR:
                return True
            if other.rule.blocks and _POLARITY.get(other.rule.kind) != pol:
                return True
        return False

    def _distance(self, cue: CueHit, start: int, end: int, mention_text: str, cues: list[CueHit]) -> int | None:
        """Words between cue and mention when the cue applies, else None."""
        rule = cue.rule
        if rule.kind in (CueKind.TERMINATOR, CueKind.PSEUDO):
            return None
        if rule.only_mentions is not None and not rule.only_mentions.search(mention_text):
            return None
        if cue.start < end and cue.end > start:
            return 0  # inside or overlapping the mention: "heart is not enlarged"
        if cue.end <= start and rule.direction is not Direction.BACKWARD:
            a, b, window = cue.end, start, rule.window_for(False)
        elif cue.start >= end and rule.direction is not Direction.FORWARD:
            a, b, window = end, cue.start, rule.window_for(True)
        else:
            return None
        if window == 0:
            if self.text[a:b].strip():
                return None
            words = 0
        else:
            words = self._words(a, b)
            if words > window:
                return None
        if self._blocked(cue, a, b, cues):
            return None
        return words

    def resolve(self, start: int, end: int, mention_text: str) -> tuple[Resolution, tuple[int, int] | None]:
        i = self.sentence_index(start)
        if i is None:
            return Resolution(Status.AFFIRMED, None), None
        cues = self.sentence_cues[i]
        best: dict[CueKind, tuple[int, CueHit]] = {}
        for cue in cues:
            d = self._distance(cue, start, end, mention_text, cues)
            if d is None:
                continue
            kind = cue.rule.kind
            if kind not in best or d < best[kind][0]:
                best[kind] = (d, cue)
        for kind, status in _DECISION:
            if kind in best:
                return Resolution(status, best[kind][1]), self.sentences[i]
        return Resolution(Status.AFFIRMED, None), self.sentences[i]

"""The mention engine: find every mention of every observation and its status.

One engine runs every rule pack. Per text it splits the selected regions into sentences,
scans cues once, scans each observation's regex once, drops matches that overlap an
"unmention" (CheXpert's veto phrases, e.g. "pericardial effusion" is not a pleural
effusion), and resolves each match's status with :class:`ScopeResolver`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from radpair.reports.labeling.context import ScopeResolver
from radpair.reports.labeling.cues import CueFinder, CueHit
from radpair.reports.labeling.dispatch import (
    TokenMatcher,
    lower_same_length,
    word_tokens,
)
from radpair.reports.labeling.mentions import MentionRule
from radpair.reports.labeling.values import Status
from radpair.reports.sentences import split_sentences


@dataclass(frozen=True)
class Mention:
    """One phrase naming an observation, with its status and the cue that decided it."""

    observation: str
    text: str
    start: int
    end: int
    status: Status
    cue: CueHit | None
    sentence: tuple[int, int] | None


class MentionEngine:
    def __init__(self, rules: Sequence[MentionRule], cues: CueFinder) -> None:
        self.rules = list(rules)
        self.cues = cues
        prefixes = sorted({p for r in self.rules for p in r.prefixes})
        # one matcher, one pass over the words: group 0 the cues, then one group per
        # observation, then one per observation's unmentions
        n = len(self.rules)
        self._unmention_group = {}
        groups: list[list[str]] = [list(cues.bounded_bodies)] + [list(r.bodies) for r in self.rules]
        for i, r in enumerate(self.rules):
            if r.unmention:
                self._unmention_group[len(groups)] = i
                groups.append(list(r.unmention))
        self.matcher = TokenMatcher(groups, prefixes, where="mention rules", extra_start_groups=range(1, n + 1))

    def find(self, text: str, regions: Sequence[tuple[int, int]]) -> list[Mention]:
        """Mentions inside ``regions`` (character spans of ``text``), in text order."""
        if not regions:
            return []
        low = lower_same_length(text)
        sentences: list[tuple[int, int]] = []
        cues: list[CueHit] = []
        words: list[int] = []
        found: list[tuple[int, int, int]] = []  # (rule index, start, end)
        vetoes: dict[int, list[tuple[int, int]]] = {}
        cue_rules = self.cues.bounded_rules
        unmention_group = self._unmention_group
        for start, end in regions:
            tokens = word_tokens(low, start, end)
            words.extend(p for p, _ in tokens)
            sentences.extend(split_sentences(text, start, end))
            region_cues = []
            for g, i, s, e in self.matcher.finditer(low, start, end, tokens):
                if g == 0:
                    region_cues.append(CueHit(cue_rules[i], s, e, text[s:e]))
                elif g in unmention_group:
                    vetoes.setdefault(unmention_group[g], []).append((s, e))
                else:
                    found.append((g - 1, s, e))
            free = [CueHit(h.rule, h.start, h.end, text[h.start : h.end]) for h in self.cues.find_free(low, start, end)]
            cues.extend(CueFinder.merge(region_cues, free))
        resolver = ScopeResolver(low, sentences, cues, words)
        out: list[Mention] = []
        rules = self.rules
        for r, s, e in found:
            if r in vetoes and any(s < ue and e > us for us, ue in vetoes[r]):
                continue
            res, sentence = resolver.resolve(s, e, low[s:e])
            out.append(Mention(rules[r].observation, text[s:e], s, e, res.status, res.cue, sentence))
        out.sort(key=lambda x: (x.start, x.end))
        return out

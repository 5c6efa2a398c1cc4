"""Negation and uncertainty cues: loading the cue table and finding cues in text.

All cues of a table are compiled into one alternation (one named group per pattern), so
a report is scanned once whatever the number of cues. At one position the alternation
prefers pseudo cues, then pre-negation uncertainty, negation, uncertainty, terminators,
and the longer pattern within a kind -- "no change" is a pseudo cue before "no" is a
negation, "cannot be excluded" is uncertainty before "excluded" is a negation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from radpair.errors import ConfigError
from radpair.reports.labeling.dispatch import (
    TokenMatcher,
    check_lowercase,
    flexible_spaces,
)
from radpair.reports.labeling.values import KIND_PRIORITY, CueKind, Direction

_B_END = r"(?![a-z0-9])"


@dataclass(frozen=True)
class CueRule:
    """One cue entry of a cue table."""

    id: str
    kind: CueKind
    direction: Direction
    window: int  # mentions after the cue (forward scope)
    blocks: bool
    patterns: tuple[str, ...]
    boundary: bool = True
    only_mentions: re.Pattern | None = field(default=None, compare=False)
    backward_window: int | None = None  # mentions before the cue; None: same as window

    def window_for(self, mention_before_cue: bool) -> int:
        if mention_before_cue and self.backward_window is not None:
            return self.backward_window
        return self.window


@dataclass(frozen=True)
class CueHit:
    rule: CueRule
    start: int
    end: int
    text: str


def parse_cue_rules(data: dict[str, Any], where: str) -> list[CueRule]:
    """Cue rules from a parsed cue table (``cues.yaml`` or a pack's ``extra_cues``)."""
    default_window = int(data.get("window", 8))
    rules = []
    for i, entry in enumerate(data.get("cues") or []):
        rules.append(_parse_one(entry, default_window, f"{where}: cues[{i}]"))
    return rules


def _parse_one(entry: dict[str, Any], default_window: int, where: str) -> CueRule:
    if not isinstance(entry, dict) or "id" not in entry:
        raise ConfigError(f"{where}: each cue needs an 'id' and 'patterns'")
    where = f"{where} ({entry['id']})"
    try:
        kind = CueKind(entry.get("kind", ""))
    except ValueError:
        raise ConfigError(f"{where}: kind must be one of {', '.join(k.value for k in CueKind)}") from None
    try:
        direction = Direction(entry.get("direction", "both"))
    except ValueError:
        raise ConfigError(f"{where}: direction must be one of {', '.join(d.value for d in Direction)}") from None
    patterns = tuple(str(p) for p in entry.get("patterns") or [])
    if not patterns:
        raise ConfigError(f"{where}: no patterns")
    for pat in patterns:
        check_lowercase(pat, where)
        try:
            compiled = re.compile(pat)
        except re.error as exc:
            raise ConfigError(f"{where}: bad pattern {pat!r}: {exc}") from None
        if compiled.groups:
            raise ConfigError(f"{where}: pattern {pat!r} has a capturing group; use (?:...)")
    only = entry.get("only_mentions")
    try:
        only_re = re.compile(only) if only else None
    except re.error as exc:
        raise ConfigError(f"{where}: bad only_mentions {only!r}: {exc}") from None
    window = int(entry.get("window", default_window))
    backward = entry.get("backward_window")
    return CueRule(
        id=str(entry["id"]),
        kind=kind,
        direction=direction,
        window=int(entry.get("forward_window", window)),
        backward_window=int(backward) if backward is not None else (window if "forward_window" in entry else None),
        blocks=bool(entry.get("blocks", True)),
        patterns=patterns,
        boundary=bool(entry.get("boundary", True)),
        only_mentions=only_re,
    )


class CueFinder:
    """Finds the cues of a list of rules in (lower-cased) text.

    Cues at word boundaries go through one :class:`TokenMatcher`; the few others
    (";", "?") through one plain regex. At one position, pseudo cues win over
    pre-negation uncertainty, negation, uncertainty and terminators, and the longer
    pattern wins within a kind.
    """

    def __init__(self, rules: Iterable[CueRule]) -> None:
        self.rules = list(rules)
        entries = []
        for rule in self.rules:
            for pat in rule.patterns:
                entries.append((KIND_PRIORITY[rule.kind], -len(pat), rule, pat))
        entries.sort(key=lambda e: (e[0], e[1]))
        bounded = [(rule, f"(?:{flexible_spaces(pat)}){_B_END}") for _, _, rule, pat in entries if rule.boundary]
        self._bounded_rules = [rule for rule, _ in bounded]
        self._matcher = TokenMatcher([[body for _, body in bounded]], where="cues") if bounded else None
        free = [(rule, pat) for _, _, rule, pat in entries if not rule.boundary]
        self._free_rules = [rule for rule, _ in free]
        self._free = re.compile("|".join(f"({flexible_spaces(pat)})" for _, pat in free)) if free else None

    @property
    def bounded_bodies(self) -> list[str]:
        """Regex bodies of the word-boundary cues, in priority order (for a shared matcher)."""
        return self._matcher.groups[0] if self._matcher is not None else []

    @property
    def bounded_rules(self) -> list[CueRule]:
        return self._bounded_rules

    def find_free(self, low: str, start: int, end: int) -> list[CueHit]:
        """Hits of the cues that need no word boundary (";", "?")."""
        if self._free is None:
            return []
        return [
            CueHit(self._free_rules[m.lastindex - 1], m.start(), m.end(), m.group())
            for m in self._free.finditer(low, start, end)
            if m.end() > m.start()
        ]

    @staticmethod
    def merge(hits: list[CueHit], free: list[CueHit]) -> list[CueHit]:
        """Word cues plus free cues that do not overlap them, by position."""
        if not free:
            return hits
        free = [x for x in free if not any(x.start < h.end and h.start < x.end for h in hits)]
        return sorted(hits + free, key=lambda h: h.start)

    def find(
        self, low: str, start: int = 0, end: int | None = None, tokens: list[tuple[int, str]] | None = None
    ) -> list[CueHit]:
        """Cue hits in ``low[start:end]`` (``low`` is the lower-cased text), sorted."""
        end = len(low) if end is None else end
        hits = []
        if self._matcher is not None:
            rules = self._bounded_rules
            hits = [
                CueHit(rules[i], s, e, low[s:e]) for _, i, s, e in self._matcher.finditer(low, start, end, tokens)
            ]
        return self.merge(hits, self.find_free(low, start, end))

"""Mention rules: the phrases that name an observation, as regex bodies for the engine.

Rule packs give either ``phrases`` (literal text, as in the CheXpert labeler's phrase
lists) or ``patterns`` (regular expressions). Spaces match any whitespace, because
MIMIC-CXR wraps lines inside phrases ("pleural\\n effusion"). A phrase starts at a word
boundary (or after one of the pack's ``allowed_prefixes``, so "hydropneumothorax" still
names a pneumothorax); in the CheXpert convention a leading or trailing ``_`` requires a
word boundary at that end as well, and otherwise a phrase may end inside a word
("atelecta" matches "atelectasis"). The engine matches all rules of a pack in one pass
(:class:`~radpair.reports.labeling.dispatch.TokenMatcher`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from radpair.errors import ConfigError
from radpair.reports.labeling.dispatch import (
    TokenMatcher,
    check_lowercase,
    flexible_spaces,
)


@dataclass(frozen=True)
class MentionRule:
    """All phrases of one observation, and the phrases that veto an overlapping match."""

    observation: str
    bodies: tuple[str, ...]  # regex bodies, longest first (matched from a word start)
    prefixes: tuple[str, ...] = ()  # a match may also start after one of these inside a word
    unmention: tuple[str, ...] = ()  # regex bodies of phrases that veto an overlapping match
    source: str = ""  # where the rule came from, for error messages


def phrase_to_regex(phrase: str, word_end: bool = False) -> str:
    """A literal phrase as a regex body (``_`` at an end means a word boundary there)."""
    phrase = phrase.strip().lower()
    end_boundary = word_end or phrase.endswith("_")
    core = phrase.strip("_")
    words = [w for w in re.split(r"[\s_]+", core) if w]
    body = r"\s+".join(re.escape(w) for w in words)
    if end_boundary:
        body += r"(?![a-z0-9])"
    return body


def pattern_to_regex(pattern: str, word_end: bool = True) -> str:
    """A pattern from a pack: literal spaces match any whitespace run."""
    body = flexible_spaces(pattern)
    if word_end:
        body = f"(?:{body})(?![a-z0-9])"
    return body


def compile_matcher(bodies: Iterable[str], prefixes: Sequence[str], where: str) -> TokenMatcher | None:
    """A matcher for any of ``bodies`` at a word start (or after an allowed prefix), longest first."""
    bodies = sorted(set(bodies), key=len, reverse=True)
    if not bodies:
        return None
    return TokenMatcher([bodies], extra_starts=prefixes, where=where)


def build_rule(
    observation: str,
    *,
    phrases: Iterable[str] = (),
    patterns: Iterable[str] = (),
    unmention_phrases: Iterable[str] = (),
    unmention_patterns: Iterable[str] = (),
    word_end: bool = True,
    allowed_prefixes: Sequence[str] = (),
    where: str = "",
) -> MentionRule | None:
    """Compile one observation's phrases and patterns; None when it has none."""
    where = where or observation
    patterns, unmention_patterns = list(patterns), list(unmention_patterns)
    for pat in patterns + unmention_patterns:
        check_lowercase(pat, where)
        try:
            if re.compile(pat).groups:
                raise ConfigError(f"{where}: pattern {pat!r} has a capturing group; use (?:...)")
        except re.error as exc:
            raise ConfigError(f"{where}: bad pattern {pat!r}: {exc}") from None
    bodies = [phrase_to_regex(p, word_end) for p in phrases if p.strip()]
    bodies += [pattern_to_regex(p, word_end) for p in patterns if p.strip()]
    bodies = sorted(set(bodies), key=len, reverse=True)
    if not bodies:
        return None
    compile_matcher(bodies, allowed_prefixes, where)  # validates every pattern
    un = [phrase_to_regex(p, False) for p in unmention_phrases if p.strip()]
    un += [pattern_to_regex(p, False) for p in unmention_patterns if p.strip()]
    un = sorted(set(un), key=len, reverse=True)
    compile_matcher(un, (), f"{where} (unmentions)")  # validates
    return MentionRule(observation, tuple(bodies), tuple(allowed_prefixes), tuple(un), where)

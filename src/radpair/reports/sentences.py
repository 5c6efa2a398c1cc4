"""Sentence splitting tuned to radiology reports, returning spans (never copies).

Reports break the usual rules: numbered lists ("1. Left effusion. 2. ..."), missing
spaces after periods ("apex.There"), lines wrapped mid-sentence, abbreviations such as
"Dr." and "p.m.". Negation and uncertainty scopes end at sentence ends, so a wrong split
changes labels. Two C-level scans find the few candidate characters (. ! ? and line
breaks); each is then checked with small anchored regular expressions.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = ["dr", "mr", "mrs", "ms", "vs", "approx", "e.g", "i.e", "p.m", "a.m", "st", "fig", "no", "nos", "cf", "pt", "pts", "resp", "incl", "esp", "etc"]
# two simple scans (a character class lets the regex engine skip ahead quickly)
_PUNCT = re.compile(r"[.!?]+")
_BREAKS = re.compile(r"[\r\n](?:[ \t]*[\r\n])*")
# the word before a period that does not end a sentence
_WORD_BEFORE = re.compile(
    r"(?<![A-Za-z0-9.])(?:(?P<abbr>" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r"|[a-z])|(?P<num>\d{1,2}))\Z",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"[ \t]*(?:\d{1,2}[.)]|[-*\u2022])[ \t]")
_CLOSERS = "\"')]"


def _ends_sentence(text: str, m: re.Match, s: int, stop: int) -> int:
    """Where the sentence ends if candidate ``m`` is a boundary, else -1."""
    i, j = m.start(), m.end()
    first = text[i]
    if first in "\r\n":
        if text.count("\n", i, j) + text.count("\r", i, j) - text.count("\r\n", i, j) >= 2:
            return i  # blank line
        return i if _LIST_ITEM.match(text, j, stop) else -1
    nxt = text[j] if j < stop else ""
    if j - i > 1 or first != ".":
        return j if (not nxt or nxt.isspace() or nxt in _CLOSERS) else -1
    if not nxt or nxt.isspace() or nxt in _CLOSERS:
        hit = _WORD_BEFORE.search(text, max(s, i - 8), i)
        if hit is None:
            return j
        if hit.group("abbr") is not None:
            return -1
        return j if text[s : hit.start()].strip() else -1  # "1." opening a sentence is a list number
    # "apex.There": no space, lower case before, capitalised word after
    if i > 0 and text[i - 1].islower() and nxt.isupper() and j + 1 < stop and text[j + 1].islower():
        return j
    return -1


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans inside ``text[start:end]``, without surrounding whitespace."""
    end = len(text) if end is None else end
    seg = text[start:end]
    stripped = seg.strip()
    if not stripped:
        return []
    s = start + (len(seg) - len(seg.lstrip()))
    stop = s + len(stripped)
    spans: list[tuple[int, int]] = []
    candidates = list(_PUNCT.finditer(text, s, stop))
    breaks = list(_BREAKS.finditer(text, s, stop))
    if breaks:
        candidates = sorted(candidates + breaks, key=lambda c: c.start())
    for m in candidates:
        if m.start() < s:
            continue
        cut = _ends_sentence(text, m, s, stop)
        if cut < 0:
            continue
        e = cut
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            spans.append((s, e))
        s = m.end()
        while s < stop and text[s].isspace():
            s += 1
    if s < stop:
        spans.append((s, stop))
    return spans

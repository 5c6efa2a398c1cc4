"""Fast multi-pattern matching at word starts.

A Python ``re`` alternation of a hundred cue patterns is tried at every character of a
report, which costs milliseconds per report. Here each pattern's possible first words
are read from its parse tree ("(?:is|are) not seen" starts with "is" or "are";
"atelecta\\w*" with any word beginning "atelecta"), and a report is scanned word by
word: one C-level scan finds the words, a dictionary gives the few patterns that can
start at each, and only those are tried with ``match``. Patterns whose first word cannot
be enumerated fall back to their first characters, or to every word. Results equal
those of ``finditer`` over the whole alternation with a word-boundary lookbehind
(leftmost match, earlier alternatives first, no overlaps within a group).

Texts are matched lower-cased (:func:`lower_same_length`); patterns must be lower case.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

try:  # Python 3.11+
    from re import _constants as _C  # type: ignore[attr-defined]
    from re import _parser as _P  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _C  # type: ignore[no-redef]
    import sre_parse as _P  # type: ignore[no-redef]

from radpair.errors import ConfigError

_REPEATS = tuple(getattr(_C, n) for n in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") if hasattr(_C, n))
_ZERO_WIDTH = tuple(getattr(_C, n) for n in ("ASSERT", "ASSERT_NOT", "AT") if hasattr(_C, n))
_ESCAPE = re.compile(r"\\.")

#: a position where a word may start (no letter or digit before it)
WORD_START_LOOKBEHIND = r"(?<![a-z0-9])"


def lower_same_length(text: str) -> str:
    """``text.lower()``, keeping characters whose lower case is longer (spans stay valid)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def flexible_spaces(pattern: str) -> str:
    """Let the spaces of a hand-written pattern match any whitespace run (MIMIC wraps lines):
    ``" "`` and ``" +"`` become ``\\s+``, ``" ?"`` and ``" *"`` become ``\\s*``, outside
    character classes and lookbehinds (which must keep a fixed width)."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
            out.append(c)
        elif pattern.startswith(("(?<=", "(?<!"), i):
            j = _group_end(pattern, i)  # lookbehinds must keep a fixed width: copy verbatim
            out.append(pattern[i:j])
            i = j
            continue
        elif c == "[":
            in_class = True
            out.append(c)
            if i + 1 < n and pattern[i + 1] == "]":  # "[]...]": a literal ] first
                out.append("]")
                i += 1
        elif c == " ":
            nxt = pattern[i + 1] if i + 1 < n else ""
            if nxt in ("?", "*"):
                out.append(r"\s*")
                i += 1
            elif nxt == "+":
                out.append(r"\s+")
                i += 1
            else:
                out.append(r"\s+")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _group_end(pattern: str, start: int) -> int:
    """Index after the group opened at ``start`` (escapes and classes respected)."""
    depth, i, n, in_class = 0, start, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def check_lowercase(pattern: str, where: str) -> None:
    """Patterns are matched against lower-cased text: upper-case literals would never match."""
    bare = _ESCAPE.sub("", pattern)
    if bare != bare.lower():
        raise ConfigError(f"{where}: pattern {pattern!r} has upper-case letters; write patterns in lower case")


def first_chars(pattern: str) -> frozenset[str] | None:
    """Characters a match of ``pattern`` can start with, or None when unknown or empty-able."""
    try:
        parsed = _P.parse(pattern)
        chars, nullable = _first_seq(list(parsed))
    except (re.error, ValueError, TypeError, AttributeError, IndexError, RecursionError):  # parser API changed
        return None
    if chars is None or nullable:
        return None
    return frozenset(chars)


def _first_seq(items: list) -> tuple[set[str] | None, bool]:
    out: set[str] = set()
    for op, av in items:
        chars, nullable = _first_op(op, av)
        if chars is None:
            return None, False
        out |= chars
        if not nullable:
            return out, False
    return out, True


def _first_op(op, av) -> tuple[set[str] | None, bool]:
    if op is _C.LITERAL:
        return {chr(av)}, False
    if op is _C.IN:
        chars: set[str] = set()
        for o, a in av:
            if o is _C.LITERAL:
                chars.add(chr(a))
            elif o is _C.RANGE and a[1] - a[0] <= 128:
                chars.update(chr(x) for x in range(a[0], a[1] + 1))
            else:
                return None, False
        return chars, False
    if op is _C.SUBPATTERN:
        return _first_seq(list(av[-1]))
    if op is _C.BRANCH:
        out: set[str] = set()
        nullable = False
        for branch in av[1]:
            chars, n = _first_seq(list(branch))
            if chars is None:
                return None, False
            out |= chars
            nullable = nullable or n
        return out, nullable
    if op in _REPEATS:
        lo, _hi, sub = av
        chars, n = _first_seq(list(sub))
        if chars is None:
            return None, False
        return chars, lo == 0 or n
    if op in _ZERO_WIDTH:
        return set(), True
    return None, False


_WORDCHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_MAX_STATES = 512
_OPEN, _EXACT, _PREFIX = 0, 1, 2


class _TooComplex(Exception):
    pass


def first_words(pattern: str) -> list[tuple[str, bool]] | None:
    """Possible first words of a match as ``(word, exact)``; ``exact=False`` means any
    word starting with ``word``. None when they cannot be enumerated (the pattern may
    start with a non-word character, match empty, or branch too much)."""
    try:
        states = _words_seq(list(_P.parse(pattern)), {("", _OPEN)})
    except _TooComplex:
        return None
    except (re.error, ValueError, TypeError, AttributeError, IndexError, RecursionError):  # parser API changed
        return None
    out = set()
    for word, status in states:
        if not word:
            return None
        out.add((word, status == _EXACT))
    return sorted(out)


def _words_seq(items: list, states: set) -> set:
    for op, av in items:
        open_states = {s for s in states if s[1] == _OPEN}
        if not open_states:
            break
        states = (states - open_states) | _words_op(op, av, open_states)
        if len(states) > _MAX_STATES:
            raise _TooComplex
    return states


def _unknown(states: set) -> set:
    """Anything may follow: the word so far is only a prefix."""
    if any(not w for w, _ in states):
        raise _TooComplex
    return {(w, _PREFIX) for w, _ in states}


def _add_char(states: set, ch: str) -> set:
    if ch in _WORDCHARS:
        return {(w + ch, _OPEN) for w, _ in states}
    if any(not w for w, _ in states):
        raise _TooComplex
    return {(w, _EXACT) for w, _ in states}


def _words_op(op, av, states: set) -> set:
    if op is _C.LITERAL:
        return _add_char(states, chr(av))
    if op is _C.IN:
        chars: list[str] = []
        for o, a in av:
            if o is _C.LITERAL:
                chars.append(chr(a))
            elif o is _C.RANGE and a[1] - a[0] <= 12:
                chars.extend(chr(x) for x in range(a[0], a[1] + 1))
            elif o is _C.CATEGORY and a is _C.CATEGORY_SPACE:
                chars.append(" ")  # whitespace ends a word like a space does
            else:
                return _unknown(states)
        out: set = set()
        for ch in chars:
            out |= _add_char(states, ch)
        return out
    if op is _C.SUBPATTERN:
        return _words_seq(list(av[-1]), states)
    if op is _C.BRANCH:
        out = set()
        for branch in av[1]:
            out |= _words_seq(list(branch), set(states))
        return out
    if op in _REPEATS:
        lo, hi, sub = av
        empty = {st for st in states if not st[0]}
        once = _words_seq(list(sub), states - empty) if states - empty else set()
        if empty:
            try:
                once |= _words_seq(list(sub), empty)
            except _TooComplex:
                if lo != 0:
                    raise
                # an optional leading space or sign: at a word start the match simply
                # begins after it ("(?:is )? ?not seen" is tried at "not")
        if hi != 1:  # the word may grow with further repeats
            once = {(w, _PREFIX if st == _OPEN else st) for w, st in once}
            if any(not w and st != _OPEN for w, st in once):
                raise _TooComplex
        return once | (states if lo == 0 else set())
    if op is _C.ASSERT_NOT and av[0] == 1 and _blocks_word_chars(list(av[1])):
        # "(?![a-z0-9])": the word ends here
        return {(w, _EXACT) if w else (w, st) for w, st in states}
    if op in _ZERO_WIDTH:
        return states
    return _unknown(states)


def _blocks_word_chars(items: list) -> bool:
    """True for a one-character class that contains letters and digits (``[a-z0-9]``)."""
    if len(items) != 1 or items[0][0] is not _C.IN:
        return False
    covered: set[str] = set()
    for o, a in items[0][1]:
        if o is _C.RANGE:
            covered.update(chr(x) for x in range(a[0], a[1] + 1))
        elif o is _C.LITERAL:
            covered.add(chr(a))
        elif o is _C.NEGATE:
            return False
    return {"a", "z", "0", "9"} <= covered


_ANY_TOKEN = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")
_WORD_TOKEN = re.compile(WORD_START_LOOKBEHIND + r"[a-z0-9]+")


def word_tokens(low: str, start: int = 0, end: int | None = None) -> list[tuple[int, str]]:
    """``(start, word)`` of the letter/digit runs of lower-cased text."""
    end = len(low) if end is None else end
    return [(m.start(), m.group()) for m in _WORD_TOKEN.finditer(low, start, end)]


class TokenMatcher:
    """Pattern groups matched at word starts, dispatched on the word found there.

    ``groups`` is a list of pattern lists, each in priority order. Within a group matches
    are leftmost-first and never overlap (like ``finditer`` of the group's alternation);
    different groups are independent. ``extra_starts`` are prefixes after which a match
    may also start inside a word ("hydro" + "pneumothorax"). Yields
    ``(group, pattern index, start, end)``.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[str]],
        extra_starts: Sequence[str] = (),
        where: str = "",
        extra_start_groups: Sequence[int] | None = None,
    ):
        self.groups = [list(g) for g in groups]
        # groups that may also match after an extra start prefix (default: all)
        self._inner_groups = frozenset(range(len(self.groups)) if extra_start_groups is None else extra_start_groups)
        self._by_key: dict[str, list[tuple[str, bool, int, int]]] = {}
        self._short_prefix: dict[str, list[tuple[str, int, int]]] = {}
        self._by_char: dict[str, list[tuple[int, int]]] = {}
        self._wild: list[tuple[int, int]] = []
        for g, bodies in enumerate(self.groups):
            for i, body in enumerate(bodies):
                try:
                    re.compile(body)
                except re.error as exc:
                    raise ConfigError(f"{where}: bad pattern {body!r}: {exc}") from None
                words = first_words(body)
                if words is not None:
                    for word, exact in words:
                        if not exact and len(word) < 3:
                            self._short_prefix.setdefault(word, []).append((word, g, i))
                        else:
                            self._by_key.setdefault(word[:3], []).append((word, exact, g, i))
                    continue
                chars = first_chars(body)
                if chars is None:
                    self._wild.append((g, i))
                else:
                    for ch in chars:
                        self._by_char.setdefault(ch, []).append((g, i))
        self._cache: dict[tuple[int, tuple[int, ...]], re.Pattern] = {}
        self._plans: dict[str, tuple[tuple[int, tuple[int, ...], re.Pattern], ...]] = {}
        self._prefix_re = None
        if extra_starts:
            pre = "|".join(re.escape(p) for p in sorted(extra_starts, key=len, reverse=True))
            self._prefix_re = re.compile(WORD_START_LOOKBEHIND + f"(?:{pre})(?=[a-z])")
        # words are enough unless some pattern may start with a non-word character
        odd = any(not c.isalnum() for c in self._by_char) or bool(self._wild)
        self._starts = re.compile(WORD_START_LOOKBEHIND + (r"(?:[a-z0-9]+|[^a-z0-9\s])" if odd else r"[a-z0-9]+"))

    def _plan(self, token: str) -> tuple[tuple[int, tuple[int, ...], re.Pattern], ...]:
        """The groups and patterns to try at a word, with their compiled alternations."""
        found: dict[int, set[int]] = {}
        for word, exact, g, i in self._by_key.get(token[:3], ()):
            if (token == word) if exact else token.startswith(word):
                found.setdefault(g, set()).add(i)
        for k in (1, 2):
            for word, g, i in self._short_prefix.get(token[:k], ()):
                found.setdefault(g, set()).add(i)
        for g, i in self._by_char.get(token[:1], ()):
            found.setdefault(g, set()).add(i)
        for g, i in self._wild:
            found.setdefault(g, set()).add(i)
        plan = []
        for g in sorted(found):
            idx = tuple(sorted(found[g]))
            key = (g, idx)
            rx = self._cache.get(key)
            if rx is None:
                bodies = self.groups[g]
                rx = self._cache[key] = re.compile("|".join(f"({bodies[i]})" for i in idx))
            plan.append((g, idx, rx))
        return tuple(plan)

    @property
    def needs_own_tokens(self) -> bool:
        """True when some pattern may start at a non-word character."""
        return self._starts.pattern != WORD_START_LOOKBEHIND + r"[a-z0-9]+"

    def finditer(
        self, low: str, start: int = 0, end: int | None = None, tokens: list[tuple[int, str]] | None = None
    ) -> Iterator[tuple[int, int, int, int]]:
        """``(group, pattern index, start, end)`` of each match in ``low[start:end]``.

        ``tokens`` may pass the words of that span (:func:`word_tokens`), shared between
        matchers to scan the text once.
        """
        end = len(low) if end is None else end
        if tokens is None or self.needs_own_tokens:
            starts = [(m.start(), m.group()) for m in self._starts.finditer(low, start, end)]
        else:
            starts = tokens
        inner: set[int] = set()
        if self._prefix_re is not None:
            extra = [m.end() for m in self._prefix_re.finditer(low, start, end)]
            if extra:
                more = []
                for p in extra:
                    t = _ANY_TOKEN.match(low, p, end)
                    if t is not None:
                        more.append((p, t.group()))
                inner = {p for p, _ in more}
                starts = sorted(set(starts) | set(more))
        last = [start] * len(self.groups)
        plans = self._plans
        for p, token in starts:
            plan = plans.get(token)
            if plan is None:
                if len(plans) > 100_000:
                    plans.clear()
                plan = plans[token] = self._plan(token)
            for g, idx, rx in plan:
                if p < last[g] or (inner and p in inner and g not in self._inner_groups):
                    continue
                m = rx.match(low, p, end)
                if m is not None and m.end() > p:
                    last[g] = m.end()
                    yield g, idx[m.lastindex - 1], p, m.end()

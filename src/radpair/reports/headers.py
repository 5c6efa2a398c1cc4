"""Header classification: is ``"IMPRESSON"`` a header, and which canonical section is it?

The synonym table lives in ``data/section_headers.yaml``. Classification is cached per
distinct header string, so a corpus with a few hundred header spellings costs a few
hundred lookups, whatever its size.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import lru_cache

from radpair.errors import ConfigError
from radpair.reports.report import PARSED_SECTIONS, SectionName
from radpair.reports.resources import load_yaml

HEADERS_FILE = "section_headers.yaml"


class HeaderKind(enum.Enum):
    SECTION = "section"  # a known section header
    VIEW = "view"  # names the views or an organ: introduces findings, sub-heading inside them
    UNKNOWN_CAPS = "unknown_caps"  # ALL-CAPS words and a colon, not in the table
    BANNER = "banner"  # "FINAL REPORT": belongs to no section


@dataclass(frozen=True)
class HeaderClass:
    kind: HeaderKind
    name: SectionName | None


def normalise_label(label: str) -> str:
    """Lower-case, single spaces, no trailing punctuation: the synonym table's key form."""
    return " ".join(label.lower().replace("_", " ").split()).strip(" .-")


def _edits_within(a: str, b: str, limit: int) -> bool:
    """True when the optimal-string-alignment distance of a and b is at most ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return False
    prev2: list[int] | None = None
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        best = cur[0]
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            val = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                val = min(val, prev2[j - 2] + 1)
            cur[j] = val
            best = min(best, val)
        if best > limit:
            return False
        prev2, prev = prev, cur
    return prev[len(b)] <= limit


class HeaderTable:
    """The synonym table and the rules for view headers, banners and misspellings."""

    def __init__(self, data: dict) -> None:
        valid = {s.value for s in PARSED_SECTIONS}
        self.synonyms: dict[str, SectionName] = {}
        for name, spellings in (data.get("synonyms") or {}).items():
            if name not in valid:
                raise ConfigError(
                    f"{HEADERS_FILE}: unknown canonical section {name!r} (valid: {', '.join(sorted(valid))})"
                )
            for spelling in spellings or []:
                key = normalise_label(str(spelling))
                if key in self.synonyms and self.synonyms[key].value != name:
                    raise ConfigError(f"{HEADERS_FILE}: header {spelling!r} maps to two sections")
                self.synonyms[key] = SectionName(name)
        self.view_words = frozenset(str(w).lower() for w in data.get("view_words") or [])
        self.view_anchors = frozenset(str(w).lower() for w in data.get("view_anchors") or [])
        self.organ_headers = frozenset(normalise_label(str(w)) for w in data.get("organ_headers") or [])
        self.banners = frozenset(normalise_label(str(w)) for w in data.get("banners") or [])
        self.fuzzy_max_edits = int(data.get("fuzzy_max_edits", 2))
        self._by_length: dict[int, list[str]] = {}
        for key in self.synonyms:
            self._by_length.setdefault(len(key), []).append(key)
        self.classify = lru_cache(maxsize=8192)(self._classify)

    def _fuzzy(self, key: str) -> SectionName | None:
        # one edit from 5 letters on, two from 9: short words are too close to each other
        limit = 0 if len(key) < 5 else (1 if len(key) < 9 else self.fuzzy_max_edits)
        if limit == 0 or len(key) > 40 or key.count(" ") > 3:
            return None
        found: set[SectionName] = set()
        for length in range(len(key) - limit, len(key) + limit + 1):
            for cand in self._by_length.get(length, ()):
                if cand[0] == key[0] and _edits_within(key, cand, limit):
                    found.add(self.synonyms[cand])
        return found.pop() if len(found) == 1 else None

    def _is_view(self, key: str) -> bool:
        if key in self.organ_headers:
            return True
        words = re.split(r"[ ,]+", key.replace("(", " ").replace(")", " "))
        words = [w for w in words if w]
        return bool(words) and all(w in self.view_words for w in words) and any(
            w in self.view_anchors for w in words
        )

    def _classify(self, label: str, alone: bool) -> HeaderClass | None:
        """Classify a header candidate; ``alone`` is a label alone on its line without colon."""
        key = normalise_label(label)
        if not key:
            return None
        caps = label.upper() == label and any(c.isalpha() for c in label)
        if alone and key in self.banners:
            return HeaderClass(HeaderKind.BANNER, None)
        if key in self.synonyms:
            return HeaderClass(HeaderKind.SECTION, self.synonyms[key])
        if alone:
            return None  # a line of text, unless it is exactly a known header or banner
        if self._is_view(key):
            return HeaderClass(HeaderKind.VIEW, SectionName.FINDINGS)
        if not caps:
            return None
        fuzzy = self._fuzzy(key)
        if fuzzy is not None:
            return HeaderClass(HeaderKind.SECTION, fuzzy)
        return HeaderClass(HeaderKind.UNKNOWN_CAPS, SectionName.OTHER)


@lru_cache(maxsize=1)
def default_header_table() -> HeaderTable:
    return HeaderTable(load_yaml(HEADERS_FILE))

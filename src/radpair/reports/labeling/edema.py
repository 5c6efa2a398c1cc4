"""Pulmonary edema severity (0-3) from keywords per level (Chauhan et al. 2020).

Level 0 comes from negated edema mentions, levels 1-3 from affirmed keywords; the most
severe counted level wins; nothing counted means unlabeled (None). The paper's regex had
negation detection only, so by default an uncertain keyword ("possible interstitial
edema") counts like an affirmed one (``uncertain="affirm"``); ``uncertain="ignore"``
drops it, ``uncertain="negate"`` treats it as negated.
"""

from __future__ import annotations

from dataclasses import dataclass

from radpair.errors import ConfigError
from radpair.reports.labeling.base import DEFAULT_SECTIONS, Labeler
from radpair.reports.labeling.cues import CueFinder
from radpair.reports.labeling.engine import Mention, MentionEngine
from radpair.reports.labeling.mentions import build_rule
from radpair.reports.labeling.packs import load_cue_rules
from radpair.reports.labeling.result import LabelResult
from radpair.reports.labeling.values import Status
from radpair.reports.resources import load_yaml

PACK_FILE = "edema.yaml"
KEYWORD_SETS = ("table", "extended")
UNCERTAIN_MODES = ("affirm", "ignore", "negate")


@dataclass(frozen=True)
class Level:
    level: int
    counts_when: Status  # AFFIRMED or NEGATED


class EdemaLabeler(Labeler):
    name = "edema"

    def __init__(
        self,
        keywords: str = "table",
        uncertain: str = "affirm",
        sections: str = DEFAULT_SECTIONS,
        layout: str = "auto",
    ) -> None:
        if keywords not in KEYWORD_SETS:
            raise ConfigError(f"edema keywords must be one of {', '.join(KEYWORD_SETS)}, got {keywords!r}")
        if uncertain not in UNCERTAIN_MODES:
            raise ConfigError(f"edema uncertain must be one of {', '.join(UNCERTAIN_MODES)}, got {uncertain!r}")
        data = load_yaml(PACK_FILE)
        self.keywords = keywords
        self.uncertain = uncertain
        self.output = str(data.get("label", "edema_severity"))
        self.levels: dict[str, Level] = {}
        rules = []
        for entry in data.get("levels") or []:
            level = int(entry["level"])
            try:
                when = Status(entry.get("counts_when", "affirmed"))
            except ValueError:
                raise ConfigError(f"{PACK_FILE}: level {level}: counts_when must be affirmed or negated") from None
            words = [
                str(k["text"])
                for k in entry.get("keywords") or []
                if keywords == "extended" or k.get("source", "table") == "table"
            ]
            obs = f"level{level}"
            rule = build_rule(obs, phrases=words, word_end=False, where=f"{PACK_FILE}: level {level}")
            if rule is not None:
                rules.append(rule)
                self.levels[obs] = Level(level, when)
        engine = MentionEngine(rules, CueFinder(load_cue_rules(data.get("cues"), PACK_FILE)))
        super().__init__(engine, sections=sections, layout=layout)

    @property
    def label_names(self) -> list[str]:
        return [self.output]

    def _effective(self, status: Status) -> Status | None:
        if status is Status.UNCERTAIN:
            return {"affirm": Status.AFFIRMED, "negate": Status.NEGATED, "ignore": None}[self.uncertain]
        return status

    def decide(self, mentions: list[Mention]) -> LabelResult:
        best: int | None = None
        evidence = []
        for m in mentions:
            level = self.levels[m.observation]
            counted = self._effective(m.status) is level.counts_when
            detail = f"level {level.level} keyword, " + ("counted" if counted else f"not counted ({m.status.value})")
            evidence.append((m, self.output, detail))
            if counted and (best is None or level.level > best):
                best = level.level
        return LabelResult({self.output: best}, pending=evidence)

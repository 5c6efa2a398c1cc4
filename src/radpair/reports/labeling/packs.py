"""Rule packs: YAML files that turn the one engine into a labeler for one schema.

A pack names its labels and their mention phrases/patterns, may add or drop cues from
the shared cue table (``data/cues.yaml``), and says how mentions combine (``max`` or the
CheXpert labeler's rule) and what "no finding"/"normal" means for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from radpair.errors import ConfigError
from radpair.reports.labeling.cues import CueFinder, CueRule, parse_cue_rules
from radpair.reports.labeling.engine import MentionEngine
from radpair.reports.labeling.mentions import MentionRule, build_rule
from radpair.reports.labeling.values import Status
from radpair.reports.resources import load_yaml

CUES_FILE = "cues.yaml"


def load_cue_rules(spec: dict[str, Any] | None, where: str) -> list[CueRule]:
    """The shared cue table, minus the pack's ``drop`` ids, plus its ``extra`` cues."""
    base = load_yaml(CUES_FILE)
    rules = parse_cue_rules(base, CUES_FILE)
    spec = spec or {}
    drop = set(spec.get("drop") or [])
    known = {r.id for r in rules}
    unknown = drop - known
    if unknown:
        raise ConfigError(f"{where}: cues.drop names unknown cue ids {sorted(unknown)} (known: {sorted(known)})")
    rules = [r for r in rules if r.id not in drop]
    extra = spec.get("extra") or []
    if extra:
        rules += parse_cue_rules({"window": base.get("window", 8), "cues": extra}, f"{where}: cues.extra")
    return rules


@dataclass(frozen=True)
class Implication:
    """A mention of one label that also sets another (CheXpert: 'chf' -> cardiomegaly uncertain)."""

    source: str
    phrases: frozenset[str]
    statuses: frozenset[Status]
    target: str
    value: int


@dataclass
class ObservationPack:
    """Everything an :class:`~radpair.reports.labeling.observation.ObservationLabeler` needs."""

    name: str
    labels: list[str]
    rules: list[MentionRule]
    cue_rules: list[CueRule]
    aggregation: str = "max"
    no_finding_label: str | None = None
    no_finding_mode: str = "binary"  # "binary": 1/0; "chexpert": 1/blank
    no_finding_ignore: frozenset[str] = frozenset()
    implies: list[Implication] = field(default_factory=list)

    def engine(self) -> MentionEngine:
        return MentionEngine(self.rules, CueFinder(self.cue_rules))


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return [str(v) for v in value]


def parse_implications(items: Iterable[dict[str, Any]], labels: set[str], where: str) -> list[Implication]:
    out = []
    for i, item in enumerate(items or []):
        w = f"{where}: implies[{i}]"
        try:
            src, dst = item["from"], item["to"]
            value = int(item["value"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{w}: needs 'from', 'to', 'value' (1/0/-1) and 'phrases'") from None
        for lab in (src, dst):
            if lab not in labels:
                raise ConfigError(f"{w}: unknown label {lab!r}")
        try:
            statuses = frozenset(Status(s) for s in _strings(item.get("statuses", ["affirmed"]), w))
        except ValueError:
            raise ConfigError(f"{w}: statuses must be affirmed/negated/uncertain") from None
        phrases = frozenset(p.lower() for p in _strings(item.get("phrases"), w))
        out.append(Implication(src, phrases, statuses, dst, value))
    return out


def parse_observation_pack(
    data: dict[str, Any],
    where: str,
    phrase_lists: dict[str, tuple[list[str], list[str]]] | None = None,
) -> ObservationPack:
    """Build a pack from its YAML; ``phrase_lists`` adds (mention, unmention) phrases per label."""
    name = str(data.get("name") or where)
    match = data.get("match") or {}
    word_end = bool(match.get("word_end", True))
    prefixes = _strings(match.get("allowed_prefixes"), f"{where}: match.allowed_prefixes")
    phrase_lists = phrase_lists or {}
    labels: list[str] = []
    rules: list[MentionRule] = []
    entries = list(data.get("labels") or [])
    blockers = list(data.get("blockers") or [])
    if not entries:
        raise ConfigError(f"{where}: no labels")
    for i, entry in enumerate(entries + blockers):
        is_label = i < len(entries)
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{where}: labels[{i}] needs a 'name'")
        label = str(entry["name"])
        w = f"{where}: {label}"
        if is_label:
            if label in labels:
                raise ConfigError(f"{w}: label listed twice")
            labels.append(label)
        extra_m, extra_u = phrase_lists.get(label, ([], []))
        rule = build_rule(
            label,
            phrases=_strings(entry.get("phrases"), w) + list(extra_m),
            patterns=_strings(entry.get("patterns"), w),
            unmention_phrases=_strings(entry.get("unmention_phrases"), w) + list(extra_u),
            unmention_patterns=_strings(entry.get("unmentions"), w),
            word_end=bool(entry.get("word_end", word_end)),
            allowed_prefixes=prefixes,
            where=w,
        )
        if rule is not None:
            rules.append(rule)
    nf = data.get("no_finding") or {}
    nf_label = nf.get("label")
    if nf_label is not None and nf_label not in labels:
        raise ConfigError(f"{where}: no_finding.label {nf_label!r} is not one of the labels")
    mode = str(nf.get("mode", "binary"))
    if mode not in ("binary", "chexpert"):
        raise ConfigError(f"{where}: no_finding.mode must be 'binary' or 'chexpert', got {mode!r}")
    aggregation = str(data.get("aggregation", "max"))
    if aggregation not in ("max", "chexpert"):
        raise ConfigError(f"{where}: aggregation must be 'max' or 'chexpert', got {aggregation!r}")
    all_obs = set(labels) | {str(b.get("name")) for b in blockers}
    return ObservationPack(
        name=name,
        labels=labels,
        rules=rules,
        cue_rules=load_cue_rules(data.get("cues"), where),
        aggregation=aggregation,
        no_finding_label=nf_label,
        no_finding_mode=mode,
        no_finding_ignore=frozenset(_strings(nf.get("ignore"), f"{where}: no_finding.ignore")),
        implies=parse_implications(data.get("implies") or [], all_obs, where),
    )

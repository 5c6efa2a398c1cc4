"""Per-site sectioning rules (``data/sites.yaml``): what differs between report layouts.

MIMIC-CXR free text and generic text share one header scanner; they differ in what an
unknown ALL-CAPS header means and which sign-off lines end a report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from radpair.errors import ConfigError, unknown_choice_message
from radpair.reports.report import PARSED_SECTIONS
from radpair.reports.resources import load_yaml

SITES_FILE = "sites.yaml"


@dataclass(frozen=True)
class SiteRules:
    name: str
    unknown_caps_headers: str  # "other" | "ignore"
    inline_headers: bool
    paragraph_sections: frozenset[str]
    trailer: re.Pattern | None  # one line, matched whole


def _build(name: str, spec: dict) -> SiteRules:
    where = f"{SITES_FILE}: layout {name!r}"
    mode = spec.get("unknown_caps_headers", "ignore")
    if mode not in ("other", "ignore"):
        raise ConfigError(f"{where}: unknown_caps_headers must be 'other' or 'ignore', got {mode!r}")
    valid = {s.value for s in PARSED_SECTIONS}
    paragraph = frozenset(str(s) for s in spec.get("paragraph_sections") or [])
    bad = paragraph - valid
    if bad:
        raise ConfigError(f"{where}: unknown section(s) in paragraph_sections: {', '.join(sorted(bad))}")
    trailer = None
    patterns = [str(p) for p in spec.get("trailer") or []]
    if patterns:
        try:
            trailer = re.compile(r"[ \t]*(?:" + "|".join(patterns) + r")[ \t]*", re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"{where}: bad trailer pattern: {exc}") from None
    return SiteRules(name, mode, bool(spec.get("inline_headers", True)), paragraph, trailer)


@cache
def site_rules(name: str) -> SiteRules:
    layouts = load_yaml(SITES_FILE).get("layouts") or {}
    if name not in layouts:
        raise ConfigError(unknown_choice_message("report layout", name, list(layouts) + ["auto"]))
    return _build(name, layouts[name])


def layout_names() -> list[str]:
    return sorted(load_yaml(SITES_FILE).get("layouts") or {})


__all__ = ["SiteRules", "layout_names", "site_rules"]

"""The CheXpert labeler's 14 observations, with its MIT-licensed phrase lists as rules.

The phrase lists are read from the chexpert-labeler checkout (``phrases/mention/*.txt``
and ``phrases/unmention/*.txt``), not copied into radpair. The directory is, in order:
the ``phrases_dir`` argument, the ``RADPAIR_CHEXPERT_DIR`` environment variable, then
``../shared/data/chexpert_labeler`` relative to the project root and to the working
directory. Everything else (label order, aggregation, cue additions) is in
``data/chexpert.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from radpair.errors import ConfigError, ResourceMissing
from radpair.reports.labeling.packs import ObservationPack, parse_observation_pack
from radpair.reports.resources import load_yaml

PACK_FILE = "chexpert.yaml"
ENV_VAR = "RADPAIR_CHEXPERT_DIR"


def project_root() -> Path:
    """The source checkout's root (``src/radpair/reports/labeling`` is four levels down)."""
    return Path(__file__).resolve().parents[4]


def candidate_dirs(default_rel: str) -> list[Path]:
    out = []
    env = os.environ.get(ENV_VAR)
    if env:
        out.append(Path(env))
    out.append(project_root() / default_rel)
    out.append(Path.cwd() / default_rel)
    seen, unique = set(), []
    for p in out:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def find_phrases_dir(phrases_dir: str | os.PathLike | None, default_rel: str) -> Path:
    """The chexpert-labeler directory to read, or a ConfigError naming where it looked."""
    if phrases_dir is not None:
        path = Path(phrases_dir)
        if not (path / "phrases" / "mention").is_dir():
            raise ConfigError(
                f"CheXpert phrase directory {str(path)!r} has no phrases/mention/ folder; pass the "
                "chexpert-labeler checkout (the folder holding phrases/mention and phrases/unmention)"
            )
        return path
    tried = candidate_dirs(default_rel)
    for path in tried:
        if (path / "phrases" / "mention").is_dir():
            return path
    raise ResourceMissing(
        "CheXpert phrase lists not found; looked in "
        + ", ".join(repr(str(p)) for p in tried)
        + f". Pass phrases_dir=... (CLI: --phrases-dir) or set {ENV_VAR} to a chexpert-labeler "
        "checkout (https://github.com/stanfordmlgroup/chexpert-labeler, MIT licence)"
    )


def _read_phrases(path: Path) -> list[str]:
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read CheXpert phrase file {path}: {exc}") from None
    return [line.strip() for line in lines if line.strip()]


def _positional_unmentions(spec: dict[str, Any], mentions: dict[str, list[str]]) -> dict[str, list[str]]:
    """Phrases such as "over the heart": a position, not a finding (as the original labeler)."""
    prefixes = [str(p) for p in spec.get("prefixes") or []]
    modifiers = [str(m) for m in spec.get("modifiers") or [""]]
    out: dict[str, list[str]] = {}
    for label, opts in (spec.get("labels") or {}).items():
        exclude = set((opts or {}).get("exclude") or [])
        drop_the = bool((opts or {}).get("drop_the", False))
        words = [m.replace("the ", "") if drop_the else m for m in mentions.get(label, []) if m not in exclude]
        out[label] = [f"{p}{mod} {w.strip('_').strip()}" for p in prefixes for mod in modifiers for w in words]
    return out


def load_chexpert_pack(phrases_dir: str | os.PathLike | None = None) -> ObservationPack:
    data = load_yaml(PACK_FILE)
    root = find_phrases_dir(phrases_dir, str(data.get("phrases_dir_default", "../shared/data/chexpert_labeler")))
    files = {str(e["name"]): str(e["file"]) for e in (data.get("labels") or []) + (data.get("blockers") or []) if e.get("file")}
    mentions = {label: _read_phrases(root / "phrases" / "mention" / f"{stem}.txt") for label, stem in files.items()}
    missing = [f"{stem}.txt" for label, stem in files.items() if not mentions[label] and not (root / "phrases" / "mention" / f"{stem}.txt").is_file()]
    if missing:
        raise ConfigError(f"{root / 'phrases' / 'mention'}: missing phrase file(s) {', '.join(missing)}")
    unmentions = {label: _read_phrases(root / "phrases" / "unmention" / f"{stem}.txt") for label, stem in files.items()}
    for label, extra in _positional_unmentions(data.get("positional_unmentions") or {}, mentions).items():
        unmentions.setdefault(label, []).extend(extra)
    for label, extra in (data.get("extra_unmentions") or {}).items():
        unmentions.setdefault(str(label), []).extend(str(x) for x in extra)
    lists = {label: (mentions.get(label, []), unmentions.get(label, [])) for label in files}
    pack = parse_observation_pack(data, f"{PACK_FILE} + {root}", lists)
    return pack

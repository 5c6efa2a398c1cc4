"""The registry of seed papers: which exist, loading one, and whether it can run today.

Papers are data files, ``radpair/replicate/papers/<name>.yaml`` (schema in
:mod:`radpair.replicate.schema`, reference in ``docs/replicate.md``); the name of a paper
is the file stem and equals the stem of its optimiser recipe in ``configs/recipes``.

A paper runs when every method it names is registered in
:data:`radpair.methods.METHODS` and every capability it needs is in
:data:`CAPABILITIES`. The transfer harness adds its capabilities with
:func:`register_capability` when it is imported; until then every paper reports what it
still needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from radpair.errors import ConfigError, unknown_choice_message
from radpair.replicate import vocab
from radpair.replicate.schema import Paper, load_paper_file

PAPERS_DIR = Path(__file__).resolve().parent / "papers"

# Capabilities of the replicate harness that exist (names from vocab.CAPABILITY_NAMES).
CAPABILITIES: set[str] = set()

# Where the work on a missing requirement is tracked, e.g. {"chauhan_ranking": "issue 11"};
# shown next to the name in `radpair replicate --list`.
ISSUES: dict[str, str] = {}


def register_capability(*names: str) -> None:
    """Declare that the harness supports ``names`` (each from ``vocab.CAPABILITY_NAMES``)."""
    for name in names:
        if name not in vocab.CAPABILITY_NAMES:
            raise ConfigError(unknown_choice_message("capability", name, vocab.CAPABILITY_NAMES))
        CAPABILITIES.add(name)


def list_papers() -> list[str]:
    """Names of every paper in the registry, sorted."""
    return sorted(p.stem for p in PAPERS_DIR.glob("*.yaml"))


def paper_path(name: str) -> Path:
    names = list_papers()
    if name not in names:
        raise ConfigError(unknown_choice_message("paper", name, names))
    return PAPERS_DIR / f"{name}.yaml"


def load_paper(name: str) -> Paper:
    """Load and check a paper by name; an unknown name gets the closest valid one."""
    return load_paper_file(paper_path(name), expected_name=name)


def load_all() -> list[Paper]:
    return [load_paper(n) for n in list_papers()]


def shared_papers_dir() -> Path:
    """``shared/papers`` next to the repository (where the seed papers' text files are)."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "papers"


def paper_text_path(paper: Paper) -> Path:
    return shared_papers_dir() / paper.info.file


def registered_methods() -> set[str]:
    """Names in the live method registry (imports torch and the model code)."""
    import radpair.methods  # noqa: F401  (registers the built-in methods)
    from radpair.methods.base import METHODS

    return set(METHODS.names())


def _tag(name: str) -> str:
    return f"{name} ({ISSUES[name]})" if name in ISSUES else name


@dataclass(frozen=True)
class PaperStatus:
    name: str
    runnable: bool
    missing_methods: tuple[str, ...]
    missing_capabilities: tuple[str, ...]
    # parts of a runnable paper that will be skipped: "table table2" -> missing capabilities
    skipped: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def missing(self) -> tuple[str, ...]:
        return self.missing_methods + self.missing_capabilities

    def summary(self) -> str:
        """``runs``, ``runs (skips table table2: needs generation)`` or ``needs: a (issue 11), b``."""
        if not self.runnable:
            return "needs: " + ", ".join(_tag(n) for n in self.missing)
        if not self.skipped:
            return "runs"
        parts = [f"{part}: needs {', '.join(_tag(n) for n in caps)}" for part, caps in self.skipped.items()]
        return "runs (skips " + "; ".join(parts) + ")"


def paper_status(paper: Paper, methods: Iterable[str] | None = None,
                 capabilities: Iterable[str] | None = None) -> PaperStatus:
    """Can ``paper`` run with the registered ``methods`` and ``capabilities`` (default:
    the live method registry and :data:`CAPABILITIES`)?"""
    have_methods = set(registered_methods() if methods is None else methods)
    have_caps = set(CAPABILITIES if capabilities is None else capabilities)
    missing_m = tuple(m for m in paper.requires.methods if m not in have_methods)
    missing_c = tuple(c for c in paper.requires.capabilities if c not in have_caps)
    skipped = {}
    for part, caps in paper.soft_requirements().items():
        lacking = tuple(c for c in caps if c not in have_caps)
        if lacking:
            skipped[part] = lacking
    return PaperStatus(paper.name, not (missing_m or missing_c), missing_m, missing_c, skipped)


def describe_plan(paper: Paper, mode: str = "cpu") -> list[str]:
    """One line per stage of what ``radpair replicate PAPER`` runs in ``mode``."""
    lines = []
    by_method: dict[str, int] = {}
    for m in paper.methods:
        by_method[m.method] = by_method.get(m.method, 0) + 1
    pre = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in by_method.items())
    lines.append(f"pretrain {len(paper.methods)} model{'s' if len(paper.methods) != 1 else ''} ({pre})")
    lines += _text_plan(paper, mode)
    for p in paper.transfer:
        plan = p.plan(mode)
        budgets = plan["budgets"]
        kind = "n" if budgets.kind == "n" else "fraction"
        values = ",".join(_budget_text(v, budgets.kind) for v in budgets.values)
        arms = [a for a in p.arms if not a.na]
        protocols = sorted({a.protocol for a in arms})
        evals = ", ".join(e.id for e in p.eval_sets)
        lines.append(f"transfer {p.id}: task {p.task}, {len(arms)} arms ({'/'.join(protocols)}) x {kind}={values} "
                     f"x {plan['repeats']} repeat{'s' if plan['repeats'] != 1 else ''}; metrics "
                     f"{', '.join(p.metrics)}; eval on {evals}")
    for e in paper.evaluations:
        lines.append(f"evaluate {e.id} ({e.kind}) of {', '.join(e.methods)}: {', '.join(e.metrics)}")
    lines.append("tables: " + ", ".join(f"{t.id} ({t.source})" for t in paper.tables)
                 + f"; claims: {len(paper.claims)}")
    return lines


def _text_plan(paper: Paper, mode: str) -> list[str]:
    """The shared tokenizer and word vectors, where the methods ask for more than the
    WordPiece default (nothing is said for the papers that do not)."""
    from radpair.replicate.shared_text import WORDPIECE_DEFAULT, describe_vocabulary, paper_vocabulary

    try:
        vocabulary = paper_vocabulary(paper, mode)
    except ConfigError as exc:
        return [f"tokenizer: cannot run: {exc}"]
    lines = [] if vocabulary == dict(WORDPIECE_DEFAULT) else [f"tokenizer: {describe_vocabulary(vocabulary)}"]
    with_vectors = [m.id for m in paper.methods if m.settings(mode).get("word_vectors") is not None]
    if with_vectors:
        lines.append(f"word2vec on the training reports starts the word embedding of {', '.join(with_vectors)}")
    return lines


def _budget_text(v: object, kind: str) -> str:
    if kind == "fractions":
        return f"{float(v) * 100:g}%"
    return str(v)

"""Typed form of a paper file (``radpair/replicate/papers/<name>.yaml``) and its loader.

The file is data: the paper's bibliographic record, the pretraining methods it compares
(with the paper's settings and smaller cpu / quick presets beside them), the downstream
protocols (task, label budgets, repeats, metrics, arms = start x protocol), the tables we
reproduce with the paper's published numbers, the claims those tables decide, what
differs here, and what must exist before the paper can run. ``docs/replicate.md``
describes every key.

Every problem is reported as :class:`PaperFileError` naming the file and the key path
(``transfer[0].arms[2].protocol``), with the closest valid name where one exists.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NoReturn

import yaml

from radpair.config import deep_merge
from radpair.errors import ConfigError, closest
from radpair.replicate import vocab

SCHEMA_VERSION = 1
_PLAN_KEYS = ("repeats", "labelled_fraction", "budgets")  # a protocol's plan, not its hyper-parameters


class PaperFileError(ConfigError):
    """A paper file is malformed; ``file`` and ``key`` say where."""

    def __init__(self, file: str | Path, key: str, problem: str) -> None:
        self.file = str(file)
        self.key = key
        self.problem = problem
        where = f"{self.file}: key {key!r}" if key else self.file
        super().__init__(f"{where}: {problem}")


# --------------------------------------------------------------------------- reader


class _At:
    """A value in the parsed YAML together with where it came from (file and key path)."""

    def __init__(self, file: Path, key: str, value: Any, present: bool = True) -> None:
        self.file = file
        self.key = key
        self.value = value
        self.present = present

    def fail(self, problem: str) -> NoReturn:
        raise PaperFileError(self.file, self.key, problem)

    def _child_key(self, name: str | int) -> str:
        if isinstance(name, int):
            return f"{self.key}[{name}]"
        return f"{self.key}.{name}" if self.key else str(name)

    def mapping(self, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
        if not isinstance(self.value, Mapping):
            self.fail(f"expected a mapping, got {_show(self.value)}")
        allowed = list(allowed)
        for k in self.value:
            if not isinstance(k, str):
                self.fail(f"keys must be strings, got {k!r}")
            if k not in allowed:
                hint = closest(k, allowed)
                msg = f"unknown key {k!r}" + (f"; did you mean {hint!r}?" if hint else "")
                _At(self.file, self._child_key(k), None).fail(msg + f" (valid keys here: {', '.join(allowed)})")
        for k in required:
            if k not in self.value:
                _At(self.file, self._child_key(k), None, present=False).fail("required key is missing")
        return dict(self.value)

    def __getitem__(self, name: str | int) -> "_At":
        if isinstance(name, int):
            return _At(self.file, self._child_key(name), self.value[name])
        present = isinstance(self.value, Mapping) and name in self.value
        return _At(self.file, self._child_key(name), self.value.get(name) if present else None, present)

    def items(self) -> list[tuple[str, "_At"]]:
        if not isinstance(self.value, Mapping):
            self.fail(f"expected a mapping, got {_show(self.value)}")
        return [(str(k), self[str(k)]) for k in self.value]

    def list(self, optional: bool = False, non_empty: bool = True) -> list["_At"]:
        if self.value is None and (optional or not self.present):
            if optional:
                return []
            self.fail("required list is missing")
        if not isinstance(self.value, list):
            self.fail(f"expected a list, got {_show(self.value)}")
        if non_empty and not self.value:
            self.fail("expected a non-empty list")
        return [self[i] for i in range(len(self.value))]

    def str(self, optional: bool = False, choices: Iterable[str] | None = None, what: str = "value") -> str | None:
        if self.value is None:
            if optional:
                return None
            self.fail("a string is required")
        if not isinstance(self.value, str) or not self.value.strip():
            self.fail(f"expected a non-empty string, got {_show(self.value)}")
        if choices is not None:
            choices = list(choices)
            if self.value not in choices:
                hint = closest(self.value, choices)
                self.fail(f"unknown {what} {self.value!r}" + (f"; did you mean {hint!r}?" if hint else "")
                          + f" (valid: {', '.join(choices)})")
        return self.value

    def int(self, optional: bool = False, minimum: int | None = None) -> int | None:
        if self.value is None and optional:
            return None
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            self.fail(f"expected an integer, got {_show(self.value)}")
        if minimum is not None and self.value < minimum:
            self.fail(f"must be at least {minimum}, got {self.value}")
        return self.value

    def float(self, optional: bool = False) -> float | None:
        v = self.value
        if v is None and optional:
            return None
        if isinstance(v, str):  # YAML 1.1 reads 2e-5 as a string
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(f"expected a number, got {_show(self.value)}")
        return float(v)

    def bool(self, default: bool) -> bool:
        if self.value is None:
            return default
        if not isinstance(self.value, bool):
            self.fail(f"expected true or false, got {_show(self.value)}")
        return self.value

    def str_list(self, optional: bool = False, choices: Iterable[str] | None = None,
                 what: str = "value") -> tuple[str, ...]:
        return tuple(x.str(choices=choices, what=what) for x in self.list(optional=optional))

    def free_mapping(self, allowed: Iterable[str] | None = None) -> dict[str, Any]:
        if self.value is None:
            return {}
        if allowed is None:
            if not isinstance(self.value, Mapping):
                self.fail(f"expected a mapping, got {_show(self.value)}")
            return dict(self.value)
        return self.mapping(allowed)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(at: _At, optional: bool = False) -> str:
    """Free text: a string, or a list of strings joined as paragraphs."""
    if isinstance(at.value, list):
        return "\n".join(x.str() for x in at.list())
    return at.str(optional=optional) or ""


# --------------------------------------------------------------------------- model


def _resolve(paper: Mapping[str, Any], cpu: Mapping[str, Any], quick: Mapping[str, Any], mode: str) -> dict[str, Any]:
    if mode not in vocab.MODES:
        raise ConfigError(f"unknown mode {mode!r} (valid: {', '.join(vocab.MODES)})")
    out = dict(paper)
    if mode in ("cpu", "quick"):
        out = deep_merge(out, cpu)
    if mode == "quick":
        out = deep_merge(out, quick)
    return out


@dataclass(frozen=True)
class PaperInfo:
    name: str
    title: str
    authors: tuple[str, ...]
    year: int
    venue: str
    file: str  # the text file under shared/papers
    recipe: str  # optimiser recipe, relative to the repository root
    code: str | None
    summary: str
    provenance: str | None  # where the bibliographic fields come from when the text file lacks them


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus the paper uses and the synthetic stand-in generated for it per mode."""

    role: str  # main | shifted | supervised_source
    paper: str  # what the paper used
    cpu: Mapping[str, Any]
    quick: Mapping[str, Any]
    labels: str | None  # for supervised_source: which labels train the supervised model

    def preset(self, mode: str) -> dict[str, Any] | None:
        """Generator settings for ``mode`` (``None`` in data mode: the corpus comes from ``--data``)."""
        if mode == "data":
            return None
        return _resolve({}, self.cpu, self.quick, mode)


@dataclass(frozen=True)
class MethodSpec:
    """One pretraining run the paper compares: a registered method with its options."""

    id: str  # the name tables and arms use
    method: str  # name in radpair.methods.METHODS
    label: str
    options: Mapping[str, Any]  # method-specific configuration (passed to the method)
    paper: Mapping[str, Any]  # the paper's settings; None = not stated
    cpu: Mapping[str, Any]  # overrides of ``paper`` for the cpu mode
    quick: Mapping[str, Any]  # overrides of the cpu settings for the quick mode
    corpus: str
    notes: str

    def settings(self, mode: str) -> dict[str, Any]:
        return _resolve(self.paper, self.cpu, self.quick, mode)


@dataclass(frozen=True)
class Budgets:
    kind: str  # "n" (label counts, "all") or "fractions" (of the labelled training set)
    values: tuple[Any, ...]

    def __contains__(self, value: object) -> bool:
        return any(_same_budget(value, v) for v in self.values)


def _same_budget(a: object, b: object) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class EvalSet:
    id: str
    label: str
    corpus: str  # main | shifted
    labels: str  # report (labelers on the text) | index | truth
    split: str


@dataclass(frozen=True)
class Arm:
    """One way of obtaining an image model: a start (random, a method id, or
    supervised-pretrained) transferred by a protocol, scored on every budget."""

    id: str
    label: str
    start: str
    protocol: str  # linear | frozen-head | finetune | joint
    head: str | None  # linear | timnet (frozen-head, finetune, joint)
    inputs: str  # image | report | image+report
    paper: Mapping[str, Any]  # overrides of the protocol's hyper-parameters for this arm
    cpu: Mapping[str, Any]
    quick: Mapping[str, Any]
    requires: tuple[str, ...]  # capabilities without which this arm is skipped
    na: str | None  # set when the arm cannot be reproduced here, with the reason
    notes: str


@dataclass(frozen=True)
class Protocol:
    """A downstream task with its budgets, repeats, metrics, hyper-parameters and arms."""

    id: str
    label: str
    task: str
    corpus: str  # corpus the labelled training images come from (main | shifted)
    train_labels: str  # report (labelers on the text) | index | truth
    eval_sets: tuple[EvalSet, ...]
    budgets: Budgets
    repeats: int
    labelled_fraction: float | None  # share of training images whose label is visible (Chauhan: 2.7 %)
    metrics: tuple[str, ...]
    paper: Mapping[str, Any]  # the paper's downstream hyper-parameters
    cpu: Mapping[str, Any]  # overrides (hyper-parameters, repeats, budgets, labelled_fraction)
    quick: Mapping[str, Any]
    arms: tuple[Arm, ...]
    notes: str

    def arm(self, arm_id: str) -> Arm:
        for a in self.arms:
            if a.id == arm_id:
                return a
        raise KeyError(arm_id)

    def plan(self, mode: str) -> dict[str, Any]:
        """``{"repeats", "budgets", "labelled_fraction", "hyper"}`` for ``mode``."""
        merged = _resolve({"repeats": self.repeats, "labelled_fraction": self.labelled_fraction, **self.paper},
                          self.cpu, self.quick, mode)
        repeats = merged.pop("repeats")
        fraction = merged.pop("labelled_fraction")
        budgets = merged.pop("budgets", None)
        if budgets is None:
            budgets_obj = self.budgets
        else:
            budgets_obj = Budgets(self.budgets.kind, tuple(budgets))
        return {"repeats": repeats, "budgets": budgets_obj, "labelled_fraction": fraction, "hyper": merged}

    def hyper(self, arm: Arm | str, mode: str) -> dict[str, Any]:
        """Downstream hyper-parameters of one arm in ``mode`` (protocol values, then the arm's).

        In ``quick`` mode the quick values (the protocol's, then the arm's) come last: an
        arm's stated epochs (RadTex's 50, say) would otherwise beat the protocol's quick
        ``epochs: 2`` and turn a smoke run back into a measurement."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        if mode == "quick":
            quick = {k: v for k, v in self.quick.items() if k not in _PLAN_KEYS}
            return deep_merge(deep_merge(self.hyper(arm, "cpu"), quick), arm.quick)
        base = self.plan(mode)["hyper"]
        return deep_merge(base, _resolve(arm.paper, arm.cpu, arm.quick, mode))


@dataclass(frozen=True)
class Evaluation:
    """A measurement of the pretrained model itself (matching head, generated reports)."""

    id: str
    kind: str  # matching | generation
    methods: tuple[str, ...]  # method ids evaluated
    metrics: tuple[str, ...]
    corpus: str
    split: str
    paper: Mapping[str, Any]
    requires: tuple[str, ...]
    notes: str


@dataclass(frozen=True)
class TableLine:
    id: str
    label: str
    select: Mapping[str, Any]
    na: str | None
    decimals: int | None = None  # overrides the table's (e.g. a column of counts)


@dataclass(frozen=True)
class TableSpec:
    id: str
    source: str  # "Table 1", "Table S3", "Fig. 2a"
    caption: str
    units: str
    decimals: int
    select: Mapping[str, Any]
    rows: tuple[TableLine, ...]
    columns: tuple[TableLine, ...]
    published: Mapping[str, Mapping[str, float | None]]
    requires: tuple[str, ...]
    notes: str
    scale: float = 1.0  # published units per measured unit (100 when the paper prints percentages)

    def row(self, row_id: str) -> TableLine:
        return _find(self.rows, row_id, f"row of table {self.id}")

    def column(self, col_id: str) -> TableLine:
        return _find(self.columns, col_id, f"column of table {self.id}")

    def cell(self, row_id: str, col_id: str) -> dict[str, Any]:
        """The merged selector of one cell (table, then row, then column)."""
        return {**self.select, **self.row(row_id).select, **self.column(col_id).select}

    def na(self, row_id: str, col_id: str) -> str | None:
        return self.row(row_id).na or self.column(col_id).na


def _find(lines: Iterable[Any], key: str, what: str):
    lines = list(lines)
    for line in lines:
        if line.id == key:
            return line
    hint = closest(key, [x.id for x in lines])
    raise ConfigError(f"unknown {what} {key!r}" + (f"; did you mean {hint!r}?" if hint else "")
                      + f" (valid: {', '.join(x.id for x in lines)})")


@dataclass(frozen=True)
class Expectation:
    """A rule over table cells, each cell written ``table/row/column``.

    * ``higher``: every ``a`` cell exceeds its paired ``b`` cell by more than ``margin``;
    * ``close``: every pair differs by at most ``tol``;
    * ``spread``: all ``cells`` lie within ``tol`` of each other (max - min).

    Row and column ids may contain ``*`` and ``?`` wildcards. With ``pairs: matched``
    (the default), a and b cells are paired where their wildcards matched the same text in
    every component that has wildcards in both (``t/*.ours/f30`` against ``t/*.base/*``
    pairs acc.ours with acc.base at every column); ``pairs: all`` compares every a with
    every b. A cell is never compared with itself."""

    kind: str  # higher | close | spread
    a: str = ""
    b: str = ""
    cells: tuple[str, ...] = ()
    margin: float = 0.0
    tol: float = 0.0
    pairs: str = "matched"


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    cells: tuple[str, ...]  # every cell that decides it (expanded from ``expect`` plus extra ones)
    expect: tuple[Expectation, ...]
    holds_in_paper: bool | None  # does the rule hold on the published numbers? (checked by the tests)
    notes: str


@dataclass(frozen=True)
class Deviation:
    topic: str
    paper: str
    here: str


@dataclass(frozen=True)
class Requirements:
    methods: tuple[str, ...]
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class Paper:
    name: str
    path: Path
    info: PaperInfo
    corpora: Mapping[str, CorpusSpec]
    methods: tuple[MethodSpec, ...]
    transfer: tuple[Protocol, ...]
    evaluations: tuple[Evaluation, ...]
    tables: tuple[TableSpec, ...]
    claims: tuple[Claim, ...]
    deviations: tuple[Deviation, ...]
    requires: Requirements
    unclear: tuple[str, ...] = field(default=())

    def method(self, method_id: str) -> MethodSpec:
        return _find(self.methods, method_id, f"method of paper {self.name}")

    def protocol(self, protocol_id: str) -> Protocol:
        return _find(self.transfer, protocol_id, f"transfer protocol of paper {self.name}")

    def evaluation(self, evaluation_id: str) -> Evaluation:
        return _find(self.evaluations, evaluation_id, f"evaluation of paper {self.name}")

    def table(self, table_id: str) -> TableSpec:
        return _find(self.tables, table_id, f"table of paper {self.name}")

    def soft_requirements(self) -> dict[str, tuple[str, ...]]:
        """Capabilities that only parts of the paper need: ``{"arm transfer/R": (...), "table table2": (...)}``."""
        out: dict[str, tuple[str, ...]] = {}
        for p in self.transfer:
            for a in p.arms:
                if a.requires:
                    out[f"arm {p.id}/{a.id}"] = a.requires
        for e in self.evaluations:
            if e.requires:
                out[f"evaluation {e.id}"] = e.requires
        for t in self.tables:
            if t.requires:
                out[f"table {t.id}"] = t.requires
        return out


# --------------------------------------------------------------------------- loading

TOP_KEYS = ("schema", "paper", "corpora", "methods", "transfer", "evaluations", "tables", "claims", "deviations",
            "requires", "unclear")
SELECT_KEYS = ("protocol", "arm", "eval", "budget", "metric", "class", "evaluation", "method")


def load_paper_file(path: str | Path, expected_name: str | None = None) -> Paper:
    """Parse and check one paper file; :class:`PaperFileError` names the file and key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PaperFileError(path, "", f"cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise PaperFileError(path, "", f"is not valid YAML: {exc}") from None
    if isinstance(raw, Mapping):  # top-level keys starting with "_" hold YAML anchors only
        raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("_"))}
    root = _At(path, "", raw)
    root.mapping(TOP_KEYS, required=("schema", "paper", "corpora", "methods", "transfer", "tables", "claims",
                                     "deviations", "requires"))
    if root["schema"].int() != SCHEMA_VERSION:
        root["schema"].fail(f"this radpair reads schema {SCHEMA_VERSION}, the file says {root['schema'].value}")

    info = _paper_info(root["paper"])
    name = expected_name or path.stem
    if info.name != name:
        root["paper"]["name"].fail(f"must equal the file name {name!r}, got {info.name!r}")

    corpora = {}
    for role, at in root["corpora"].items():
        if role not in vocab.CORPUS_ROLES:
            at.fail(f"unknown corpus role {role!r}; valid: {', '.join(vocab.CORPUS_ROLES)}")
        corpora[role] = _corpus(role, at)
    if "main" not in corpora:
        root["corpora"]["main"].fail("required key is missing")

    methods = tuple(_method(at, corpora) for at in root["methods"].list())
    _unique(root["methods"], [m.id for m in methods], "method id")
    method_ids = {m.id for m in methods}

    transfer = tuple(_protocol(at, methods, corpora) for at in root["transfer"].list())
    _unique(root["transfer"], [p.id for p in transfer], "protocol id")

    evaluations = tuple(_evaluation(at, method_ids, corpora) for at in root["evaluations"].list(optional=True))
    _unique(root["evaluations"], [e.id for e in evaluations], "evaluation id")

    requires = _requirements(root["requires"])
    partial = Paper(name, path, info, corpora, methods, transfer, evaluations, (), (), (), requires)

    tables = tuple(_table(at, partial) for at in root["tables"].list())
    _unique(root["tables"], [t.id for t in tables], "table id")
    partial = Paper(name, path, info, corpora, methods, transfer, evaluations, tables, (), (), requires)

    claims = tuple(_claim(at, partial) for at in root["claims"].list())
    _unique(root["claims"], [c.id for c in claims], "claim id")
    deviations = tuple(_deviation(at) for at in root["deviations"].list())
    unclear = tuple(_text(at) for at in root["unclear"].list(optional=True))

    paper = Paper(name, path, info, corpora, methods, transfer, evaluations, tables, claims, deviations, requires,
                  unclear)
    _check_requirements(root["requires"], paper)
    return paper


def _unique(at: _At, ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i, x in enumerate(ids):
        if x in seen:
            at[i].fail(f"duplicate {what} {x!r}")
        seen.add(x)


def _paper_info(at: _At) -> PaperInfo:
    at.mapping(("name", "title", "authors", "year", "venue", "file", "recipe", "code", "summary", "provenance"),
               required=("name", "title", "authors", "year", "venue", "file", "recipe", "summary"))
    year = at["year"].int()
    if not 1990 <= year <= 2100:
        at["year"].fail(f"implausible year {year}")
    file = at["file"].str()
    if not file.endswith(".txt") or "/" in file:
        at["file"].fail("must be the name of a .txt file in shared/papers (no folders)")
    return PaperInfo(
        name=at["name"].str(), title=at["title"].str(), authors=at["authors"].str_list(), year=year,
        venue=at["venue"].str(), file=file, recipe=at["recipe"].str(), code=at["code"].str(optional=True),
        summary=_text(at["summary"]), provenance=_text(at["provenance"], optional=True) or None,
    )


def _corpus(role: str, at: _At) -> CorpusSpec:
    at.mapping(("paper", "cpu", "quick", "labels"), required=("paper", "cpu", "quick"))
    presets = {}
    for mode in ("cpu", "quick"):
        p = at[mode].mapping(vocab.CORPUS_PRESET_KEYS)
        presets[mode] = p
        if "difficulty" in p:
            at[mode]["difficulty"].str(choices=vocab.DIFFICULTIES, what="difficulty")
        if "synth" in p:
            at[mode]["synth"].mapping(vocab.SYNTH_KNOBS)
        for k in ("n", "size", "seed"):
            if k in p:
                at[mode][k].int(minimum=0)
        if "size" in p and not 32 <= p["size"] <= 512:
            at[mode]["size"].fail(f"image side must be within 32..512 px, got {p['size']}")
    merged = {**presets["cpu"]}
    for k in ("n", "size", "seed"):
        if k not in merged:
            at["cpu"].fail(f"the cpu preset must set {k!r}")
    labels = at["labels"].str(optional=True, choices=vocab.LABEL_SOURCES, what="label source")
    if role == "supervised_source" and labels is None:
        at["labels"].fail("a supervised_source corpus must say which labels train the supervised model")
    return CorpusSpec(role, _text(at["paper"]), presets["cpu"], presets["quick"], labels)


_VALUE_CHOICES = {"optimizer": ("optimiser", vocab.OPTIMIZERS), "schedule": ("schedule", vocab.SCHEDULES),
                  "loss": ("loss", vocab.LOSSES)}


def _check_values(at: _At) -> None:
    """Keys a runner reads literally must hold one of their known values (or null)."""
    if not isinstance(at.value, Mapping):
        return
    for key, (what, choices) in _VALUE_CHOICES.items():
        if key in at.value:
            at[key].str(optional=True, choices=choices, what=what)
    if "warmup" in at.value and at.value["warmup"] is not None:
        w = at["warmup"].float()
        if not 0.0 <= w < 1.0:
            at["warmup"].fail(f"warmup is a fraction of training in [0, 1), got {w}")
    for key in ("lr", "weight_decay"):
        if key in at.value and at.value[key] is not None:
            at[key].float()
    for key in ("epochs", "max_steps", "batch_size", "image_size", "labelled_epochs"):
        if key in at.value and at.value[key] is not None:
            at[key].int(minimum=1)


def _check_settings(at: _At, settings: Mapping[str, Any], mode: str) -> None:
    """The resolved cpu / quick settings must be runnable here."""
    for k in ("backbone", "image_size", "epochs", "batch_size"):
        if settings.get(k) is None:
            at[mode].fail(f"the {mode} settings must set {k!r} (the paper's value is not stated or not usable here)")
    if settings["backbone"] not in vocab.BACKBONES:
        at[mode]["backbone"].fail(f"{settings['backbone']!r} is not an image encoder usable here; valid: "
                                  f"{', '.join(vocab.BACKBONES)}")
    for k in ("image_size", "epochs", "batch_size"):
        v = settings[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            at[mode][k].fail(f"the resolved {mode} value must be a positive integer, got {_show(v)}")
    if not 32 <= settings["image_size"] <= 512:
        at[mode]["image_size"].fail(f"must be within 32..512 px, got {settings['image_size']}")


def _check_text_setup(at: _At) -> None:
    """``vocabulary`` and ``word_vectors`` (null, or a mapping of their own keys) hold values
    the runner can train with; whether the vectors fit the method's word_dim is checked by
    the runner, which resolves the method's config."""
    if not isinstance(at.value, Mapping):
        return
    if at.value.get("vocabulary") is not None:
        node = at["vocabulary"]
        node.mapping(vocab.VOCABULARY_KEYS)
        node["kind"].str(optional=True, choices=vocab.TOKENIZER_KINDS, what="tokenizer kind")
        node["size"].int(optional=True, minimum=6)  # more than the 5 special tokens
        node["min_count"].int(optional=True, minimum=1)
    if at.value.get("word_vectors") is not None:
        node = at["word_vectors"]
        node.mapping(vocab.WORD_VECTOR_KEYS)
        for key in ("dim", "epochs", "window"):
            node[key].int(optional=True, minimum=1)
        node["seed"].int(optional=True, minimum=0)


def _check_sections(at: _At) -> None:
    if at.value is None:
        return
    from radpair.reports.selection import get_policy

    policy = at.str()
    try:
        get_policy(policy)
    except ConfigError as exc:
        at.fail(str(exc))


def _method(at: _At, corpora: Mapping[str, CorpusSpec]) -> MethodSpec:
    at.mapping(("id", "method", "label", "options", "paper", "cpu", "quick", "corpus", "notes"),
               required=("id", "method", "paper", "cpu", "quick"))
    method = at["method"].str(choices=vocab.PLANNED_METHODS, what="method")
    paper = at["paper"].mapping(vocab.METHOD_SETTING_KEYS)
    cpu = at["cpu"].mapping(vocab.METHOD_SETTING_KEYS)
    quick = at["quick"].free_mapping(vocab.METHOD_SETTING_KEYS)
    for mode, part in (("paper", paper), ("cpu", cpu), ("quick", quick)):
        _check_values(at[mode])
        if "text_sections" in part:
            _check_sections(at[mode]["text_sections"])
        _check_text_setup(at[mode])
    corpus = at["corpus"].str(optional=True, choices=list(corpora), what="corpus") or "main"
    spec = MethodSpec(
        id=at["id"].str(), method=method, label=at["label"].str(optional=True) or at["id"].value,
        options=at["options"].free_mapping(), paper=paper, cpu=cpu, quick=quick, corpus=corpus,
        notes=_text(at["notes"], optional=True),
    )
    for mode in ("cpu", "quick"):
        _check_settings(at, spec.settings(mode), mode)
    return spec


def _budgets(at: _At) -> Budgets:
    m = at.mapping(("n", "fractions"))
    if len(m) != 1:
        at.fail("give exactly one of 'n' (label counts and 'all') or 'fractions'")
    if "n" in m:
        values: list[Any] = []
        for x in at["n"].list():
            if x.value == "all":
                values.append("all")
            else:
                values.append(x.int(minimum=1))
        return Budgets("n", tuple(values))
    fractions = []
    for x in at["fractions"].list():
        f = x.float()
        if not 0.0 < f <= 1.0:
            x.fail(f"a fraction must be in (0, 1], got {f}")
        fractions.append(f)
    return Budgets("fractions", tuple(fractions))


def _eval_set(at: _At, corpora: Mapping[str, CorpusSpec]) -> EvalSet:
    at.mapping(("id", "label", "corpus", "labels", "split"), required=("id", "corpus", "labels"))
    return EvalSet(
        id=at["id"].str(), label=at["label"].str(optional=True) or at["id"].value,
        corpus=at["corpus"].str(choices=list(corpora), what="corpus"),
        labels=at["labels"].str(choices=vocab.LABEL_SOURCES, what="label source"),
        split=at["split"].str(optional=True, choices=("test", "validate", "all"), what="split") or "test",
    )


def _run_overrides(at: _At, kind: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    m = at.free_mapping(allowed)
    _check_values(at)
    if "budgets" in m:
        b = at["budgets"].list()
        for x in b:
            if kind == "n" and x.value != "all":
                x.int(minimum=1)
            elif kind == "fractions":
                x.float()
    if "repeats" in m:
        at["repeats"].int(minimum=1)
    return m


def _arm(at: _At, method_ids: set[str], budgets_kind: str) -> Arm:
    at.mapping(("id", "label", "start", "protocol", "head", "inputs", "paper", "cpu", "quick", "requires", "na",
                "notes"), required=("id", "start", "protocol"))
    start = at["start"].str(choices=[*vocab.SPECIAL_STARTS, *sorted(method_ids)], what="start")
    protocol = at["protocol"].str(choices=vocab.PROTOCOLS, what="protocol")
    head = at["head"].str(optional=True, choices=vocab.HEADS, what="head")
    if protocol == "linear" and head not in (None, "linear"):
        at["head"].fail("protocol 'linear' is a logistic-regression probe; its head is linear")
    if protocol == "joint" and start in vocab.SPECIAL_STARTS:
        at["start"].fail("protocol 'joint' evaluates a method's own classifier; start must be a method id")
    allowed = (*vocab.HYPER_KEYS,)
    return Arm(
        id=at["id"].str(), label=at["label"].str(optional=True) or at["id"].value,
        start=start, protocol=protocol, head=head or ("linear" if protocol != "joint" else None),
        inputs=at["inputs"].str(optional=True, choices=vocab.INPUTS, what="inputs") or "image",
        paper=_run_overrides(at["paper"], budgets_kind, allowed), cpu=_run_overrides(at["cpu"], budgets_kind, allowed),
        quick=_run_overrides(at["quick"], budgets_kind, allowed),
        requires=at["requires"].str_list(optional=True, choices=vocab.CAPABILITY_NAMES, what="capability"),
        na=at["na"].str(optional=True), notes=_text(at["notes"], optional=True),
    )


def _protocol(at: _At, methods: tuple[MethodSpec, ...], corpora: Mapping[str, CorpusSpec]) -> Protocol:
    method_ids = {m.id for m in methods}
    at.mapping(("id", "label", "task", "corpus", "train_labels", "eval", "budgets", "repeats", "labelled_fraction",
                "metrics", "paper", "cpu", "quick", "arms", "notes"),
               required=("id", "task", "eval", "budgets", "repeats", "metrics", "paper", "arms"))
    task = at["task"].str(choices=vocab.TASKS, what="task")
    metrics = at["metrics"].str_list(choices=vocab.METRICS, what="metric")
    if vocab.TASKS[task]["kind"] != "ordinal":
        for i, m in enumerate(metrics):
            if m in vocab.ORDINAL_METRICS:
                at["metrics"][i].fail(f"metric {m!r} needs an ordinal task, {task!r} is not one")
    budgets = _budgets(at["budgets"])
    eval_sets = tuple(_eval_set(x, corpora) for x in at["eval"].list())
    _unique(at["eval"], [e.id for e in eval_sets], "eval set id")
    arms = tuple(_arm(x, method_ids, budgets.kind) for x in at["arms"].list())
    _unique(at["arms"], [a.id for a in arms], "arm id")
    if any(a.start == "supervised-pretrained" for a in arms) and "supervised_source" not in corpora:
        at["arms"].fail("an arm starts from 'supervised-pretrained' but corpora has no 'supervised_source'")
    if any(a.start == "supervised-pretrained" for a in arms) and not any(
            m.method == "supervised" and m.corpus == "supervised_source" for m in methods):
        at["arms"].fail("an arm starts from 'supervised-pretrained': add a method with method: supervised and "
                        "corpus: supervised_source (its settings are the supervised pretraining's)")
    fraction = at["labelled_fraction"].float(optional=True)
    if fraction is not None and not 0.0 < fraction <= 1.0:
        at["labelled_fraction"].fail(f"must be in (0, 1], got {fraction}")
    run_allowed = (*vocab.HYPER_KEYS, *vocab.RUN_KEYS)
    overrides = {mode: _run_overrides(at[mode], budgets.kind, run_allowed) for mode in ("cpu", "quick")}
    for mode, o in overrides.items():
        for i, b in enumerate(o.get("budgets", [])):
            if b not in budgets:
                at[mode]["budgets"][i].fail(f"budget {b!r} is not one of the paper's ({_budget_list(budgets)}); "
                                            "a preset runs a subset so that its results land in the tables")
        if o.get("labelled_fraction") is not None:
            f = at[mode]["labelled_fraction"].float()
            if not 0.0 < f <= 1.0:
                at[mode]["labelled_fraction"].fail(f"must be in (0, 1], got {f}")
    return Protocol(
        id=at["id"].str(), label=at["label"].str(optional=True) or at["id"].value,
        task=task, corpus=at["corpus"].str(optional=True, choices=list(corpora), what="corpus") or "main",
        train_labels=at["train_labels"].str(optional=True, choices=vocab.LABEL_SOURCES,
                                            what="label source") or "report",
        eval_sets=eval_sets, budgets=budgets, repeats=at["repeats"].int(minimum=1),
        labelled_fraction=fraction, metrics=metrics, paper=_run_overrides(at["paper"], budgets.kind, vocab.HYPER_KEYS),
        cpu=overrides["cpu"], quick=overrides["quick"], arms=arms,
        notes=_text(at["notes"], optional=True),
    )


def _evaluation(at: _At, method_ids: set[str], corpora: Mapping[str, CorpusSpec]) -> Evaluation:
    at.mapping(("id", "kind", "methods", "metrics", "corpus", "split", "paper", "requires", "notes"),
               required=("id", "kind", "methods", "metrics"))
    kind = at["kind"].str(choices=vocab.EVALUATION_KINDS, what="evaluation kind")
    return Evaluation(
        id=at["id"].str(), kind=kind,
        methods=at["methods"].str_list(choices=sorted(method_ids), what="method id"),
        metrics=at["metrics"].str_list(choices=vocab.METRICS, what="metric"),
        corpus=at["corpus"].str(optional=True, choices=list(corpora), what="corpus") or "main",
        split=at["split"].str(optional=True, choices=("test", "validate"), what="split") or "test",
        paper=at["paper"].free_mapping(),
        requires=at["requires"].str_list(optional=True, choices=vocab.CAPABILITY_NAMES, what="capability"),
        notes=_text(at["notes"], optional=True),
    )


def _line(at: _At) -> TableLine:
    at.mapping(("id", "label", "select", "na", "decimals"), required=("id",))
    sel = at["select"].free_mapping(SELECT_KEYS)
    return TableLine(id=str(at["id"].str()), label=at["label"].str(optional=True) or str(at["id"].value),
                     select=sel, na=at["na"].str(optional=True), decimals=at["decimals"].int(optional=True, minimum=0))


def _check_cell(at: _At, sel: Mapping[str, Any], paper: Paper) -> None:
    """A cell's merged selector must name something the paper runs."""
    if "evaluation" in sel:
        extra = [k for k in ("protocol", "arm", "eval", "budget", "class") if k in sel]
        if extra:
            at.fail(f"a cell of evaluation {sel['evaluation']!r} cannot also select {', '.join(extra)}")
        ev = {e.id: e for e in paper.evaluations}
        _pick(at, sel["evaluation"], ev, "evaluation")
        e = ev[sel["evaluation"]]
        _pick(at, sel.get("method"), dict.fromkeys(e.methods), f"method of evaluation {e.id}")
        _pick(at, sel.get("metric"), dict.fromkeys(e.metrics), f"metric of evaluation {e.id}")
        return
    protocols = {p.id: p for p in paper.transfer}
    p = protocols[_pick(at, sel.get("protocol"), protocols, "protocol")]
    _pick(at, sel.get("arm"), {a.id: a for a in p.arms}, f"arm of protocol {p.id}")
    _pick(at, sel.get("metric"), dict.fromkeys(p.metrics), f"metric of protocol {p.id}")
    if "method" in sel:
        at.fail("'method' selects within an evaluation; transfer cells select an 'arm'")
    if len(p.eval_sets) > 1 or "eval" in sel:
        _pick(at, sel.get("eval"), {e.id: e for e in p.eval_sets}, f"eval set of protocol {p.id}")
    budget = sel.get("budget")
    if budget is None:
        if len(p.budgets.values) > 1:
            at.fail(f"the cell must select a budget of protocol {p.id} ({_budget_list(p.budgets)})")
    elif budget not in p.budgets:
        at.fail(f"budget {budget!r} is not one of protocol {p.id}'s ({_budget_list(p.budgets)})")
    cls = sel.get("class")
    if cls is not None:
        classes = [*vocab.TASKS[p.task]["classes"], *vocab.CLASS_AGGREGATES]
        _pick(at, cls, dict.fromkeys(classes), f"class of task {p.task}")


def _budget_list(b: Budgets) -> str:
    return ", ".join(str(v) for v in b.values)


def _pick(at: _At, value: Any, choices: Mapping[str, Any], what: str) -> str:
    if value is None:
        at.fail(f"the cell does not select a {what} (set it in the table, row or column 'select')")
    if value not in choices:
        hint = closest(str(value), list(choices))
        at.fail(f"unknown {what} {value!r}" + (f"; did you mean {hint!r}?" if hint else "")
                + f" (valid: {', '.join(map(str, choices))})")
    return value


def _table(at: _At, paper: Paper) -> TableSpec:
    at.mapping(("id", "source", "caption", "units", "decimals", "scale", "select", "rows", "columns", "published",
                "requires", "notes"),
               required=("id", "source", "caption", "units", "decimals", "rows", "columns", "published"))
    rows = tuple(_line(x) for x in at["rows"].list())
    cols = tuple(_line(x) for x in at["columns"].list())
    _unique(at["rows"], [r.id for r in rows], "row id")
    _unique(at["columns"], [c.id for c in cols], "column id")
    select = at["select"].free_mapping(SELECT_KEYS)
    for r in rows:
        for c in cols:
            if r.na or c.na:
                continue
            sel = {**select, **r.select, **c.select}
            _check_cell(_At(at.file, f"{at.key}.rows/{r.id}/columns/{c.id}", None), sel, paper)
    published = _published(at["published"], rows, cols)
    return TableSpec(
        id=at["id"].str(), source=at["source"].str(), caption=_text(at["caption"]), units=at["units"].str(),
        decimals=at["decimals"].int(minimum=0), select=select, rows=rows, columns=cols, published=published,
        requires=at["requires"].str_list(optional=True, choices=vocab.CAPABILITY_NAMES, what="capability"),
        notes=_text(at["notes"], optional=True), scale=_scale(at["scale"]),
    )


def _scale(at: _At) -> float:
    if at.value is None:
        return 1.0
    v = at.float()
    if v <= 0:
        at.fail(f"scale must be positive, got {v}")
    return v


def _published(at: _At, rows: tuple[TableLine, ...], cols: tuple[TableLine, ...]) -> dict[str, dict[str, float | None]]:
    """``published`` maps every row id to a list (one value per column, in order) or a
    mapping column id -> value; null = not readable / not reported (say why in notes)."""
    col_ids = [c.id for c in cols]
    m = at.mapping([r.id for r in rows], required=[r.id for r in rows])
    out: dict[str, dict[str, float | None]] = {}
    for r in rows:
        node = at[r.id]
        if isinstance(node.value, list):
            if len(node.value) != len(cols):
                node.fail(f"has {len(node.value)} values but the table has {len(cols)} columns ({', '.join(col_ids)})")
            values = [x.float(optional=True) for x in node.list()]
            out[r.id] = dict(zip(col_ids, values))
        else:
            node.mapping(col_ids, required=col_ids)
            out[r.id] = {c: node[c].float(optional=True) for c in col_ids}
    del m
    return out


def _glob(pattern: str) -> re.Pattern[str]:
    parts = ["(.*)" if ch == "*" else "(.)" if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("^" + "".join(parts) + "$")


def has_wildcard(component: str) -> bool:
    return "*" in component or "?" in component


Cell = tuple[str, str, str]


def match_cells(paper: Paper, spec: str) -> list[tuple[Cell, tuple[tuple[str, ...], tuple[str, ...]]]]:
    """Cells of ``table/row/column`` (wildcards allowed in row and column) with the text
    each component's wildcards matched; ``ConfigError`` when nothing matches."""
    parts = spec.split("/")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"cell {spec!r} must look like table/row/column ('*' and '?' match any text)")
    t_id, r_pat, c_pat = parts
    table = paper.table(t_id)
    out = []
    rx_r, rx_c = _glob(r_pat), _glob(c_pat)
    for r in table.rows:
        mr = rx_r.match(r.id)
        if not mr:
            continue
        for c in table.columns:
            mc = rx_c.match(c.id)
            if mc:
                out.append(((t_id, r.id, c.id), (mr.groups(), mc.groups())))
    if not out:
        what = "row" if not any(rx_r.match(r.id) for r in table.rows) else "column"
        ids = [x.id for x in (table.rows if what == "row" else table.columns)]
        pat = r_pat if what == "row" else c_pat
        hint = closest(pat, ids)
        raise ConfigError(f"cell {spec!r}: no {what} of table {t_id} matches {pat!r}"
                          + (f"; did you mean {hint!r}?" if hint else "") + f" (valid: {', '.join(ids)})")
    return out


def expectation_pairs(paper: Paper, e: Expectation) -> list[tuple[Cell, Cell]]:
    """The (a, b) cell pairs a ``higher`` / ``close`` expectation compares."""
    a_parts, b_parts = e.a.split("/"), e.b.split("/")
    shared = [i for i in (1, 2) if has_wildcard(a_parts[i]) and has_wildcard(b_parts[i])]
    pairs = []
    for a, a_caps in match_cells(paper, e.a):
        for b, b_caps in match_cells(paper, e.b):
            if a == b:
                continue
            if e.pairs == "matched" and any(a_caps[i - 1] != b_caps[i - 1] for i in shared):
                continue
            pairs.append((a, b))
    return pairs


def expectation_cells(paper: Paper, e: Expectation) -> list[Cell]:
    if e.kind == "spread":
        return [cell for spec in e.cells for cell, _ in match_cells(paper, spec)]
    seen: dict[Cell, None] = {}
    for a, b in expectation_pairs(paper, e):
        seen[a] = None
        seen[b] = None
    return list(seen)


def _claim(at: _At, paper: Paper) -> Claim:
    at.mapping(("id", "text", "cells", "expect", "holds_in_paper", "notes"), required=("id", "text"))
    cells: list[str] = []
    for x in at["cells"].list(optional=True):
        spec = x.str()
        try:
            match_cells(paper, spec)
        except ConfigError as exc:
            x.fail(str(exc))
        cells.append(spec)
    expect = []
    for x in at["expect"].list(optional=True):
        m = x.mapping(("higher", "lower", "margin", "close", "spread", "tol", "pairs"))
        pairs = x["pairs"].str(optional=True, choices=("matched", "all"), what="pairing") or "matched"
        if "higher" in m:
            x.mapping(("higher", "lower", "margin", "pairs"), required=("higher", "lower"))
            e = Expectation("higher", a=x["higher"].str(), b=x["lower"].str(),
                            margin=x["margin"].float(optional=True) or 0.0, pairs=pairs)
            specs = [e.a, e.b]
        elif "close" in m:
            x.mapping(("close", "tol", "pairs"), required=("close", "tol"))
            pair = x["close"].str_list()
            if len(pair) != 2:
                x["close"].fail("give two cells")
            e = Expectation("close", a=pair[0], b=pair[1], tol=x["tol"].float(), pairs=pairs)
            specs = [e.a, e.b]
        elif "spread" in m:
            x.mapping(("spread", "tol"), required=("spread", "tol"))
            e = Expectation("spread", cells=x["spread"].str_list(), tol=x["tol"].float())
            specs = list(e.cells)
        else:
            x.fail("an expectation is {higher: CELL, lower: CELL[, margin: M]}, {close: [CELL, CELL], tol: T} "
                   "or {spread: [CELL, ...], tol: T}")
        try:
            n = len(expectation_cells(paper, e))
        except ConfigError as exc:
            x.fail(str(exc))
        if n < 2:
            x.fail("the expectation compares no cells (check the wildcards and 'pairs')")
        for spec in specs:
            if spec not in cells:
                cells.append(spec)
        expect.append(e)
    if not cells:
        at.fail("a claim must name the cells that decide it ('cells' or 'expect')")
    hip = at["holds_in_paper"].value
    if hip is not None and not isinstance(hip, bool):
        at["holds_in_paper"].fail("expected true, false or null (null: the published numbers cannot decide it)")
    return Claim(id=at["id"].str(), text=_text(at["text"]), cells=tuple(cells), expect=tuple(expect),
                 holds_in_paper=hip, notes=_text(at["notes"], optional=True))


def _deviation(at: _At) -> Deviation:
    at.mapping(("topic", "paper", "here"), required=("topic", "paper", "here"))
    return Deviation(at["topic"].str(), _text(at["paper"]), _text(at["here"]))


def _requirements(at: _At) -> Requirements:
    at.mapping(("methods", "capabilities"), required=("methods", "capabilities"))
    return Requirements(
        methods=at["methods"].str_list(choices=vocab.PLANNED_METHODS, what="method"),
        capabilities=at["capabilities"].str_list(optional=True, choices=vocab.CAPABILITY_NAMES, what="capability"),
    )


def derived_requirements(paper: Paper) -> tuple[set[str], set[str]]:
    """(methods, capabilities) the paper's contents imply; soft parts count their own requires."""
    methods = {m.method for m in paper.methods}
    caps = {"transfer"}
    if any(m.corpus == "shifted" for m in paper.methods) or any(e.corpus == "shifted" for e in paper.evaluations):
        caps.add("shifted_corpus")
    for p in paper.transfer:
        if p.budgets.kind == "fractions":
            caps.add("label_fractions")
        if set(p.metrics) & vocab.ORDINAL_METRICS:
            caps.add("ordinal_metrics")
        if p.corpus == "shifted" or any(e.corpus == "shifted" for e in p.eval_sets):
            caps.add("shifted_corpus")
        for a in p.arms:
            if a.na or a.requires:
                continue
            caps.add(vocab.PROTOCOL_CAPABILITY[a.protocol])
            if a.start == "supervised-pretrained":
                caps.add("supervised_pretrained")
                methods.add("supervised")
            if a.inputs != "image":
                caps.add("report_classification")
    for e in paper.evaluations:
        if not e.requires:
            caps.update(vocab.EVALUATION_CAPABILITIES[e.kind])
    return methods, caps


def _check_requirements(at: _At, paper: Paper) -> None:
    methods, caps = derived_requirements(paper)
    missing_m = sorted(methods - set(paper.requires.methods))
    if missing_m:
        at["methods"].fail(f"the paper uses {', '.join(missing_m)} but does not list it under requires.methods")
    missing_c = sorted(caps - set(paper.requires.capabilities))
    if missing_c:
        at["capabilities"].fail(f"the paper needs {', '.join(missing_c)} but does not list it under "
                                "requires.capabilities (or under the 'requires' of the arm/evaluation/table "
                                "that needs it)")

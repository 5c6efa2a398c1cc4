"""The method contract: what a pretraining method declares, and what the loop provides.

Five papers learn from reports in five ways. One wants two sections as two tokenised
inputs, one an ordinal label on a few pairs, one an impostor pair per row that must be
the same after a resume, one a second training phase on labelled pairs only, and the
generative ones a decoder with class-count weights. The loop must serve all of them
without ever testing a method's name, so a method *declares* its needs as data
(:class:`MethodNeeds`) before anything is built, and the loop and
:class:`~radpair.data.pairs.PairDataset` provide them:

* **text fields** (:class:`TextField`): named tokenised inputs, each with its own section
  policy, length and empty-text rule. A field named ``report`` is served as
  ``input_ids``/``attention_mask``; any other as ``<name>_input_ids``/``<name>_attention_mask``
  (:func:`text_keys`). Token ids always carry the tokenizer's specials, so a decoder reads
  ``[CLS]`` as BOS and ``[SEP]`` as EOS.
* **labels** (:class:`LabelNeed`): either binary columns (``labels``/``label_mask`` [B, C]),
  or a task from :mod:`radpair.tasks` with its schema (an ordinal task gives ``labels``
  [B] class codes and ``label_mask`` [B] bool), optionally capped to a fraction of rows.
* **row codes**: ``study_code``, ``patient_code``, ``report_code`` (normalised report text),
  dataset-wide integer codes for false-negative masks and false-pair draws.
* **extra rows** (:class:`ExtraRows`): one partner row per training row, a pure function of
  (seed, epoch) over the phase's rows, served under a prefix (``impostor_images``, ...), so
  exact resume still holds.
* **phases** (:class:`Phase`): a row filter, an epoch count and the loss terms of each
  phase; the loop calls :meth:`Method.begin_phase` whenever a phase starts or is resumed.
* **a setup hook**: :meth:`Method.setup` receives :class:`DatasetStats` (row and class
  counts) before the optimiser is built, e.g. for class-count weights.
* **exports**: :meth:`Method.exports` names the modules written as ``<name>.safetensors``.

Each method is one module in :mod:`radpair.methods` with its config dataclass (a subclass
of :class:`MethodConfig`, so unknown keys get did-you-mean errors) and its registration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
from torch import nn

from radpair.errors import ConfigError, unknown_choice_message
from radpair.registry import Registry

PHASE_ROWS = ("all", "labelled")
EMPTY_TEXT_RULES = ("drop", "keep", "error")


@dataclass
class MethodConfig:
    """Base of every method's config: ``name`` picks the method, the rest is the method's.

    ``method:`` in a run's YAML is read into the registered method's own dataclass
    (:func:`resolve_method_config`), so each method documents and checks its own keys.
    """

    name: str = "convirt"

    def validate(self) -> None:
        pass

    @classmethod
    def from_mapping(cls, value: Any, prefix: str) -> "MethodConfig":
        """How :func:`radpair.config.from_dict` reads a field typed ``MethodConfig``."""
        return resolve_method_config(value, prefix)


def _unit(key: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{key} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class TextField:
    """One tokenised text input of a method.

    ``sections`` is a section policy of :func:`radpair.reports.select_sections` (``full``,
    ``findings``, ``impression``, ``findings+impression``, ...); ``None`` takes the run's
    ``data.text_sections``. ``max_length`` ``None`` takes ``text_encoder.max_length``;
    ``empty_text`` ``None`` takes ``data.empty_text``.
    """

    name: str = "report"
    sections: str | None = None
    max_length: int | None = None
    empty_text: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ConfigError(f"text field name {self.name!r} must be lower-case letters, digits and _")
        if self.empty_text is not None and self.empty_text not in EMPTY_TEXT_RULES:
            raise ConfigError(unknown_choice_message("empty_text", self.empty_text, EMPTY_TEXT_RULES))


def text_keys(name: str) -> tuple[str, str]:
    """Batch keys of text field ``name``: (ids, attention mask)."""
    if name == "report":
        return "input_ids", "attention_mask"
    return f"{name}_input_ids", f"{name}_attention_mask"


@dataclass(frozen=True)
class LabelNeed:
    """The labels a method trains on.

    Either ``columns`` (binary columns read from ``data.label_source`` with
    ``data.uncertain``, served as [B, C] ``labels``/``label_mask``), or ``task`` (a task of
    :mod:`radpair.tasks`, read from ``source`` under the task's schema for that source;
    ``blank`` overrides the schema's blank policy, e.g. ``ignore`` so that a report that
    grades nothing is *unlabelled*). ``max_fraction`` keeps labels on at most that share of
    the rows (a seeded draw; the rest become unlabelled), the labelled/unlabelled split of
    semi-supervised methods. ``required`` is False when unlabelled rows are expected.
    """

    columns: tuple[str, ...] = ()
    task: str | None = None
    source: str = "truth"
    blank: str | None = None
    max_fraction: float | None = None
    fraction_seed: int = 0
    required: bool = True

    def __post_init__(self) -> None:
        if bool(self.columns) == bool(self.task):
            raise ConfigError("a method's labels name either binary columns or one task, not both or neither")
        if self.max_fraction is not None:
            _unit("labels max_fraction", self.max_fraction)


Draw = Callable[[int, int, np.ndarray, Any], np.ndarray]
"""``draw(seed, epoch, rows, dataset) -> partner``: for the phase's ``rows`` (dataset
positions), the position *within rows* of each row's partner. Must be a pure function of
its arguments (no global RNG)."""


@dataclass(frozen=True)
class ExtraRows:
    """One extra row per training row (an impostor, a false pair), read under ``prefix``."""

    prefix: str
    draw: Draw
    images: bool = True
    text: bool = True


@dataclass(frozen=True)
class Phase:
    """A stretch of training: which rows (``all`` or ``labelled``), how many epochs, which
    loss terms the method switches on (names the method understands)."""

    name: str
    epochs: int
    rows: str = "all"
    terms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.rows not in PHASE_ROWS:
            raise ConfigError(unknown_choice_message(f"phase {self.name!r} rows", self.rows, PHASE_ROWS))
        if self.epochs < 0:
            raise ConfigError(f"phase {self.name!r}: epochs must be >= 0, got {self.epochs}")


@dataclass(frozen=True)
class MethodNeeds:
    """Everything the loop must provide to a method, declared before anything is built.

    ``require_sections`` drops rows whose report lacks any of these sections (listed in
    ``dropped_rows.csv`` with the reason), e.g. the section study keeps only reports with
    both FINDINGS and IMPRESSION for all of its models. Empty ``phases`` means one phase of
    ``train.epochs`` over all rows.
    """

    text_fields: tuple[TextField, ...] = ()
    labels: LabelNeed | None = None
    row_codes: bool = False
    extra_rows: ExtraRows | None = None
    phases: tuple[Phase, ...] = ()
    require_sections: tuple[str, ...] = ()
    text_encoder: bool = True
    """Whether the run's BERT text encoder reads the text fields (so a field may not be
    longer than its positions); False for methods that only *write* text with a decoder of
    their own (RadTex, TieNet)."""

    @property
    def needs_text(self) -> bool:
        return bool(self.text_fields)


@dataclass
class DatasetStats:
    """What :meth:`Method.setup` learns about the training rows.

    ``class_counts``: per label column the count of positives ([C]) for binary columns, or
    per level ([K]) for a categorical task, over labelled rows; ``None`` without labels.
    """

    n_rows: int
    n_labelled: int = 0
    class_counts: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)


@dataclass
class BuildContext:
    """The shared parts a method is built from."""

    image_encoder: Any  # ImageEncoderConfig
    text_encoder: Any  # TextEncoderConfig
    tokenizer: Any = None
    data: Any = None  # DataConfig, for methods whose needs depend on it
    training: bool = False
    """True when the loop builds the method to train it; False when a finished run is
    rebuilt to load its weights (start weights are then absent on purpose), so checks
    that only make sense before training (a frozen encoder needs start weights) are skipped."""


class Method(nn.Module):
    """Base class of a pretraining method: ``forward(batch) -> {"loss", "loss_components", ...}``."""

    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    learns_from_reports: ClassVar[bool] = True
    """False for a baseline that reads labels only (``supervised``): ``radpair demo`` compares
    every registered method that learns from reports (:func:`report_methods`)."""

    @classmethod
    def needs(cls, cfg: MethodConfig) -> MethodNeeds:
        return MethodNeeds()

    @classmethod
    def build(cls, cfg: MethodConfig, parts: BuildContext) -> "Method":
        raise NotImplementedError

    @classmethod
    def schedule_keys(cls, cfg: MethodConfig) -> dict[str, str]:
        """Where a protocol's generic schedule settings go for this method: ``epochs`` (and,
        for methods with a labelled phase, ``labelled_epochs``) as dotted config keys. The
        replicate runner reads paper files through this, never through a method's name."""
        return {"epochs": "train.epochs"}

    def setup(self, stats: DatasetStats) -> None:
        """Called once with the training rows' statistics, before the optimiser exists."""

    def begin_phase(self, phase: Phase) -> None:
        """Called when ``phase`` starts (or a resumed run is inside it)."""
        self.phase = phase

    def exports(self) -> dict[str, nn.Module]:
        """Modules written as ``<name>.safetensors`` at the end of a run."""
        out = {"image_encoder": self.image_encoder}
        text = getattr(self, "text_encoder", None)
        if text is not None:
            out["text_encoder"] = text
        return out


def special_token_ids(tokenizer: Any, method: str) -> tuple[int, int, int]:
    """(pad, bos, eos) of a BERT-style tokenizer for a method that writes text: [PAD], and
    [CLS] / [SEP] read as BOS / EOS (the ids every text field already carries)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bos, eos = tokenizer.cls_token_id, tokenizer.sep_token_id
    if bos is None or eos is None:
        raise ConfigError(f"method {method!r} writes reports and needs a tokenizer with [CLS] (read as BOS) and "
                          "[SEP] (EOS) tokens")
    return int(pad), int(bos), int(eos)


def build_text_tower(parts: BuildContext, method: str):
    """The BERT text encoder every text-reading method builds from ``parts`` (its tokenizer
    sets the vocabulary and padding id)."""
    from radpair.models.text_encoders import build_text_encoder

    tok = parts.tokenizer
    if tok is None:
        raise ConfigError(f"method {method!r} needs a tokenizer (text_encoder.tokenizer)")
    return build_text_encoder(parts.text_encoder, vocab_size=len(tok), pad_token_id=tok.pad_token_id or 0)


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str):
    """Class decorator: register ``cls`` under ``name`` (its config's ``name`` default)."""

    def wrap(cls: type[Method]) -> type[Method]:
        METHODS.register(name)(cls)
        cls.method_name = name
        return cls

    return wrap


def method_class(name: str) -> type[Method]:
    import radpair.methods  # noqa: F401  (registers the built-in methods)

    return METHODS.get(name)


def report_methods() -> list[str]:
    """Every registered method that learns from reports, by name."""
    import radpair.methods  # noqa: F401  (registers the built-in methods)

    return [name for name in METHODS.names() if METHODS.get(name).learns_from_reports]


def resolve_method_config(value: Mapping[str, Any] | MethodConfig | None, prefix: str = "method") -> MethodConfig:
    """Read a ``method:`` mapping into the named method's own config dataclass."""
    from radpair.config import from_dict

    if isinstance(value, MethodConfig):
        cls = method_class(value.name).config_class
        if isinstance(value, cls):
            return value
        value = {k: getattr(value, k) for k in value.__dataclass_fields__}
    data = dict(value or {})
    name = data.get("name", MethodConfig.name)
    if not isinstance(name, str):
        raise ConfigError(f"config key '{prefix}.name': expected a string, got {name!r}")
    cls = method_class(name).config_class
    data.setdefault("name", name)
    if "labels" in data and "labels" not in cls.__dataclass_fields__ and not data["labels"]:
        # runs written before the method contract saved one flat method section with an
        # empty ``labels`` list for every method; it means nothing for a method without it
        del data["labels"]
    return from_dict(cls, data, prefix=prefix)


def method_needs(cfg: MethodConfig) -> MethodNeeds:
    return method_class(cfg.name).needs(cfg)


def build_method(cfg: MethodConfig, parts: BuildContext, stats: DatasetStats | None = None) -> Method:
    """Build the method named by ``cfg`` and run its setup hook when ``stats`` are given."""
    cfg = resolve_method_config(cfg)
    model = method_class(cfg.name).build(cfg, parts)
    if stats is not None:
        model.setup(stats)
    return model


def check_terms(phases: Sequence[Phase], known: Sequence[str], method: str) -> None:
    """Refuse a phase naming a loss term the method does not have."""
    for ph in phases:
        bad = [t for t in ph.terms if t not in known]
        if bad:
            raise ConfigError(f"method {method!r}, phase {ph.name!r}: unknown loss terms {bad} (valid: {list(known)})")

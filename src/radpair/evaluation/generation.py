"""Score generated reports against references: ``radpair evaluate generation``.

>>> from radpair.evaluation.generation import evaluate_generation
>>> result = evaluate_generation("generated.csv", "corpus_dir", out_dir="eval")   # doctest: +SKIP
>>> result.metrics["bleu4"], result.metrics["ce_upos_14_micro_f1"]                  # doctest: +SKIP

Predictions are a CSV (or DataFrame) with ``image_id`` and ``report`` (or ``generated``),
as ``radpair generate`` writes. References are a CSV with ``image_id`` and ``report``, or a
radpair corpus folder, whose report text is cut to ``ref_sections`` (default ``findings``).

**Joining by id, never silently.** A prediction without a reference is an error naming the
reference source and a few ids: scoring the rest would quietly change the test set.
References without a prediction are normal (a corpus holds every split) and are counted
and listed in the result. Empty generated reports are kept and scored as empty (a model
that says nothing must be penalised, not skipped). References that are empty after section
selection cannot be scored against; they are excluded, counted and listed
(``empty_references="error"`` refuses them instead).

The metrics and their definitions are in :mod:`radpair.evaluation.report_metrics`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from radpair.errors import ConfigError, DataError
from radpair.evaluation.report_metrics import (
    CE_SUBSETS,
    UNCERTAIN_POLICIES,
    GenerationDifference,
    ReportScores,
    bootstrap_intervals,
    chexpert_labeler,
    compare_generation,
    default_metrics,
    label_reports,
    meteor_is_aggregate,
    score_reports,
)

TEXT_COLUMNS = ("report", "generated")
GROUP_COLUMNS = ("patient_id", "study_id")
METRICS_FILE, PER_REPORT_FILE, MARKDOWN_FILE = "generation_metrics.json", "per_report.csv", "generation_metrics.md"
_SHOW_IDS = 5
_LABELS = {"bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4", "rougeL": "ROUGE-L",
           "cider": "CIDEr-D", "meteor": "METEOR"}


def metric_label(name: str) -> str:
    if name in _LABELS:
        return _LABELS[name]
    if name.startswith("ce_"):
        _, pol, subset, avg, stat = name.split("_", 4)
        return f"CE {avg} {stat.upper() if stat == 'f1' else stat} ({subset} obs, uncertain={'pos' if pol == 'upos' else 'neg'})"
    return name


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.3f}"


# ---- inputs -------------------------------------------------------------------------------------
def _source_name(obj: Any, what: str) -> str:
    return str(obj) if isinstance(obj, (str, Path)) else f"<{what} DataFrame>"


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{what} file {str(path)!r} does not exist")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read {what} CSV: {exc}") from None


def _text_column(df: pd.DataFrame, name: str, choices: Sequence[str]) -> str:
    present = [c for c in choices if c in df.columns]
    if not present:
        raise DataError(f"{name}: no text column; expected one of {list(choices)} (found {list(df.columns)})")
    if len(present) > 1:
        raise DataError(f"{name}: both {present} present; keep one text column")
    return present[0]


def _check_ids(df: pd.DataFrame, id_column: str, name: str) -> pd.Series:
    if id_column not in df.columns:
        raise DataError(f"{name}: no id column {id_column!r} (found {list(df.columns)})")
    ids = df[id_column].astype(str).str.strip()
    blank = ids.eq("") | df[id_column].isna()
    if blank.any():
        raise DataError(f"{name}: {int(blank.sum())} rows without an {id_column} (first at row {int(blank.idxmax())})")
    dup = ids[ids.duplicated(keep=False)]
    if not dup.empty:
        raise DataError(f"{name}: {dup.nunique()} {id_column} values appear more than once "
                        f"(e.g. {sorted(dup.unique())[:_SHOW_IDS]}); one report per id")
    return ids


def load_predictions(pred: pd.DataFrame | str | Path, id_column: str = "image_id") -> pd.DataFrame:
    """``id, text`` of the generated reports (missing text = empty report)."""
    name = _source_name(pred, "predictions")
    df = pred.copy() if isinstance(pred, pd.DataFrame) else _read_csv(Path(pred), "predictions")
    col = _text_column(df, name, TEXT_COLUMNS)
    ids = _check_ids(df, id_column, name)
    text = df[col].where(df[col].notna(), "").astype(str)
    return pd.DataFrame({"id": ids.to_numpy(), "text": text.to_numpy()})


def load_references(ref: pd.DataFrame | str | Path, id_column: str = "image_id", sections: str | None = None
                    ) -> tuple[pd.DataFrame, str, str]:
    """``id, text[, patient_id, study_id]`` of the references, the source name and section policy used.

    A corpus folder defaults to ``findings``; a CSV or DataFrame to its text as given
    (``full``), since a file of already-extracted findings has no FINDINGS header to find.
    """
    name = _source_name(ref, "references")
    if isinstance(ref, pd.DataFrame):
        df, default = ref.copy(), "full"
    else:
        path = Path(ref)
        if path.is_dir():
            from radpair.data.corpus import Corpus

            corpus = Corpus.open(path)
            df = corpus.index.copy()
            name = f"{path} ({'index.csv'})"
            default = "findings"
        else:
            df, default = _read_csv(path, "references"), "full"
    policy = sections or default
    col = _text_column(df, name, ("report",))
    ids = _check_ids(df, id_column, name)
    raw = df[col].where(df[col].notna(), "").astype(str).tolist()
    if policy == "full":
        text = raw
    else:
        from radpair.reports import select_sections

        cache: dict[str, str] = {}
        text = []
        for t in raw:  # the views of a study share one report: select each distinct text once
            if t not in cache:
                cache[t] = select_sections(t, policy)
            text.append(cache[t])
    out = pd.DataFrame({"id": ids.to_numpy(), "text": text})
    for g in GROUP_COLUMNS:
        if g in df.columns:
            out[g] = df[g].astype(str).to_numpy()
    return out, name, policy


def _join(pred: pd.DataFrame, refs: pd.DataFrame, pred_name: str, ref_name: str) -> tuple[pd.DataFrame, list[str]]:
    known = set(refs["id"])
    missing = [i for i in pred["id"] if i not in known]
    if missing:
        raise DataError(f"{ref_name}: no reference for {len(missing)} of {len(pred)} predictions of {pred_name} "
                        f"(e.g. {missing[:_SHOW_IDS]}); check --ref and the id column")
    wanted = set(pred["id"])
    extra = [i for i in refs["id"] if i not in wanted]
    joined = pred.merge(refs.rename(columns={"text": "reference"}), on="id", how="left", validate="one_to_one")
    return joined, extra


# ---- result -------------------------------------------------------------------------------------
@dataclass
class GenerationResult:
    """Corpus metrics with bootstrap intervals, the per-report table, and what was left out."""

    pred: str
    ref: str
    ref_sections: str
    n_reports: int
    n_empty_generated: int
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    per_report: pd.DataFrame = field(repr=False)
    clinical_efficacy: dict[str, Any] | None = None
    meteor_reason: str | None = None
    ce_reason: str | None = None
    excluded_empty_references: list[str] = field(default_factory=list)
    unscored_references: list[str] = field(default_factory=list)
    n_bootstrap: int = 0
    seed: int = 0
    resampling_unit: str = "report"
    compare: str | None = None
    compare_metrics: dict[str, float] | None = None
    differences: list[GenerationDifference] = field(default_factory=list)
    labeler: dict[str, Any] | None = None
    command: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from radpair.evaluation.report_metrics import MACRO_RULE, tokenize

        def ci(m: str) -> list[float | None] | None:
            if m not in self.intervals:
                return None
            lo, hi = self.intervals[m]
            return [_jf(lo), _jf(hi)]

        return {
            "kind": "generation",
            "pred": self.pred,
            "ref": self.ref,
            "ref_sections": self.ref_sections,
            "n_reports": self.n_reports,
            "n_empty_generated": self.n_empty_generated,
            "metrics": {k: _jf(v) for k, v in self.metrics.items()},
            "intervals": {k: ci(k) for k in self.intervals},
            "bootstrap": {"n_bootstrap": self.n_bootstrap, "seed": self.seed, "unit": self.resampling_unit,
                          "confidence": 0.95},
            "meteor": None if self.meteor_reason is None else {"score": None, "reason": self.meteor_reason},
            "meteor_reason": self.meteor_reason,
            "clinical_efficacy": self.clinical_efficacy,
            "clinical_efficacy_reason": self.ce_reason,
            "labeler": self.labeler,
            "macro_rule": MACRO_RULE,
            "tokenisation": tokenize.__doc__.strip().splitlines()[0] if tokenize.__doc__ else "",
            "excluded_empty_references": {"count": len(self.excluded_empty_references),
                                          "ids": self.excluded_empty_references},
            "unscored_references": {"count": len(self.unscored_references),
                                    "ids_sample": self.unscored_references[:20]},
            "compare": None if self.compare is None else {
                "other": self.compare,
                "other_metrics": {k: _jf(v) for k, v in (self.compare_metrics or {}).items()},
                "differences": [d.to_dict() for d in self.differences],
                "direction": "pred - other",
            },
            "command": self.command,
            "notes": list(self.notes),
        }

    def to_markdown(self) -> str:
        lines = [f"# Report generation: {self.pred}", "",
                 f"{self.n_reports} reports against {self.ref} (reference sections: {self.ref_sections}); "
                 f"{self.n_empty_generated} generated reports empty (scored as empty). 95% bootstrap intervals, "
                 f"{self.n_bootstrap} replicates resampling {_plural(self.resampling_unit)}, seed {self.seed}.", ""]
        lines += ["| metric | value | 95% CI |", "|---|---|---|"]
        for m in [*default_metrics(self.per_report)] + (["meteor"] if "meteor" not in self.per_report.columns else []):
            if m == "meteor" and self.meteor_reason is not None:
                lines.append(f"| METEOR | – | not computed: {self.meteor_reason} |")
                continue
            lo, hi = self.intervals.get(m, (math.nan, math.nan))
            interval = f"[{_fmt(lo)}, {_fmt(hi)}]" if self.n_bootstrap else "–"
            if m == "meteor" and not meteor_is_aggregate(self.per_report):
                interval += " (mean segment score)"
            lines.append(f"| {metric_label(m)} | {_fmt(self.metrics.get(m))} | {interval} |")
        if self.clinical_efficacy is not None:
            lines += ["", "Clinical efficacy (CheXpert labeler on both texts; positive class; blank = negative):", "",
                      "| uncertain | observations | micro P | micro R | micro F1 | macro P | macro R | macro F1 | "
                      "macro over |", "|---|---|---|---|---|---|---|---|---|"]
            excluded = self.clinical_efficacy["policies"]["upos"]["sets"]["14"]["macro"]["excluded"]
            for pol in UNCERTAIN_POLICIES:
                for subset in CE_SUBSETS:
                    s = self.clinical_efficacy["policies"][pol]["sets"][subset]
                    mi, ma = s["micro"], s["macro"]
                    over = f"{ma['n_scored']} of {ma['n_scored'] + len(ma['excluded'])}"
                    lines.append(f"| {'positive' if pol == 'upos' else 'negative'} | "
                                 f"{'all 14' if subset == '14' else 'common 5'} | {_fmt(mi['precision'])} | "
                                 f"{_fmt(mi['recall'])} | {_fmt(mi['f1'])} | {_fmt(ma['precision'])} | "
                                 f"{_fmt(ma['recall'])} | {_fmt(ma['f1'])} | {over} |")
            lines += ["", "Macro averages leave out observations positive in neither the references nor the generated "
                      "reports" + (f" (uncertain=pos: {', '.join(excluded)})." if excluded else ".")]
        elif self.ce_reason:
            lines += ["", f"Clinical efficacy not computed: {self.ce_reason}."]
        if self.differences:
            lines += ["", f"Paired differences, {self.pred} − {self.compare} (same references, same bootstrap draws):",
                      "", "| metric | pred | other | difference | 95% CI | p |", "|---|---|---|---|---|---|"]
            for d in self.differences:
                star = " *" if d.significant else ""
                label = metric_label(d.metric) + (" (mean segment)" if d.basis == "mean segment" else "")
                lines.append(f"| {label} | {_fmt(d.a)} | {_fmt(d.b)} | {d.diff:+.3f}{star} | "
                             f"[{_fmt(d.ci_low)}, {_fmt(d.ci_high)}] | {_fmt(d.p_value)} |")
        notes = list(self.notes)
        if self.excluded_empty_references:
            notes.append(f"{len(self.excluded_empty_references)} predictions not scored because their reference is "
                         f"empty under '{self.ref_sections}' (e.g. {self.excluded_empty_references[:_SHOW_IDS]}).")
        if self.unscored_references:
            notes.append(f"{len(self.unscored_references)} references have no prediction "
                         f"(e.g. {self.unscored_references[:_SHOW_IDS]}).")
        if notes:
            lines += [""] + [f"Note: {n}" for n in notes]
        return "\n".join(lines) + "\n"

    def save(self, out: str | Path) -> dict[str, Path]:
        """``generation_metrics.json`` (strict JSON), ``per_report.csv`` and ``generation_metrics.md``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / METRICS_FILE, "per_report": out / PER_REPORT_FILE, "markdown": out / MARKDOWN_FILE}
        paths["json"].write_text(json.dumps(_json_safe(self.to_dict()), indent=2, allow_nan=False) + "\n")
        self.per_report.to_csv(paths["per_report"], index=False)
        paths["markdown"].write_text(self.to_markdown())
        return paths


def _plural(unit: str) -> str:
    return {"study": "studies", "patient": "patients", "report": "reports"}.get(unit, f"{unit} groups")


def _jf(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---- API ----------------------------------------------------------------------------------------
def evaluate_generation(
    pred: pd.DataFrame | str | Path,
    ref: pd.DataFrame | str | Path,
    *,
    id_column: str = "image_id",
    ref_sections: str | None = None,
    out_dir: str | Path | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    compare: pd.DataFrame | str | Path | None = None,
    meteor: bool | str = "auto",
    meteor_timeout: float = 600.0,
    labeler=None,
    group_column: str | None = "auto",
    empty_references: str = "exclude",
    progress: bool = False,
) -> GenerationResult:
    """Score ``pred`` against ``ref`` (and optionally ``compare`` against the same references).

    ``group_column="auto"`` resamples patients when the references carry ``patient_id``,
    else studies (``study_id``), else single reports; ``None`` forces single reports.
    ``meteor``: ``"auto"`` (Java if present) or ``False``. Bootstrap draws come from their
    own generator seeded with ``seed``.
    """
    if n_bootstrap < 0:
        raise ConfigError(f"bootstrap replicates must be >= 0, got {n_bootstrap}")
    if empty_references not in ("exclude", "error"):
        raise ConfigError(f"empty_references must be 'exclude' or 'error', got {empty_references!r}")
    pred_name = _source_name(pred, "predictions")
    predictions = load_predictions(pred, id_column)
    refs, ref_name, policy = load_references(ref, id_column, ref_sections)
    if predictions.empty:
        raise DataError(f"{pred_name}: no predictions")
    joined, extra = _join(predictions, refs, pred_name, ref_name)

    from radpair.evaluation.report_metrics import tokenize

    empty_ref = [not tokenize(t) for t in joined["reference"]]
    excluded = joined.loc[empty_ref, "id"].tolist()
    if excluded and empty_references == "error":
        raise DataError(f"{ref_name}: {len(excluded)} references are empty under section policy {policy!r} "
                        f"(e.g. {excluded[:_SHOW_IDS]})")
    joined = joined.loc[[not e for e in empty_ref]].reset_index(drop=True)
    if joined.empty:
        raise DataError(f"{ref_name}: every reference of the {len(predictions)} predictions is empty under section "
                        f"policy {policy!r}; choose another --ref-sections")

    other = None
    if compare is not None:
        other_name = _source_name(compare, "comparison predictions")
        other = load_predictions(compare, id_column)
        a_ids, b_ids = set(predictions["id"]), set(other["id"])
        if a_ids != b_ids:
            only_a, only_b = sorted(a_ids - b_ids), sorted(b_ids - a_ids)
            raise DataError(f"{other_name}: a paired comparison needs the same ids as {pred_name}; "
                            f"{len(only_a)} only in pred (e.g. {only_a[:_SHOW_IDS]}), "
                            f"{len(only_b)} only in the other (e.g. {only_b[:_SHOW_IDS]})")
        other = other.set_index("id").loc[joined["id"]].reset_index()

    groups, unit = None, "report"
    if group_column == "auto":
        group_column = next((g for g in GROUP_COLUMNS if g in joined.columns), None)
    if group_column is not None:
        if group_column not in joined.columns:
            raise ConfigError(f"{ref_name}: no group column {group_column!r} for the bootstrap")
        groups = joined[group_column].to_numpy()
        unit = {"patient_id": "patient", "study_id": "study"}.get(group_column, group_column)

    lab, lab_info, ref_labels = labeler, None, None
    try:
        lab = lab if lab is not None else chexpert_labeler()
        lab_info = lab.describe()
        ref_labels = label_reports(joined["reference"].tolist(), lab, progress, "references")
    except ConfigError as exc:  # ResourceMissing: the phrase lists are not installed here
        from radpair.errors import ResourceMissing

        if not isinstance(exc, ResourceMissing):
            raise
        lab = None
    clinical = lab is not None
    scores: ReportScores = score_reports(joined["text"].tolist(), joined["reference"].tolist(), joined["id"].tolist(),
                                         meteor=meteor, meteor_timeout=meteor_timeout, labeler=lab,
                                         clinical=clinical, reference_labels=ref_labels, progress=progress)
    ce_reason = scores.ce_reason if clinical else "CheXpert labeler unavailable (phrase lists not found)"

    from radpair.evaluation.paired import BootstrapDraws

    draws = BootstrapDraws.draw(groups, n_bootstrap, seed, n_images=len(joined))
    per = scores.per_report.copy()
    per.insert(1, "generated", joined["text"].to_numpy())
    per.insert(2, "reference", joined["reference"].to_numpy())
    if groups is not None:
        per.insert(1, group_column, groups)
    names = default_metrics(scores.per_report)
    intervals = bootstrap_intervals(scores.per_report, draws, names) if n_bootstrap else {}

    result = GenerationResult(
        pred=pred_name, ref=ref_name, ref_sections=policy, n_reports=len(joined),
        n_empty_generated=int(sum(not str(t).strip() for t in joined["text"])), metrics=scores.metrics,
        intervals=intervals, per_report=per, clinical_efficacy=scores.clinical_efficacy,
        meteor_reason=scores.meteor_reason, ce_reason=None if scores.clinical_efficacy is not None else ce_reason,
        excluded_empty_references=excluded, unscored_references=extra, n_bootstrap=n_bootstrap, seed=seed,
        resampling_unit=unit, labeler=lab_info, notes=list(scores.notes),
    )
    if other is not None:
        scores_b = score_reports(other["text"].tolist(), joined["reference"].tolist(), joined["id"].tolist(),
                                 meteor=meteor if scores.meteor_reason is None else False,
                                 meteor_timeout=meteor_timeout, labeler=lab, clinical=clinical,
                                 reference_labels=ref_labels, progress=progress)
        result.compare = other_name
        result.compare_metrics = scores_b.metrics
        result.notes += [f"Compared system ({other_name}): {n}" for n in scores_b.notes]
        result.differences = compare_generation(scores.per_report, scores_b.per_report, draws=draws)
    if out_dir is not None:
        result.save(out_dir)
    return result


def iu_xray_sanity(data_dir: str | Path, *, split: str = "test", n_bootstrap: int = 200, seed: int = 0,
                   meteor: bool | str = "auto") -> GenerationResult:
    """IMPRESSION scored as if generated against FINDINGS, on the IU X-ray R2Gen split.

    A rerunnable number for the docs: real reports, no model, so any change in the metric
    code shows up as a change here. Studies lacking either section are left out (listed).
    """
    root = Path(data_dir)
    reports_path, split_path = root / "indiana_reports.csv", root / "r2gen_split.csv"
    for p in (reports_path, split_path):
        if not p.is_file():
            raise DataError(f"IU X-ray file {p} not found (expected indiana_reports.csv and r2gen_split.csv)")
    reports = pd.read_csv(reports_path, dtype=str, keep_default_na=False)
    splits = pd.read_csv(split_path, dtype=str, keep_default_na=False)
    if split not in set(splits["split"]):
        raise DataError(f"{split_path}: no split {split!r} (splits: {sorted(set(splits['split']))})")
    uids = splits.loc[splits["split"] == split, "study_id"].str.extract(r"^CXR(\d+)_", expand=False)
    if uids.isna().any():
        raise DataError(f"{split_path}: study ids not of the form CXR<uid>_IM-xxxx: {splits['study_id'][uids.isna()].head(3).tolist()}")
    sub = reports.set_index("uid").reindex(uids.tolist())
    sub = sub[(sub["findings"].str.strip() != "") & (sub["impression"].str.strip() != "")
              & sub["findings"].notna() & sub["impression"].notna()]
    ids = sub.index.astype(str)
    pred = pd.DataFrame({"image_id": ids, "report": sub["impression"].to_numpy()})
    ref = pd.DataFrame({"image_id": ids, "report": sub["findings"].to_numpy(), "study_id": ids})
    result = evaluate_generation(pred, ref, n_bootstrap=n_bootstrap, seed=seed, meteor=meteor)
    result.pred = f"IU X-ray {split} IMPRESSION (as generated)"
    result.ref = f"IU X-ray {split} FINDINGS ({reports_path.name}, {split_path.name})"
    return result

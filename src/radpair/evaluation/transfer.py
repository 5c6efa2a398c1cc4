"""Label efficiency: test AUC of linear probes as a function of the number of labels.

The headline experiment of radpair: for each encoder, for N in (10, 100, 1000, all) and
several random subsets per N, fit a :class:`LinearProbe` on N labelled training images
and score the fixed test set. Results of models trained elsewhere (e.g. a supervised
network trained from scratch on the same N) enter the same table via
:meth:`LabelEfficiencyResult.add_external`, so one page compares everything.

Two kinds of uncertainty are kept apart, because they answer different questions:

* ``ci_low``/``ci_high`` of a :class:`Summary`: variability over which N images were
  labelled (a t-interval of the mean over repeats). With a single run (e.g. N = all)
  this falls back to that run's patient-bootstrap interval; ``ci_kind`` says which.
* ``test_ci_low``/``test_ci_high``: test-set sampling (patient bootstrap), averaged
  over repeats.

All runs use the same subsets across encoders and the same bootstrap seed, so methods
are compared on identical data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from radpair.errors import DataError
from radpair.evaluation.metrics import (
    ClassificationMetrics,
    LabelPolicy,
    MaskedLabels,
    json_float,
    apply_label_policy,
    class_names_for,
    evaluate_classification,
)
from radpair.evaluation.probe import ClassFit, CSelection, FitStatus, LinearProbe, ProbeConfig
from radpair.evaluation.sampling import ALL, NLabels, draw_subsets, n_labels_key, n_labels_sort_key, parse_n_labels


class RunSource(str, Enum):
    LINEAR_PROBE = "linear_probe"
    EXTERNAL = "external"


class CIKind(str, Enum):
    ACROSS_REPEATS = "across_repeats"
    PATIENT_BOOTSTRAP = "patient_bootstrap"
    NONE = "none"


@dataclass
class RunRecord:
    """One (method, N, repeat) evaluation on the test set."""

    method: str
    n: NLabels
    repeat: int
    source: RunSource
    metrics: ClassificationMetrics
    n_labelled: int | None = None
    subset_seed: int | None = None
    probe_fits: list[ClassFit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n": n_labels_key(self.n),
            "repeat": self.repeat,
            "source": self.source.value,
            "n_labelled": self.n_labelled,
            "subset_seed": self.subset_seed,
            "metrics": self.metrics.to_dict(),
            "probe_fits": [f.to_dict() for f in self.probe_fits],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunRecord":
        fits = [
            ClassFit(
                name=f["name"],
                status=FitStatus(f["status"]),
                c=f["c"],
                c_selection=CSelection(f["c_selection"]),
                n_labelled=int(f["n_labelled"]),
                n_positive=int(f["n_positive"]),
                prior=float(f["prior"]),
                cv_auc=f.get("cv_auc"),
                converged=bool(f.get("converged", True)),
                note=f.get("note", ""),
            )
            for f in d.get("probe_fits", [])
        ]
        return cls(
            method=d["method"],
            n=parse_n_labels(d["n"]),
            repeat=int(d["repeat"]),
            source=RunSource(d["source"]),
            metrics=ClassificationMetrics.from_dict(d["metrics"]),
            n_labelled=d.get("n_labelled"),
            subset_seed=d.get("subset_seed"),
            probe_fits=fits,
        )


@dataclass(frozen=True)
class Summary:
    """Aggregate of the repeats of one (method, N)."""

    method: str
    n: NLabels
    n_repeats: int
    macro_mean: float
    macro_std: float
    ci_low: float
    ci_high: float
    ci_kind: CIKind
    test_ci_low: float
    test_ci_high: float
    per_class_mean: dict[str, float]
    n_labelled_mean: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n": n_labels_key(self.n),
            "n_repeats": self.n_repeats,
            "macro_mean": json_float(self.macro_mean),
            "macro_std": json_float(self.macro_std),
            "ci_low": json_float(self.ci_low),
            "ci_high": json_float(self.ci_high),
            "ci_kind": self.ci_kind.value,
            "test_ci_low": json_float(self.test_ci_low),
            "test_ci_high": json_float(self.test_ci_high),
            "per_class_mean": {k: json_float(v) for k, v in self.per_class_mean.items()},
            "n_labelled_mean": json_float(self.n_labelled_mean),
        }


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    return float(arr.mean()) if arr.size else float("nan")


@dataclass
class _TestSet:
    labels: MaskedLabels
    groups: np.ndarray | None


@dataclass
class LabelEfficiencyResult:
    """All runs of a label-efficiency study plus their per-(method, N) summaries.

    Keeps the test labels (not serialised) so :meth:`add_external` can score outside
    predictions exactly like the probes. A result loaded with :meth:`from_dict` has no
    test labels and only supports reading.
    """

    class_names: list[str]
    n_values: list[NLabels] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    _test: _TestSet | None = field(default=None, repr=False)

    # ---- construction -------------------------------------------------------------
    @classmethod
    def for_test_set(
        cls,
        test_Y: Any,
        test_groups: Any,
        class_names: Sequence[str] | None = None,
        policy: LabelPolicy = LabelPolicy(),
        n_bootstrap: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
    ) -> "LabelEfficiencyResult":
        """An empty result bound to a test set, e.g. to collect external runs only."""
        labels = apply_label_policy(test_Y, policy)
        names = class_names_for(labels.n_classes, class_names)
        groups = None if test_groups is None else np.asarray(test_groups)
        if groups is not None and groups.shape != (labels.values.shape[0],):
            raise DataError(f"test_groups must be (N_test,) = ({labels.values.shape[0]},); got {groups.shape}")
        settings = {
            "seed": int(seed),
            "n_bootstrap": int(n_bootstrap),
            "confidence": float(confidence),
            "label_policy": {"uncertain": policy.uncertain.value, "blank": policy.blank.value},
            "n_test": int(labels.values.shape[0]),
        }
        return cls(class_names=names, settings=settings, _test=_TestSet(labels, groups))

    def score(self, probs: Any) -> ClassificationMetrics:
        """Metrics of test-set probabilities (N_test, C) with this study's settings."""
        if self._test is None:
            raise DataError("this result has no test labels attached (loaded from JSON?); cannot score")
        return evaluate_classification(
            self._test.labels,
            probs,
            groups=self._test.groups,
            class_names=self.class_names,
            n_bootstrap=int(self.settings.get("n_bootstrap", 1000)),
            confidence=float(self.settings.get("confidence", 0.95)),
            seed=int(self.settings.get("seed", 0)),
        )

    def _add(self, run: RunRecord) -> RunRecord:
        if any(r.method == run.method and r.n == run.n and r.repeat == run.repeat for r in self.runs):
            raise DataError(f"run ({run.method!r}, N={n_labels_key(run.n)}, repeat {run.repeat}) is already in the result")
        if run.n not in self.n_values:
            self.n_values = sorted([*self.n_values, run.n], key=n_labels_sort_key)
        self.runs.append(run)
        return run

    def add_external(self, name: str, n: Any, repeat: int, probs: Any, n_labelled: int | None = None) -> RunRecord:
        """Score predictions made elsewhere (e.g. a from-scratch supervised model trained
        on ``n`` labels) on this test set, and file them next to the probes."""
        n = parse_n_labels(n)
        if n_labelled is None and n != ALL:
            n_labelled = int(n)
        run = RunRecord(name, n, int(repeat), RunSource.EXTERNAL, self.score(probs), n_labelled)
        return self._add(run)

    # ---- reading ------------------------------------------------------------------
    @property
    def methods(self) -> list[str]:
        """Method names in the order they were first added."""
        return list(dict.fromkeys(r.method for r in self.runs))

    def runs_for(self, method: str, n: Any) -> list[RunRecord]:
        n = parse_n_labels(n)
        return sorted((r for r in self.runs if r.method == method and r.n == n), key=lambda r: r.repeat)

    def summary(self, method: str, n: Any) -> Summary:
        runs = self.runs_for(method, n)
        if not runs:
            raise DataError(f"no runs for method {method!r} at N={n_labels_key(parse_n_labels(n))}")
        macros = np.array([r.metrics.macro for r in runs], dtype=float)
        ok = macros[~np.isnan(macros)]
        mean = float(ok.mean()) if ok.size else float("nan")
        std = float(ok.std(ddof=1)) if ok.size > 1 else float("nan")
        conf = float(self.settings.get("confidence", runs[0].metrics.confidence))
        if ok.size > 1:
            half = float(stats.t.ppf(0.5 + conf / 2.0, ok.size - 1)) * std / math.sqrt(ok.size)
            # AUC lives in [0, 1]; a t-interval from few repeats can overshoot it
            lo, hi, kind = max(0.0, mean - half), min(1.0, mean + half), CIKind.ACROSS_REPEATS
        elif ok.size == 1 and not math.isnan(runs[0].metrics.ci_low):
            lo, hi, kind = runs[0].metrics.ci_low, runs[0].metrics.ci_high, CIKind.PATIENT_BOOTSTRAP
        else:
            lo, hi, kind = float("nan"), float("nan"), CIKind.NONE
        labelled = [r.n_labelled for r in runs if r.n_labelled is not None]
        return Summary(
            method=method,
            n=runs[0].n,
            n_repeats=len(runs),
            macro_mean=mean,
            macro_std=std,
            ci_low=lo,
            ci_high=hi,
            ci_kind=kind,
            test_ci_low=_nanmean([r.metrics.ci_low for r in runs]),
            test_ci_high=_nanmean([r.metrics.ci_high for r in runs]),
            per_class_mean={c: _nanmean([r.metrics.per_class.get(c, float("nan")) for r in runs]) for c in self.class_names},
            n_labelled_mean=float(np.mean(labelled)) if labelled else None,
        )

    def summaries(self) -> list[Summary]:
        """One summary per (method, N) that has runs, methods in insertion order."""
        return [self.summary(m, n) for m in self.methods for n in self.n_values if self.runs_for(m, n)]

    # ---- serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (NaN written as null)."""
        return {
            "class_names": list(self.class_names),
            "n_values": [n_labels_key(n) for n in self.n_values],
            "methods": self.methods,
            "settings": self.settings,
            "summaries": [s.to_dict() for s in self.summaries()],
            "runs": [r.to_dict() for r in self.runs],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LabelEfficiencyResult":
        return cls(
            class_names=list(d["class_names"]),
            n_values=[parse_n_labels(n) for n in d["n_values"]],
            runs=[RunRecord.from_dict(r) for r in d["runs"]],
            settings=dict(d.get("settings", {})),
        )

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> "LabelEfficiencyResult":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such results file")
        return cls.from_dict(json.loads(path.read_text()))


def label_efficiency(
    features_by_encoder: Mapping[str, tuple[np.ndarray, np.ndarray]],
    train_Y: Any,
    test_Y: Any,
    test_groups: Any,
    n_values: Sequence[Any] = (10, 100, 1000, ALL),
    repeats: int = 5,
    seed: int = 0,
    *,
    train_groups: Any = None,
    class_names: Sequence[str] | None = None,
    policy: LabelPolicy = LabelPolicy(),
    probe_config: ProbeConfig | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    log: Callable[[str], None] | None = None,
    n_jobs: int = 1,
) -> LabelEfficiencyResult:
    """Probe every encoder at every label budget and score the test set.

    ``n_jobs`` > 1 fits the probes in that many worker processes (joblib); each probe is
    deterministic, so the result is the same as with one.

    ``features_by_encoder`` maps a method name to ``(train_X, test_X)`` feature arrays
    whose rows align with ``train_Y`` / ``test_Y`` (raw 1/0/-1/NaN labels; ``policy``
    decides how -1 and NaN count). ``train_groups`` (patient ids) makes the probe's C
    search patient-grouped. Budgets covering the whole training pool (``"all"``) run
    once, since their repeats would be identical.
    """
    result = LabelEfficiencyResult.for_test_set(
        test_Y, test_groups, class_names, policy=policy, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed
    )
    train = apply_label_policy(train_Y, policy)
    n_train, n_test = train.values.shape[0], result._test.labels.values.shape[0]  # type: ignore[union-attr]
    if train.n_classes != len(result.class_names):
        raise DataError(f"train labels have {train.n_classes} classes, test labels {len(result.class_names)}")
    if train_groups is not None:
        train_groups = np.asarray(train_groups)
        if train_groups.shape != (n_train,):
            raise DataError(f"train_groups must be (N_train,) = ({n_train},); got {train_groups.shape}")
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, pair in features_by_encoder.items():
        if len(pair) != 2:
            raise DataError(f"features for {name!r} must be a (train_X, test_X) pair")
        tr, te = (np.asarray(a) for a in pair)
        features[name] = (tr, te)
        if np.shape(tr)[0] != n_train or np.shape(te)[0] != n_test:
            raise DataError(
                f"features for {name!r}: train {np.shape(tr)} / test {np.shape(te)} rows do not match "
                f"labels ({n_train} train, {n_test} test)"
            )
    cfg = probe_config or ProbeConfig(seed=seed)
    budgets = [parse_n_labels(n) for n in n_values]
    result.n_values = sorted(dict.fromkeys(budgets), key=n_labels_sort_key)
    result.settings.update(
        {
            "repeats": int(repeats),
            "n_train": int(n_train),
            "probe": {
                "default_c": cfg.default_c,
                "c_grid": list(cfg.c_grid),
                "cv_folds": cfg.cv_folds,
                "min_samples_for_cv": cfg.min_samples_for_cv,
                "min_per_fold": cfg.min_per_fold,
                "balanced": cfg.balanced,
            },
        }
    )
    subsets = draw_subsets(train, result.n_values, repeats=repeats, seed=seed)
    tasks = [(name, sub) for name in features for sub in subsets]

    def fit_one(name: str, sub) -> tuple[np.ndarray, list]:
        train_X, test_X = features[name]
        rows = sub.indices
        probe = LinearProbe(cfg, result.class_names).fit(
            train_X[rows], train.values[rows], train.mask[rows], None if train_groups is None else train_groups[rows]
        )
        return probe.predict_proba(test_X), probe.fits

    if n_jobs > 1:
        from joblib import Parallel, delayed

        fitted = Parallel(n_jobs=n_jobs)(delayed(fit_one)(name, sub) for name, sub in tasks)
    else:
        fitted = [fit_one(name, sub) for name, sub in tasks]
    for (name, sub), (probs, fits) in zip(tasks, fitted):
        metrics = result.score(probs)
        result._add(RunRecord(name, sub.n_requested, sub.repeat, RunSource.LINEAR_PROBE, metrics, sub.n_drawn, sub.seed, fits))
        if log is not None:
            log(f"{name} N={n_labels_key(sub.n_requested)} repeat {sub.repeat}: macro AUC {metrics.macro:.3f}")
    return result


__all__ = ["CIKind", "LabelEfficiencyResult", "RunRecord", "RunSource", "Summary", "label_efficiency"]

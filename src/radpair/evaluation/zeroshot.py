"""Zero-shot classification with a joint-embedding run: class prompts instead of labels.

For each class of a binary or multi-label task, a prompt file
(``src/radpair/evaluation/prompts/<name>.yaml`` or a file of your own) lists candidate
prompt sets, each with positive prompts (the finding present) and negative prompts
(absent). A side's prompts are embedded with the run's text encoder and projection,
L2-normalised, averaged and normalised again; an image's score for the class is
``cos(image, positive) - cos(image, negative)``, reported as the probability
``sigmoid(score / temperature)`` with the run's temperature (the two-way softmax over the
two sides, as in training), which orders images exactly as the score does.

**Selection on validate only.** Each class's set is the one with the highest AUC on the
validate split (labels from the task's training-label source, e.g. labels read from the
reports); since a class's score depends on its own set only, this is also the combination
with the highest validation macro AUC. Decision thresholds (for F1 and the other
thresholded metrics) are chosen on the same validation scores. Test labels are read only
after both choices are fixed.

**Test.** The task's test labels (the generator's truth on the synthetic corpus; the
index's labels when the corpus has no ``ground_truth.csv``) are scored with
:func:`radpair.evaluation.taskmetrics.score_task` and patient-bootstrap draws; macro AUC is
also reported against 0.5 (its difference, CI and two-sided bootstrap p).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from radpair.errors import ConfigError, DataError, unknown_choice_message

PROMPTS_DIR = Path(__file__).with_name("prompts")


# ---- prompt files -----------------------------------------------------------------------------
@dataclass
class PromptSet:
    name: str
    positive: list[str]
    negative: list[str]


@dataclass
class PromptFile:
    name: str
    classes: dict[str, list[PromptSet]]
    task: str | None = None
    description: str = ""
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "path": self.path, "description": self.description,
                "classes": {c: [{"name": s.name, "positive": s.positive, "negative": s.negative} for s in sets]
                            for c, sets in self.classes.items()}}


def prompt_names() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: expected a non-empty list of non-empty prompt strings, got {value!r}")
    return [v.strip() for v in value]


def load_prompts(name_or_file: str | Path) -> PromptFile:
    """A built-in prompt file by name (``findings7``) or a YAML file of the same layout."""
    text = str(name_or_file)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"prompt file {text!r} does not exist")
    else:
        path = PROMPTS_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ConfigError(unknown_choice_message("prompt file", text, prompt_names())
                              + "; or pass a YAML file of your own")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"prompt file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict) or not data["classes"]:
        raise ConfigError(f"prompt file {str(path)!r} needs a 'classes' mapping: class -> list of prompt sets")
    unknown = sorted(set(data) - {"task", "description", "classes"})
    if unknown:
        raise ConfigError(f"prompt file {str(path)!r}: unknown keys {unknown} (valid: classes, description, task)")
    classes: dict[str, list[PromptSet]] = {}
    for cls, sets in data["classes"].items():
        where = f"{path}: classes.{cls}"
        if isinstance(sets, dict):
            sets = [sets]
        if not isinstance(sets, list) or not sets:
            raise ConfigError(f"{where}: expected a list of prompt sets (each with positive and negative prompts)")
        parsed, seen = [], set()
        for i, s in enumerate(sets):
            if not isinstance(s, dict):
                raise ConfigError(f"{where}[{i}]: expected a mapping with positive and negative prompts")
            extra = sorted(set(s) - {"name", "positive", "negative"})
            if extra:
                raise ConfigError(f"{where}[{i}]: unknown keys {extra} (valid: name, positive, negative)")
            name = str(s.get("name", f"set{i}"))
            if name in seen:
                raise ConfigError(f"{where}: two prompt sets are named {name!r}")
            seen.add(name)
            parsed.append(PromptSet(name, _strings(s.get("positive"), f"{where}[{i}].positive"),
                                    _strings(s.get("negative"), f"{where}[{i}].negative")))
        classes[str(cls)] = parsed
    return PromptFile(name=path.stem, classes=classes, task=data.get("task"),
                      description=str(data.get("description", "")), path=str(path))


# ---- scores -----------------------------------------------------------------------------------
def prompt_embeddings(run, prompts: PromptFile, classes: Sequence[str], batch_size: int = 256
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class, (S, D) positive and (S, D) negative side embeddings of its S prompt sets."""
    from radpair.evaluation.joint import embed_texts, l2_normalise

    unique = sorted({p for c in classes for s in prompts.classes[c] for p in (*s.positive, *s.negative)})
    emb = embed_texts(run, unique, batch_size=batch_size, sections=False)
    where = {p: i for i, p in enumerate(unique)}

    def side(texts: list[str]) -> np.ndarray:
        return emb[[where[t] for t in texts]].mean(axis=0)

    return {c: (l2_normalise(np.stack([side(s.positive) for s in prompts.classes[c]])),
                l2_normalise(np.stack([side(s.negative) for s in prompts.classes[c]])))
            for c in classes}


def zero_shot_scores(image_emb: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """(N, S) ``cos(image, positive_s) - cos(image, negative_s)`` for normalised embeddings."""
    direction = np.asarray(positive, dtype=np.float64) - np.asarray(negative, dtype=np.float64)
    return np.asarray(image_emb, dtype=np.float64) @ direction.T


def scores_to_probs(scores: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(score / temperature)``: the softmax over (positive, negative) at the run's temperature."""
    from scipy.special import expit

    return expit(np.asarray(scores, dtype=np.float64) / float(temperature))


def choose_prompt_sets(val_scores: dict[str, np.ndarray], y: np.ndarray, mask: np.ndarray,
                       classes: Sequence[str]) -> tuple[dict[str, int], dict[str, list[float]]]:
    """Per class, the index of the set with the highest validation AUC (first on ties), and every
    set's validation AUC. ``val_scores[c]`` is (N, S); ``y``/``mask`` (N, C) in ``classes`` order.
    A class whose validation labels lack a positive or a negative keeps its first set."""
    from radpair.evaluation.scores import roc_auc

    chosen: dict[str, int] = {}
    aucs: dict[str, list[float]] = {}
    for j, c in enumerate(classes):
        m = np.asarray(mask[:, j], dtype=bool)
        yy = np.asarray(y[:, j])[m]
        s = val_scores[c][m]
        if yy.size == 0 or yy.min() == yy.max():
            aucs[c] = [math.nan] * s.shape[1]
            chosen[c] = 0
            continue
        aucs[c] = [float(roc_auc(s[:, k], yy)[0]) for k in range(s.shape[1])]
        chosen[c] = int(np.argmax(aucs[c]))
    return chosen, aucs


# ---- result -----------------------------------------------------------------------------------
@dataclass
class ZeroShotResult:
    run: dict[str, Any]
    corpus: str
    task: dict[str, Any]
    prompts: dict[str, Any]
    chosen: dict[str, str]
    validation: dict[str, Any]
    test: dict[str, Any]
    metrics: Any  # radpair.evaluation.taskmetrics.TaskMetrics
    against_chance: dict[str, Any]
    input_problems: list[str] = field(default_factory=list)
    command: str = ""

    @property
    def macro_auc(self) -> float:
        return float(self.metrics.values["macro_auc"])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "zeroshot", "run": self.run, "corpus": self.corpus, "task": self.task,
                "prompts": self.prompts, "chosen": self.chosen, "validation": self.validation, "test": self.test,
                "metrics": self.metrics.to_dict(), "against_chance": self.against_chance,
                "input_problems": self.input_problems, "command": self.command}

    def to_markdown(self) -> str:
        m = self.metrics
        ci = m.ci.get("macro_auc", (math.nan, math.nan))
        a = self.against_chance
        lines = [f"# Zero-shot {self.task['name']}: {self.run.get('run')}", "",
                 f"Prompts `{self.prompts['name']}`; each class's set chosen on the {self.validation['split']} split "
                 f"({self.validation['n_images']} images, {self.validation['labels']} labels) by AUC; test: "
                 f"{self.test['n_images']} images of {self.test['n_patients']} patients, {self.test['labels']} labels.",
                 "", "| class | prompt set | validate AUC | test AUC [95% CI] |", "|---|---|---|---|"]
        for c in m.class_names:
            val_auc = self.validation["auc"][c][self.validation["chosen_index"][c]]
            val = "–" if not math.isfinite(val_auc) else f"{val_auc:.3f}"
            if c in m.per_class:
                lo, hi = m.per_class_ci.get(c, {}).get("auc", (math.nan, math.nan))
                test = f"{m.per_class[c]['auc']:.3f} [{lo:.3f}, {hi:.3f}]"
            else:
                test = f"not scored ({m.skipped[c].value})" if c in m.skipped else "not scored"
            lines.append(f"| {c} | {self.chosen[c]} | {val} | {test} |")
        lines.append(f"| **macro** | | {self.validation['macro_auc']:.3f} | **{m.values['macro_auc']:.3f}** "
                     f"[{ci[0]:.3f}, {ci[1]:.3f}] |")
        lines += ["", f"Macro AUC against 0.5: {a['difference']:+.3f} [{a['ci'][0]:+.3f}, {a['ci'][1]:+.3f}], "
                      f"p = {a['p_value']:.3g} ({m.n_bootstrap_valid} of {m.n_bootstrap} patient-bootstrap "
                      "replicates)."]
        if "macro_f1" in m.values:
            lines.append(f"Macro F1 at thresholds chosen on validate: {m.values['macro_f1']:.3f}.")
        for p in self.input_problems:
            lines.append(f"\nWarning: the corpus differs from the training images: {p}.")
        return "\n".join(lines) + "\n"

    def save(self, out: str | Path) -> dict[str, Path]:
        from radpair.evaluation.joint import save_result

        return save_result(out, "zeroshot", self.to_dict(), self.to_markdown())


def _rows(corpus, split: str, views: Sequence[str] | None) -> np.ndarray:
    from radpair.tasks import resolve_split

    index = corpus.index
    keep = index["split"].astype(str).to_numpy() == resolve_split(corpus, split)
    if views:
        keep &= index["view"].astype(str).isin(list(views)).to_numpy()
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        raise DataError(f"{corpus.root}: split {split!r} has no images with views {list(views) if views else 'any'}")
    return rows


def _labelled_images(run, corpus, spec, split: str, source: str, views, test: bool, batch_size: int,
                     progress: bool):
    """Rows of ``split`` with a usable ``source`` label, their labels and image embeddings."""
    from radpair.evaluation.joint import embed_images
    from radpair.tasks import task_labels

    rows = _rows(corpus, split, views)
    labels = task_labels(corpus, spec, source, rows, test=test)
    keep = np.flatnonzero(labels.usable_rows)
    if keep.size == 0:
        raise DataError(f"{corpus.root}: no {split} image has a usable {source!r} label for task {spec.name!r}")
    rows, labels = rows[keep], labels.take(keep)
    images = embed_images(run, corpus, corpus.index["image_index"].to_numpy(np.int64)[rows], batch_size, progress)
    return rows, labels, images


def evaluate_zeroshot(
    run,
    corpus,
    *,
    task: str | Path = "findings7",
    prompts: str | Path | PromptFile | None = None,
    val_labels: str | None = None,
    test_labels: str | None = None,
    views: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    tokenizer: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    progress: bool = False,
) -> ZeroShotResult:
    """Zero-shot ``task`` from class prompts: sets and thresholds chosen on validate, scored on test.

    ``prompts``: a prompt file name or path (default: the file named like the task);
    ``val_labels``/``test_labels``: label sources (default: the task's training-label
    source for validate; its test-label source for test, or ``index`` when that is
    ``truth`` and the corpus has no ``ground_truth.csv``); ``views``: default the task's.
    """
    from radpair.evaluation.joint import open_run_and_corpus
    from radpair.evaluation.paired import BootstrapDraws, bootstrap_p_value
    from radpair.evaluation.taskmetrics import choose_thresholds, score_task
    from radpair.tasks import LABEL_SOURCES, load_task

    spec = load_task(task)
    if spec.kind.value not in ("binary", "multilabel"):
        raise ConfigError(f"task {spec.name!r} is {spec.kind.value}; zero-shot prompts score binary and multi-label "
                          "tasks (one positive/negative decision per class)")
    for name, source in (("val_labels", val_labels), ("test_labels", test_labels)):
        if source is not None and source not in LABEL_SOURCES:
            raise ConfigError(unknown_choice_message(f"{name} source", source, LABEL_SOURCES))
    if prompts is None:
        if spec.name not in prompt_names():
            raise ConfigError(f"no built-in prompt file for task {spec.name!r} (built-in: "
                              f"{', '.join(prompt_names())}); pass a prompt file (--prompts FILE)")
        prompts = spec.name
    pf = prompts if isinstance(prompts, PromptFile) else load_prompts(prompts)
    classes = spec.output_columns
    missing = [c for c in classes if c not in pf.classes]
    if missing:
        raise ConfigError(f"prompt file {pf.path or pf.name!r} has no prompts for classes {missing} of task "
                          f"{spec.name!r} (it has {sorted(pf.classes)})")
    if n_bootstrap < 0:
        raise ConfigError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    run, corpus, problems = open_run_and_corpus(run, corpus, tokenizer, device)
    views = list(spec.views) if views is None else list(views)
    temperature = run.temperature
    sides = prompt_embeddings(run, pf, classes, batch_size)

    # 1. validate: choose each class's prompt set and the decision thresholds
    from radpair.tasks import resolve_split

    if resolve_split(corpus, spec.validate_split) == resolve_split(corpus, spec.test_split):
        raise ConfigError(f"task {spec.name!r}: validate_split and test_split are both "
                          f"{resolve_split(corpus, spec.test_split)!r}; prompts would be chosen on the test images")
    val_source = val_labels or spec.train_labels
    val_rows, val, img_val = _labelled_images(run, corpus, spec, spec.validate_split, val_source, views, False,
                                       batch_size, progress)
    val_scores = {c: zero_shot_scores(img_val, *sides[c]) for c in classes}
    chosen, aucs = choose_prompt_sets(val_scores, val.y, val.mask, classes)
    val_probs = np.stack([scores_to_probs(val_scores[c][:, chosen[c]], temperature) for c in classes], axis=1)
    thresholds = choose_thresholds(val.kind, val.y, val.mask, val_probs)
    chosen_aucs = [aucs[c][chosen[c]] for c in classes]
    val_macro = float(np.nanmean(chosen_aucs)) if np.isfinite(chosen_aucs).any() else math.nan

    # 2. test: labels are read only now, after every choice is fixed
    test_source = test_labels or spec.test_labels
    note = ""
    if test_labels is None and test_source == "truth" and corpus.ground_truth is None:
        test_source, note = "index", "the corpus has no ground_truth.csv: test labels from index.csv"
    test_rows, test, img_test = _labelled_images(run, corpus, spec, spec.test_split, test_source, views, True,
                                                 batch_size, progress)
    test_probs = np.stack([scores_to_probs(zero_shot_scores(img_test, *sides[c])[:, chosen[c]], temperature)
                           for c in classes], axis=1)
    patients = corpus.index["patient_id"].astype(str).to_numpy()[test_rows]
    draws = BootstrapDraws.draw(patients, n_bootstrap, seed) if n_bootstrap else None
    metrics = score_task(test.kind, test.y, test.mask, test_probs, classes, thresholds=thresholds, draws=draws,
                         confidence=confidence)
    reps = metrics.replicates.get("macro_auc", np.zeros(0)) - 0.5
    ci = metrics.ci.get("macro_auc", (math.nan, math.nan))
    against = {"chance": 0.5, "difference": metrics.values["macro_auc"] - 0.5, "ci": [ci[0] - 0.5, ci[1] - 0.5],
               "p_value": bootstrap_p_value(reps) if reps.size else math.nan,
               "test": "two-sided patient-bootstrap p of macro AUC = 0.5"}
    return ZeroShotResult(
        run=run.describe(), corpus=str(corpus.root),
        task={"name": spec.name, "kind": spec.kind.value, "views": views, "classes": list(classes)},
        prompts={"name": pf.name, "path": pf.path, "sets": {c: [s.name for s in pf.classes[c]] for c in classes}},
        chosen={c: pf.classes[c][chosen[c]].name for c in classes},
        validation={"split": spec.validate_split, "labels": val_source, "n_images": int(len(val_rows)),
                    "auc": aucs, "chosen_index": chosen, "macro_auc": val_macro,
                    "thresholds": None if thresholds is None else thresholds.to_dict()},
        test={"split": spec.test_split, "labels": test_source, "note": note, "n_images": int(len(test_rows)),
              "n_patients": int(np.unique(patients).size), "n_bootstrap": int(n_bootstrap), "seed": int(seed),
              "temperature": temperature},
        metrics=metrics, against_chance=against, input_problems=problems)


__all__ = ["PROMPTS_DIR", "PromptFile", "PromptSet", "ZeroShotResult", "choose_prompt_sets", "evaluate_zeroshot",
           "load_prompts", "prompt_embeddings", "prompt_names", "scores_to_probs", "zero_shot_scores"]

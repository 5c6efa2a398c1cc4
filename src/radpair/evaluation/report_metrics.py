"""Report-generation metrics that run offline: BLEU-1..4, ROUGE-L, CIDEr-D, METEOR, and
clinical efficacy (CE) from radpair's own CheXpert labeler.

**Why per-report rows.** Two generators evaluated on the same references are correlated
(the same hard studies trip both), so their difference needs a paired bootstrap that
resamples the *same* reports for both. Every metric here is therefore kept as per-report
sufficient statistics (:func:`score_reports` returns one row per report), and every corpus
score is recomputed from weighted sums of those rows (:func:`corpus_metrics`). Bootstrap
replicates are then one matrix product with the replicate weights of
:class:`~radpair.evaluation.paired.BootstrapDraws`, and a saved ``per_report.csv`` is
enough to redo any comparison later.

**Tokenisation.** pycocoevalcap's PTB tokenizer runs Stanford CoreNLP (Java), so it is not
used. :func:`tokenize` follows the preprocessing of the report-generation literature
(R2Gen's ``clean_report_iu_xray``): lower-case, punctuation dropped except the full stop,
which stays as its own token (one per sentence end); decimals such as ``1.5`` stay whole.
It is deterministic and has no data files. Numbers are therefore comparable with papers
that score R2Gen-style cleaned text, not with PTB-tokenised COCO scores.

**Metrics** (pycocoevalcap's pure-Python scorers, one reference per report):

* ``bleu1..4`` - corpus BLEU (clipped n-gram precision summed over reports, brevity
  penalty from total lengths, as pycocoevalcap's ``Bleu`` with ``closest`` reference
  length); per report, the scorer's smoothed sentence BLEU.
* ``rougeL`` - ROUGE-L F (beta 1.2) per report, averaged.
* ``cider`` - CIDEr-D as coco-caption implements it (tf-idf n-gram cosine with clipping and
  a Gaussian length penalty, x10), per report, averaged. Its idf comes from the reference
  set, so it depends on which reports are scored; the bootstrap keeps it fixed.
* ``meteor`` - METEOR 1.5 (the jar shipped in pycocoevalcap), only when a Java runtime is on
  PATH and answers within ``meteor_timeout``; otherwise ``None`` with the reason. The corpus
  score is the jar's aggregate, which is *not* the mean of the segment scores: the jar sums
  each segment's alignment statistics and scores the sums. So each report keeps its 23
  statistics (``meteor_stat_*``) and :func:`meteor_from_stats` scores weighted sums of them,
  which makes bootstrap intervals and paired differences intervals of the same aggregate
  the point value is (they were of the mean segment score before, and the two differ:
  0.144 against a mean of 0.169 for the captioning baseline of the TieNet replicate). The formula is the jar's
  ``MeteorScorer.computeMetrics`` with the English defaults; every run checks it against
  the jar's own per-report and corpus scores and, if they disagree (another jar or
  settings), drops the statistics and falls back to the mean segment score with a note.

**Clinical efficacy.** The ``chexpert`` labeler reads the generated and the reference text
(each as given: the section choice was made when the reference was taken). Per observation,
"positive" is label 1 and, under ``upos`` (uncertain as positive), also -1; under ``uneg``
(uncertain as negative) -1 counts as negative. Blank (not mentioned) and 0 are negative.
Precision, recall and F1 of the positive class are computed per observation, then **micro**
(counts summed over observations) and **macro** (mean over observations) over all 14
observations (``14``) and over the 5 common ones (``5``: Atelectasis, Cardiomegaly,
Consolidation, Edema, Pleural Effusion). Flat names: ``ce_{upos|uneg}_{14|5}_{micro|macro}_{precision|recall|f1}``.

*Macro rule.* An observation that is positive in neither the references nor the generated
reports (TP + FP + FN = 0) has nothing to score: it is left out of the macro average (its
name is listed under ``excluded``) instead of being counted as a perfect 1 or a failed 0.
Where an observation does occur, a zero denominator counts as 0 (sklearn's
``zero_division=0``): predicting no positives where references have some gives precision 0,
and F1 = 2TP / (2TP + FP + FN). If every observation of a set is excluded, the macro value
is undefined (``None`` in JSON).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from radpair.errors import ConfigError, DataError
from radpair.evaluation.metrics import json_float
from radpair.evaluation.paired import BootstrapDraws, _percentile_ci, bootstrap_p_value

SCORING_VERSION = 2
"""Bumped when a score's definition changes, so cached scores are redone (2: METEOR intervals
and paired differences are of the jar's corpus aggregate, from kept statistics)."""
COMMON5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
UNCERTAIN_POLICIES = {"upos": "uncertain (-1) counted as positive", "uneg": "uncertain (-1) counted as negative"}
CE_SUBSETS = ("14", "5")
CE_AVERAGES = ("micro", "macro")
CE_STATS = ("precision", "recall", "f1")
NGRAM_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "cider")
BLEU_N = 4
# pycocoevalcap's smoothing constants, so that corpus_metrics reproduces its corpus BLEU
_SMALL, _TINY = 1e-9, 1e-15
GEN_PREFIX, REF_PREFIX = "gen_", "ref_"
BLEU_STAT_COLUMNS = (
    ["bleu_testlen", "bleu_reflen"]
    + [f"bleu_guess_{k}" for k in range(1, BLEU_N + 1)]
    + [f"bleu_correct_{k}" for k in range(1, BLEU_N + 1)]
)
MACRO_RULE = (
    "observations with no positive in references or generated reports (TP+FP+FN=0) are excluded from macro "
    "averages (listed under 'excluded'); otherwise a zero denominator counts as 0 and F1 = 2TP/(2TP+FP+FN)"
)


def ce_metric_names() -> list[str]:
    return [f"ce_{p}_{s}_{a}_{t}" for p in UNCERTAIN_POLICIES for s in CE_SUBSETS for a in CE_AVERAGES
            for t in CE_STATS]


# ---- tokenisation -------------------------------------------------------------------------------
_TOKEN = re.compile(r"\d+(?:\.\d+)+|[a-z0-9]+|\.")


def tokenize(text: Any) -> list[str]:
    """Lower-cased word tokens plus "." per sentence end (no Java, no data files).

    Runs of full stops collapse to one, so "..." and "x. ." do not inflate n-gram matches.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    out: list[str] = []
    for tok in _TOKEN.findall(str(text).lower()):
        if tok == "." and (not out or out[-1] == "."):
            continue
        out.append(tok)
    return out


# ---- n-gram metrics -----------------------------------------------------------------------------
def _bleu_rows(hyps: Sequence[str], refs: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Per-report sufficient statistics (n, 10), per-report smoothed BLEU-1..4 (n, 4), corpus BLEU."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=BLEU_N)
    for h, r in zip(hyps, refs):
        scorer += (h, [r])
    corpus, per = scorer.compute_score(option="closest", verbose=0)
    stats = np.zeros((len(hyps), len(BLEU_STAT_COLUMNS)))
    for i, comps in enumerate(scorer.ctest):
        reflens = scorer.crefs[i][0]
        stats[i, 0] = comps["testlen"]
        stats[i, 1] = min((abs(ln - comps["testlen"]), ln) for ln in reflens)[1]
        stats[i, 2:2 + BLEU_N] = comps["guess"]
        stats[i, 2 + BLEU_N:] = comps["correct"]
    return stats, np.asarray(per, dtype=np.float64).T.reshape(len(hyps), BLEU_N), [float(x) for x in corpus]


def _rouge_rows(hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    from pycocoevalcap.rouge.rouge import Rouge

    scorer = Rouge()
    return np.array([scorer.calc_score([h], [r]) for h, r in zip(hyps, refs)], dtype=np.float64)


def _cider_rows(hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    _, scores = Cider().compute_score(gts, res)
    return np.asarray(scores, dtype=np.float64)


# ---- METEOR (Java) ------------------------------------------------------------------------------
METEOR_STAGES = ("exact", "stem", "synonym", "paraphrase")
METEOR_STAT_COLUMNS = (
    ["meteor_stat_test_len", "meteor_stat_ref_len", "meteor_stat_test_function", "meteor_stat_ref_function"]
    + [f"meteor_stat_{stage}_{side}" for stage in METEOR_STAGES
       for side in ("test_content", "ref_content", "test_function", "ref_function")]
    + ["meteor_stat_chunks", "meteor_stat_test_word_matches", "meteor_stat_ref_word_matches"]
)
"""The jar's statistics line, in its order (``MeteorStats(String)``): lengths, function-word
counts, then per matcher stage the content and function-word matches of test and reference,
then chunks and matched words. Kept as the jar *adds them up* (``MeteorStats.addStats``): a
segment matched perfectly (every word, one chunk) adds no chunks to the aggregate, so its
row holds 0 chunks; its own score is the same (no fragmentation either way)."""
# Meteor 1.5's English "default" task parameters (alpha, beta, gamma, delta) and the weights
# of its four matcher stages; meteor_scores checks them against the jar on every run.
METEOR_PARAMS = {"alpha": 0.85, "beta": 0.20, "gamma": 0.60, "delta": 0.75}
METEOR_STAGE_WEIGHTS = (1.0, 0.6, 0.8, 0.6)
_METEOR_CHECK_TOL = 1e-9


def meteor_from_stats(stats: np.ndarray) -> np.ndarray:
    """METEOR of each row of summed jar statistics (B, 23) -> (B,), as the jar scores them.

    One report's row gives its segment score; the column sums over reports give the jar's
    corpus aggregate, and bootstrap-weighted sums give its replicates.
    """
    s = np.atleast_2d(np.asarray(stats, dtype=np.float64))
    if s.shape[1] != len(METEOR_STAT_COLUMNS):
        raise DataError(f"METEOR statistics need {len(METEOR_STAT_COLUMNS)} columns; got {s.shape[1]}")
    a, b, g, d = (METEOR_PARAMS[k] for k in ("alpha", "beta", "gamma", "delta"))
    test_len, ref_len, test_fn, ref_fn = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
    stage = _meteor_stage_matches(s)
    weights = np.asarray(METEOR_STAGE_WEIGHTS)
    chunks, test_words, ref_words = s[:, -3], s[:, -2], s[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        test_matches = (weights * (d * stage[:, :, 0] + (1 - d) * stage[:, :, 2])).sum(1)
        ref_matches = (weights * (d * stage[:, :, 1] + (1 - d) * stage[:, :, 3])).sum(1)
        precision = test_matches / (d * (test_len - test_fn) + (1 - d) * test_fn)
        recall = ref_matches / (d * (ref_len - ref_fn) + (1 - d) * ref_fn)
        f_mean = 1.0 / ((1 - a) / precision + a / recall)
        frag = np.where(_meteor_perfect(s), 0.0, chunks / ((test_words + ref_words) / 2))
        score = f_mean * (1 - g * np.power(frag, b))
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


def _meteor_command() -> list[str]:
    """The command pycocoevalcap's ``Meteor`` runs (separate function so tests can swap it)."""
    import pycocoevalcap.meteor.meteor as mod

    jar = Path(mod.__file__).resolve().parent / mod.METEOR_JAR
    return ["java", "-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"]


def meteor_scores(hyps: Sequence[str], refs: Sequence[str], timeout: float = 600.0
                  ) -> tuple[float | None, np.ndarray | None, np.ndarray | None, str | None]:
    """(corpus METEOR, per-report scores, per-report statistics (n, 23) or None, None), or
    (None, None, None, reason) when it cannot run. The statistics are None when
    :func:`meteor_from_stats` does not reproduce the jar's scores.

    Speaks the jar's ``-stdio`` protocol as pycocoevalcap does (one SCORE line per report,
    then one EVAL line), but in a thread with a deadline: the JVM takes ~10 s to load its
    paraphrase table and may hang or die, and one metric must never stop the evaluation.
    """
    if shutil.which("java") is None:
        return None, None, None, "no Java runtime on PATH"
    try:
        cmd = _meteor_command()
    except Exception as exc:  # noqa: BLE001 - a broken install is a reason, not a crash
        return None, None, None, f"METEOR jar not found: {exc}"
    try:
        proc = subprocess.Popen(cmd, cwd=str(Path(cmd[3]).parent) if len(cmd) > 3 else None,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError as exc:
        return None, None, None, f"could not start METEOR ({' '.join(cmd[:2])}): {exc}"
    box: dict[str, Any] = {}

    def talk() -> None:
        try:
            stats = []
            for h, r in zip(hyps, refs):
                h = h.replace("|||", "").replace("  ", " ")
                proc.stdin.write(f"SCORE ||| {r.replace('|||', '')} ||| {h}\n".encode())
                proc.stdin.flush()
                line = proc.stdout.readline().decode().strip()
                if not line:
                    raise RuntimeError("METEOR stopped answering (no statistics line)")
                stats.append(line)
            proc.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
            proc.stdin.flush()
            per = [float(proc.stdout.readline().strip()) for _ in stats]
            box["result"] = (float(proc.stdout.readline().strip()), np.asarray(per, dtype=np.float64), stats)
        except Exception as exc:  # noqa: BLE001 - reported as the reason
            box["error"] = exc

    worker = threading.Thread(target=talk, daemon=True)
    worker.start()
    worker.join(timeout)
    try:
        if worker.is_alive():
            return None, None, None, f"METEOR did not finish within {timeout:g} s (Java call timed out)"
        if "error" in box:
            err = box["error"]
            return None, None, None, f"METEOR failed: {type(err).__name__}: {err}"
        corpus, per, lines = box["result"]
        return corpus, per, _checked_meteor_stats(lines, per, corpus), None
    finally:
        if proc.poll() is None:
            proc.kill()
        worker.join(5)
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def _meteor_stage_matches(stats: np.ndarray) -> np.ndarray:
    """(n, stages, 4) view of the per-stage matches: test content, ref content, test function, ref function."""
    return stats[:, 4:4 + 4 * len(METEOR_STAGES)].reshape(len(stats), len(METEOR_STAGES), 4)


def _meteor_perfect(stats: np.ndarray) -> np.ndarray:
    """Rows whose every test and reference word is matched, in one chunk (the jar's test)."""
    stage = _meteor_stage_matches(stats)
    return ((stage[:, :, 0].sum(1) + stage[:, :, 2].sum(1) == stats[:, 0])
            & (stage[:, :, 1].sum(1) + stage[:, :, 3].sum(1) == stats[:, 1]) & (stats[:, -3] == 1))


def _checked_meteor_stats(lines: Sequence[str], per: np.ndarray, corpus: float) -> np.ndarray | None:
    """The jar's statistics lines as an (n, 23) array, or None where they do not reproduce
    the jar's own segment and corpus scores (then the caller falls back to segment means)."""
    try:
        stats = np.asarray([[float(x) for x in line.split()] for line in lines], dtype=np.float64)
        if stats.ndim != 2 or stats.shape[1] != len(METEOR_STAT_COLUMNS):
            return None
        stats[_meteor_perfect(stats), METEOR_STAT_COLUMNS.index("meteor_stat_chunks")] = 0.0
        ok_segments = np.allclose(meteor_from_stats(stats), per, rtol=0, atol=_METEOR_CHECK_TOL)
        ok_corpus = abs(float(meteor_from_stats(stats.sum(0))[0]) - corpus) <= _METEOR_CHECK_TOL
    except (ValueError, DataError):
        return None
    return stats if ok_segments and ok_corpus else None


# ---- clinical efficacy --------------------------------------------------------------------------
def chexpert_labeler():
    """radpair's CheXpert labeler reading the whole given text (the section choice is made earlier)."""
    from radpair.reports.labeling import get_labeler

    return get_labeler("chexpert", sections="full")


def label_reports(texts: Sequence[str], labeler=None, progress: bool = False, what: str = "reports") -> pd.DataFrame:
    """One nullable-int column per observation (1 / 0 / -1 / <NA>), one row per text."""
    lab = labeler if labeler is not None else chexpert_labeler()
    if not progress:
        return lab.label_many(texts)
    from radpair.progress import count_progress

    parts = []
    step = 256
    with count_progress(f"CheXpert labels of {what}", unit="reports") as bar:
        task = bar.add_task(what, total=len(texts))
        for i in range(0, len(texts), step):
            parts.append(lab.label_many(texts[i:i + step]))
            bar.advance(task, len(texts[i:i + step]))
    return pd.concat(parts, ignore_index=True) if parts else lab.label_many([])


def _positive(values: np.ndarray, policy: str) -> np.ndarray:
    """(n, K) bool positive-class matrix from float labels (NaN = blank)."""
    if policy == "upos":
        return (values == 1) | (values == -1)
    if policy == "uneg":
        return values == 1
    raise ConfigError(f"unknown uncertain policy {policy!r} (valid: {', '.join(UNCERTAIN_POLICIES)})")


def _label_matrix(per_report: pd.DataFrame, prefix: str, observations: Sequence[str]) -> np.ndarray:
    cols = [prefix + o for o in observations]
    missing = [c for c in cols if c not in per_report.columns]
    if missing:
        raise DataError(f"per-report table has no CE label columns {missing[:3]}...")
    block = per_report[cols].apply(pd.to_numeric, errors="coerce").astype("Float64")
    return block.to_numpy(dtype=np.float64, na_value=np.nan)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 with the module's rule: NaN when TP+FP+FN = 0, else 0 for 0/0."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        r = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    undefined = (tp + fp + fn) == 0
    return (np.where(undefined, np.nan, p), np.where(undefined, np.nan, r), np.where(undefined, np.nan, f))


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    ok = np.isfinite(a)
    n = ok.sum(axis=axis)
    s = np.where(ok, a, 0.0).sum(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def ce_counts(per_report: pd.DataFrame, observations: Sequence[str], policy: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-report (n, K) 0/1 TP, FP, FN of the positive class under an uncertain policy."""
    g = _positive(_label_matrix(per_report, GEN_PREFIX, observations), policy)
    r = _positive(_label_matrix(per_report, REF_PREFIX, observations), policy)
    return (g & r).astype(np.float64), (g & ~r).astype(np.float64), (~g & r).astype(np.float64)


def clinical_efficacy(per_report: pd.DataFrame, observations: Sequence[str]) -> dict[str, Any]:
    """The full CE breakdown (per observation, micro and macro, both policies) for JSON."""
    common = [o for o in COMMON5 if o in observations]
    out: dict[str, Any] = {"observations": list(observations), "common5": common, "macro_rule": MACRO_RULE,
                           "policies": {}}
    for pol, desc in UNCERTAIN_POLICIES.items():
        tp, fp, fn = (x.sum(axis=0) for x in ce_counts(per_report, observations, pol))
        p, r, f = _prf(tp, fp, fn)
        per_obs = {o: {"tp": int(tp[k]), "fp": int(fp[k]), "fn": int(fn[k]), "n_ref_positive": int(tp[k] + fn[k]),
                       "n_gen_positive": int(tp[k] + fp[k]), "precision": json_float(p[k]),
                       "recall": json_float(r[k]), "f1": json_float(f[k])} for k, o in enumerate(observations)}
        sets = {}
        for name, subset in (("14", list(observations)), ("5", common)):
            idx = [observations.index(o) for o in subset]
            mp, mr, mf = _prf(tp[idx].sum(), fp[idx].sum(), fn[idx].sum())
            excluded = [o for o in subset if not np.isfinite(f[observations.index(o)])]
            sets[name] = {
                "micro": {"precision": json_float(float(mp)), "recall": json_float(float(mr)),
                          "f1": json_float(float(mf))},
                "macro": {"precision": json_float(float(_nanmean(p[idx], 0))),
                          "recall": json_float(float(_nanmean(r[idx], 0))),
                          "f1": json_float(float(_nanmean(f[idx], 0))),
                          "n_scored": len(subset) - len(excluded), "excluded": excluded},
            }
        out["policies"][pol] = {"description": desc, "per_observation": per_obs, "sets": sets}
    return out


# ---- per-report scoring -------------------------------------------------------------------------
@dataclass
class ReportScores:
    """Scores of one system: corpus values, the per-report table, and what could not run."""

    metrics: dict[str, float]
    per_report: pd.DataFrame
    observations: list[str]
    clinical_efficacy: dict[str, Any] | None
    meteor_reason: str | None = None
    ce_reason: str | None = None
    notes: list[str] = field(default_factory=list)


def score_reports(
    generated: Sequence[str],
    references: Sequence[str],
    ids: Sequence[Any] | None = None,
    *,
    meteor: bool | str = "auto",
    meteor_timeout: float = 600.0,
    labeler=None,
    clinical: bool = True,
    reference_labels: pd.DataFrame | None = None,
    progress: bool = False,
) -> ReportScores:
    """Score generated reports against one reference each, keeping per-report rows.

    Empty generated reports are scored (as empty: 0 on every n-gram metric); an empty
    reference has no meaning here and is refused. ``meteor``: ``"auto"`` tries Java,
    ``False`` skips it (the reason says so). ``reference_labels`` lets a comparison label the
    references once for both systems.
    """
    gen = ["" if g is None or (isinstance(g, float) and math.isnan(g)) else str(g) for g in generated]
    ref = ["" if r is None or (isinstance(r, float) and math.isnan(r)) else str(r) for r in references]
    if len(gen) != len(ref):
        raise DataError(f"{len(gen)} generated reports for {len(ref)} references")
    if not gen:
        raise DataError("no reports to score")
    ids = [str(i) for i in (ids if ids is not None else range(len(gen)))]
    if len(ids) != len(gen):
        raise DataError(f"{len(ids)} ids for {len(gen)} reports")
    hyps = [" ".join(tokenize(g)) for g in gen]
    refs = [" ".join(tokenize(r)) for r in ref]
    empty = [ids[i] for i, r in enumerate(refs) if not r]
    if empty:
        raise DataError(f"{len(empty)} references have no words after tokenisation (e.g. {empty[:5]}); "
                        "drop or fix them before scoring")

    stats, bleu_per, bleu_corpus = _bleu_rows(hyps, refs)
    per = pd.DataFrame({"id": ids})
    per["n_tokens_generated"] = stats[:, 0].astype(int)
    per["n_tokens_reference"] = stats[:, 1].astype(int)
    for k in range(BLEU_N):
        per[f"bleu{k + 1}"] = bleu_per[:, k]
    per["rougeL"] = _rouge_rows(hyps, refs)
    per["cider"] = _cider_rows(hyps, refs)
    meteor_reason = None
    meteor_corpus = None
    notes: list[str] = []
    if meteor is False or meteor == "off":
        meteor_reason = "METEOR not requested"
    else:
        meteor_corpus, meteor_per, meteor_stats, meteor_reason = meteor_scores(hyps, refs, timeout=meteor_timeout)
        if meteor_per is not None:
            per["meteor"] = meteor_per
            if meteor_stats is not None:
                for j, col in enumerate(METEOR_STAT_COLUMNS):
                    per[col] = meteor_stats[:, j]
            else:
                notes.append("METEOR's statistics did not reproduce the jar's scores (another jar or settings?), "
                             "so METEOR's interval and paired differences use the mean segment score, not the "
                             "corpus aggregate")
    for j, col in enumerate(BLEU_STAT_COLUMNS):
        per[col] = stats[:, j].astype(int)

    observations: list[str] = []
    ce = None
    ce_reason = None
    if clinical:
        from radpair.errors import ResourceMissing

        try:
            lab = labeler if labeler is not None else chexpert_labeler()
            observations = list(lab.label_names)
            gl = label_reports(gen, lab, progress, "generated reports")
            rl = reference_labels if reference_labels is not None else label_reports(ref, lab, progress, "references")
        except ResourceMissing as exc:
            ce_reason = f"CheXpert labeler unavailable: {exc}"
        else:
            if len(rl) != len(gen) or list(rl.columns) != observations:
                raise DataError("reference labels do not match the reports (rows or observation columns)")
            for o in observations:
                per[GEN_PREFIX + o] = pd.array(gl[o], dtype="Int64")
                per[REF_PREFIX + o] = pd.array(rl[o], dtype="Int64")
            ce = clinical_efficacy(per, observations)
    else:
        ce_reason = "clinical efficacy not requested"

    metrics = {name: float(v[0]) for name, v in corpus_metrics(per, observations=observations).items()}
    # the library's own corpus BLEU is the reference value; corpus_metrics must agree with it
    for k in range(BLEU_N):
        metrics[f"bleu{k + 1}"] = bleu_corpus[k]
    if meteor_corpus is not None:
        metrics["meteor"] = float(meteor_corpus)
    else:
        metrics["meteor"] = math.nan
    return ReportScores(metrics, per, observations, ce, meteor_reason, ce_reason, notes)


# ---- corpus values from weighted per-report rows --------------------------------------------------
def _weights(n: int, weights: Any) -> np.ndarray:
    if weights is None:
        return np.ones((1, n))
    w = np.asarray(weights, dtype=np.float64)
    w = w[None, :] if w.ndim == 1 else w
    if w.ndim != 2 or w.shape[1] != n:
        raise DataError(f"weights must be (B, {n}); got {np.asarray(weights).shape}")
    return w


def observations_of(per_report: pd.DataFrame) -> list[str]:
    """CE observations present in a per-report table (columns gen_X with a matching ref_X)."""
    return [c[len(GEN_PREFIX):] for c in per_report.columns
            if c.startswith(GEN_PREFIX) and REF_PREFIX + c[len(GEN_PREFIX):] in per_report.columns]


def corpus_metrics(per_report: pd.DataFrame, weights: Any = None, *, observations: Sequence[str] | None = None
                   ) -> dict[str, np.ndarray]:
    """Every corpus metric for each row of ``weights`` (B, n) of report copies: name -> (B,).

    ``weights=None`` is the plain corpus (one replicate of all ones). BLEU comes from summed
    n-gram statistics (identical to pycocoevalcap's corpus BLEU at unit weights) and METEOR
    from summed alignment statistics (the jar's aggregate); ROUGE-L and CIDEr are weighted
    means of per-report scores; CE from summed TP/FP/FN. A table without METEOR statistics
    (saved before they were kept, or unverified) gives METEOR's weighted mean segment score.
    """
    n = len(per_report)
    w = _weights(n, weights)
    tot = w.sum(axis=1)
    out: dict[str, np.ndarray] = {}
    if all(c in per_report.columns for c in BLEU_STAT_COLUMNS):
        s = w @ per_report[list(BLEU_STAT_COLUMNS)].to_numpy(dtype=np.float64)  # (B, 10)
        testlen, reflen = s[:, 0], s[:, 1]
        bp = np.ones_like(testlen)
        ratio = (testlen + _TINY) / (reflen + _SMALL)
        short = ratio < 1
        bp[short] = np.exp(1 - 1 / ratio[short])
        prod = np.ones_like(testlen)
        for k in range(BLEU_N):
            prod = prod * (s[:, 2 + BLEU_N + k] + _TINY) / (s[:, 2 + k] + _SMALL)
            out[f"bleu{k + 1}"] = prod ** (1.0 / (k + 1)) * bp
    with np.errstate(invalid="ignore", divide="ignore"):
        aggregate = "meteor" in per_report.columns and meteor_is_aggregate(per_report)
        for col in ("rougeL", "cider") + (() if aggregate else ("meteor",)):
            if col in per_report.columns:
                out[col] = (w @ per_report[col].to_numpy(dtype=np.float64)) / tot
    if aggregate:
        agg = meteor_from_stats(w @ per_report[list(METEOR_STAT_COLUMNS)].to_numpy(dtype=np.float64))
        out["meteor"] = np.where(tot > 0, agg, np.nan)  # no reports drawn: no value, as for the means
    obs = list(observations) if observations is not None else observations_of(per_report)
    if obs:
        common = [obs.index(o) for o in COMMON5 if o in obs]
        for pol in UNCERTAIN_POLICIES:
            tp, fp, fn = (w @ x for x in ce_counts(per_report, obs, pol))  # (B, K)
            p, r, f = _prf(tp, fp, fn)
            for name, idx in (("14", list(range(len(obs)))), ("5", common)):
                if not idx:
                    continue
                mp, mr, mf = _prf(tp[:, idx].sum(1), fp[:, idx].sum(1), fn[:, idx].sum(1))
                for stat, micro, per_obs in (("precision", mp, p), ("recall", mr, r), ("f1", mf, f)):
                    out[f"ce_{pol}_{name}_micro_{stat}"] = micro
                    out[f"ce_{pol}_{name}_macro_{stat}"] = _nanmean(per_obs[:, idx], 1)
    return out


def meteor_is_aggregate(per_report: pd.DataFrame) -> bool:
    """Whether METEOR here is the jar's corpus aggregate (statistics kept) or, for older or
    unverified tables, the mean segment score."""
    return all(c in per_report.columns for c in METEOR_STAT_COLUMNS)


def default_metrics(per_report: pd.DataFrame) -> list[str]:
    """Metric names worth a row in a table: n-gram ones present, METEOR if scored, CE F1s."""
    names = [m for m in NGRAM_METRICS if m in per_report.columns or m.startswith("bleu")]
    if "meteor" in per_report.columns:
        names.append("meteor")
    if observations_of(per_report):
        names += [f"ce_{p}_{s}_{a}_f1" for p in UNCERTAIN_POLICIES for s in CE_SUBSETS for a in CE_AVERAGES]
    return names


def bootstrap_intervals(per_report: pd.DataFrame, draws: BootstrapDraws, metrics: Iterable[str] | None = None,
                        confidence: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals of each metric over the replicates of ``draws`` (report rows resampled)."""
    if draws.n_images != len(per_report):
        raise DataError(f"draws are for {draws.n_images} reports, the table has {len(per_report)}")
    names = list(metrics) if metrics is not None else list(corpus_metrics(per_report))
    reps = _replicates(per_report, draws)
    return {m: _percentile_ci(reps[m], confidence) for m in names if m in reps}


_CHUNK = 256


def _replicates(per_report: pd.DataFrame, draws: BootstrapDraws) -> dict[str, np.ndarray]:
    parts: list[dict[str, np.ndarray]] = []
    for b0 in range(0, draws.n_bootstrap, _CHUNK):
        parts.append(corpus_metrics(per_report, draws.weights(None, b0, b0 + _CHUNK)))
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ---- paired comparison --------------------------------------------------------------------------
@dataclass
class GenerationDifference:
    """System a minus system b on one metric, with a paired bootstrap interval."""

    metric: str
    a: float
    b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_valid: int
    n_bootstrap: int
    unit: str
    confidence: float = 0.95
    seed: int | None = None
    basis: str | None = None
    """For METEOR: ``"aggregate"`` (the jar's corpus score, from kept statistics) or
    ``"mean segment"`` (a side kept none); None for the other metrics."""

    @property
    def significant(self) -> bool:
        return bool(self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "a": json_float(self.a), "b": json_float(self.b),
                "diff": json_float(self.diff), "ci_low": json_float(self.ci_low), "ci_high": json_float(self.ci_high),
                "p_value": json_float(self.p_value), "n_valid": int(self.n_valid),
                "n_bootstrap": int(self.n_bootstrap), "unit": self.unit, "confidence": float(self.confidence),
                "seed": self.seed, "basis": self.basis}


def compare_generation(
    per_report_a: pd.DataFrame,
    per_report_b: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    groups: Any = None,
    confidence: float = 0.95,
    draws: BootstrapDraws | None = None,
) -> list[GenerationDifference]:
    """a - b for each metric, both systems scored on the same references in the same order.

    Replicate b draws the same reports (or the same patients, when ``groups`` gives one
    patient id per report) for both systems, so the interval is of the difference itself.
    Corpus-level metrics (BLEU, CE F1) are recomputed per replicate from the resampled
    rows, not averaged per report; so is METEOR where its statistics were kept (else its
    mean segment score is used, see :func:`meteor_is_aggregate`).
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1); got {confidence}")
    if len(per_report_a) != len(per_report_b):
        raise DataError(f"systems have {len(per_report_a)} and {len(per_report_b)} reports; "
                        "a paired comparison needs the same references")
    if "id" in per_report_a.columns and "id" in per_report_b.columns:
        ia, ib = per_report_a["id"].astype(str).to_numpy(), per_report_b["id"].astype(str).to_numpy()
        if not np.array_equal(ia, ib):
            bad = [f"{x}/{y}" for x, y in zip(ia, ib) if x != y][:5]
            raise DataError(f"the two per-report tables are not aligned by id (e.g. {bad})")
    for col in [c for c in per_report_a.columns if c.startswith(REF_PREFIX) or c == "n_tokens_reference"]:
        if col in per_report_b.columns and not per_report_a[col].fillna(-9).equals(per_report_b[col].fillna(-9)):
            raise DataError(f"the two systems were scored against different references ({col} differs)")
    if meteor_is_aggregate(per_report_a) != meteor_is_aggregate(per_report_b):
        # one side kept no METEOR statistics: compare mean segment scores on both sides
        per_report_a, per_report_b = (t.drop(columns=[c for c in METEOR_STAT_COLUMNS if c in t.columns])
                                      for t in (per_report_a, per_report_b))
    if metrics is None:
        names_b = set(default_metrics(per_report_b))
        metrics = [m for m in default_metrics(per_report_a) if m in names_b]
    if draws is None:
        draws = BootstrapDraws.draw(groups, n_bootstrap, seed, n_images=len(per_report_a))
    point_a, point_b = corpus_metrics(per_report_a), corpus_metrics(per_report_b)
    missing = [m for m in metrics if m not in point_a or m not in point_b]
    if missing:
        raise DataError(f"metric(s) {missing} not available for both systems "
                        f"(available: {sorted(set(point_a) & set(point_b))})")
    reps_a, reps_b = _replicates(per_report_a, draws), _replicates(per_report_b, draws)
    out = []
    for m in metrics:
        a, b = float(point_a[m][0]), float(point_b[m][0])
        if reps_a:
            d = reps_a[m] - reps_b[m]
            lo, hi = _percentile_ci(d, confidence)
            p, nv = bootstrap_p_value(d), int(np.isfinite(d).sum())
        else:
            lo = hi = p = math.nan
            nv = 0
        basis = None
        if m == "meteor":
            basis = "aggregate" if meteor_is_aggregate(per_report_a) else "mean segment"
        out.append(GenerationDifference(m, a, b, a - b, lo, hi, p, nv, draws.n_bootstrap, draws.unit.value,
                                        confidence, draws.seed, basis))
    return out

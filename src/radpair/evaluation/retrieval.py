"""Image<->text retrieval with a joint-embedding run: Recall@K, median rank, and chance.

The pool is a set of image-report pairs (by default every pair of the test split whose
selected text is not empty, optionally ``pool_size`` of them drawn from ``seed``). Every
image queries the pool's texts (image->text) and every text queries the pool's images
(text->image), ranked by cosine similarity of the run's projected embeddings.

**Hits.** Reports repeat: the views of one study share a report, and short normal
reports recur verbatim. A candidate is a hit when its report text is identical to the
query's after the run's own section policy and its tokenizer's normalisation
(:func:`radpair.evaluation.joint.text_keys`); the query's own pair is always one.

**Rank of a query** is the position of its best-placed hit. Tied scores are ordered at
random, and the expected value is reported: with ``a`` non-hits scoring above the best
hit, ``t`` non-hits and ``h`` hits tied with it, the first hit sits at ``a + X`` where
``X`` is the first of ``h`` hits among ``t + h`` shuffled items, so
``E[rank] = a + (t + h + 1) / (h + 1)`` and ``P(rank <= K) = 1 - C(t, m) / C(t + h, m)``
with ``m = K - a`` (0 when ``m <= 0``). Without ties this is the plain rank.

**Chance** is the same formula for a random ranking, i.e. every one of the ``C``
candidates tied: ``a = 0``, ``h`` = the query's number of hits, ``t = C - h``, so chance
Recall@K is the mean over queries of ``1 - C(C - h, K) / C(C, K)`` and the chance rank
``(C + 1) / (h + 1)``. Duplicated texts therefore raise the chance rate exactly as they
raise the measured one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from radpair.errors import ConfigError, DataError

DEFAULT_KS = (1, 5, 10)
DIRECTIONS = ("image_to_text", "text_to_image")
_MAX_CELLS = 1 << 24  # query x candidate cells per chunk


# ---- ranks ------------------------------------------------------------------------------------
def first_hit_probabilities(ahead: Any, tied: Any, hits_tied: Any, ks: Sequence[int] = DEFAULT_KS
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Expected rank (Q,) and P(rank <= k) (Q, len(ks)) of each query's first hit.

    ``ahead``: non-hits scoring strictly above the best hit; ``tied``: non-hits tied with
    it; ``hits_tied``: hits at that score (>= 1). Ties are broken uniformly at random.
    """
    a = np.asarray(ahead, dtype=np.int64)
    t = np.asarray(tied, dtype=np.int64)
    h = np.asarray(hits_tied, dtype=np.int64)
    if np.any(h < 1):
        raise DataError("every query needs at least one hit (its own pair)")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ConfigError(f"recall cut-offs must be positive integers, got {ks}")
    kmax = max(ks)
    i = np.arange(kmax)
    num = (t[:, None] - i).astype(np.float64)
    den = ((t + h)[:, None] - i).astype(np.float64)
    ratio = np.divide(num, den, out=np.zeros_like(num), where=num > 0)
    miss = np.cumprod(ratio, axis=1)  # miss[:, m-1] = P(first hit lies beyond the first m tied items)
    probs = np.empty((a.size, len(ks)))
    for j, k in enumerate(ks):
        m = k - a
        probs[:, j] = np.where(m >= 1, 1.0 - miss[np.arange(a.size), np.clip(m, 1, kmax) - 1], 0.0)
    rank = a + (t + h + 1) / (h + 1)
    return rank.astype(np.float64), probs


def rank_queries(scores: Any, query_codes: Any, candidate_codes: Any, ks: Sequence[int] = DEFAULT_KS
                 ) -> dict[str, np.ndarray]:
    """Per-query ranks and recall probabilities from a (Q, C) score matrix, and their chance values.

    ``query_codes`` (Q,) and ``candidate_codes`` (C,) are text codes: a candidate is a hit
    when its code equals the query's. Returns ``rank`` (Q,), ``recall`` (Q, K),
    ``chance_rank`` (Q,), ``chance_recall`` (Q, K) and ``n_hits`` (Q,).
    """
    s = np.asarray(scores, dtype=np.float64)
    qc = np.asarray(query_codes).ravel()
    cc = np.asarray(candidate_codes).ravel()
    if s.ndim != 2 or s.shape != (qc.size, cc.size):
        raise DataError(f"scores {s.shape} must be (queries {qc.size}, candidates {cc.size})")
    if not np.isfinite(s).all():
        raise DataError("similarity scores contain NaN or inf (a diverged run?)")
    hits = qc[:, None] == cc[None, :]
    n_hits = hits.sum(axis=1)
    if np.any(n_hits == 0):
        raise DataError(f"{int((n_hits == 0).sum())} queries have no hit among the candidates")
    best = np.where(hits, s, -np.inf).max(axis=1)[:, None]
    ahead = ((s > best) & ~hits).sum(axis=1)
    at = s == best
    tied = (at & ~hits).sum(axis=1)
    hits_tied = (at & hits).sum(axis=1)
    rank, recall = first_hit_probabilities(ahead, tied, hits_tied, ks)
    chance_rank, chance_recall = first_hit_probabilities(np.zeros_like(n_hits), cc.size - n_hits, n_hits, ks)
    return {"rank": rank, "recall": recall, "chance_rank": chance_rank, "chance_recall": chance_recall,
            "n_hits": n_hits}


def rank_by_similarity(query_emb: np.ndarray, candidate_emb: np.ndarray, query_codes: Any, candidate_codes: Any,
                       ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """:func:`rank_queries` on dot products of (already normalised) embeddings, in query chunks."""
    q = np.asarray(query_emb, dtype=np.float64)  # float64 products: no ties from float32 rounding
    c = np.asarray(candidate_emb, dtype=np.float64)
    qc = np.asarray(query_codes).ravel()
    step = max(1, _MAX_CELLS // max(1, c.shape[0]))
    parts = [rank_queries(q[i:i + step] @ c.T, qc[i:i + step], candidate_codes, ks) for i in range(0, len(q), step)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def summarise_ranks(ranks: dict[str, np.ndarray], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Recall@K and chance@K (means over queries), median / mean rank and their chance values."""
    out: dict[str, float] = {}
    for j, k in enumerate(ks):
        out[f"recall@{k}"] = float(ranks["recall"][:, j].mean())
        out[f"chance@{k}"] = float(ranks["chance_recall"][:, j].mean())
    out["median_rank"] = float(np.median(ranks["rank"]))
    out["chance_median_rank"] = float(np.median(ranks["chance_rank"]))
    out["mean_rank"] = float(ranks["rank"].mean())
    out["chance_mean_rank"] = float(ranks["chance_rank"].mean())
    out["mean_hits"] = float(ranks["n_hits"].mean())
    return out


# ---- pools ------------------------------------------------------------------------------------
def choose_pool(n: int, pool_size: int | None, seed: int) -> np.ndarray:
    """Sorted positions of the pool: all ``n``, or ``pool_size`` drawn without replacement from ``seed``."""
    if pool_size is not None and pool_size < 2:
        raise ConfigError(f"pool size must be at least 2 pairs, got {pool_size}")
    if pool_size is None or pool_size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(pool_size), replace=False))


@dataclass
class RetrievalResult:
    run: dict[str, Any]
    corpus: str
    split: str
    pool: dict[str, Any]
    ks: list[int]
    directions: dict[str, dict[str, float]]
    input_problems: list[str] = field(default_factory=list)
    command: str = ""
    ranks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    """Per-query arrays (``rank``, ``recall``, ...) of each direction; in memory only."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "retrieval", "run": self.run, "corpus": self.corpus, "split": self.split, "pool": self.pool,
                "ks": self.ks, "similarity": "cosine of the projected embeddings",
                "hit": "candidate whose report text equals the query's after the run's section policy and "
                       "tokenizer normalisation", "ties": "expected value under random tie-breaking",
                "directions": self.directions, "input_problems": self.input_problems, "command": self.command}

    def to_markdown(self) -> str:
        head = ["direction", *[f"R@{k} (chance)" for k in self.ks], "median rank (chance)"]
        lines = [f"# Retrieval: {self.run.get('run')}", "",
                 f"Pool: {self.pool['pool_size']} {self.split} pairs of {self.corpus} "
                 f"({self.pool['n_distinct_texts']} distinct texts, {self.pool['mean_hits']:.2f} hits per query on "
                 f"average; seed {self.pool['seed']}). Cosine similarity; a candidate with the query's report text "
                 "(after the run's section policy and tokenizer normalisation) is a hit.", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in DIRECTIONS:
            d = self.directions[name]
            cells = [f"{d[f'recall@{k}']:.3f} ({d[f'chance@{k}']:.3f})" for k in self.ks]
            rank = f"{d['median_rank']:g} ({d['chance_median_rank']:g})"
            lines.append(f"| {name.replace('_to_', '→')} | " + " | ".join(cells) + f" | {rank} |")
        k = max(self.ks)
        ratio = []
        for name in DIRECTIONS:
            d = self.directions[name]
            if d[f"chance@{k}"] > 0:
                ratio.append(f"{name.replace('_to_', '→')} {d[f'recall@{k}'] / d[f'chance@{k}']:.1f}×")
        lines += ["", f"Recall@{k} over chance: " + ", ".join(ratio) + "."]
        for p in self.input_problems:
            lines.append(f"\nWarning: the corpus differs from the training images: {p}.")
        return "\n".join(lines) + "\n"

    def save(self, out: str | Path) -> dict[str, Path]:
        from radpair.evaluation.joint import save_result

        return save_result(out, "retrieval", self.to_dict(), self.to_markdown())


def evaluate_retrieval(
    run,
    corpus,
    *,
    split: str = "test",
    pool_size: int | None = None,
    seed: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
    views: Sequence[str] | None = None,
    tokenizer: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    progress: bool = False,
) -> RetrievalResult:
    """Image->text and text->image retrieval over a pool of ``split`` pairs.

    ``run``: a :class:`~radpair.evaluation.joint.JointRun` or a run folder (loaded with
    ``tokenizer`` onto ``device``); ``corpus``: a :class:`~radpair.data.corpus.Corpus` or
    folder. Pairs whose selected text is empty are left out (counted in ``pool``).
    """
    from radpair.data.pairs import tokenize_texts
    from radpair.evaluation.joint import (embed_images, embed_tokens, held_out_pairs, open_run_and_corpus,
                                          report_embeddings, text_keys)

    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ConfigError(f"recall cut-offs must be positive integers, got {ks}")
    run, corpus, problems = open_run_and_corpus(run, corpus, tokenizer, device)
    split_name, rows, selected, nonempty = held_out_pairs(run, corpus, split, views, "retrieval")
    reports = rows["report"].astype(str).tolist()
    positions = np.flatnonzero(nonempty)
    pick = positions[choose_pool(positions.size, pool_size, seed)]
    texts = selected[pick].tolist()
    codes = text_keys(run, texts, sections=False)
    image_rows = rows["image_index"].to_numpy(dtype=np.int64)[pick]

    img = embed_images(run, corpus, image_rows, batch_size=batch_size, progress=progress)
    if run.text_fields:
        txt = report_embeddings(run, [reports[i] for i in pick], batch_size=batch_size)
    else:
        txt = embed_tokens(run, tokenize_texts(texts, run.tokenizer, run.max_length, "full"), batch_size=batch_size)
    ranks = {"image_to_text": rank_by_similarity(img, txt, codes, codes, ks),
             "text_to_image": rank_by_similarity(txt, img, codes, codes, ks)}
    directions = {name: summarise_ranks(r, ks) for name, r in ranks.items()}
    pool = {"split_pairs": int(len(rows)), "empty_text_dropped": int((~nonempty).sum()),
            "pool_size": int(pick.size), "pool_size_requested": pool_size, "seed": int(seed),
            "views": list(views) if views else "all", "n_distinct_texts": int(np.unique(codes).size),
            "mean_hits": float(directions["image_to_text"]["mean_hits"]),
            "image_ids": rows["image_id"].astype(str).to_numpy()[pick].tolist()}
    return RetrievalResult(run=run.describe(), corpus=str(corpus.root), split=split_name, pool=pool, ks=list(ks),
                           directions=directions, input_problems=problems, ranks=ranks)


__all__ = ["DEFAULT_KS", "RetrievalResult", "choose_pool", "evaluate_retrieval", "first_hit_probabilities",
           "rank_by_similarity", "rank_queries", "summarise_ranks"]

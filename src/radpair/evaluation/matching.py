"""Image-report matching on held-out pairs: TIMNet's Table I (accuracy, AUC, F1, precision, recall, AP).

A matching run (``timnet_matching``) has a classifier that says whether an image and a
report belong to the same imaging event. It is scored as it was trained: every held-out
pair of the split gives its true pair and one false pair (the image with a partner's
text), partners drawn as a permutation of the pairs in which no pair meets a report of
identical normalised text (:func:`radpair.methods.timnet.draw_false_partners`), from
``seed``. The classes are therefore balanced, and accuracy at threshold 0.5 is the
paper's accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from radpair.errors import ConfigError


@dataclass
class MatchingResult:
    run: dict[str, Any]
    corpus: str
    split: str
    pairs: dict[str, Any]
    metrics: dict[str, float]
    input_problems: list[str] = field(default_factory=list)
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "matching", "run": self.run, "corpus": self.corpus, "split": self.split, "pairs": self.pairs,
                "metrics": self.metrics, "threshold": 0.5, "input_problems": self.input_problems,
                "command": self.command}

    def to_markdown(self) -> str:
        m = self.metrics
        lines = [f"# Matching: {self.run.get('run')}", "",
                 f"{self.pairs['true_pairs']} true and {self.pairs['false_pairs']} false {self.split} pairs of "
                 f"{self.corpus} (false pairs never share the report text; seed {self.pairs['seed']}); threshold 0.5.",
                 "", "| accuracy | AUC | F1 | precision | recall | AP |", "|---|---|---|---|---|---|",
                 f"| {m['accuracy']:.3f} | {m['auc']:.3f} | {m['f1']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
                 f"{m['average_precision']:.3f} |"]
        for p in self.input_problems:
            lines.append(f"\nWarning: the corpus differs from the training images: {p}.")
        return "\n".join(lines) + "\n"

    def save(self, out: str | Path) -> dict[str, Path]:
        from radpair.evaluation.joint import save_result

        return save_result(out, "matching", self.to_dict(), self.to_markdown())


def evaluate_matching(run, corpus, *, split: str = "test", seed: int = 0, views: Sequence[str] | None = None,
                      tokenizer: str | Path | None = None, device: str = "cpu", batch_size: int = 256,
                      progress: bool = False) -> MatchingResult:
    """Score ``run``'s match classifier on balanced true/false pairs of ``split``."""
    import pandas as pd

    from radpair.data.pairs import normalise_report_text, tokenize_texts
    from radpair.evaluation.joint import embed_images, embed_tokens, held_out_pairs, open_run_and_corpus
    from radpair.methods.timnet import draw_false_partners
    from radpair.objectives.matching import matching_metrics

    run, corpus, problems = open_run_and_corpus(run, corpus, tokenizer, device)
    if not hasattr(run.model, "match_logits"):
        raise ConfigError(f"{run.root}: method {run.method!r} has no match classifier (match_logits); "
                          "matching metrics need a timnet_matching run")
    split_name, rows, selected, keep = held_out_pairs(run, corpus, split, views, "matching")
    texts = selected[keep].tolist()
    image_rows = rows["image_index"].to_numpy(dtype=np.int64)[keep]

    class _Codes:  # what draw_false_partners reads from a dataset
        codes = {"report_code": pd.factorize(pd.Series([normalise_report_text(t) for t in texts]))[0]}

    partner = draw_false_partners(seed, 0, np.arange(len(texts)), _Codes())
    img = embed_images(run, corpus, image_rows, batch_size=batch_size, progress=progress, normalise=False)
    txt = embed_tokens(run, tokenize_texts(texts, run.tokenizer, run.max_length, "full"), batch_size=batch_size,
                       normalise=False)
    model = run.model
    scores = []
    with torch.inference_mode():
        for t in (txt, txt[partner]):
            logits = model.match_logits(torch.from_numpy(img).to(run.device), torch.from_numpy(t).to(run.device))
            scores.append(logits.float().softmax(-1)[:, 1].cpu().numpy())
    n = len(texts)
    target = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    metrics = matching_metrics(target, np.concatenate(scores)).to_dict()
    pairs = {"split_pairs": int(len(rows)), "empty_text_dropped": int((~keep).sum()), "true_pairs": n,
             "false_pairs": n, "seed": int(seed), "views": list(views) if views else "all"}
    return MatchingResult(run=run.describe(), corpus=str(corpus.root), split=split_name, pairs=pairs,
                          metrics={k: float(v) for k, v in metrics.items()}, input_problems=problems)


__all__ = ["MatchingResult", "evaluate_matching"]

"""Small corpora, configs and a distributed worker for the engine's tests and benchmarks.

They live in the package (not under ``tests/``) because spawned worker processes must
import them by module name, and the benchmarks reuse them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

_FINDINGS = [
    "mild pulmonary edema", "no pulmonary edema", "small left pleural effusion", "no pleural effusion",
    "cardiomegaly", "heart size is normal", "right lower lobe opacity", "lungs are clear",
    "no pneumothorax", "atelectasis at the bases", "stable mediastinal contours", "low lung volumes",
]


def random_reports(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(2, 6))
        picks = rng.choice(len(_FINDINGS), size=k, replace=False)
        findings = ". ".join(_FINDINGS[i].capitalize() for i in picks)
        out.append(f"FINDINGS: {findings}. IMPRESSION: {_FINDINGS[picks[0]].capitalize()}.")
    return out


def make_random_corpus(root: str | Path, n: int = 128, size: int = 64, seed: int = 0, chunk: int = 4096):
    """A corpus of noise images with report-like text (plumbing and speed, not learning)."""
    import pandas as pd

    from radpair.data.corpus import CorpusWriter

    rng = np.random.default_rng(seed)
    writer = CorpusWriter(root, n, size, size)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        writer.images[start:stop] = rng.integers(0, 256, (stop - start, size, size), dtype=np.uint8)
    reports = random_reports(n, seed)
    index = pd.DataFrame(
        {
            "image_index": np.arange(n),
            "image_id": [f"img{i}" for i in range(n)],
            "patient_id": [f"pat{i // 2}" for i in range(n)],
            "study_id": [f"st{i // 2}" for i in range(n)],
            "view": "PA",
            "split": "train",
            "report": reports,
        }
    )
    truth = pd.DataFrame({"image_id": index["image_id"], "edema": [int("mild pulmonary edema" in r.lower()) for r in reports]})
    return writer.finalize(index, {"source": "radpair_train.testing"}, ground_truth=truth)


def corpus_and_tokenizer(root: str | Path, n: int, size: int, seed: int, vocab_size: int = 120) -> tuple[Path, Path]:
    """A :func:`make_random_corpus` under ``root/corpus`` and a WordPiece tokenizer trained
    on its reports under ``root/tok``: the inputs of every engine test."""
    from radpair.text import train_wordpiece_tokenizer

    root = Path(root)
    corpus = make_random_corpus(root / "corpus", n=n, size=size, seed=seed)
    train_wordpiece_tokenizer(corpus.index["report"].tolist(), root / "tok", vocab_size=vocab_size, min_frequency=1)
    return corpus.root, root / "tok"


def tiny_overrides(corpus: str | Path, tokenizer: str | Path, out_dir: str | Path, **extra: Any) -> list[str]:
    """Dotted overrides for a seconds-long ConVIRT run (resnet_tiny, 2-layer 32-wide BERT)."""
    base = {
        "data.corpus": str(corpus),
        "text_encoder.tokenizer": str(tokenizer),
        "train.out_dir": str(out_dir),
        "image_encoder.name": "resnet_tiny",
        "text_encoder.hidden_size": 32,
        "text_encoder.num_layers": 1,
        "text_encoder.num_heads": 2,
        "text_encoder.intermediate_size": 64,
        "text_encoder.max_length": 32,
        "method.projection_dim": 16,
        "data.batch_size": 16,
        "train.progress": False,
        "train.log_every": 1,
        "train.threads": 1,
        "train.device": "cpu",
        "optim.warmup_steps": 2,
    }
    base.update(extra)
    if base.get("method.name", "convirt") != "convirt":  # the method's own keys only
        base.pop("method.projection_dim")
    return [f"{k}={_yaml(v)}" for k, v in base.items()]


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def distributed_worker(rank: int, world_size: int, port: int, overrides: list[str], result_dir: str) -> None:
    """Run one process of a gloo job (``torch.multiprocessing.spawn`` target).

    Writes the per-step global losses and gradients (as safetensors) to
    ``result_dir/rank{rank}.*`` for the caller to compare with a single-process run.
    """
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world_size),
         "LOCAL_RANK": str(rank)}
    )
    result = run_and_record(overrides, Path(result_dir) / f"rank{rank}")
    del result


def run_and_record(overrides: list[str], prefix: Path) -> dict:
    """Train with ``overrides``; save losses and gradients (``step/name``) of every step next to ``prefix``."""
    import torch
    from safetensors.torch import save_file

    from radpair.config import load_config
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    cfg = load_config(PretrainConfig, None, overrides)
    losses: list[float] = []
    grads: dict[str, torch.Tensor] = {}
    holder: dict[str, Trainer] = {}

    def on_step(step: int, out: dict) -> None:
        losses.append(out["global_loss"])
        for name, p in holder["t"].model.named_parameters():
            if p.grad is not None:
                grads[f"{step}/{name}"] = p.grad.detach().clone().contiguous()

    trainer = Trainer(cfg, on_step=on_step)
    holder["t"] = trainer
    trainer.fit()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    save_file(grads, str(prefix) + ".grads.safetensors")
    Path(str(prefix) + ".losses.json").write_text(json.dumps(losses))
    return {"losses": losses, "grads": grads}

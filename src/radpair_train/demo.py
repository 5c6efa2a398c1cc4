"""The main job: synthetic corpus -> tokenizer -> ConVIRT pretraining -> few-label transfer.

It answers the question all five papers ask, on data anyone can regenerate: does
supervision from reports make a few-label image model better? Three encoders are compared
at N labelled images: the ConVIRT-pretrained encoder (frozen, linear probe), the same
architecture at random initialisation (frozen, linear probe), and the same architecture
trained from scratch on the N labels (the supervised baseline). Probes and baselines use
identical few-label subsets, and the test set is scored with patient-level bootstrap CIs.
Each finished stage leaves its output on disk, so an interrupted demo resumes.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from radpair.config import save_config, to_dict
from radpair.data.corpus import Corpus
from radpair.data.tensors import images_to_tensor
from radpair.errors import ConfigError
from radpair.models import ImageEncoderConfig, MethodConfig, TextEncoderConfig, build_image_encoder
from radpair.models.export import load_image_encoder
from radpair_train.config import DataConfig, OptimConfig, PretrainConfig, TrainConfig
from radpair_train.loop import Trainer, check_output_dir

FRONTAL_VIEWS = ["PA", "AP"]


def _default_pretrain() -> PretrainConfig:
    return PretrainConfig(
        # Chauhan et al.'s section policy: impression, findings, conclusion, recommendation,
        # else the final report; it drops the indication, which would leak the question.
        data=DataConfig(batch_size=64, text_sections="chauhan2020"),
        image_encoder=ImageEncoderConfig(name="resnet_tiny"),
        # Synthetic reports are short and templated: a narrow BERT reads them well and
        # leaves most of the CPU budget to the image encoder, which is what we transfer.
        text_encoder=TextEncoderConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256, max_length=80),
        # Learned temperature (as in CLIP), started at ConVIRT's 0.1: many near-identical
        # normal reports act as false negatives, and a fixed 0.1 over-penalises them.
        method=MethodConfig(name="convirt", temperature=0.1, learn_temperature=True, lambda_image_to_text=0.75,
                            projection_dim=128),
        optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=1e-4, warmup_steps=50, schedule="cosine"),
        train=TrainConfig(epochs=24, log_every=10, checkpoint_every=200, seed=0),
    )


@dataclass
class DemoConfig:
    """Everything the demo does, in one typed tree (override with key=value)."""

    seed: int = 0
    n_images: int = 6000
    image_size: int = 64
    workers: int = 2
    difficulty: str = "default"
    vocab_size: int = 3000
    labels: list[str] = field(default_factory=list)  # empty: every synthetic finding
    n_values: list[str] = field(default_factory=lambda: ["10", "100", "1000", "all"])
    probe_repeats: int = 5
    probe_c_grid: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0])
    probe_cv_folds: int = 3
    scratch_repeats: int = 5  # repeats of the from-scratch baseline for N <= 100 (one above)
    scratch_epochs: int = 30  # passes over the labelled subset, bounded by the two below
    scratch_min_steps: int = 150
    scratch_max_steps: int = 1500
    scratch_lr: float = 1e-3
    eval_seed: int = 0
    threads: int | None = None
    pretrain: PretrainConfig = field(default_factory=_default_pretrain)


def quick_config() -> DemoConfig:
    """A two-minute version for tests and first contact; its numbers mean little."""
    cfg = DemoConfig(n_images=600, image_size=64, vocab_size=1000, n_values=["10", "100", "all"], probe_repeats=2,
                     scratch_repeats=1, scratch_epochs=10, scratch_min_steps=20, scratch_max_steps=60)
    cfg.pretrain.train = replace(cfg.pretrain.train, epochs=2, max_steps=40, checkpoint_every=40)
    cfg.pretrain.data = replace(cfg.pretrain.data, batch_size=32)
    cfg.pretrain.text_encoder = replace(cfg.pretrain.text_encoder, hidden_size=64, intermediate_size=128, max_length=64)
    return cfg


def _n_value(text: str) -> int | str:
    if text == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"n_values entries must be integers or 'all', got {text!r}") from None
    if value < 2:
        raise ConfigError(f"n_values entries must be at least 2, got {value}")
    return value


class _Stages:
    """Prints one line per stage with its wall time; records the times for results.json."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.times: dict[str, float] = {}

    def run(self, name: str, fn):
        self.log(f"[radpair demo] {name} ...")
        t0 = time.perf_counter()
        out = fn()
        self.times[name] = round(time.perf_counter() - t0, 1)
        self.log(f"[radpair demo] {name} done in {self.times[name]:.1f}s")
        return out


def _corpus(cfg: DemoConfig, root: Path) -> Corpus:
    from radpair.data.synth import SynthConfig, generate_corpus

    if (root / "meta.json").is_file():
        corpus = Corpus.open(root)
        gen = corpus.meta.get("generator", {})
        if corpus.meta.get("n_images") == cfg.n_images and list(corpus.image_size) == [cfg.image_size] * 2 and gen.get(
            "seed", cfg.seed
        ) == cfg.seed:
            return corpus  # finished by an earlier, interrupted demo
    synth_cfg = SynthConfig.preset(cfg.difficulty) if hasattr(SynthConfig, "preset") else SynthConfig()
    return generate_corpus(root, n_images=cfg.n_images, size=cfg.image_size, seed=cfg.seed, workers=cfg.workers,
                           config=synth_cfg)


def _tokenizer(cfg: DemoConfig, corpus: Corpus, out: Path):
    from radpair.text import load_tokenizer, train_wordpiece_tokenizer

    if (out / "tokenizer.json").is_file():
        return load_tokenizer(out)
    texts = corpus.split_index("train")["report"].astype(str).tolist()
    return train_wordpiece_tokenizer(texts, out, vocab_size=cfg.vocab_size)


def _predict(model: torch.nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = images_to_tensor(images[start : start + batch_size])
            out.append(torch.sigmoid(model.logits(x)).numpy())
    return np.concatenate(out)


def run_demo(cfg: DemoConfig, out_dir: str | Path, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    from radpair.data.synth import FINDINGS
    from radpair.evaluation import ProbeConfig, extract_features, label_efficiency
    from radpair.evaluation.report_page import write_report

    out = check_output_dir(out_dir)
    n_values = [_n_value(v) for v in cfg.n_values]
    labels = list(cfg.labels or FINDINGS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    save_config(cfg, out / "demo_config.yaml")
    stages = _Stages(log)
    t_start = time.perf_counter()

    corpus = stages.run("synthetic corpus", lambda: _corpus(cfg, out / "corpus"))
    tokenizer = stages.run("tokenizer", lambda: _tokenizer(cfg, corpus, out / "tokenizer"))

    pre_cfg = cfg.pretrain
    pre_cfg.data.corpus = str(corpus.root)
    pre_cfg.text_encoder.tokenizer = str(out / "tokenizer")
    pre_cfg.train.out_dir = str(out / "pretrain")
    pre_cfg.train.seed = cfg.seed
    pre_cfg.train.progress = progress
    if not (out / "pretrain" / "image_encoder.safetensors").is_file():
        stages.run("ConVIRT pretraining", lambda: Trainer(pre_cfg, tokenizer=tokenizer).fit(resume=True))

    # Evaluation rows: frontal views of the train split (label pool) and the test split.
    index = corpus.index
    frontal = index["view"].isin(FRONTAL_VIEWS).to_numpy()
    train_rows = np.flatnonzero((index["split"] == "train").to_numpy() & frontal)
    test_rows = np.flatnonzero((index["split"] == "test").to_numpy() & frontal)
    truth = corpus.labels("ground_truth")[labels].to_numpy(dtype=float)
    image_rows = index["image_index"].to_numpy()
    groups = index["patient_id"].astype(str).to_numpy()

    def features():
        encoders = {
            "convirt (linear probe)": load_image_encoder(out / "pretrain" / "image_encoder.safetensors"),
        }
        torch.manual_seed(cfg.seed)
        encoders["random init (linear probe)"] = build_image_encoder(pre_cfg.image_encoder)
        feats = {}
        for name, enc in encoders.items():
            f_train = extract_features(enc, corpus.images, indices=image_rows[train_rows])
            f_test = extract_features(enc, corpus.images, indices=image_rows[test_rows])
            feats[name] = (f_train, f_test)
        return feats

    feats = stages.run("frozen features", features)
    result = stages.run(
        "linear probes",
        lambda: label_efficiency(
            feats, truth[train_rows], truth[test_rows], groups[test_rows], n_values=n_values,
            repeats=cfg.probe_repeats, seed=cfg.eval_seed, train_groups=groups[train_rows], class_names=labels,
            probe_config=ProbeConfig(c_grid=tuple(cfg.probe_c_grid), cv_folds=cfg.probe_cv_folds, seed=cfg.eval_seed),
            n_jobs=max(1, cfg.workers),
        ),
    )

    def scratch():
        for n in n_values:
            repeats = cfg.scratch_repeats if n != "all" and int(n) <= 100 else 1
            for r in range(repeats):
                run_dir = out / "scratch" / f"n{n}-r{r}"
                size = None if n == "all" else int(n)
                n_items = size or len(train_rows)
                batch = min(32, n_items)
                steps = int(np.clip(cfg.scratch_epochs * n_items // batch, cfg.scratch_min_steps, cfg.scratch_max_steps))
                sup = PretrainConfig(
                    data=DataConfig(corpus=str(corpus.root), views=FRONTAL_VIEWS, batch_size=batch, subset_size=size,
                                    subset_seed=cfg.eval_seed, subset_repeat=r, augment=pre_cfg.data.augment),
                    image_encoder=pre_cfg.image_encoder,
                    method=MethodConfig(name="supervised", labels=labels),
                    optim=OptimConfig(name="adamw", lr=cfg.scratch_lr, weight_decay=1e-4, warmup_steps=min(50, steps // 5)),
                    train=TrainConfig(out_dir=str(run_dir), seed=cfg.seed + r, max_steps=steps, log_every=max(1, steps // 20),
                                      checkpoint_every=steps, keep_checkpoints=1, progress=False),
                )
                trainer = Trainer(sup)
                if not (run_dir / "image_encoder.safetensors").is_file():
                    trainer.fit(resume=True)
                else:
                    state = trainer.checkpoints.load_latest()
                    trainer.load_state_dict(state)
                probs = _predict(trainer.model, corpus.images[image_rows[test_rows]])
                result.add_external("from scratch (supervised)", n, r, probs, n_labelled=len(trainer.items))
                log(f"[radpair demo]   from scratch N={n} repeat {r}: {steps} steps")

    stages.run("from-scratch baselines", scratch)

    summary = _headline(result, n_values)
    results = {
        "command": " ".join(shlex.quote(a) for a in sys.argv) if sys.argv else "radpair demo",
        "config": to_dict(cfg),
        "corpus": {"root": str(corpus.root), "n_images": len(corpus), "image_size": list(corpus.image_size),
                   "report_agreement": corpus.meta.get("report_agreement")},
        "labels": labels,
        "headline": summary,
        "label_efficiency": result.to_dict(),
        "stage_seconds": stages.times,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    rng = np.random.default_rng(cfg.seed)
    sample_rows = sorted(rng.choice(len(index), size=min(8, len(index)), replace=False).tolist())
    write_report(
        out, result=result, loss_log=out / "pretrain" / "metrics.jsonl", corpus=corpus, sample_rows=sample_rows,
        command=results["command"], title="radpair demo: report-supervised pretraining on the synthetic corpus",
        notes=_notes(summary),
    )
    log(f"[radpair demo] finished in {results['total_seconds']:.0f}s; results page: {out / 'report.md'}")
    for line in _notes(summary):
        log(f"[radpair demo] {line}")
    return results


def _headline(result, n_values) -> dict:
    """Macro AUC of each method at each N (mean over repeats), for the docs and the test."""
    table: dict[str, dict[str, float]] = {}
    for method in result.methods:
        for n in n_values:
            try:
                s = result.summary(method, n)
            except (KeyError, ValueError):
                continue
            table.setdefault(method, {})[str(n)] = round(float(s.macro_mean), 4)
    return table


def _notes(summary: dict) -> list[str]:
    lines = []
    for method, row in summary.items():
        lines.append(f"{method}: " + ", ".join(f"N={n} macro AUC {v:.3f}" for n, v in row.items()))
    return lines

"""The main job: synthetic corpus -> tokenizer -> ConVIRT pretraining -> transfer -> results page.

It asks the question all five papers ask, on data anyone can regenerate: does supervision
from reports make a few-label image model better? The transfer stage is the transfer
protocol (:mod:`radpair.transfer`) with four arms on identical subsets:

* ``convirt:linear``: the pretrained encoder frozen, logistic regression on its features;
* ``convirt:frozen-head``: the same features, a head trained by gradient descent;
* ``random:linear``: the random-feature floor;
* ``random:finetune``: the same network trained from scratch on the labels (the fair
  baseline: the same grid size and early stopping on validation as every other arm).

Training labels are read from the report text by radpair's labelers; test labels are the
generator's drawn truth. Every stage's output is keyed on a hash of the settings that
made it (``stages.json``): a rerun reuses a finished stage, and redoes a stage (and
everything after it) whose settings changed, saying which keys changed.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from radpair.config import save_config, to_dict
from radpair.data.corpus import Corpus, atomic_write_text
from radpair.errors import ConfigError
from radpair.methods.convirt import ConVIRTConfig
from radpair.models import ImageEncoderConfig, TextEncoderConfig
from radpair.transfer import TransferConfig
from radpair_train.config import DataConfig, OptimConfig, PretrainConfig, TrainConfig
from radpair_train.loop import Trainer, check_output_dir

HEADLINE_PAIRS = [("convirt:linear", "random:finetune"), ("convirt:linear", "random:linear")]


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
        method=ConVIRTConfig(name="convirt", temperature=0.1, learn_temperature=True, lambda_image_to_text=0.75,
                            projection_dim=128),
        optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=1e-4, warmup_steps=50, schedule="cosine"),
        # 6 epochs over the ~20,000 training pairs of the default corpus (19,987 on seed 0): the ~1,900 steps
        # the earlier 24 epochs over 4,800 pairs took
        train=TrainConfig(epochs=6, log_every=10, checkpoint_every=200, seed=0),
    )


def _default_transfer() -> TransferConfig:
    cfg = TransferConfig(
        task="findings7",
        arms=["convirt:linear", "convirt:frozen-head", "random:linear", "random:finetune"],
        n=["10", "100", "1000", "all"],
        repeats=3,
        workers=2,
    )
    return cfg


@dataclass
class DemoConfig:
    """Everything the demo does, in one typed tree (override with key=value)."""

    seed: int = 0
    n_images: int = 25000
    """25,000 images: about 20,000 image-report pairs in the train split to pretrain on (19,987 on
    seed 0; the split is by patient, so the share varies a little with the seed; issue 10)."""
    image_size: int = 64
    workers: int = 2
    difficulty: str = "default"
    vocab_size: int = 3000
    threads: int | None = None
    pretrain: PretrainConfig = field(default_factory=_default_pretrain)
    transfer: TransferConfig = field(default_factory=_default_transfer)
    """The transfer study; ``encoders`` are filled in by the demo (convirt, random)."""
    methods: list[str] = field(default_factory=lambda: ["convirt"])
    """Pretraining methods to compare (``radpair demo --methods convirt,chauhan_ranking,...``).
    Every other method trains on the same corpus, tokenizer, encoders, optimiser, batch and
    epochs as ConVIRT (its ``epochs`` going where the method's ``schedule_keys`` say), and
    joins the transfer study as ``<method>:linear``."""
    method_options: dict[str, dict] = field(default_factory=dict)
    """Per-method config keys on top of the method's defaults, e.g.
    ``{chauhan_ranking: {impostors: batch}}``."""

    def validate(self) -> None:
        from radpair.methods import method_class

        if not self.methods:
            raise ConfigError("methods must name at least one pretraining method (e.g. convirt)")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods lists a method twice: {self.methods}")
        for name in [*self.methods, *self.method_options]:
            method_class(name)  # unknown names fail here, with the closest one


def quick_config() -> DemoConfig:
    """A short version for tests and first contact; its numbers mean little."""
    cfg = DemoConfig(n_images=600, image_size=64, vocab_size=1000)
    cfg.pretrain.train = replace(cfg.pretrain.train, epochs=2, max_steps=40, checkpoint_every=40)
    cfg.pretrain.data = replace(cfg.pretrain.data, batch_size=32)
    cfg.pretrain.text_encoder = replace(cfg.pretrain.text_encoder, hidden_size=64, intermediate_size=128, max_length=64)
    t = cfg.transfer
    t.n, t.repeats, t.n_bootstrap, t.workers = ["10", "100", "all"], 2, 200, 1
    # every arm keeps a grid of the same size (two settings) in the quick run too
    t.linear.c_grid = [1e-2, 1.0]
    t.frozen_head.lr, t.frozen_head.weight_decay, t.frozen_head.max_epochs = [1e-3, 1e-2], [1e-4], 60
    t.finetune.lr, t.finetune.weight_decay = [1e-3, 3e-3], [1e-4]
    t.finetune.max_steps, t.finetune.min_steps, t.finetune.eval_every, t.finetune.patience = 40, 10, 10, 3
    return cfg


# ---- stage cache --------------------------------------------------------------------------------
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


class StageCache:
    """``stages.json``: for every finished stage, a hash of the settings that made it.

    A stage whose settings (or whose upstream stage) changed is redone, and its old output
    removed first, so results never mix stages made with different settings.
    """

    def __init__(self, out: Path, log: Callable[[str], None]) -> None:
        self.path = out / "stages.json"
        self.log = log
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except ValueError:
            self.data = {}

    @staticmethod
    def key(settings: dict[str, Any], upstream: str = "") -> str:
        blob = json.dumps({"settings": settings, "upstream": upstream}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def fresh(self, name: str, key: str, settings: dict[str, Any], outputs: list[Path]) -> bool:
        """True when ``name`` finished with these settings. Otherwise the stage is about to
        run: outputs of other settings are removed first, while the outputs of an
        interrupted run with the same settings are kept so that it resumes."""
        old = self.data.get(name)
        same = bool(old and old.get("key") == key)
        state = (old or {}).get("state", "done" if old and "finished" in old else "running")
        if same and state == "done" and all(p.exists() for p in outputs):
            return True
        if not same and any(p.exists() for p in outputs):
            if old is None:
                why = "made by an older radpair or another command (no stage record)"
            else:
                before, now = _flatten(old.get("settings", {})), _flatten(settings)
                changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
                why = ("changed: " + ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:8])
                       if changed else "an earlier stage changed")
            self.log(f"[radpair demo] redoing stage {name!r}: {why}")
            for p in outputs:
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        elif same and any(p.exists() for p in outputs):
            self.log(f"[radpair demo] resuming the interrupted stage {name!r}")
        self.data[name] = {"key": key, "settings": settings, "state": "running"}
        self._save()
        return False

    def done(self, name: str, key: str, settings: dict[str, Any]) -> None:
        self.data[name] = {"key": key, "settings": settings, "state": "done",
                           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        self._save()

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1, default=str))


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


def method_pretrain_config(base: PretrainConfig, name: str, options: dict, out_dir: Path) -> PretrainConfig:
    """The demo's ConVIRT run with another method: same data, encoders, optimiser, batch and
    epochs (the method's ``schedule_keys`` say where ``epochs`` goes), the method's own
    defaults plus ``options``; equal pretraining compute up to what the method adds per pair."""
    import copy

    from radpair.methods import method_class, resolve_method_config

    cfg = copy.deepcopy(base)
    cfg.method = resolve_method_config({"name": name, **options})
    cfg.train.out_dir = str(out_dir)
    for generic, target in method_class(name).schedule_keys(cfg.method).items():
        if generic != "epochs" or target == "train.epochs" or target.split(".", 1)[1] in options:
            continue  # only the shared epoch count; an explicit option wins
        section, key = target.split(".", 1)
        setattr(getattr(cfg, section), key, base.train.epochs)
    cfg.method.validate()
    return cfg


def _pretrain_settings(cfg: PretrainConfig) -> dict[str, Any]:
    d = to_dict(cfg)
    d["data"].pop("corpus", None)
    d["text_encoder"].pop("tokenizer", None)
    for k in ("out_dir", "progress", "log_every", "checkpoint_every", "keep_checkpoints", "threads"):
        d["train"].pop(k, None)
    d["data"].pop("prefetch", None)
    return d


def run_demo(cfg: DemoConfig, out_dir: str | Path, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    from radpair.data.synth import SynthConfig, generate_corpus
    from radpair.data.synth.generate import GENERATOR_VERSION
    from radpair.evaluation.transfer_page import write_transfer_report
    from radpair.text import load_tokenizer, train_wordpiece_tokenizer
    from radpair.transfer import run_transfer

    out = check_output_dir(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    save_config(cfg, out / "demo_config.yaml")
    stages = _Stages(log)
    cache = StageCache(out, log)
    t_start = time.perf_counter()

    synth_cfg = SynthConfig.preset(cfg.difficulty)
    corpus_settings = {"seed": cfg.seed, "n_images": cfg.n_images, "image_size": cfg.image_size,
                       "difficulty": cfg.difficulty, "synth": to_dict(synth_cfg), "generator_version": GENERATOR_VERSION}
    corpus_key = cache.key(corpus_settings)
    if cache.fresh("corpus", corpus_key, corpus_settings, [out / "corpus"]):
        corpus = Corpus.open(out / "corpus")
    else:
        corpus = stages.run("synthetic corpus", lambda: generate_corpus(
            out / "corpus", n_images=cfg.n_images, size=cfg.image_size, seed=cfg.seed, workers=cfg.workers,
            config=synth_cfg))
        cache.done("corpus", corpus_key, corpus_settings)

    tok_settings = {"vocab_size": cfg.vocab_size}
    tok_key = cache.key(tok_settings, corpus_key)
    if cache.fresh("tokenizer", tok_key, tok_settings, [out / "tokenizer"]):
        tokenizer = load_tokenizer(out / "tokenizer")
    else:
        texts = corpus.split_index("train")["report"].astype(str).tolist()
        tokenizer = stages.run("tokenizer", lambda: train_wordpiece_tokenizer(texts, out / "tokenizer",
                                                                               vocab_size=cfg.vocab_size))
        cache.done("tokenizer", tok_key, tok_settings)

    pre_cfg = cfg.pretrain
    pre_cfg.data.corpus = str(corpus.root)
    pre_cfg.text_encoder.tokenizer = str(out / "tokenizer")
    pre_cfg.train.out_dir = str(out / "pretrain")
    pre_cfg.train.seed = cfg.seed
    pre_cfg.train.progress = progress
    pre_settings = _pretrain_settings(pre_cfg)
    pre_key = cache.key(pre_settings, tok_key)
    encoder_file = out / "pretrain" / "image_encoder.safetensors"
    tcfg = cfg.transfer
    # arms name their start; a study of the random start alone (the calibration benchmark's
    # from-scratch arm) needs no pretraining
    needs_convirt = not tcfg.arms or any(a.split(":")[0] == "convirt" for a in tcfg.arms)
    if needs_convirt and not cache.fresh("pretrain", pre_key, pre_settings, [out / "pretrain", encoder_file]):
        stages.run("ConVIRT pretraining", lambda: Trainer(pre_cfg, tokenizer=tokenizer).fit(resume=True))
        cache.done("pretrain", pre_key, pre_settings)

    tcfg.encoders = [f"convirt={encoder_file}", "random"] if needs_convirt else ["random"]
    for name in cfg.methods:
        if name == "convirt":
            continue
        m_cfg = method_pretrain_config(pre_cfg, name, cfg.method_options.get(name, {}), out / f"pretrain_{name}")
        m_settings = _pretrain_settings(m_cfg)
        m_key = cache.key(m_settings, tok_key)
        m_file = out / f"pretrain_{name}" / "image_encoder.safetensors"
        if not cache.fresh(f"pretrain_{name}", m_key, m_settings, [out / f"pretrain_{name}", m_file]):
            stages.run(f"{name} pretraining", lambda c=m_cfg: Trainer(c, tokenizer=tokenizer).fit(resume=True))
            cache.done(f"pretrain_{name}", m_key, m_settings)
        tcfg.encoders.append(f"{name}={m_file}")
        if tcfg.arms and f"{name}:linear" not in tcfg.arms:
            tcfg.arms = [*tcfg.arms, f"{name}:linear"]
    tcfg.arch = pre_cfg.image_encoder.name
    tcfg.seed = cfg.seed
    t_settings = to_dict(tcfg)
    t_key = cache.key(t_settings, pre_key)
    # cells carry their own fingerprints, so a changed transfer setting reruns only what it affects
    cache.fresh("transfer", t_key, t_settings, [])
    result = stages.run("transfer (every arm, budget and repeat)",
                        lambda: run_transfer(tcfg, corpus, out / "transfer", log=log, progress=progress))
    cache.done("transfer", t_key, t_settings)

    headline = _headline(result)
    command = " ".join(shlex.quote(a) for a in sys.argv) if sys.argv else "radpair demo"
    notes = _notes(result, headline)
    extra = _extra_figures(out, corpus, cfg.seed, with_pretraining=needs_convirt)
    if len(cfg.methods) > 1:
        extra = _method_compute(out, cfg.methods, stages.times) + "\n" + extra
    pages = write_transfer_report(out, result, title="radpair demo: report-supervised pretraining on the synthetic corpus",
                                  notes=notes, extra_markdown=extra, run_dir=out / "transfer",
                                  highlight=[(a, b) for a, b in HEADLINE_PAIRS if {a, b} <= set(result.arm_keys)])
    results = {
        "command": command,
        "config": to_dict(cfg),
        "corpus": {"root": str(corpus.root), "n_images": len(corpus), "image_size": list(corpus.image_size),
                   "seed": cfg.seed, "report_agreement": corpus.meta.get("report_agreement")},
        "task": result.task.get("name"),
        "label_notes": result.task.get("label_notes", []),
        "headline": headline,
        "transfer_results": str(out / "transfer" / "results.json"),
        "stage_seconds": stages.times,
        "stage_keys": {k: v.get("key") for k, v in cache.data.items()},
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=float))
    log(f"[radpair demo] finished in {results['total_seconds']:.0f}s; results page: {pages.get('markdown', out / 'report.md')}")
    for line in notes:
        log(f"[radpair demo] {line}")
    return results


def _method_compute(out: Path, methods: list[str], times: dict[str, float]) -> str:
    """The page's statement of pretraining compute per method, read from each run's record."""
    lines = ["## Pretraining compute per method", "",
             "Every method trains on the same corpus, tokenizer, encoders, optimiser, batch and epochs as ConVIRT; "
             "what differs is what each method adds per pair (a second text field, impostor or false-pair rows, a "
             "labelled phase) and which pairs it keeps (reports lacking a section it reads are dropped).", "",
             "| method | training pairs | steps | phases | seconds |", "|---|---|---|---|---|"]
    for name in methods:
        folder = out / ("pretrain" if name == "convirt" else f"pretrain_{name}")
        try:
            info = json.loads((folder / "run_info.json").read_text())
        except (OSError, ValueError):
            continue
        rows = info.get("empty_text", {})
        pairs = (rows.get("rows", 0) - rows.get("dropped", 0)) if rows else "—"
        phases = ", ".join(f"{p['name']} {p['epochs']} epochs over {p['rows']} pairs" for p in info.get("phases", [])) \
            or f"{info.get('total_steps', 0) / max(info.get('steps_per_epoch', 1), 1):.1f} epochs"
        secs = times.get("ConVIRT pretraining" if name == "convirt" else f"{name} pretraining")
        shown = f"{secs:.0f}" if secs is not None else "earlier run"
        lines.append(f"| {name} | {pairs} | {info.get('total_steps')} | {phases} | {shown} |")
    return "\n".join(lines) + "\n"


def _headline(result) -> dict[str, Any]:
    """Mean primary metric per arm and budget, and the paired differences the claim rests on."""
    means = {}
    for arm in result.arm_keys:
        means[arm] = {b: _round(result.mean(arm, b)) for b in result.budgets}
    paired = {}
    for a, b in HEADLINE_PAIRS:
        if a not in result.arm_keys or b not in result.arm_keys:
            continue
        for budget in result.budgets:
            try:
                p = result.paired_difference(a, b, budget)
            except Exception:  # noqa: BLE001 - no bootstrap (n_bootstrap=0)
                continue
            paired.setdefault(f"{a} - {b}", {})[budget] = {
                "mean_diff": _round(p.get("mean_diff")), "ci": [_round(p.get("ci_low")), _round(p.get("ci_high"))],
                "p_value": _round(p.get("p_value")), "t_ci": [_round(p.get("t_ci_low")), _round(p.get("t_ci_high"))],
                "per_repeat": [_round(r.get("diff")) for r in p.get("per_repeat", [])]}
    return {"metric": result.primary_metric, "means": means, "paired": paired}


def _round(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), 4)


def _notes(result, headline: dict[str, Any]) -> list[str]:
    metric = headline["metric"].replace("_", " ").replace("macro auc", "macro AUC")
    level = float(result.config.get("confidence", 0.95))
    lines = [f"report labels: {n}" for n in result.task.get("label_notes", [])]
    for pair, by_budget in headline["paired"].items():
        a, b = pair.split(" - ")
        for budget, p in by_budget.items():
            lo, hi = p["ci"]
            if p["mean_diff"] is None or lo is None or hi is None:
                lines.append(f"N={budget}: {result.arm_label(a)} minus {result.arm_label(b)}: no valid bootstrap "
                             "replicate (a class lacks positives in the test set's resamples)")
                continue
            verdict = ("holds" if lo is not None and lo > 0 else
                       "reversed" if hi is not None and hi < 0 else "not resolved (CI contains 0)")
            lines.append(f"N={budget}: {result.arm_label(a)} minus {result.arm_label(b)} = {p['mean_diff']:+.3f} "
                         f"{metric} ({level:.0%} CI {lo:+.3f} to {hi:+.3f}, p = {_p(p['p_value'])}): {verdict}")
    return lines


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _extra_figures(out: Path, corpus: Corpus, seed: int, with_pretraining: bool = True) -> str:
    """The pretraining loss curve and sample image-report pairs, as Markdown for the page."""
    from radpair.evaluation.run_figures import plot_loss_curve, plot_sample_grid

    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    log_file = out / "pretrain" / "metrics.jsonl"
    if with_pretraining and log_file.is_file():  # a left-over log from an earlier run is not this run's
        plot_loss_curve(log_file, fig_dir / "pretrain_loss.png")
        parts.append("## Pretraining loss\n\n![ConVIRT pretraining loss](figures/pretrain_loss.png)\n")
    rng = np.random.default_rng(seed)
    rows = sorted(rng.choice(len(corpus.index), size=min(6, len(corpus.index)), replace=False).tolist())
    plot_sample_grid(corpus, rows, fig_dir / "samples.png")
    parts.append("## Sample images and reports\n\n![synthetic radiographs with their reports](figures/samples.png)\n")
    return "\n".join(parts)


def _n_value(text: str) -> int | str:  # kept for callers of the old API
    if text == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"n_values entries must be integers or 'all', got {text!r}") from None

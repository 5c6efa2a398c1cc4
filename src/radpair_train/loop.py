"""The one training loop every method runs on.

It knows nothing about methods: it builds a batch, calls ``model(batch)``, backpropagates
``out["loss"]`` and logs ``out["loss_components"]``. Data order comes from
:class:`radpair.data.pairs.EpochBatches`, so the loop's position is just (epoch, batch);
together with model, optimiser, scheduler and RNG states that is the whole checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from radpair.config import save_config, to_dict
from radpair.data.corpus import Corpus
from radpair.data.pairs import EpochBatches, PairDataset
from radpair.errors import ConfigError
from radpair.models import build_method
from radpair.models.export import save_encoder_weights
from radpair.text import load_tokenizer
from radpair_train.checkpoint import CheckpointManager
from radpair_train.config import PretrainConfig
from radpair_train.optim import build_optimizer, build_scheduler
from radpair_train.runtime import DistInfo, environment_info, init_distributed, resolve_device


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message holds the step, components and batch ids."""


@dataclass
class RunResult:
    out_dir: Path
    steps: int
    final_loss: float
    image_encoder_weights: Path | None
    checkpoint: Path | None


def check_output_dir(path: str | Path) -> Path:
    """Create ``path`` or fail now, before any work, if it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output folder {str(path)!r} is not writable: {exc.strerror or exc}") from None
    return path


def _subset(dataset: PairDataset, size: int, seed: int) -> np.ndarray:
    """Deterministic few-label subset; uses the evaluation sampler when labels exist."""
    if dataset.labels is not None:
        try:
            from radpair.evaluation.sampling import sample_labelled_subset

            return np.asarray(sample_labelled_subset(dataset.labels, dataset.label_mask, size, seed))
        except ImportError:
            pass
    return np.sort(np.random.default_rng(seed).choice(len(dataset), size=size, replace=False))


class Trainer:
    def __init__(self, cfg: PretrainConfig, tokenizer=None, on_step: Callable[[int, dict], None] | None = None):
        self.cfg = cfg
        self.on_step = on_step
        self.out_dir = check_output_dir(cfg.train.out_dir)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = resolve_device(cfg.train.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.dist.distributed and self.device.type == "cuda":
            self.device = torch.device(f"cuda:{self.dist.local_rank}")
        if not cfg.data.corpus:
            raise ConfigError("data.corpus is empty: point it at a corpus folder (radpair synth / radpair preprocess)")
        corpus = Corpus.open(cfg.data.corpus)
        if tokenizer is None and cfg.method.name != "supervised":
            tok_path = cfg.text_encoder.tokenizer or cfg.text_encoder.pretrained
            if not tok_path:
                raise ConfigError("text_encoder.tokenizer is empty: train one with `radpair tokenizer`")
            tokenizer = load_tokenizer(tok_path)
        self.tokenizer = tokenizer
        torch.manual_seed(cfg.train.seed)  # model initialisation is part of the run's seed
        self.model = build_method(cfg.method, cfg.image_encoder, cfg.text_encoder, tokenizer).to(self.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        needs_text = getattr(self.model, "needs_text", True)
        self.dataset = PairDataset(
            corpus,
            split=cfg.data.split,
            tokenizer=tokenizer if needs_text else None,
            text_sections=cfg.data.text_sections,
            max_length=cfg.text_encoder.max_length,
            label_columns=cfg.method.labels or None,
            label_source=cfg.data.label_source,
            uncertain=cfg.data.uncertain,
        )
        self.items = np.arange(len(self.dataset))
        if cfg.data.subset_size:
            self.items = _subset(self.dataset, cfg.data.subset_size, cfg.data.subset_seed)
        self.batch_size = min(cfg.data.batch_size, len(self.items) - len(self.items) % self.dist.world_size)
        self.steps_per_epoch = len(self.items) // self.batch_size
        self.total_steps = cfg.train.max_steps or cfg.train.epochs * self.steps_per_epoch
        self.ddp_model = self.model
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.total_steps)
        self.augment = None
        if getattr(cfg.data.augment, "enabled", False):
            from radpair.data.augment import BatchAugment

            self.augment = BatchAugment(cfg.data.augment)
        self.aug_generator = torch.Generator(device="cpu").manual_seed(cfg.train.seed + 1)
        self.checkpoints = CheckpointManager(self.out_dir / "checkpoints", cfg.train.keep_checkpoints)
        self.step = 0

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "augment_rng": self.aug_generator.get_state(),
            "config": json.dumps(to_dict(self.cfg)),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.aug_generator.set_state(state["augment_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])

    # -- steps ---------------------------------------------------------------------------
    def _batch(self, step: int) -> dict[str, torch.Tensor]:
        epoch, i = divmod(step, self.steps_per_epoch)
        order = EpochBatches(len(self.items), self.batch_size, self.cfg.train.seed, epoch, self.dist.rank, self.dist.world_size)
        batch = self.dataset.get_batch(self.items[order.batch(i)])
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.augment is not None:
            batch["images"] = self.augment(batch["images"], self.aug_generator)
        if self.cfg.train.channels_last:
            batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
        return batch

    def _autocast(self):
        if self.cfg.train.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict:
        self.ddp_model.train()
        with self._autocast():
            out = self.ddp_model(batch)
        loss = out["loss"]
        if not torch.isfinite(loss.detach()):
            comps = {k: float(v) for k, v in out.get("loss_components", {}).items()}
            ids = batch["ids"].tolist()
            raise TrainingDiverged(
                f"non-finite loss {float(loss)} at step {self.step}; components {comps}; batch image ids {ids}; "
                f"the last good checkpoint is kept in {self.checkpoints.directory}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return out

    # -- run -----------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> RunResult:
        main = self.dist.is_main
        if resume:
            state = self.checkpoints.load_latest(map_location=self.device)
            if state is not None:
                self.load_state_dict(state)
        if main:
            save_config(self.cfg, self.out_dir / "config.yaml")
            (self.out_dir / "run_info.json").write_text(json.dumps(environment_info(), indent=2))
        log_path = self.out_dir / "metrics.jsonl"
        if main:
            _truncate_log(log_path, self.step)
        writer = _tensorboard(self.out_dir / "tensorboard") if main else None
        progress = _progress(self.cfg.train.progress and main, self.total_steps, self.step, self.cfg.method.name)
        last_loss = float("nan")
        t0, seen = time.perf_counter(), 0
        last_ckpt = None
        try:
            with open(log_path, "a") if main else contextlib.nullcontext() as log:
                while self.step < self.total_steps:
                    batch = self._batch(self.step)
                    out = self.train_step(batch)
                    self.step += 1
                    seen += batch["images"].shape[0] * self.dist.world_size
                    last_loss = float(out["loss"].detach())
                    if main and (self.step % self.cfg.train.log_every == 0 or self.step == self.total_steps):
                        rate = seen / max(time.perf_counter() - t0, 1e-9)
                        record = {
                            "step": self.step,
                            "loss": last_loss,
                            "loss_components": {k: float(v) for k, v in out.get("loss_components", {}).items()},
                            "lr": self.scheduler.get_last_lr()[0],
                            "images_per_s": rate,
                        }
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                        if writer is not None:
                            writer.add_scalar("loss/total", last_loss, self.step)
                            for k, v in record["loss_components"].items():
                                writer.add_scalar(f"loss/{k}", v, self.step)
                            writer.add_scalar("lr", record["lr"], self.step)
                    if progress is not None:
                        progress.update(self.step, last_loss, seen / max(time.perf_counter() - t0, 1e-9))
                    if self.on_step is not None:
                        self.on_step(self.step, out)
                    if main and (self.step % self.cfg.train.checkpoint_every == 0 or self.step == self.total_steps):
                        last_ckpt = self.checkpoints.save(self.state_dict(), self.step)
        finally:
            if progress is not None:
                progress.close()
            if writer is not None:
                writer.close()
        weights = None
        if main:
            weights = self.export()
        return RunResult(self.out_dir, self.step, last_loss, weights, last_ckpt)

    def export(self) -> Path:
        """Write the image encoder (and text encoder, if any) as safetensors."""
        meta = {"config": to_dict(self.cfg), "step": self.step, "image_size": list(self.dataset.corpus.image_size)}
        path = save_encoder_weights(self.model.image_encoder, self.out_dir / "image_encoder.safetensors", meta)
        text = getattr(self.model, "text_encoder", None)
        if text is not None:
            save_encoder_weights(text, self.out_dir / "text_encoder.safetensors", meta)
        return path


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint so the log matches the state."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue
    path.write_text("".join(k + "\n" for k in keep))


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: JSONL log only
        return None
    return SummaryWriter(str(path))


class _Progress:
    def __init__(self, total: int, start: int, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.0f} img/s"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = self.bar.add_task(label, total=total, completed=start, loss=float("nan"), rate=0.0)
        self.bar.start()

    def update(self, step: int, loss: float, rate: float) -> None:
        self.bar.update(self.task, completed=step, loss=loss if math.isfinite(loss) else float("nan"), rate=rate)

    def close(self) -> None:
        self.bar.stop()


def _progress(enabled: bool, total: int, start: int, label: str):
    return _Progress(total, start, label) if enabled else None

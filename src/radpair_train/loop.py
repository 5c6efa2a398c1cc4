"""The one training loop every method runs on, in one process or many.

It knows nothing about methods: it builds a batch, calls ``model(batch)``, backpropagates
``out["loss"]`` and logs ``out["loss_components"]``. Which rows a step trains on is a pure
function of the step (:mod:`radpair_train.batches`), and so is its randomness
(:mod:`radpair_train.rng`); the checkpoint therefore only needs the step plus the model,
optimiser, scheduler, scaler and LookAhead states, and a run killed at any instant resumes
to bit-identical weights on CPU.

Data parallelism follows ``torch.distributed``: every process holds a full model, trains
on its slice of the global batch and averages gradients (DDP). Contrastive methods
gather embeddings from all processes, so the negatives of a step are the global batch.
Only the main process (rank 0) logs, checkpoints and exports.

Resuming (``fit(resume=True)``) with another config: a change of the data order (rows,
global batch, seed, accumulation) is refused; every other changed key is printed as a
warning and recorded in ``run_info.json`` (see :meth:`Trainer.load_state_dict`), and the
optimiser and schedule settings of the current config take effect from the resumed step.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from radpair.config import save_config, to_dict
from radpair.data.corpus import Corpus, atomic_write_csv
from radpair.data.pairs import PairDataset
from radpair.errors import ConfigError
from radpair.methods import BuildContext, MethodNeeds, Phase, build_method, method_needs
from radpair.models.export import input_record, save_encoder_weights
from radpair.text import load_tokenizer
from radpair_train import distributed as D
from radpair_train import rng
from radpair_train.batches import BatchPlan, BatchReader, ExtraRowPlan, PhaseSpan, Schedule, read_step
from radpair_train.checkpoint import RESUME_IGNORED_KEYS, CheckpointManager, config_changes
from radpair_train.config import PretrainConfig
from radpair_train.optim import build_lookahead, build_optimizer, build_scheduler
from radpair_train.output_dir import check_output_dir  # noqa: F401  (re-exported: callers import it from here)
from radpair_train.runlog import MetricsLog, progress
from radpair_train.runtime import DistInfo, environment_info, resolve_device

CHECKPOINT_FORMAT = 2


class TrainingDiverged(RuntimeError):
    """The loss (or gradient) became NaN or infinite; the message holds the step, the loss
    components, the batch ids and the last good checkpoint, which is left in place."""


@dataclass
class RunResult:
    out_dir: Path
    steps: int
    final_loss: float
    image_encoder_weights: Path | None
    checkpoint: Path | None




def _subset(dataset: PairDataset, size: int, seed: int, repeat: int) -> np.ndarray:
    """The few-label subset the evaluation draws for (seed, N, repeat), so a from-scratch
    baseline trains on exactly the images a linear probe of the same budget sees."""
    if dataset.labels is None:
        raise ConfigError("data.subset_size needs labels: set method.labels")
    from radpair.evaluation.sampling import draw_subset

    raw = np.where(dataset.label_mask > 0, dataset.labels, np.nan)
    return draw_subset(raw, size, seed=seed, repeat=repeat).indices


def patient_fraction(dataset: PairDataset, items: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The rows of a seeded ``fraction`` of the patients of ``items``. Patients are drawn as
    a prefix of one seeded permutation of the sorted patient ids, so the 10 % set lies
    inside the 25 % set, and so on: a size sweep changes only how much data there is."""
    patients = dataset.rows["patient_id"].astype(str).to_numpy()[items]
    unique = np.unique(patients)
    order = np.random.default_rng(seed).permutation(len(unique))
    keep = set(unique[order[: max(1, int(np.ceil(fraction * len(unique))))]])
    return items[np.fromiter((p in keep for p in patients), dtype=bool, count=len(patients))]


def _sha(items: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(items, dtype=np.int64).tobytes()).hexdigest()[:16]


def _reason_counts(dropped) -> str:
    counts = dropped["reason"].value_counts()
    return "; ".join(f"{n} {reason}" for reason, n in counts.items())


class Trainer:
    def __init__(self, cfg: PretrainConfig, tokenizer=None, on_step: Callable[[int, dict], None] | None = None):
        self.cfg = cfg
        self.on_step = on_step
        tc = cfg.train
        self.out_dir = check_output_dir(tc.out_dir)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        device = resolve_device(tc.device)
        self.dist: DistInfo = D.init_distributed(device, tc.dist_backend, tc.dist_timeout_s)
        if device.type == "cuda" and self.dist.distributed:
            # one process per GPU; a launcher that hides the other GPUs leaves only cuda:0
            device = torch.device(f"cuda:{self.dist.local_rank % max(1, torch.cuda.device_count())}")
        self.device = device
        if tc.precision == "fp16" and device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs a GPU; on CPU use fp32 (fastest here) or bf16")
        if tc.deterministic:
            if device.type == "cuda":  # cuBLAS needs a fixed workspace to be deterministic
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=False)
        if not cfg.data.corpus:
            raise ConfigError("data.corpus is empty: point it at a corpus folder (radpair synth / radpair preprocess)")
        corpus = Corpus.open(cfg.data.corpus)
        # the method declares what it needs; the loop provides it (never by the method's name)
        self.needs: MethodNeeds = method_needs(cfg.method)
        if tokenizer is None and self.needs.needs_text:
            tok_path = cfg.text_encoder.tokenizer or cfg.text_encoder.pretrained
            if not tok_path:
                raise ConfigError("text_encoder.tokenizer is empty: train one with `radpair tokenizer`")
            tokenizer = load_tokenizer(tok_path)
        self.tokenizer = tokenizer
        if self.needs.text_encoder and not cfg.text_encoder.pretrained:  # a BERT built here has max_length positions
            for f in self.needs.text_fields:
                if f.max_length and f.max_length > cfg.text_encoder.max_length:
                    raise ConfigError(
                        f"method {cfg.method.name!r} reads up to {f.max_length} tokens of its {f.name!r} text, but "
                        f"the text encoder has text_encoder.max_length={cfg.text_encoder.max_length} positions; "
                        "raise text_encoder.max_length or lower the method's length")

        self.dataset = PairDataset(
            corpus,
            split=cfg.data.split,
            tokenizer=tokenizer if self.needs.needs_text else None,
            text_sections=cfg.data.text_sections,
            max_length=cfg.text_encoder.max_length,
            label_source=cfg.data.label_source,
            uncertain=cfg.data.uncertain,
            views=cfg.data.views or None,
            empty_text=cfg.data.empty_text,
            text_fields=self.needs.text_fields or None,
            require_sections=self.needs.require_sections,
            row_codes=self.needs.row_codes,
            label_need=self.needs.labels,
        )
        if self.dist.is_main and len(self.dataset.dropped):
            print(
                f"dropped {len(self.dataset.dropped)} of {self.dataset.rows_before_drop} rows "
                f"({_reason_counts(self.dataset.dropped)}; listed in {self.out_dir / 'dropped_rows.csv'})",
                flush=True,
            )
        self.items = np.arange(len(self.dataset))
        if cfg.data.subset_size:
            self.items = _subset(self.dataset, cfg.data.subset_size, cfg.data.subset_seed, cfg.data.subset_repeat)
        if cfg.data.pair_fraction is not None:
            self.items = patient_fraction(self.dataset, self.items, cfg.data.pair_fraction, cfg.data.pair_fraction_seed)
        self.stats = self.dataset.statistics(self.items)
        if self.needs.labels is not None and self.needs.labels.required and self.stats.n_labelled == 0:
            raise ConfigError(f"method {cfg.method.name!r} needs labels, but none of the {len(self.items)} training "
                              "rows carries one")

        torch.manual_seed(tc.seed)  # model initialisation is part of the run's seed (same on every process)
        parts = BuildContext(cfg.image_encoder, cfg.text_encoder, tokenizer, cfg.data, training=True)
        model = build_method(cfg.method, parts, self.stats)
        if tc.sync_batchnorm and self.dist.distributed:
            model = D.convert_sync_batchnorm(model, device)
        self.model = model.to(device)
        if tc.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

        self.plan = self._schedule()
        self.steps_per_epoch = self.plan.steps_per_epoch
        self.batch_size = self.plan.spans[0].plan.global_batch
        self.total_steps = min(tc.max_steps, self.plan.total_steps) if (tc.max_steps and self.needs.phases) \
            else (tc.max_steps or self.plan.total_steps)
        self._phase_index = -1

        if tc.compile:
            for name in tc.compile_modules:
                part = getattr(self.model, name, None)
                if part is None:
                    raise ConfigError(f"train.compile_modules: the method has no module {name!r}")
                part.compile()  # in place: parameter names and state dicts are unchanged
        self.ddp_model = self.model
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                self.model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=tc.find_unused_parameters,
            )
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.lookahead = build_lookahead(self.optimizer, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=tc.precision == "fp16")
        self.augment = None
        if getattr(cfg.data.augment, "enabled", False):
            from radpair.data.augment import BatchAugment

            self.augment = BatchAugment(cfg.data.augment)
        self.checkpoints = CheckpointManager(self.out_dir / "checkpoints", tc.keep_checkpoints)
        self.last_checkpoint: Path | None = None
        self.step = 0
        self.changed_on_resume: dict[str, tuple[Any, Any]] | None = None
        """After a resume from a checkpoint: ``{dotted key: (checkpoint value, current value)}``."""

    def _schedule(self) -> Schedule:
        """The run's phases as batch plans. Without declared phases: one phase of
        ``train.epochs`` over all rows (the plan every method had before phases existed)."""
        tc = self.cfg.train
        phases = self.needs.phases or (Phase("train", tc.epochs),)
        granule = self.dist.world_size * tc.grad_accumulation
        labelled = None
        spans, first, epochs_before = [], 0, 0
        for k, ph in enumerate(phases):
            items = self.items
            if ph.rows == "labelled":
                if labelled is None:
                    labelled = np.intersect1d(self.items, self.dataset.labelled_rows())
                items = labelled
                if len(items) < granule * 2:
                    raise ConfigError(f"phase {ph.name!r} trains on labelled rows only, but only {len(items)} of the "
                                      f"{len(self.items)} training rows carry a label")
            batch = min(self.cfg.data.batch_size, len(items) - len(items) % granule)
            plan = BatchPlan(items, batch, tc.seed, self.dist.rank, self.dist.world_size, tc.grad_accumulation,
                             epoch_offset=epochs_before)
            extra = None
            if self.needs.extra_rows is not None:
                extra = ExtraRowPlan(self.needs.extra_rows, items, tc.seed, len(self.dataset), self.dataset,
                                     epoch_offset=epochs_before)
            steps = ph.epochs * plan.steps_per_epoch
            spans.append(PhaseSpan(ph, k, plan, first, steps, epochs_before, extra))
            first += steps
            epochs_before += ph.epochs
        return Schedule(spans)

    def _enter_phase(self, step: int) -> None:
        """Tell the method which phase ``step`` belongs to (at a phase start and after a resume)."""
        span, _ = self.plan.span(step)
        if span.index != self._phase_index:
            self._phase_index = span.index
            self.model.begin_phase(span.phase)
            if self.dist.is_main and len(self.plan.spans) > 1:
                print(f"phase {span.phase.name!r} from step {step}: {span.phase.epochs} epochs over "
                      f"{len(span.plan.items)} rows", flush=True)

    # -- state ---------------------------------------------------------------------------
    def _position(self) -> dict[str, int | str]:
        epoch, batch = self.plan.position(self.step)
        return {
            "epoch": epoch,
            "batch_in_epoch": batch,
            "n_items": len(self.items),
            "global_batch": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "seed": self.cfg.train.seed,
            "world_size": self.dist.world_size,
            "grad_accumulation": self.cfg.train.grad_accumulation,
            "rows_sha256": self._rows_sha256(),
            "corpus_meta_sha256": self._corpus_meta_sha256(),
            "phases": None if not self.needs.phases else
            [[sp.phase.name, len(sp.plan.items), sp.phase.epochs, _sha(sp.plan.items)] for sp in self.plan.spans],
        }

    def _corpus_meta_sha256(self) -> str | None:
        """The corpus's ``meta.json`` by content. Synthetic image ids do not depend on the
        seed or the difficulty, so equal ids do not prove the same corpus; its recorded
        generator settings (or preprocessing plan) do. Content, not file times, so a copied
        corpus still resumes."""
        import hashlib

        meta = getattr(getattr(self.dataset, "corpus", None), "meta", None)
        if meta is None:
            return None
        return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()

    def _rows_sha256(self) -> str:
        """Which images the run trains on, in order: a resume onto other rows of the same
        count (another subset seed or label set) is a different run. Another corpus with the
        same ids is caught by :meth:`_corpus_meta_sha256`."""
        import hashlib

        if getattr(self, "_rows_digest", None) is None:
            ids = self.dataset.rows["image_id"].astype(str).to_numpy()[self.items]
            self._rows_digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
        return self._rows_digest

    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "position": self._position(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
            "rng": rng.capture(),
            "config": json.dumps(to_dict(self.cfg)),
            "total_steps": self.total_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a checkpoint), under this trainer's config.

        A changed data order is refused (:meth:`_check_position`). Every other key whose
        value differs from the checkpoint's stored config is printed as a warning
        ("resuming with changed optim.lr: 0.001 -> 0.0003") and kept in
        :attr:`changed_on_resume` (``run_info.json`` records it in this launch's history
        entry), except the keys that cannot change what is trained:
        ``checkpoint.RESUME_IGNORED_KEYS`` (``train.out_dir``, ``train.progress``,
        ``train.log_every``, ``train.threads``, ``train.checkpoint_every``,
        ``train.keep_checkpoints``, ``train.dist_timeout_s``, ``data.prefetch``).
        ``optim.name`` cannot change (the checkpoint's moments belong to another optimiser).

        When anything changed, the current config's optimiser settings replace the
        checkpoint's (torch would otherwise keep the checkpoint's ``lr``, ``weight_decay``,
        betas, ...), and the learning rate of the next step is the current schedule's value
        at the resumed step: the schedule is a function of (step, total steps), so a changed
        ``train.epochs``/``train.max_steps``/``optim.*`` continues on the new curve from
        where the run stands (a longer run's decay is stretched, so the rate may jump up; a
        run already past its new total trains no further steps).
        """
        self._check_position(state.get("position"))
        changes = config_changes(state.get("config"), self.cfg, RESUME_IGNORED_KEYS)
        if "optim.name" in changes:
            old, new = changes["optim.name"]
            raise ConfigError(
                f"cannot resume: the checkpoint was trained with optim.name={old}, this config says {new}; "
                "its optimiser state cannot be continued by another optimiser (start a new run in another "
                "train.out_dir)"
            )
        self.model.load_state_dict(state["model"])
        fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        fresh_base_lrs = list(self.scheduler.base_lrs)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # another grouping of the parameters (optim.lr_scale, no_decay_norm_and_bias)
            changed = ", ".join(k for k in changes if k.startswith("optim.")) or "none"
            raise ConfigError(
                f"cannot resume: the checkpoint's optimiser state does not fit this config's parameter groups "
                f"({exc}; changed optim keys: {changed})"
            ) from None
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.lookahead is not None:
            if not state.get("lookahead"):
                raise ConfigError("optim.lookahead_steps is set but the checkpoint was written without LookAhead")
            self.lookahead.load_state_dict(state["lookahead"])
        if "rng" in state:
            rng.restore(state["rng"])
        elif "torch_rng" in state:  # first-version checkpoints
            torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        if changes:
            self._apply_optim_settings(fresh_groups, fresh_base_lrs)
        self.changed_on_resume = changes
        if self.dist.is_main:
            self._report_changes(changes, state.get("total_steps"))

    def _apply_optim_settings(self, groups: list[dict], base_lrs: list[float]) -> None:
        """Put this config's optimiser hyper-parameters (``groups``, the freshly built
        optimiser's groups without their parameters) and base rates over the loaded ones,
        and set each group's rate to the current schedule's value at the resumed step."""
        for group, fresh in zip(self.optimizer.param_groups, groups):
            for key, value in fresh.items():
                if key != "lr":
                    group[key] = value
        sched = self.scheduler
        sched.base_lrs = list(base_lrs)
        lrs = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        sched._last_lr = list(lrs)

    def _report_changes(self, changes: dict[str, tuple[Any, Any]], saved_total: int | None) -> None:
        def show(value: Any) -> str:  # as typed in YAML / on the command line
            if value is None:
                return "null"
            return json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)

        for key, (old, new) in changes.items():
            print(f"resuming with changed {key}: {show(old)} -> {show(new)}", flush=True)
        if saved_total is not None and int(saved_total) != self.total_steps:
            lr = self.optimizer.param_groups[0]["lr"]
            print(
                f"the learning-rate schedule now spans {self.total_steps} steps (was {saved_total}); "
                f"step {self.step + 1} trains at lr {lr:.6g}",
                flush=True,
            )
        if self.step >= self.total_steps:
            print(f"the checkpoint's step {self.step} is at or past the {self.total_steps} steps of this config: "
                  "nothing left to train", flush=True)

    def _check_position(self, saved: dict | None) -> None:
        """Refuse to resume into a different data order (it would not be the same run)."""
        if not saved:
            return
        mine = self._position()
        keys = ("n_items", "global_batch", "seed", "grad_accumulation", "rows_sha256",
                "corpus_meta_sha256", "phases")  # absent in old checkpoints
        diff = {k: (saved[k], mine[k]) for k in keys
                if saved.get(k) is not None and mine.get(k) is not None and saved[k] != mine[k]}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())
            raise ConfigError(
                f"cannot resume: the checkpoint's data order differs from this config ({detail}); "
                "restore those settings or start a new run in another train.out_dir"
            )

    def _resume(self) -> None:
        """Rank 0 picks the newest readable checkpoint; every process loads that one."""
        state, path = (None, None)
        if self.dist.is_main:
            state, path = self.checkpoints.load_latest_with_path(map_location=self.device)
        step = D.broadcast_int(int(state["step"]) if state is not None else -1, self.dist, self.device)
        if step < 0:  # a fresh run (job scripts may always pass --resume), or only unreadable files
            if self.dist.is_main and self.checkpoints.checkpoints():
                print(f"no readable checkpoint in {self.checkpoints.directory}; starting from step 0", flush=True)
            return
        if not self.dist.is_main:
            path = self.checkpoints.path_for(step)
            try:
                state = self.checkpoints.load(path, map_location=self.device)
            except OSError as exc:
                raise ConfigError(
                    f"process {self.dist.rank} cannot read {path} ({exc}); resuming needs train.out_dir "
                    "on a filesystem every node shares"
                ) from None
        self.load_state_dict(state)
        self.last_checkpoint = path

    # -- steps ---------------------------------------------------------------------------
    def _prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        image_keys = ["images"] + sorted(k for k in batch if k.endswith("_images"))  # extra rows' images too
        if self.augment is not None:
            for key in image_keys:
                batch[key] = self.augment(batch[key], generator)
        if self.cfg.train.channels_last:
            for key in image_keys:
                batch[key] = batch[key].contiguous(memory_format=torch.channels_last)
        return batch

    def _finish(self, step: int, micro: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Device copy, augmentation (one generator per step) and memory format of a step's micro-batches."""
        gen = rng.augment_generator(self.cfg.train.seed, step, self.dist.rank) if self.augment is not None else None
        return [self._prepare(b, gen) for b in micro]

    def _batch(self, step: int) -> dict[str, torch.Tensor]:
        """The whole (single micro-batch) batch of ``step`` for this process, on the device."""
        batches = self._finish(step, read_step(self.dataset, self.plan, step))
        if len(batches) == 1:
            return batches[0]
        return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}

    def _autocast(self):
        if self.cfg.train.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.cfg.train.precision == "bf16" else torch.float16
            return torch.autocast(device_type=self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def _reduce(self, loss: torch.Tensor, comps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """[loss, components...] averaged over processes, and whether any process saw NaN/Inf.

        One tiny all-reduce per micro-batch: every process must stop at the same step (a
        process that raised alone would leave the others waiting in a collective forever).
        """
        parts = [loss.detach().float().reshape(())] + [c.detach().float().reshape(()) for c in comps.values()]
        values = torch.stack(parts).cpu()
        bad = not bool(torch.isfinite(values).all())
        if not self.dist.distributed:
            return values, bad
        payload = torch.cat([torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), torch.tensor([float(bad)])])
        total = D.all_reduce_sum(payload, self.dist, self.device)
        return (total[:-1] / self.dist.world_size).float(), bool(total[-1] > 0)

    def _diverged(self, what: str, micro: int, batch: dict[str, torch.Tensor], values: dict[str, float]) -> TrainingDiverged:
        step = self.step + 1
        epoch, index = self.plan.position(self.step)
        ids = D.all_gather_1d(batch["ids"].detach().long().cpu(), self.dist, self.device).tolist()
        names = self._image_ids(ids)
        ckpt = self.last_checkpoint or (self.checkpoints.candidates() or [None])[0]
        where = f"step {step} (epoch {epoch}, batch {index} of the epoch"
        where += f", micro-batch {micro + 1} of {self.cfg.train.grad_accumulation})" if self.cfg.train.grad_accumulation > 1 else ")"
        info = {
            "step": step,
            "epoch": epoch,
            "what": what,
            "values": values,
            "batch_image_index": ids,
            "batch_image_ids": names,
            "last_good_checkpoint": str(ckpt) if ckpt else None,
        }
        if self.dist.is_main:
            (self.out_dir / "diverged.json").write_text(json.dumps(info, indent=2))
        kept = f"the last good checkpoint is kept: {ckpt}" if ckpt else "no checkpoint was written before it"
        return TrainingDiverged(
            f"non-finite {what} at {where}: "
            + ", ".join(f"{k}={v:.6g}" for k, v in values.items())
            + f"; batch image indices {ids}; image ids {names}; {kept} (details in {self.out_dir / 'diverged.json'})"
        )

    def _image_ids(self, image_index: list[int]) -> list[str]:
        index = self.dataset.corpus.index
        lookup = dict(zip(index["image_index"].tolist(), index["image_id"].astype(str).tolist()))
        return [lookup.get(i, "?") for i in image_index]

    def train_step(self, batch: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> dict:
        """One optimiser step over ``batch`` (a dict, or a list of micro-batch dicts)."""
        micro = batch if isinstance(batch, list) else [batch]
        accumulation = len(micro)
        rng.seed_step(self.cfg.train.seed, self.step, self.dist.rank)
        self.ddp_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        mean_values: torch.Tensor | None = None
        out: dict[str, Any] = {}
        for j, mb in enumerate(micro):
            sync = not self.dist.distributed or j == accumulation - 1
            with contextlib.nullcontext() if sync else self.ddp_model.no_sync():
                with self._autocast():
                    out = self.ddp_model(mb)
                loss = out["loss"]
                comps = out.get("loss_components", {})
                values, bad = self._reduce(loss, comps)
                if bad:
                    local = {"loss": float(loss.detach()), **{k: float(v) for k, v in comps.items()}}
                    raise self._diverged("loss", j, mb, local)
                self.scaler.scale(loss / accumulation).backward()
            mean_values = values / accumulation if mean_values is None else mean_values + values / accumulation
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = None
        if self.cfg.optim.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        elif self._log_due(self.step + 1):
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if grad_norm is not None and not self.scaler.is_enabled() and not torch.isfinite(grad_norm):
            raise self._diverged("gradient norm", accumulation - 1, micro[-1], {"grad_norm": float(grad_norm)})
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        names = ["loss", *out.get("loss_components", {}).keys()]
        summary = dict(zip(names, mean_values.tolist()))
        out = dict(out)
        out["global_loss"] = summary.pop("loss")
        out["global_loss_components"] = summary
        out["grad_norm"] = None if grad_norm is None else float(grad_norm)
        return out

    def _log_due(self, step: int) -> bool:
        return step % self.cfg.train.log_every == 0 or step == self.total_steps

    # -- run -----------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> RunResult:
        main = self.dist.is_main
        if resume:
            self._resume()
        start = self.step
        if main:
            save_config(self.cfg, self.out_dir / "config.yaml")
            self._write_run_info(start, resume)
        on_cpu = self.device.type == "cpu"
        # on CPU the reading thread also augments (overlapping the step); on a GPU the
        # batch is copied from pinned memory and augmented there, in this thread
        reader = BatchReader(self.dataset, self.plan, self.cfg.data.prefetch, pin_memory=not on_cpu,
                             finish=self._finish if on_cpu else None)
        log = MetricsLog(self.out_dir, start) if main else None
        bar = progress(self.cfg.train.progress and main, self.total_steps, start, self.cfg.method.name)
        last_loss = float("nan")
        window_t0, window_images, data_wait = time.perf_counter(), 0, 0.0
        run_t0, run_images = window_t0, 0
        completed = False
        try:
            while self.step < self.total_steps:
                t_wait = time.perf_counter()
                nxt = self.step + 1 if self.step + 1 < self.total_steps else None
                micro = reader.get(self.step, nxt)
                if not on_cpu:
                    micro = self._finish(self.step, micro)
                data_wait += time.perf_counter() - t_wait
                self._enter_phase(self.step)
                out = self.train_step(micro)
                self.step += 1
                images = self.batch_size
                window_images += images
                run_images += images
                last_loss = out["global_loss"]
                now = time.perf_counter()
                logged = self._log_due(self.step)
                if logged and log is not None:
                    elapsed = max(now - window_t0, 1e-9)
                    log.write(
                        {
                            "step": self.step,
                            "epoch": self.plan.position(self.step - 1)[0],
                            "loss": last_loss,
                            "loss_components": out["global_loss_components"],
                            "lr": self.scheduler.get_last_lr()[0],
                            "grad_norm": out["grad_norm"],
                            "images_per_s": window_images / elapsed,
                            "data_fraction": data_wait / elapsed,
                        }
                    )
                if logged:
                    window_t0, window_images, data_wait = now, 0, 0.0
                if bar is not None:
                    bar.update(self.step, last_loss, run_images / max(now - run_t0, 1e-9), logged)
                if self.on_step is not None:
                    self.on_step(self.step, out)
                if main and (self.step % self.cfg.train.checkpoint_every == 0 or self.step == self.total_steps):
                    self.last_checkpoint = self.checkpoints.save(self.state_dict(), self.step)
            completed = True
        finally:
            reader.close()
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        weights = self.export() if main else None
        if completed:
            D.barrier(self.dist)
            D.shutdown(self.dist)
        return RunResult(self.out_dir, self.step, last_loss, weights, self.last_checkpoint if main else None)

    def _write_run_info(self, start: int, resume: bool) -> None:
        """Record this launch; a resumed run (even one killed before its first checkpoint,
        which restarts at step 0) appends to the history of the runs before it."""
        path = self.out_dir / "run_info.json"
        info = environment_info(self.dist, self.device)
        history = []
        if resume and path.is_file():
            try:
                history = json.loads(path.read_text()).get("history", [])
            except ValueError:
                history = []
        entry = {"started": info["started"], "from_step": start, "git_commit": info["git_commit"],
                 "hostname": info["hostname"], "world_size": self.dist.world_size}
        if self.changed_on_resume is not None:
            entry["changed_on_resume"] = {k: [old, new] for k, (old, new) in self.changed_on_resume.items()}
        history.append(entry)
        info["history"] = history
        if self.needs.phases:
            info["phases"] = [{"name": sp.phase.name, "rows": len(sp.plan.items), "epochs": sp.phase.epochs,
                               "first_step": sp.first_step, "steps": sp.steps, "terms": list(sp.phase.terms)}
                              for sp in self.plan.spans]
        if self.dataset.labels is not None:
            info["labels"] = {"labelled_rows": self.stats.n_labelled, "rows": self.stats.n_rows,
                              "capped_to_unlabelled": self.dataset.labels_capped,
                              "class_counts": None if self.stats.class_counts is None
                              else [int(c) for c in self.stats.class_counts]}
        if self.dataset.fields:
            dropped = self.dataset.dropped
            info["empty_text"] = {
                "policy": self.cfg.data.empty_text,
                "text_sections": self.cfg.data.text_sections,
                "rows": self.dataset.rows_before_drop,
                "empty": self.dataset.n_empty_text,
                "dropped": len(dropped),
                "dropped_examples": dropped["image_id"].head(10).tolist(),
            }
        info["global_batch"] = self.batch_size
        info["steps_per_epoch"] = self.steps_per_epoch
        info["total_steps"] = self.total_steps
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(path)
        self._write_dropped_rows()

    def _write_dropped_rows(self) -> None:
        """``dropped_rows.csv``: every row left out of training (image_id, image_index, reason);
        removed when nothing was dropped, so a reused folder holds no stale list."""
        path = self.out_dir / "dropped_rows.csv"
        if len(self.dataset.dropped):
            atomic_write_csv(self.dataset.dropped, path)
        else:
            path.unlink(missing_ok=True)

    def export(self) -> Path:
        """Write every module the method exports (:meth:`Method.exports`) as
        ``<name>.safetensors``; returns the image encoder's file (None for a method that
        reads no image, such as TieNet's report-only framework)."""
        corpus = self.dataset.corpus
        meta = {"config": to_dict(self.cfg), "step": self.step, "image_size": list(corpus.image_size),
                "input": input_record(corpus)}
        paths = {name: save_encoder_weights(module, self.out_dir / f"{name}.safetensors", meta)
                 for name, module in self.model.exports().items()}
        return paths.get("image_encoder")

"""The typed config of a training run: data, model parts, method, optimiser, schedule.

Loaded from YAML plus dotted overrides by :func:`radpair.config.load_config`; the
resolved tree is written to ``<out_dir>/config.yaml`` before the first step. Every
optimiser recipe of the papers we reproduce is a value of :class:`OptimConfig` (see
``configs/recipes/``), never a code path, so a recipe can be read, diffed and overridden.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from radpair.errors import ConfigError, unknown_choice_message
from radpair.methods.base import MethodConfig, resolve_method_config
from radpair.models.config import ImageEncoderConfig, TextEncoderConfig

try:  # the augmentation module is optional until the data pipeline ships it
    from radpair.data.augment import AugmentConfig
except ImportError:  # pragma: no cover

    @dataclass
    class AugmentConfig:  # type: ignore[no-redef]
        enabled: bool = False


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(unknown_choice_message(key, value, valid))


@dataclass
class DataConfig:
    corpus: str = ""
    split: str = "train"
    views: list[str] = field(default_factory=list)  # e.g. [PA, AP]; empty keeps every view
    text_sections: str = "full"
    empty_text: str = "drop"
    """Rows whose selected text (``text_sections``) is empty or whitespace only (e.g. a
    report without FINDINGS under ``findings``): ``drop`` them (counted in ``run_info.json``,
    listed in ``<out_dir>/dropped_rows.csv``), ``keep`` them as ``[CLS][SEP]`` inputs (identical
    texts are false negatives for a contrastive loss), or ``error``. Methods that read no
    text are unaffected."""
    batch_size: int = 64
    """Global batch of one optimiser step, summed over processes and accumulation
    micro-batches (so changing the number of GPUs does not change the recipe)."""
    label_source: str = "ground_truth"
    uncertain: str = "ignore"
    subset_size: int | None = None  # train on this many rows only (few-label baselines)
    subset_seed: int = 0  # the evaluation's sampling seed, so probes and baselines share subsets
    subset_repeat: int = 0
    pair_fraction: float | None = None
    """Pretrain on this fraction of the patients (all of their pairs), a seeded draw
    (``pair_fraction_seed``) in which a smaller fraction is a subset of a larger one: the
    pretraining-set-size sweeps of RadTex's Fig. 3. ``None``: every pair. With
    ``subset_size`` the fraction is drawn from the subset's rows (which may hold only some
    of a patient's pairs)."""
    pair_fraction_seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    prefetch: bool = True
    """Read the next batch from the memory map in a background thread while this step
    computes (the batch order is a pure function of the step, so this cannot change it)."""

    def validate(self) -> None:
        if self.batch_size < 2:
            raise ConfigError("data.batch_size must be at least 2")
        _choice("data.empty_text", self.empty_text, ("drop", "keep", "error"))
        if self.pair_fraction is not None and not 0.0 < self.pair_fraction <= 1.0:
            raise ConfigError(f"data.pair_fraction must lie in (0, 1], got {self.pair_fraction}")


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adam | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True  # SGD only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8  # Adam / AdamW
    schedule: str = "cosine"  # cosine | linear | constant
    warmup_steps: int = 50
    warmup_fraction: float | None = None
    """Warm-up as a share of all steps (RadTex: 0.05); overrides ``warmup_steps``."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine / linear decay, as a fraction of ``lr``."""
    grad_clip: float | None = 1.0
    no_decay_norm_and_bias: bool = True
    lr_scale: dict[str, float] = field(default_factory=dict)
    """Per-module learning-rate multipliers by parameter-name prefix, e.g.
    ``{text_encoder: 0.1}``; the longest matching prefix wins."""
    lookahead_steps: int = 0
    """LookAhead (Zhang et al. 2019) around the optimiser: every k steps the slow weights
    move ``lookahead_alpha`` of the way to the fast ones. 0 disables it."""
    lookahead_alpha: float = 0.5

    def validate(self) -> None:
        _choice("optim.name", self.name, ("adamw", "adam", "sgd"))
        _choice("optim.schedule", self.schedule, ("cosine", "linear", "constant"))
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas must hold two numbers, got {self.betas}")
        if self.warmup_fraction is not None and not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"optim.warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.lookahead_steps < 0 or not 0.0 < self.lookahead_alpha <= 1.0:
            raise ConfigError("optim.lookahead_steps must be >= 0 and optim.lookahead_alpha in (0, 1]")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError("optim.grad_clip must be positive or null (no clipping)")
        for key, value in self.lr_scale.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"optim.lr_scale.{key} must be a non-negative number, got {value!r}")


@dataclass
class TrainConfig:
    out_dir: str = "runs/pretrain"
    seed: int = 0
    epochs: int = 10
    max_steps: int | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU or GPU) | fp16 (GPU, with a gradient scaler)
    channels_last: bool = False
    threads: int | None = None
    progress: bool = True
    grad_accumulation: int = 1
    """Split each step's batch into this many micro-batches (memory, not semantics: the
    InfoNCE negatives of a micro-batch are only that micro-batch, see docs/training.md)."""
    sync_batchnorm: bool = False
    """Batch statistics over all processes (torch SyncBatchNorm on GPU, a gloo-capable
    equivalent on CPU); without it each process normalises with its own slice."""
    compile: bool = False
    """torch.compile the modules named in ``compile_modules`` (in place; weights keep their names)."""
    compile_modules: list[str] = field(default_factory=lambda: ["image_encoder"])
    dist_backend: str = "auto"  # auto (nccl on GPU, gloo on CPU) | nccl | gloo
    dist_timeout_s: int = 1800
    find_unused_parameters: bool = False
    deterministic: bool = False
    """Deterministic kernels (needed for bit-identical resume on GPU; CPU already is)."""

    def validate(self) -> None:
        _choice("train.precision", self.precision, ("fp32", "bf16", "fp16"))
        _choice("train.dist_backend", self.dist_backend, ("auto", "nccl", "gloo"))
        if self.grad_accumulation < 1:
            raise ConfigError("train.grad_accumulation must be at least 1")
        if self.log_every < 1 or self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ConfigError("train.log_every, train.checkpoint_every and train.keep_checkpoints must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("train.threads must be a positive number or null")


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    method: MethodConfig = field(default_factory=lambda: resolve_method_config({}))
    """The named method's own config dataclass (see :mod:`radpair.methods`)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

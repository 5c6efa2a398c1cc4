"""The typed config of a training run: data, model parts, method, optimiser, schedule.

Loaded from YAML plus dotted overrides by :func:`radpair.config.load_config`; the
resolved tree is written to ``<out_dir>/config.yaml`` before the first step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from radpair.errors import ConfigError
from radpair.models.config import ImageEncoderConfig, MethodConfig, TextEncoderConfig

try:  # the augmentation module is optional until the data pipeline ships it
    from radpair.data.augment import AugmentConfig
except ImportError:  # pragma: no cover

    @dataclass
    class AugmentConfig:  # type: ignore[no-redef]
        enabled: bool = False


@dataclass
class DataConfig:
    corpus: str = ""
    split: str = "train"
    text_sections: str = "full"
    batch_size: int = 64
    label_source: str = "ground_truth"
    uncertain: str = "ignore"
    subset_size: int | None = None  # train on this many rows only (few-label baselines)
    subset_seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        if self.batch_size < 2:
            raise ConfigError("data.batch_size must be at least 2")


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adam | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"  # cosine | linear | constant
    warmup_steps: int = 50
    grad_clip: float | None = 1.0
    no_decay_norm_and_bias: bool = True

    def validate(self) -> None:
        if self.name not in ("adamw", "adam", "sgd"):
            from radpair.errors import unknown_choice_message

            raise ConfigError(unknown_choice_message("optim.name", self.name, ["adamw", "adam", "sgd"]))
        if self.schedule not in ("cosine", "linear", "constant"):
            from radpair.errors import unknown_choice_message

            raise ConfigError(unknown_choice_message("optim.schedule", self.schedule, ["cosine", "linear", "constant"]))


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
    precision: str = "fp32"  # fp32 | bf16
    channels_last: bool = False
    threads: int | None = None
    progress: bool = True

    def validate(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"train.precision must be fp32 or bf16, got {self.precision!r}")


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

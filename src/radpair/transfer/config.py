"""Typed settings of a transfer run (``radpair transfer``, the demo, ``radpair replicate``).

Selection is the same for every arm: each protocol tries a small grid of the same size
(four settings by default) and keeps the one that scores best on the validation draw,
with early stopping for the protocols trained by gradient descent. Nothing here is ever
chosen on the test split. An under-tuned baseline is a false claim, so the grids are
written down, stored in ``results.json``, and can be changed in one place.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field

from radpair.data.augment import AugmentConfig
from radpair.errors import ConfigError, unknown_choice_message


@dataclass
class LinearSettings:
    """L2-regularised logistic (multi-label) or multinomial (categorical) regression.

    ``c_grid`` follows scikit-learn's convention: the objective is
    ``C * sum(loss) + ||w||^2 / 2``, so a larger C is a weaker penalty.
    """

    c_grid: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0])
    max_iter: int = 500
    tolerance: float = 1e-6

    def validate(self) -> None:
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise ConfigError(f"linear.c_grid must hold positive numbers; got {self.c_grid}")


OPTIMIZERS = ("adamw", "sgd")
"""Optimisers of the trained protocols. ``sgd`` is SGD with momentum 0.9 and coupled (L2)
weight decay: the downstream optimiser VirTex-style papers tune their learning rates for
(RadTex's 0.2 from random init is a rate for SGD, far above any Adam-style rate)."""


def _optimizer(where: str, name: str) -> None:
    if name not in OPTIMIZERS:
        raise ConfigError(unknown_choice_message(f"{where}.optimizer", name, list(OPTIMIZERS)))


@dataclass
class FrozenHeadSettings:
    """A head trained on cached features of a frozen backbone (BatchNorm in eval mode).

    ``head``: ``linear`` on pooled features, or ``timnet``: TIMNet's shallow head on the
    feature map (1x1 conv + BatchNorm + ReLU, global average pooling, FC 512, output).
    """

    head: str = "linear"
    lr: list[float] = field(default_factory=lambda: [1e-3, 1e-2])
    weight_decay: list[float] = field(default_factory=lambda: [1e-4, 1e-2])
    batch_size: int = 128
    """On cached features a step is tiny and its overhead dominates; at 128 a full ResNet-18
    sweep's heads took 2-5x less time than at 32 with the same validation scores
    (``benchmarks/transfer_sweep.py``). TIMNet's own head used 16: set it for that arm."""
    max_epochs: int = 300
    patience: int = 10
    """Evaluations (one per epoch) without a better validation score before stopping; a
    linear head's validation curve is smooth (a convex problem), so ten epochs suffice."""
    timnet_channels: int = 256
    timnet_hidden: int = 512
    optimizer: str = "adamw"
    """``adamw`` or ``sgd`` (``OPTIMIZERS``)."""

    def validate(self) -> None:
        _optimizer("frozen_head", self.optimizer)
        if self.head not in ("linear", "timnet"):
            raise ConfigError(unknown_choice_message("frozen_head.head", self.head, ["linear", "timnet"]))
        _grid("frozen_head", self.lr, self.weight_decay)
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ConfigError("frozen_head.batch_size, max_epochs and patience must be positive")


NO_STEP_CAP = 10**9
"""``FinetuneSettings.max_steps`` where ``epochs`` alone should decide (a paper states epochs
and no step cap)."""


@dataclass
class FinetuneSettings:
    """Encoder and a linear head trained end to end; the grid's ``lr`` is the encoder's,
    the head's is ``lr * head_lr_scale``. Early stopping keeps the weights of the best
    validation evaluation."""

    lr: list[float] = field(default_factory=lambda: [1e-3, 3e-3])
    weight_decay: list[float] = field(default_factory=lambda: [1e-4, 1e-2])
    head_lr_scale: float = 1.0
    batch_size: int = 32
    max_steps: int = 3000
    """A from-scratch ResNet on 1,000 labels was still improving at 1,500 steps (demo, seed 0)."""
    min_epochs: float = 10.0
    """Where ``max_steps`` is fewer passes than this over a large draw, the step limit rises
    to this many passes. Without it the all-label budget of the calibrated demo corpus
    (15,625 images, 488 steps a pass) got 3,000 steps, about 6 passes, and every grid value
    on all three corpus seeds had its best validation score at step 2,650-3,000 of 3,000:
    the from-scratch baseline was cut off while still improving. Small draws are
    unaffected (1,000 labels: 3,000 steps are 96 passes). 0 makes ``max_steps`` a hard cap."""
    epochs: float | None = None
    """Passes over the draw, where a protocol states them (a paper's downstream epochs):
    the step limit is then this many passes, at most ``max_steps``, and ``min_epochs``
    does not apply. None keeps the rule above. Without it a replicate's stated epochs
    reached only the frozen head, and a fine-tuned arm ran ``max_steps`` whatever the paper said."""
    min_steps: int = 500
    """No stop before this: validation scores of small draws are noisy early in training."""
    eval_every: int = 0
    """Steps between validation evaluations; 0 = one epoch, kept within [10, 50] steps."""
    patience: int = 15
    warmup_fraction: float = 0.05
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optimizer: str = "adamw"
    """``adamw`` or ``sgd`` (``OPTIMIZERS``)."""

    def validate(self) -> None:
        _optimizer("finetune", self.optimizer)
        _grid("finetune", self.lr, self.weight_decay)
        if self.head_lr_scale <= 0:
            raise ConfigError("finetune.head_lr_scale must be positive")
        if self.batch_size < 2 or self.max_steps < 1 or self.patience < 1 or self.min_steps < 0:
            raise ConfigError("finetune.batch_size must be >= 2 and max_steps, patience positive")
        if not 0 <= self.min_epochs <= 1000:
            raise ConfigError(f"finetune.min_epochs must lie in [0, 1000] passes; got {self.min_epochs}")
        if self.epochs is not None and not 0 < self.epochs <= 10000:
            raise ConfigError(f"finetune.epochs must lie in (0, 10000] passes, or be null; got {self.epochs}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError("finetune.warmup_fraction must lie in [0, 1)")

    def step_limit(self, n_train: int) -> int:
        """The training steps a draw of ``n_train`` rows gets: ``max_steps``, or
        ``min_epochs`` passes where those are more; with ``epochs`` set, that many passes,
        at most ``max_steps`` (the cosine schedule spans this limit)."""
        steps_per_epoch = max(1, n_train // max(2, min(self.batch_size, n_train)))
        if self.epochs is not None:
            return max(1, min(self.max_steps, math.ceil(self.epochs * steps_per_epoch)))
        return max(self.max_steps, math.ceil(self.min_epochs * steps_per_epoch))


def _grid(section: str, lr: list[float], wd: list[float]) -> None:
    if not lr or any(v <= 0 for v in lr):
        raise ConfigError(f"{section}.lr must hold positive learning rates; got {lr}")
    if not wd or any(v < 0 for v in wd):
        raise ConfigError(f"{section}.weight_decay must hold non-negative values; got {wd}")


@dataclass
class TransferConfig:
    """One transfer study: task, arms (starts x protocols), budgets, repeats, selection."""

    task: str = "findings7"
    encoders: list[str] = field(default_factory=lambda: ["random"])
    """``random``, ``FILE`` or ``NAME=FILE`` (exported ``image_encoder.safetensors``)."""
    arch: str = "resnet_tiny"
    """Architecture of the ``random`` start."""
    protocols: list[str] = field(default_factory=lambda: ["linear"])
    arms: list[str] = field(default_factory=list)
    """Explicit ``START:PROTOCOL`` arms; empty = every encoder x every protocol."""
    n: list[str | int] = field(default_factory=lambda: ["10", "100", "1000", "all"])
    fractions: list[float] = field(default_factory=list)
    repeats: int = 5
    seed: int = 0
    val: str = "matched"
    """``matched``: a validation draw of the training budget's size; ``full``: the whole split."""
    train_labels: str = ""
    test_labels: str = ""
    views: list[str] | None = None
    """Override of the task's views (empty list: every view)."""
    manifest: str = ""
    """Folder of subset manifests to rerun exactly (``manifests/`` of an earlier run)."""
    linear: LinearSettings = field(default_factory=LinearSettings)
    frozen_head: FrozenHeadSettings = field(default_factory=FrozenHeadSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    n_bootstrap: int = 1000
    confidence: float = 0.95
    subgroups: list[str] = field(default_factory=lambda: ["view", "sex", "age_band"])
    device: str = "cpu"
    workers: int = 1
    """Processes for fine-tuning jobs (each job is deterministic, so results do not change)."""
    feature_batch: int = 256
    save_models: bool = True
    """Save every cell's head (and fine-tuned encoder) so a model can be packaged later."""

    def validate(self) -> None:
        if self.val not in ("matched", "full"):
            raise ConfigError(unknown_choice_message("val", self.val, ["matched", "full"]))
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1; got {self.repeats}")
        if self.n_bootstrap < 0 or not 0.0 < self.confidence < 1.0:
            raise ConfigError("n_bootstrap must be >= 0 and confidence in (0, 1)")
        if self.workers < 1:
            raise ConfigError("workers must be >= 1")
        if not self.encoders and not self.arms:
            raise ConfigError("no encoder given (--encoder random, --encoder NAME=FILE)")
        self.linear.validate()
        self.frozen_head.validate()
        self.finetune.validate()


__all__ = ["FinetuneSettings", "FrozenHeadSettings", "LinearSettings", "TransferConfig"]

"""Chauhan et al. 2020: joint image-text model of pulmonary edema severity.

An image encoder and a BERT ([CLS] state) map a radiograph and its report to one space
(768-d in the paper). Eq. (1), a ranking loss against an impostor pair whose margin is the
ordinal grade difference |y_j − y_s(j)| (0.5 when either pair is unlabelled), aligns them
on *all* pairs; Eq. (2), two 768→4 classifiers (image and text) with cross-entropy on
the labelled pairs, adds the severity. Eq. (3) is their sum. The schedule has two phases:
Eq. (1) on all pairs (10 epochs in the paper), then Eq. (3) on the labelled pairs (50).
At inference the image stream alone predicts severity (:meth:`ChauhanRanking.predict`).

Variants (``variant``), all from the paper's comparisons:

* ``semi_supervised`` (the paper's model): both phases above;
* ``supervised_only``: Eq. (3) on the labelled pairs only (no unlabelled phase);
* ``image_only``: the image classifier alone on the labelled pairs (no text).

``criterion: direct`` replaces Eq. (1) by the paper's "direct minimisation" baselines
(−Sim for dot and cosine, ‖I − R‖ for l2, no impostor).

Labelled pairs are those whose report yields an edema grade (``label_task`` read from
``label_source``: ``report`` runs radpair's edema labeler, ``truth`` uses the generator's
grade for tests), capped at ``labelled_fraction`` of the training pairs. The default,
0.027, is the paper's ratio (6,743 labelled of 247,425 pairs).

Impostors: ``impostors: dataset`` (default, the paper) draws s as a permutation of the
training pairs at the start of every epoch (:func:`impostor_permutation`, a pure function
of seed and epoch, served by the loop as extra ``impostor_*`` rows, so resume is exact);
``batch`` permutes within the global batch each step (no extra rows encoded: half the
cost, a stated deviation), drawn from the batch's own image ids so that every process
draws the same permutation (:func:`batch_impostors`). ``avoid_same_study`` (off by default, a stated deviation)
forbids fixed points and same-study impostors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from radpair.errors import ConfigError, unknown_choice_message
from radpair.methods.base import (
    BuildContext,
    DatasetStats,
    ExtraRows,
    LabelNeed,
    Method,
    MethodConfig,
    MethodNeeds,
    Phase,
    TextField,
    build_text_tower,
    check_terms,
    register_method,
    text_keys,
)
from radpair.models.image_encoders import build_image_encoder
from radpair.objectives.contrastive import _world
from radpair.objectives.false_negatives import CODE_KINDS, gather_codes
from radpair.objectives.ranking import (
    SIMILARITIES,
    constrained_permutation,
    direct_similarity_loss,
    impostor_permutation,
    labelled_cross_entropy,
    ranking_hinge,
    ranking_loss,
    ranking_margin,
)

VARIANTS = ("semi_supervised", "supervised_only", "image_only")
CRITERIA = ("ranking", "direct")
IMPOSTORS = ("dataset", "batch")
TERMS = ("ranking", "classifier", "image_classifier")
_IMPOSTOR_STREAM = 0xC4A0  # keeps impostor draws apart from the loop's epoch shuffle


@dataclass
class ChauhanConfig(MethodConfig):
    """Chauhan et al. 2020 settings; see the module docstring for each choice."""

    name: str = "chauhan_ranking"
    variant: str = "semi_supervised"
    criterion: str = "ranking"
    similarity: str = "dot"
    default_margin: float = 0.5
    embedding_dim: int = 768
    impostors: str = "dataset"
    avoid_same_study: bool = False
    false_negatives: list[str] = field(default_factory=list)
    """Code kinds (study, patient, report) whose shared value makes an impostor a false
    negative; its hinge terms are multiplied by ``false_negative_weight`` (0 masks)."""
    false_negative_weight: float = 0.0
    label_task: str = "edema_severity"
    label_source: str = "report"
    labelled_fraction: float | None = 0.027
    fraction_seed: int = 0
    ranking_epochs: int = 10
    joint_epochs: int = 50
    text_sections: str | None = None

    def validate(self) -> None:
        for key, value, valid in (("variant", self.variant, VARIANTS), ("criterion", self.criterion, CRITERIA),
                                  ("similarity", self.similarity, SIMILARITIES),
                                  ("impostors", self.impostors, IMPOSTORS)):
            if value not in valid:
                raise ConfigError(unknown_choice_message(f"method.{key}", value, valid))
        for kind in self.false_negatives:
            if kind not in CODE_KINDS or kind == "labels":
                raise ConfigError(unknown_choice_message("method.false_negatives entry", kind, CODE_KINDS[:3]))
        if self.default_margin < 0 or self.embedding_dim < 1:
            raise ConfigError("method.default_margin must be >= 0 and method.embedding_dim >= 1")
        if self.labelled_fraction is not None and not 0.0 < self.labelled_fraction <= 1.0:
            raise ConfigError(f"method.labelled_fraction must lie in (0, 1] or be null, got {self.labelled_fraction}")
        if not 0.0 <= self.false_negative_weight <= 1.0:
            raise ConfigError("method.false_negative_weight must lie in [0, 1]")
        if self.ranking_epochs < 0 or self.joint_epochs < 0:
            raise ConfigError("method.ranking_epochs and method.joint_epochs must be >= 0")


def _draw_impostors(cfg: ChauhanConfig):
    def draw(seed: int, epoch: int, rows, dataset):
        codes = dataset.codes.get("study_code")
        return impostor_permutation(seed, epoch, len(rows), avoid_same_study=cfg.avoid_same_study,
                                    study_codes=None if codes is None else codes[rows], stream=_IMPOSTOR_STREAM)

    return draw


def batch_impostors(batch: dict[str, torch.Tensor], avoid_same_study: bool = False) -> np.ndarray:
    """s over the global batch: a permutation drawn from the batch's own image ids.

    Every process gathers the same global ids, so every process draws the same
    permutation (a per-rank RNG would give each process its own, with repeats and gaps in
    the union), and the draw is a pure function of the batch, so resume is exact and 1 and
    N processes agree. ``avoid_same_study`` forbids fixed points and same-study impostors.
    """
    ids = gather_codes(batch["ids"]).cpu().numpy().astype(np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([int(i) for i in ids] + [_IMPOSTOR_STREAM]))
    if not avoid_same_study:
        return rng.permutation(len(ids)).astype(np.int64)
    codes = gather_codes(batch["study_code"]).cpu().numpy() if "study_code" in batch else np.arange(len(ids))
    return constrained_permutation(rng, codes)


@register_method("chauhan_ranking")
class ChauhanRanking(Method):
    """Image and text encoders into one space, Eq. (1) ranking loss, two severity classifiers."""

    config_class = ChauhanConfig

    @classmethod
    def phases(cls, cfg: ChauhanConfig) -> tuple[Phase, ...]:
        if cfg.variant == "image_only":
            return (Phase("image_classifier", cfg.joint_epochs, rows="labelled", terms=("image_classifier",)),)
        joint = Phase("joint", cfg.joint_epochs, rows="labelled", terms=("ranking", "classifier"))
        if cfg.variant == "supervised_only":
            return (joint,)
        return (Phase("ranking", cfg.ranking_epochs, rows="all", terms=("ranking",)), joint)

    @classmethod
    def schedule_keys(cls, cfg: ChauhanConfig) -> dict[str, str]:
        if cfg.variant == "semi_supervised":
            return {"epochs": "method.ranking_epochs", "labelled_epochs": "method.joint_epochs"}
        return {"epochs": "method.joint_epochs", "labelled_epochs": "method.joint_epochs"}

    @classmethod
    def needs(cls, cfg: ChauhanConfig) -> MethodNeeds:
        text = cfg.variant != "image_only"
        phases = cls.phases(cfg)
        check_terms(phases, TERMS, cfg.name)
        dataset_impostors = text and cfg.criterion == "ranking" and cfg.impostors == "dataset"
        return MethodNeeds(
            text_fields=(TextField("report", sections=cfg.text_sections),) if text else (),
            labels=LabelNeed(task=cfg.label_task, source=cfg.label_source, blank="ignore",
                             max_fraction=cfg.labelled_fraction, fraction_seed=cfg.fraction_seed, required=False),
            row_codes=cfg.avoid_same_study or bool(cfg.false_negatives),
            extra_rows=ExtraRows("impostor", _draw_impostors(cfg)) if dataset_impostors else None,
            phases=phases,
        )

    @classmethod
    def build(cls, cfg: ChauhanConfig, parts: BuildContext) -> "ChauhanRanking":
        from radpair.tasks.spec import load_task

        n_classes = load_task(cfg.label_task).schema_for(cfg.label_source).n_outputs(1)
        text = None
        if cfg.variant != "image_only":
            text = build_text_tower(parts, cfg.name)
        return cls(cfg, build_image_encoder(parts.image_encoder), text, n_classes)

    def __init__(self, cfg: ChauhanConfig, image_encoder: nn.Module, text_encoder: nn.Module | None,
                 n_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        d = cfg.embedding_dim
        self.image_projection = nn.Linear(image_encoder.out_dim, d)
        self.image_classifier = nn.Linear(d, n_classes)
        if text_encoder is not None:
            self.text_projection = nn.Identity() if text_encoder.out_dim == d else nn.Linear(text_encoder.out_dim, d)
            self.text_classifier = nn.Linear(d, n_classes)
        self.phase = self.phases(cfg)[0]
        self.class_counts = None

    def setup(self, stats: DatasetStats) -> None:
        if stats.n_labelled == 0:
            raise ConfigError(f"method {self.cfg.name!r}: no training pair carries a {self.cfg.label_task} label "
                              f"from source {self.cfg.label_source!r}; the classifiers cannot be trained")
        self.class_counts = stats.class_counts

    # -- embeddings ----------------------------------------------------------------------
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_projection(self.image_encoder(images))

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.text_encoder is None:
            raise ConfigError("the image_only variant has no text encoder")
        return self.text_projection(self.text_encoder(input_ids, attention_mask))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Image-only inference: severity class probabilities [B, K] from the image stream alone."""
        return self.image_classifier(self.embed_images(images)).softmax(-1)

    # -- loss ------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        terms = self.phase.terms
        labels, labelled = batch["labels"], batch["label_mask"].bool()
        img = self.embed_images(batch["images"])
        img_logits = self.image_classifier(img)
        comps: dict[str, torch.Tensor] = {}
        if self.text_encoder is None:  # image_only
            ce = labelled_cross_entropy(img_logits, img_logits, labels, labelled)
            loss = ce.image
            comps["image_ce"] = ce.image.detach()
            return {"loss": loss, "loss_components": comps, "logits": img_logits.detach()}
        ids, mask = text_keys("report")
        txt = self.embed_texts(batch[ids], batch[mask])
        txt_logits = self.text_classifier(txt)
        ce = labelled_cross_entropy(img_logits, txt_logits, labels, labelled)
        # every parameter takes part in every step (DDP), the classifiers at weight 0 in phase 1
        loss = ce.loss * (1.0 if "classifier" in terms else 0.0)
        comps["image_ce"], comps["text_ce"] = ce.image.detach(), ce.text.detach()
        if "ranking" in terms:
            rank_loss, positive = self._ranking(batch, img, txt, labels, labelled)
            loss = loss + rank_loss
            comps["ranking"] = rank_loss.detach()
            comps["positive_similarity"] = positive.detach().mean()
        return {"loss": loss, "loss_components": comps, "logits": img_logits.detach(),
                "image_embeddings": img.detach(), "text_embeddings": txt.detach()}

    def _ranking(self, batch, img, txt, labels, labelled) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if cfg.criterion == "direct":
            out = direct_similarity_loss(img, txt, cfg.similarity)
            return out.loss, out.positive_similarity
        if cfg.impostors == "dataset":
            ids, mask = text_keys("report")
            imp_img = self.embed_images(batch["impostor_images"])
            imp_txt = self.embed_texts(batch[f"impostor_{ids}"], batch[f"impostor_{mask}"])
            margin = ranking_margin(labels, labelled, batch["impostor_labels"], batch["impostor_label_mask"].bool(),
                                    cfg.default_margin)
            weight = None
            if cfg.false_negatives:
                same = torch.zeros(img.shape[0], dtype=torch.bool, device=img.device)
                for kind in cfg.false_negatives:
                    same |= batch[f"{kind}_code"] == batch[f"impostor_{kind}_code"]
                weight = torch.where(same, cfg.false_negative_weight, 1.0).to(img)
            out = ranking_hinge(img, txt, imp_img, imp_txt, margin, cfg.similarity, weight)
            return out.loss, out.positive_similarity
        # in-batch impostors: one permutation of the global batch, the same on every process
        rank, _ = _world()
        n = img.shape[0]
        impostor = torch.from_numpy(batch_impostors(batch, cfg.avoid_same_study)[rank * n:(rank + 1) * n]).to(img.device)
        fn = None
        if cfg.false_negatives:
            fn = torch.zeros(n, dtype=torch.bool, device=img.device)
            for kind in cfg.false_negatives:
                fn |= gather_codes(batch[f"{kind}_code"])[impostor] == batch[f"{kind}_code"]
        out = ranking_loss(img, txt, impostor, labels, labelled, cfg.similarity, cfg.default_margin,
                           false_negative=fn, false_negative_weight=cfg.false_negative_weight)
        return out.loss, out.positive_similarity

    def exports(self) -> dict[str, nn.Module]:
        out = {"image_encoder": self.image_encoder, "image_projection": self.image_projection,
               "image_classifier": self.image_classifier}
        if self.text_encoder is not None:
            out.update(text_encoder=self.text_encoder, text_classifier=self.text_classifier)
            if isinstance(self.text_projection, nn.Linear):
                out["text_projection"] = self.text_projection
        return out

"""TieNet (Wang et al. 2018): a CNN-RNN that writes the report and classifies from both.

A radiograph's feature grid conditions a Show-Attend-Tell LSTM over its report; the LSTM's
hidden states are pooled by self-attention into a text embedding (AETE), and the word
saliency of that attention re-weights the per-word spatial attention maps into an image
embedding (SW-GAP). Both go to one multi-label classifier trained on labels mined from
the reports. At test time the image alone suffices: the model writes a report, then
classifies from its own words and attention (I+GR). Learning to write the report is what
puts the report's knowledge into the image path.

Paper → code (§3, §5 "Training"):

* **CNN** (§3.1): the shared image encoder's last feature map (ResNet-50 Conv1–Res5c in
  the paper) → the **transition layer**, a 1×1 convolution + ReLU to ``grid_channels`` (C,
  1024) and an average pool to ``grid_size``×``grid_size`` (D, 16): X, D×D×C
  (:class:`TransitionLayer`). ``grid_size: null`` keeps the encoder's grid.
* **Eq. (2)**, h_t = LSTM([w_t, a_t ⊙ X], h_{t−1}): :class:`AttentionLSTM`. h_0 and c_0 are
  φ(X), linear maps of the mean grid feature (tanh, as Xu et al.); the soft attention a_t
  over the D² cells is computed from h_{t−1} (Xu et al.'s deterministic attention,
  w_aᵀ tanh(W_x x_i + W_h h_{t−1}), width ``spatial_attention_dim``, not stated in the
  paper), and the attended grid vector Σ_i a_t,i x_i enters the cell with the word
  embedding (``word_dim`` 200). Next-token logits read the hidden state through dropout
  0.5 ("0.5 dropout on the MLP"). LSTM cell 256 (``lstm_size``).
* **Teacher forcing and L_R** (§3.4): the report's tokens ``[CLS] w1 .. wn [SEP]`` are read
  as ``<START> .. <END>``; step t reads token t and predicts token t+1. A step is *real*
  when its target is a real token, so every report has n+1 real steps (reading
  ``[CLS]``, w1 .. wn) whatever the batch's padding; padded steps read the pad id, enter
  no loss, no attention and no pooling. L_R is the mean cross-entropy over real targets
  (:func:`radpair.objectives.tienet.report_loss`).
* **Eq. (3)**, AETE (§3.2): G = softmax(W_s2 tanh(W_s1 H)), r×T with r = ``aete_rows``
  (5) and s = ``aete_hidden`` (2000), over the real steps only (padded steps get −inf
  before the softmax, so exactly 0 weight); M = GH; X_AETE = max over the r rows of M.
  Lin et al.'s penalty ‖GGᵀ − I‖²_F is added with ``penalty_weight`` (1). (§5 also gives
  "a hidden layer with 350 units" for the self-attention, which contradicts s = 2000;
  s = 2000 is used, and ``aete_hidden`` sets it.)
* **Eqs. (4)–(5)**, SW-GAP (§3.3): g_t = max over r of G (per-word saliency);
  a_ws = Σ_t a_t g_t; X_SW-GAP(c) = Σ_{x,y} a_ws(x, y) X(x, y, c). No normalisation,
  as printed.
* **Classifier** (§3.4): X̂ = [X_AETE; X_SW-GAP] → one fully connected layer → M sigmoid
  outputs.
* **Eq. (6)**, the weighted BCE: β_P = |N|/(|P|+|N|), β_N = |P|/(|P|+|N|) (as printed;
  ``beta_form: chestxray8`` takes Wang et al. 2017's (|P|+|N|)/|P|, (|P|+|N|)/|N|, the same
  ratio at another scale) and λ_m = (Q − Q_m)/Q from the training rows' class counts
  (:meth:`TieNet.setup`). ``balance: class_counts`` (default) counts |P|, |N| per class
  from the class counts; ``batch`` counts the paper's |P| (images with any disease) and |N|
  (with none) over the global batch, as Wang et al. 2017 count per batch; ``none`` sets
  β = 1. ``class_weights: false`` sets λ = 1. The sum is averaged over the batch's entries.
* **Eq. (7)**: α·L_C + (1 − α)·L_R, plus the AETE penalty. The paper gives no α ("to
  balance the large difference between the two loss types"); ``alpha`` defaults to 0.5
  and is meant to be chosen on the validation split. α = 1 is the paper's auto-annotation
  framework (§3.5: "only the classification loss"); the LSTM still reads the image.
* **Labels** (§3.4): the paper trains on NLP-mined labels. Default ``label_task:
  findings7`` with ``label_source: report``: radpair's rule labelers read each report
  (:mod:`radpair.tasks`). ``label_columns`` instead reads binary columns of the corpus
  from ``data.label_source`` (``index``: the labels the synthetic reports state;
  ``ground_truth``: the generator's truth).
* **Text**: ``text_sections`` default ``findings+impression`` (the paper reads the whole
  ChestX-ray14/OpenI report; §3 singles out FINDINGS and IMPRESSION as the parts that
  carry the findings, and the rest is mostly history and technique).
* **Vocabulary** (§5): the run's tokenizer (``text_encoder.tokenizer``). The paper's is a
  word vocabulary, every training word seen at least twice plus an out-of-vocabulary token:
  ``radpair tokenizer --kind word --min-count 2`` (:mod:`radpair.text.word_tokenizer`;
  [UNK] is the OOV token, [CLS] / [SEP] the <START> / <END>). A WordPiece tokenizer (the
  default of ``radpair tokenizer``) also works and spells rare words in pieces instead.
  The BERT text encoder is not used.
* **Word embedding** (§5): the paper starts it from 200-d word2vec vectors learnt on
  PubMed with gensim and fine-tunes it. ``word_vectors`` names a matrix aligned to the
  tokenizer (``radpair word-vectors``, :mod:`radpair.text.word_vectors`): word2vec trained
  on the training reports (nothing is downloaded; PubMed is not at hand) or the user's own
  vectors file. Rows of tokens with a vector start from it; the special tokens and words
  without a vector keep the seeded random initialisation ([PAD] stays zero); the whole
  embedding trains with the LSTM. It is read only when a run starts training (a finished
  run's weights already hold it). ``word_vectors: null`` (default) learns the embedding
  from scratch.
* **CNN training**: the paper freezes an ImageNet ResNet-50. ``freeze_image_encoder:
  true`` freezes the encoder loaded from ``image_encoder.weights`` (its parameters leave the
  optimiser and it stays in eval mode, so BatchNorm statistics do not move); the default
  trains it jointly, because there is no ImageNet-grade single-channel backbone to freeze
  and pretraining the image encoder is what radpair measures.

Variants (``variant``), the paper's comparisons:

* ``tienet``: the model above; modes ``I+R`` (image and report, Table 1 auto-annotation)
  and ``I+GR`` (image only, Table 1 reporting system), see :meth:`TieNet.classify`.
* ``report_only``: Table 1's **R**, a separately trained framework on reports alone: the
  LSTM reads the report without image (no X, no spatial attention, zero initial state),
  AETE → classifier, loss L_C + penalty ("the framework will not have the SW-GAP path";
  auto-annotation back-propagates the classification loss only). Mode ``R``.
* ``image_only``: Table 1's **I** [35]: transition-layer grid → global average pool →
  classifier, the same weighted BCE, no text. Mode ``I``.
* ``plain_captioning``: Table 2's baseline, Show-Attend-Tell [37] without AETE, SW-GAP or
  classifier; L_R only, no labels. Generation only.

Generation follows :mod:`radpair.generation.decoding`'s step interface:
:meth:`TieNet.start_decoding` and :meth:`TieNet.decode_step` (the state is a dict of
tensors with the row on dim 0, reordered by beam search).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from radpair.errors import ConfigError, unknown_choice_message
from radpair.methods.base import (BuildContext, DatasetStats, LabelNeed, Method, MethodConfig, MethodNeeds, TextField,
                                  register_method, special_token_ids, text_keys)
from radpair.models.image_encoders import build_image_encoder
from radpair.objectives.tienet import (BETA_FORMS, attention_penalty, batch_betas, class_count_weights, report_loss,
                                       weighted_bce)

VARIANTS = ("tienet", "report_only", "image_only", "plain_captioning")
MODES = ("R", "I+R", "I+GR", "I")
VARIANT_MODES = {"tienet": ("I+R", "I+GR"), "report_only": ("R",), "image_only": ("I",), "plain_captioning": ()}
# what each mode reads at test time, in the replicate harness's words (radpair.replicate.vocab.INPUTS):
# I+GR reads the image alone; the report it classifies from is its own
MODE_INPUTS = {"R": "report", "I+R": "image+report", "I+GR": "image", "I": "image"}
BALANCES = ("class_counts", "batch", "none")


@dataclass
class TieNetConfig(MethodConfig):
    """TieNet settings; the module docstring maps each to the paper."""

    name: str = "tienet"
    variant: str = "tienet"
    grid_size: int | None = 16
    """D of the D×D×C grid X; ``null`` keeps the image encoder's own grid."""
    grid_channels: int = 1024
    freeze_image_encoder: bool = False
    word_dim: int = 200
    lstm_size: int = 256
    spatial_attention_dim: int = 256
    dropout: float = 0.5
    aete_rows: int = 5
    aete_hidden: int = 2000
    penalty_weight: float = 1.0
    alpha: float = 0.5
    balance: str = "class_counts"
    beta_form: str = "tienet"
    class_weights: bool = True
    label_task: str | None = "findings7"
    label_source: str = "report"
    label_columns: list[str] = field(default_factory=list)
    """Binary columns read from ``data.label_source`` instead of ``label_task`` (set
    ``label_task: null``)."""
    text_sections: str = "findings+impression"
    text_max_length: int | None = None
    """Tokens of the report read and written, [CLS] and [SEP] included; ``None`` takes
    ``text_encoder.max_length``."""
    word_vectors: str | None = None
    """A word-vectors matrix (``radpair word-vectors``, ``.safetensors``) aligned to the
    run's tokenizer, ``word_dim`` wide: the word embedding starts from it (§5's word2vec
    initialisation); ``None`` starts it at random. Read by the variants that read text."""

    def validate(self) -> None:
        for key, value, valid in (("variant", self.variant, VARIANTS), ("balance", self.balance, BALANCES),
                                  ("beta_form", self.beta_form, BETA_FORMS)):
            if value not in valid:
                raise ConfigError(unknown_choice_message(f"method.{key}", value, valid))
        sizes = {"grid_channels": self.grid_channels, "word_dim": self.word_dim, "lstm_size": self.lstm_size,
                 "spatial_attention_dim": self.spatial_attention_dim, "aete_rows": self.aete_rows,
                 "aete_hidden": self.aete_hidden}
        bad = [k for k, v in sizes.items() if int(v) < 1]
        if bad:
            raise ConfigError(f"method.{', method.'.join(bad)} must be >= 1")
        if self.grid_size is not None and self.grid_size < 1:
            raise ConfigError(f"method.grid_size must be >= 1 or null, got {self.grid_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"method.dropout must lie in [0, 1), got {self.dropout}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"method.alpha must lie in [0, 1], got {self.alpha}")
        if self.penalty_weight < 0:
            raise ConfigError(f"method.penalty_weight must be >= 0, got {self.penalty_weight}")
        if self.text_max_length is not None and self.text_max_length < 3:
            raise ConfigError("method.text_max_length must be >= 3 (BOS, one token, EOS) or null")
        if self.word_vectors is not None and (not isinstance(self.word_vectors, str) or not self.word_vectors.strip()):
            raise ConfigError(f"method.word_vectors must be the path of a word-vectors matrix (radpair word-vectors) "
                              f"or null, got {self.word_vectors!r}")
        if self.variant != "plain_captioning" and bool(self.label_task) == bool(self.label_columns):
            raise ConfigError("method.label_task and method.label_columns: set exactly one (label_columns needs "
                              "label_task: null)")
        from radpair.reports.selection import get_policy

        get_policy(self.text_sections)

    @property
    def reads_text(self) -> bool:
        return self.variant != "image_only"

    @property
    def reads_images(self) -> bool:
        return self.variant != "report_only"

    @property
    def has_labels(self) -> bool:
        return self.variant != "plain_captioning"

    @property
    def has_aete(self) -> bool:
        return self.variant in ("tienet", "report_only")


# -- modules ---------------------------------------------------------------------------------------

class TransitionLayer(nn.Module):
    """§3.1's transition layer: the encoder's feature map to the D×D×C grid X."""

    def __init__(self, in_channels: int, channels: int, grid_size: int | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=1)
        self.grid_size = grid_size

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(feature_map))
        d = self.grid_size
        if d is None or tuple(x.shape[-2:]) == (d, d):
            return x
        if min(x.shape[-2:]) < d:
            raise ConfigError(f"TieNet: the image encoder gives a {x.shape[-2]}×{x.shape[-1]} feature map, smaller "
                              f"than method.grid_size={d}; use larger images, a smaller grid_size, or null to keep "
                              "the encoder's grid")
        return F.adaptive_avg_pool2d(x, d)


class SpatialAttention(nn.Module):
    """Xu et al.'s deterministic soft attention over the grid cells, from h_{t−1}."""

    def __init__(self, channels: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.grid_proj = nn.Linear(channels, dim)
        self.hidden_proj = nn.Linear(hidden, dim)
        self.score = nn.Linear(dim, 1)

    def forward(self, grid_proj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """[N, P, A] projected grid, [N, H] state → [N, P] attention."""
        e = self.score(torch.tanh(grid_proj + self.hidden_proj(h).unsqueeze(1))).squeeze(-1)
        return e.softmax(dim=-1)


class Decoded(NamedTuple):
    """A teacher-forced pass: ``hidden`` [B, T, H] and ``attention`` [B, T, P] (zero at padded
    steps; ``attention`` None without image), ``token_logits`` [B, T, V]."""

    hidden: torch.Tensor
    attention: torch.Tensor | None
    token_logits: torch.Tensor


class AttentionLSTM(nn.Module):
    """Eq. (2): an LSTM over word embeddings and the attended grid (Show-Attend-Tell).

    ``channels`` 0 makes it a plain LSTM over words (the report-only framework).
    """

    def __init__(self, vocab_size: int, word_dim: int, hidden: int, channels: int, attention_dim: int,
                 dropout: float, pad_id: int) -> None:
        super().__init__()
        self.hidden_size, self.channels = hidden, channels
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=pad_id)
        if channels:
            self.attention = SpatialAttention(channels, hidden, attention_dim)
            self.init_h = nn.Linear(channels, hidden)
            self.init_c = nn.Linear(channels, hidden)
        self.cell = nn.LSTMCell(word_dim + channels, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    @torch.no_grad()
    def start_from_vectors(self, weight: torch.Tensor, has_vector: torch.Tensor) -> None:
        """§5: the word embedding starts from pretrained vectors (``weight`` [V, word_dim]) in
        the rows ``has_vector`` marks; the others keep their initialisation, and the
        embedding stays a trainable parameter ("evolved along with other LSTM parameters")."""
        emb = self.embed.weight
        if tuple(weight.shape) != tuple(emb.shape) or tuple(has_vector.shape) != (emb.shape[0],):
            raise ConfigError(f"word vectors {tuple(weight.shape)} do not fit the word embedding {tuple(emb.shape)}")
        rows = has_vector.to(torch.bool).clone()
        if self.embed.padding_idx is not None:
            rows[self.embed.padding_idx] = False  # the padding row stays zero
        emb[rows] = weight[rows].to(emb.dtype)

    def initial_state(self, grid: torch.Tensor | None, batch_size: int, device=None) -> dict[str, torch.Tensor]:
        """The decoding state: h, c and (with an image) the grid [N, P, C] and its projection."""
        if grid is None:
            zeros = torch.zeros(batch_size, self.hidden_size, device=device)
            return {"h": zeros, "c": zeros.clone()}
        mean = grid.mean(dim=1)
        return {"h": torch.tanh(self.init_h(mean)), "c": torch.tanh(self.init_c(mean)), "grid": grid,
                "grid_proj": self.attention.grid_proj(grid)}

    def step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor]):
        """One LSTM step on ``tokens`` [N]: (new state, attention [N, P] or None)."""
        x = self.embed(tokens)
        alpha = None
        if self.channels:
            alpha = self.attention(state["grid_proj"], state["h"])
            x = torch.cat([x, torch.einsum("np,npc->nc", alpha, state["grid"])], dim=-1)
        h, c = self.cell(x, (state["h"], state["c"]))
        return {**state, "h": h, "c": c}, alpha

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(hidden))

    def teacher_forced(self, grid: torch.Tensor | None, inputs: torch.Tensor, step_mask: torch.Tensor) -> Decoded:
        state = self.initial_state(grid, inputs.shape[0], inputs.device)
        hs, alphas = [], []
        for t in range(inputs.shape[1]):
            state, alpha = self.step(inputs[:, t], state)
            hs.append(state["h"])
            if alpha is not None:
                alphas.append(alpha)
        keep = step_mask.unsqueeze(-1).to(state["h"].dtype)
        hidden = torch.stack(hs, dim=1) * keep
        attention = torch.stack(alphas, dim=1) * keep if alphas else None
        return Decoded(hidden, attention, self.logits(hidden))


class AETE(nn.Module):
    """Eq. (3): r attention rows over the real steps; the embedding is max over r of GH."""

    def __init__(self, hidden: int, s: int, r: int) -> None:
        super().__init__()
        self.w_s1 = nn.Linear(hidden, s, bias=False)
        self.w_s2 = nn.Linear(s, r, bias=False)

    def forward(self, hidden: torch.Tensor, step_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, H], [B, T] → (X_AETE [B, H], G [B, r, T])."""
        scores = self.w_s2(torch.tanh(self.w_s1(hidden))).transpose(1, 2)  # [B, r, T]
        scores = scores.masked_fill(~step_mask.bool().unsqueeze(1), float("-inf"))
        g = scores.softmax(dim=-1).nan_to_num(0.0)  # a row without real steps: all zero, not NaN
        m = g @ hidden  # [B, r, H]
        return m.max(dim=1).values, g


def sw_gap(attention: torch.Tensor, g: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Eqs. (4)–(5): a_ws = Σ_t a_t g_t with g_t = max over r of G; Σ_cells a_ws · X.

    ``attention`` [B, T, P], ``g`` [B, r, T], ``grid`` [B, P, C] → [B, C]."""
    saliency = g.max(dim=1).values  # [B, T]
    a_ws = torch.einsum("btp,bt->bp", attention, saliency)
    return torch.einsum("bp,bpc->bc", a_ws, grid)


class Embedded(NamedTuple):
    """What a classification pass computed (tensors keep their gradients)."""

    logits: torch.Tensor | None
    aete: torch.Tensor | None = None
    sw_gap: torch.Tensor | None = None
    text_attention: torch.Tensor | None = None
    spatial_attention: torch.Tensor | None = None
    decoded: Decoded | None = None
    targets: torch.Tensor | None = None
    step_mask: torch.Tensor | None = None


# -- the method ------------------------------------------------------------------------------------

@register_method("tienet")
class TieNet(Method):
    """Image grid + attention LSTM + AETE + SW-GAP + multi-label classifier."""

    config_class = TieNetConfig

    @classmethod
    def needs(cls, cfg: TieNetConfig) -> MethodNeeds:
        cfg.validate()
        text = ()
        if cfg.reads_text:
            text = (TextField("report", sections=cfg.text_sections, max_length=cfg.text_max_length),)
        labels = None
        if cfg.has_labels:
            labels = (LabelNeed(task=cfg.label_task, source=cfg.label_source) if cfg.label_task
                      else LabelNeed(columns=tuple(cfg.label_columns)))
        return MethodNeeds(text_fields=text, labels=labels, text_encoder=False)

    @classmethod
    def build(cls, cfg: TieNetConfig, parts: BuildContext) -> "TieNet":
        cfg.validate()
        vocab, special = 0, (0, 0, 0)
        if cfg.reads_text:
            if parts.tokenizer is None:
                raise ConfigError(f"method {cfg.name!r} needs a tokenizer (text_encoder.tokenizer)")
            vocab, special = len(parts.tokenizer), special_token_ids(parts.tokenizer, cfg.name)
        n_classes = 0
        if cfg.has_labels:
            n_classes = len(cfg.label_columns)
            if cfg.label_task:
                from radpair.tasks.spec import load_task

                spec = load_task(cfg.label_task)
                schema = spec.schema_for(cfg.label_source)
                if schema.kind.is_categorical:
                    raise ConfigError(f"method.label_task {cfg.label_task!r} is {schema.kind.value}; TieNet's "
                                      "classifier is multi-label (binary columns)")
                n_classes = schema.n_outputs(len(spec.output_columns))
        encoder = build_image_encoder(parts.image_encoder) if cfg.reads_images else None
        if (parts.training and cfg.freeze_image_encoder and encoder is not None
                and not getattr(parts.image_encoder, "weights", None)):
            raise ConfigError("method.freeze_image_encoder needs image_encoder.weights (a frozen random encoder "
                              "learns nothing)")
        vectors = None
        if cfg.reads_text and cfg.word_vectors and parts.training:
            from radpair.text.word_vectors import load_word_vectors

            vectors = load_word_vectors(cfg.word_vectors)  # checked before the model is built
            vectors.check(parts.tokenizer, cfg.word_dim, dim_key="method.word_dim")
        max_length = cfg.text_max_length or getattr(parts.text_encoder, "max_length", None) or 128
        model = cls(cfg, encoder, vocab, *special, n_classes, max_length=max_length)
        if vectors is not None:
            model.decoder.start_from_vectors(vectors.weight, vectors.has_vector)
        return model

    def __init__(self, cfg: TieNetConfig, image_encoder: nn.Module | None, vocab_size: int, pad_id: int,
                 bos_id: int, eos_id: int, n_classes: int, max_length: int = 128) -> None:
        super().__init__()
        self.cfg = cfg
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.max_new_tokens = max_length - 1  # the reports it learnt from: [CLS] + at most max_length − 1
        self.image_encoder = image_encoder
        channels = 0
        if image_encoder is not None:
            self.transition = TransitionLayer(image_encoder.out_dim, cfg.grid_channels, cfg.grid_size)
            channels = cfg.grid_channels
            if cfg.freeze_image_encoder:
                image_encoder.requires_grad_(False)
                image_encoder.eval()
        if cfg.reads_text:
            self.decoder = AttentionLSTM(vocab_size, cfg.word_dim, cfg.lstm_size, channels,
                                         cfg.spatial_attention_dim, cfg.dropout, pad_id)
        if cfg.has_aete:
            self.aete = AETE(cfg.lstm_size, cfg.aete_hidden, cfg.aete_rows)
        if cfg.has_labels:
            width = {"tienet": cfg.lstm_size + channels, "report_only": cfg.lstm_size, "image_only": channels}
            self.classifier = nn.Linear(width[cfg.variant], n_classes)
        self.n_classes = n_classes
        self.balance_weights = None

    def train(self, mode: bool = True) -> "TieNet":
        super().train(mode)
        if self.cfg.freeze_image_encoder and self.image_encoder is not None:
            self.image_encoder.eval()  # BatchNorm statistics of a frozen encoder stay as loaded
        return self

    def setup(self, stats: DatasetStats) -> None:
        if not self.cfg.has_labels:
            return
        if stats.n_labelled == 0 or stats.class_counts is None:
            raise ConfigError(f"method {self.cfg.name!r}: no training row carries a label; the classifier "
                              "cannot be trained")
        if len(stats.class_counts) != self.n_classes:
            raise ConfigError(f"method {self.cfg.name!r}: {len(stats.class_counts)} label columns, but the "
                              f"classifier has {self.n_classes} outputs")
        self.balance_weights = class_count_weights(stats.class_counts, stats.n_labelled, self.cfg.beta_form,
                                           balance=self.cfg.balance == "class_counts",
                                           class_weights=self.cfg.class_weights)

    # -- parts -----------------------------------------------------------------------------------
    def image_grid(self, images: torch.Tensor) -> torch.Tensor:
        """X as [B, D², C] (the transition layer's grid, cells flattened row-major)."""
        if self.image_encoder is None:
            raise ConfigError("the report_only variant reads no image")
        if self.cfg.freeze_image_encoder:
            with torch.no_grad():
                fmap = self.image_encoder.feature_map(images)
        else:
            fmap = self.image_encoder.feature_map(images)
        return self.transition(fmap).flatten(2).transpose(1, 2)

    def _teacher_inputs(self, ids: torch.Tensor, mask: torch.Tensor):
        """(inputs, targets, step mask): step t reads token t and predicts token t+1, and is
        real when token t+1 is; unreal steps read and target the pad id."""
        step_mask = mask[:, 1:].bool()
        inputs = ids[:, :-1].masked_fill(~step_mask, self.pad_id)
        targets = ids[:, 1:].masked_fill(~step_mask, self.pad_id)
        return inputs, targets, step_mask

    def embed(self, grid: torch.Tensor | None, ids: torch.Tensor | None, mask: torch.Tensor | None) -> Embedded:
        """The variant's classification pass on a grid and/or a (teacher-forced) report."""
        variant = self.cfg.variant
        if variant == "image_only":
            return Embedded(self.classifier(grid.mean(dim=1)))
        if ids is None or mask is None:
            raise ConfigError(f"the {variant} variant reads a report")
        inputs, targets, step_mask = self._teacher_inputs(ids, mask)
        decoded = self.decoder.teacher_forced(grid, inputs, step_mask)
        if variant == "plain_captioning":
            return Embedded(None, decoded=decoded, targets=targets, step_mask=step_mask)
        aete, g = self.aete(decoded.hidden, step_mask)
        if variant == "report_only":
            return Embedded(self.classifier(aete), aete, None, g, None, decoded, targets, step_mask)
        pooled = sw_gap(decoded.attention, g, grid)
        logits = self.classifier(torch.cat([aete, pooled], dim=-1))
        return Embedded(logits, aete, pooled, g, decoded.attention, decoded, targets, step_mask)

    # -- training --------------------------------------------------------------------------------
    def _classification_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.balance_weights is None:
            raise ConfigError("TieNet.setup(stats) must run before training (Eq. 6 weighs by class counts)")
        labels, mask = batch["labels"], batch["label_mask"]
        w = self.balance_weights
        bp, bn = w.beta_pos, w.beta_neg
        if self.cfg.balance == "batch":
            bp, bn = batch_betas(labels, mask, self.cfg.beta_form)
        return weighted_bce(logits, labels, mask, bp, bn, w.lam)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        cfg = self.cfg
        ids_key, mask_key = text_keys("report")
        grid = self.image_grid(batch["images"]) if cfg.reads_images else None
        out = self.embed(grid, batch.get(ids_key), batch.get(mask_key))
        comps: dict[str, torch.Tensor] = {}
        loss = None
        result: dict[str, Any] = {}
        if out.logits is not None:
            l_c = self._classification_loss(out.logits, batch)
            comps["classification"] = l_c.detach()
            result["logits"] = out.logits.detach()
        if out.decoded is not None:
            l_r = report_loss(out.decoded.token_logits, out.targets, out.step_mask)
            comps["report"] = l_r.detach()
        if cfg.variant == "tienet":
            loss = cfg.alpha * l_c + (1.0 - cfg.alpha) * l_r  # α = 1 keeps L_R in the graph at weight 0 (DDP)
        elif cfg.variant == "plain_captioning":
            loss = l_r
        elif cfg.variant == "report_only":
            loss = l_c + 0.0 * l_r  # §3.5: classification loss only; the output layer stays in the graph
        else:
            loss = l_c
        if out.text_attention is not None:
            penalty = attention_penalty(out.text_attention)
            comps["attention_penalty"] = penalty.detach()
            loss = loss + cfg.penalty_weight * penalty
        for key, value in (("aete", out.aete), ("sw_gap", out.sw_gap), ("text_attention", out.text_attention),
                           ("spatial_attention", out.spatial_attention)):
            if value is not None:
                result[key] = value.detach()
        return {"loss": loss, "loss_components": comps, **result}

    # -- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def classify(self, batch: dict[str, torch.Tensor], mode: str, *, decoding: Any = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Multi-label logits [B, C] in one of Table 1's modes.

        ``R``: the report alone (``report_only`` variant); ``I+R``: image and report, the
        report read teacher-forced; ``I+GR``: the image alone: the model writes a report
        (:mod:`radpair.generation.decoding` with ``decoding``, a ``DecodingConfig``, and
        ``generator`` for sampling), then reads its own words back teacher-forced for H and
        the attention maps; ``I``: the ``image_only`` baseline. Call ``eval()`` first.
        """
        if mode not in MODES:
            raise ConfigError(unknown_choice_message("TieNet mode", mode, MODES))
        if mode not in VARIANT_MODES[self.cfg.variant]:
            raise ConfigError(f"mode {mode!r} needs another variant: the {self.cfg.variant} variant classifies in "
                              f"{list(VARIANT_MODES[self.cfg.variant]) or 'no mode (it only writes reports)'}")
        ids_key, mask_key = text_keys("report")
        grid = self.image_grid(batch["images"]) if self.cfg.reads_images else None
        if mode == "I+GR":
            tokens = self.generate(batch["images"], decoding=decoding, generator=generator, grid=grid)
            return self.classify_generated(batch["images"], tokens, grid=grid)
        if mode == "I":
            return self.embed(grid, None, None).logits
        return self.embed(grid, batch[ids_key], batch[mask_key]).logits

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
        """Probabilities [B, C] from the variant's test-time input (I+GR, R or I)."""
        mode = {"tienet": "I+GR", "report_only": "R", "image_only": "I"}.get(self.cfg.variant)
        if mode is None:
            raise ConfigError("the plain_captioning variant has no classifier")
        return self.classify(batch, mode, **kwargs).sigmoid()

    @property
    def classifier_inputs(self) -> tuple[str, ...]:
        """The inputs its own classifier can read (``image``, ``report``, ``image+report``), so
        an evaluation can ask for Table 1's R, I+R, I or I+GR without knowing the method."""
        return tuple(MODE_INPUTS[m] for m in VARIANT_MODES[self.cfg.variant])

    @torch.no_grad()
    def classify_inputs(self, batch: dict[str, torch.Tensor], inputs: str, **kwargs) -> torch.Tensor:
        """Probabilities [B, C] from ``inputs`` (one of :attr:`classifier_inputs`); ``batch``
        holds ``images`` and/or the ``report`` text field's ids and mask."""
        modes = {MODE_INPUTS[m]: m for m in VARIANT_MODES[self.cfg.variant]}
        if inputs not in modes:
            raise ConfigError(f"the {self.cfg.variant} variant classifies from {list(modes) or 'nothing'}, "
                              f"not from {inputs!r}")
        return self.classify(batch, modes[inputs], **kwargs).sigmoid()

    def pack_tokens(self, tokens: list[list[int]], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated tokens (no BOS/EOS) as a right-padded ``[BOS] .. [EOS]`` batch (ids, mask)."""
        rows = [[self.bos_id, *map(int, t), self.eos_id] for t in tokens]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        return ids, mask

    @torch.no_grad()
    def classify_generated(self, images: torch.Tensor, tokens: list[list[int]],
                           grid: torch.Tensor | None = None) -> torch.Tensor:
        """I+GR's second half: classify ``images`` with the reports the model wrote for them."""
        if self.cfg.variant != "tienet":
            raise ConfigError(f"I+GR classification needs the tienet variant, not {self.cfg.variant}")
        grid = self.image_grid(images) if grid is None else grid
        ids, mask = self.pack_tokens(tokens, grid.device)
        return self.embed(grid, ids, mask).logits

    @torch.no_grad()
    def generate(self, images: torch.Tensor, *, decoding: Any = None, generator: torch.Generator | None = None,
                 grid: torch.Tensor | None = None) -> list[list[int]]:
        """Reports for ``images`` (token ids without BOS/EOS) by :func:`radpair.generation.decoding.decode`;
        ``decoding`` None is greedy up to the length of the training reports."""
        from radpair.generation.decoding import DecodingConfig, decode

        state = self.start_decoding(images, grid=grid)
        out = decode(self.decode_step, state, images.shape[0], bos_id=self.bos_id, eos_id=self.eos_id,
                     cfg=decoding if decoding is not None else DecodingConfig(max_length=self.max_new_tokens),
                     generator=generator)
        return [list(t) for t in out.tokens]

    # -- generation: the step interface of radpair.generation.decoding ---------------------------
    @property
    def writes_reports(self) -> bool:
        """Whether this variant has a decoder that was trained (report_only and image_only do not)."""
        return self.cfg.variant in ("tienet", "plain_captioning")

    def start_decoding(self, images: torch.Tensor, grid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The decoding state of ``images``: h, c, the grid X [N, P, C] and its attention projection."""
        if not (self.cfg.reads_images and self.cfg.reads_text):
            raise ConfigError(f"the {self.cfg.variant} variant does not write reports from images")
        grid = self.image_grid(images) if grid is None else grid
        return self.decoder.initial_state(grid, grid.shape[0])

    def decode_step(self, prefix: torch.Tensor, state: dict[str, torch.Tensor]):
        """Next-token logits [N, V] after ``prefix`` [N, t] (the state holds the history, so
        only the last token is read)."""
        state, _ = self.decoder.step(prefix[:, -1], state)
        return self.decoder.logits(state["h"]), state

    def exports(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {}
        if self.image_encoder is not None:
            out["image_encoder"] = self.image_encoder
            out["transition_layer"] = self.transition
        for name in ("decoder", "aete", "classifier"):
            part = getattr(self, name, None)
            if part is not None:
                out[name] = part
        return out


__all__ = ["AETE", "AttentionLSTM", "TieNet", "TieNetConfig", "TransitionLayer", "sw_gap"]

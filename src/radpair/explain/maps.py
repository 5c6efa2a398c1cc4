"""The explanations themselves, as arrays: Grad-CAM, [CLS] attention, decoder attention per
generated word, image-sentence similarity maps.

Everything runs in eval mode and draws nothing at random, so the same model and images
give the same maps; the caller's global RNG and grad mode are left as they were.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from radpair.errors import ConfigError, unknown_choice_message
from radpair.explain.subject import Subject

MIN_CELLS = 14
"""Grad-CAM's layer gives at least this many cells per side where the input allows: the last
stage of a ResNet at 224 px has 7 x 7 cells, too coarse to say which lobe lit up."""


class TargetError(ConfigError):
    """The requested target does not exist for this model: the user's mistake, never skipped."""


# ---- Grad-CAM layer ---------------------------------------------------------------------------------
@dataclass
class LayerChoice:
    name: str  # dotted name in the subject's model
    cells: tuple[int, int]
    candidates: list[tuple[str, tuple[int, int]]]  # every stage, input to output, with its map size
    rule: str


def _stages(encoder: nn.Module) -> list[tuple[str, nn.Module]]:
    """The encoder's convolutional stages: outermost ``nn.Sequential`` blocks holding a
    convolution (a ResNet's layer1..layer4; a shortcut inside a block is not a stage of its
    own); the convolutions themselves when there are no such blocks."""
    seqs = [(n, m) for n, m in encoder.named_modules()
            if n and isinstance(m, nn.Sequential) and any(isinstance(c, nn.Conv2d) for c in m.modules())]
    outer = [(n, m) for n, m in seqs if not any(n.startswith(o + ".") for o, _ in seqs if o != n)]
    if outer:
        return outer
    return [(n, m) for n, m in encoder.named_modules() if isinstance(m, nn.Conv2d)]


def choose_layer(subject: Subject, input_size: int | Sequence[int], layer: str | None = None,
                 min_cells: int = MIN_CELLS) -> LayerChoice:
    """The Grad-CAM layer at ``input_size``: walking the encoder's stages from the last, the
    first whose output is at least ``min_cells`` x ``min_cells``; when no stage is that large
    (tiny inputs), the stage with the largest output (the deeper one on a tie). ``layer``
    (a dotted module name of the model, or of its image encoder) overrides the rule."""
    encoder = subject.image_encoder
    if encoder is None:
        raise ConfigError(f"{subject.root}: the model has no image encoder with a feature map; Grad-CAM needs one")
    enc_name = next(n for n, m in subject.model.named_modules() if m is encoder)
    prefix = f"{enc_name}." if enc_name else ""
    size = (int(input_size), int(input_size)) if np.isscalar(input_size) else tuple(int(s) for s in input_size)
    stages = _stages(encoder)
    if layer is not None:
        names = dict(subject.model.named_modules())
        full = layer if layer in names else prefix + layer
        if full not in names:
            raise ConfigError(unknown_choice_message("layer", layer, [prefix + n for n, _ in stages]))
        stages = [(full[len(prefix):], names[full])] if full.startswith(prefix) else [(full, names[full])]
        prefix_used = "" if not full.startswith(prefix) else prefix
    else:
        prefix_used = prefix
    shapes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[-2:])))
             for n, m in stages]
    was = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            p = next(encoder.parameters())
            encoder.feature_map(torch.zeros(1, 1, *size, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        encoder.train(was)
    order = [(n, shapes[n]) for n, _ in stages if n in shapes]
    if not order:
        raise ConfigError(f"{subject.root}: layer {layer!r} is not used when the encoder computes its feature map")
    candidates = [(prefix_used + n, s) for n, s in order]
    if layer is not None:
        return LayerChoice(candidates[0][0], candidates[0][1], candidates, f"--layer {layer}")
    for name, s in reversed(candidates):
        if min(s) >= min_cells:
            return LayerChoice(name, s, candidates, f"last stage with >= {min_cells}x{min_cells} cells")
    best = max(range(len(candidates)), key=lambda i: (candidates[i][1][0] * candidates[i][1][1], i))
    name, s = candidates[best]
    return LayerChoice(name, s, candidates, f"no stage reaches {min_cells}x{min_cells} at {size[0]}x{size[1]} px: "
                                            "the stage with the largest map")


# ---- what Grad-CAM explains ------------------------------------------------------------------------
@dataclass
class Target:
    """The score Grad-CAM differentiates, one per image."""

    kind: str  # class | text | report
    description: str
    per_image: list[str]


class _Score(nn.Module):
    """An image-only module for MONAI: ``images -> [B, 1]`` score, with every other input
    (target class, text vector, report tokens) fixed beforehand."""

    def __init__(self, model: nn.Module, fn) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images).reshape(-1, 1)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def prompt_vectors(subject: Subject, classes: Sequence[str], prompts: str = "findings7") -> dict[str, torch.Tensor]:
    """Per class, positive minus negative mean prompt embedding (the first prompt set of the
    file): an image's dot product with it is the zero-shot score of :mod:`radpair.evaluation.zeroshot`."""
    from radpair.evaluation.zeroshot import load_prompts

    pf = load_prompts(prompts)
    out = {}
    for c in classes:
        if c not in pf.classes:
            continue
        s = pf.classes[c][0]
        pos = _normalise(embed_texts(subject, s.positive).mean(0))
        neg = _normalise(embed_texts(subject, s.negative).mean(0))
        out[c] = pos - neg
    return out


def prompt_classes(prompts: str = "findings7") -> list[str]:
    from radpair.evaluation.zeroshot import load_prompts

    return list(load_prompts(prompts).classes)


def tokenize(subject: Subject, texts: Sequence[str], sections: bool = False):
    """(ids, mask) of ``texts`` as the run tokenised its text field (``sections=False``: read whole)."""
    from radpair.data.pairs import tokenize_texts

    table = tokenize_texts(list(texts), subject.tokenizer, subject.max_length,
                           subject.text_sections if sections else "full")
    ids, mask = table.batch(np.arange(len(texts)))
    return ids.to(subject.device), mask.to(subject.device)


def embed_texts(subject: Subject, texts: Sequence[str], sections: bool = False) -> torch.Tensor:
    """(N, D) L2-normalised text embeddings, no gradient."""
    ids, mask = tokenize(subject, texts, sections)
    with torch.no_grad():
        return _normalise(subject.model.embed_texts(ids, mask).float())


def greedy_reports(subject: Subject, x: torch.Tensor, max_new: int | None = None) -> tuple[list[list[int]], list[list[np.ndarray]]]:
    """Greedy reports (token ids, no BOS/EOS) and, per generated word, the decoder's attention
    over image cells ([P] each, the last decoder layer's, mean over heads); one image at a
    time, so no padding enters a map."""
    model = subject.model
    limit = int(max_new or getattr(model, "max_new_tokens", 64))
    tokens_all, maps_all = [], []
    with AttentionProbe(model) as probe, torch.no_grad():
        for i in range(x.shape[0]):
            state = model.start_decoding(x[i:i + 1])
            prefix = torch.tensor([[int(model.bos_id)]], device=x.device)
            tokens, maps = [], []
            for _ in range(limit):
                probe.clear()
                logits, state = model.decode_step(prefix, state)
                nxt = int(logits[0].argmax())
                if nxt == int(model.eos_id):
                    break
                tokens.append(nxt)
                if probe.last is not None:
                    maps.append(probe.last[0].float().cpu().numpy())
                prefix = torch.cat([prefix, torch.tensor([[nxt]], device=x.device)], dim=1)
            tokens_all.append(tokens)
            maps_all.append(maps)
    return tokens_all, maps_all


def report_log_likelihood(subject: Subject, tokens: list[list[int]]):
    """``images -> [B]`` summed log-probability of each image's fixed report (teacher-forced
    through the decoding step interface), differentiable in the images.

    The whole batch goes through ``start_decoding`` in one call: Grad-CAM reads the layer's
    activations from the last forward pass, so encoding one image at a time would leave it
    the last image's activations only (one map per batch). Reports of different lengths are
    padded after their EOS; a step past a report's end adds nothing, and the decoder is
    causal, so the padding changes no earlier step."""
    model = subject.model

    def fn(images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        if len(tokens) < b:
            raise ValueError(f"{len(tokens)} reports for {b} images")
        seqs = [[int(model.bos_id), *tokens[i], int(model.eos_id)] for i in range(b)]
        length = max(len(q) for q in seqs)
        ids = torch.tensor([q + [int(model.eos_id)] * (length - len(q)) for q in seqs], device=images.device)
        ends = torch.tensor([len(q) for q in seqs], device=images.device)
        state = model.start_decoding(images)
        total = images.new_zeros(b)
        for t in range(1, length):
            logits, state = model.decode_step(ids[:, :t], state)
            step = torch.log_softmax(logits.float(), -1).gather(1, ids[:, t:t + 1])[:, 0]
            total = total + torch.where(t < ends, step, torch.zeros_like(step))
        return total

    return fn


def resolve_target(subject: Subject, x: torch.Tensor, target: str | None, reports: Sequence[str] | None,
                   tokens: list[list[int]] | None = None, prompts: str = "findings7", use_classifier: bool = True):
    """(score function ``images -> [B]``, :class:`Target`) for ``target`` (a class name, or
    None/``auto``): a classifier's logit of the class (auto: each image's top class); else
    for a joint embedding the similarity to the class's prompts (auto: to the image's own
    report, or without one to its best-matching prompt class); else for a report writer the
    log-likelihood of the report it writes. ``use_classifier=False`` skips the classifier, so
    a model whose classifier lacks the class (Chauhan's edema-severity head asked about a
    nodule) can still be explained through its joint embedding."""
    auto = target in (None, "auto")
    clf = subject.classifier() if use_classifier else None
    if clf is not None:
        fn, what = clf
        with torch.no_grad():
            scores = fn(x).float()
        names = subject.class_names or [f"class{i}" for i in range(scores.shape[1])]
        if auto:
            idx = scores.argmax(1)
        else:
            if target not in names:
                raise TargetError(unknown_choice_message("target class", str(target), names))
            idx = torch.full((x.shape[0],), names.index(target), dtype=torch.long, device=x.device)
        per = [names[int(i)] if int(i) < len(names) else str(int(i)) for i in idx]
        return (lambda im: fn(im).gather(1, idx.view(-1, 1)).squeeze(1)), \
            Target("class", f"{what} of " + ("each image's top class" if auto else repr(target)), per)
    if subject.joint:
        if auto and reports is not None and all(r.strip() for r in reports):
            vecs = embed_texts(subject, reports, sections=True)
            per = ["own report"] * x.shape[0]
            desc = "cosine similarity of the image embedding to its own report's embedding"
        else:
            classes = prompt_classes(prompts) if auto else [str(target)]
            pv = prompt_vectors(subject, classes, prompts)
            if not pv:
                raise TargetError(unknown_choice_message("target (a class of the prompt file)", str(target),
                                                         prompt_classes(prompts)))
            names = list(pv)
            stack = torch.stack([pv[c] for c in names])
            if auto:
                with torch.no_grad():
                    pick = (_normalise(subject.model.embed_images(x).float()) @ stack.T).argmax(1)
            else:
                pick = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            vecs = stack[pick]
            per = [names[int(i)] for i in pick]
            desc = (f"zero-shot score (similarity to positive minus negative '{prompts}' prompts) of "
                    + ("each image's best-matching class" if auto else repr(target)))
        vecs = vecs.detach()
        return (lambda im: (_normalise(subject.model.embed_images(im).float()) * vecs).sum(-1)), \
            Target("text", desc, per)
    if subject.generates:
        if not auto:
            raise TargetError(f"{subject.root}: the model has no classifier and no joint embedding, so there is no "
                              f"class {target!r} to explain; it explains the report it writes (--target auto)")
        if tokens is None:
            tokens, _ = greedy_reports(subject, x)
        return report_log_likelihood(subject, tokens), \
            Target("report", "log-likelihood of the report the model writes for the image (greedy)",
                   ["generated report"] * x.shape[0])
    raise ConfigError(f"{subject.root}: the model has no classifier, joint embedding or decoder, so Grad-CAM has no "
                      "score to explain")


@dataclass
class CamResult:
    maps: np.ndarray  # (B, h, w) at the layer's resolution, >= 0, not normalised
    layer: LayerChoice
    target: Target


def gradcam(subject: Subject, x: torch.Tensor, target: str | None = None, reports: Sequence[str] | None = None,
            layer: str | None = None, tokens: list[list[int]] | None = None, prompts: str = "findings7",
            batch_size: int = 16, use_classifier: bool = True) -> CamResult:
    """MONAI Grad-CAM of the score :func:`resolve_target` picks, on :func:`choose_layer`'s layer.

    Each batch's map depends on that batch alone, and the model leaves as it came (modes,
    no hooks: :func:`radpair.models.isolation.model_left_as_found`), so the batch size and
    earlier calls change nothing."""
    from monai.visualize import GradCAM

    from radpair.models.isolation import model_left_as_found

    choice = choose_layer(subject, tuple(x.shape[-2:]), layer)
    target_module = subject.model.get_submodule(choice.name)
    maps, per, tgt = [], [], None
    for a in range(0, x.shape[0], batch_size):
        part = x[a:a + batch_size]
        sl = slice(a, a + part.shape[0])
        fn, tgt = resolve_target(subject, part, target, None if reports is None else list(reports)[sl],
                                 None if tokens is None else tokens[sl], prompts, use_classifier)
        per += tgt.per_image
        with model_left_as_found(subject.model, target_module), torch.enable_grad():
            cam = GradCAM(nn_module=_Score(subject.model, fn), target_layers="model." + choice.name)
            try:
                m = cam.compute_map(part.clone().requires_grad_(True), class_idx=0)
            except (RuntimeError, TypeError, AttributeError, IndexError) as exc:
                raise ConfigError(f"{subject.root}: no gradient of the {tgt.kind} score reaches layer {choice.name} "
                                  f"({type(exc).__name__}: {exc}); is that part of the model frozen?") from None
        maps.append(m.detach().float().cpu().numpy()[:, 0])
    return CamResult(np.concatenate(maps), choice, Target(tgt.kind, tgt.description, per))


# ---- attention probes ---------------------------------------------------------------------------------
def _cell_attention_types() -> tuple[type, ...]:
    """Modules whose output *is* a softmax over image cells, [N, P]: Show-Attend-Tell's soft
    spatial attention (TieNet's AttentionLSTM). Cross-attention of a transformer decoder is
    read from ``nn.TransformerDecoderLayer.multihead_attn`` instead."""
    try:
        from radpair.methods.tienet import SpatialAttention
    except ImportError:  # pragma: no cover
        return ()
    return (SpatialAttention,)


class AttentionProbe:
    """While active, records each decoder step's attention over image cells (``last``: [N, P]).

    Transformer cross-attention is asked for its weights (``need_weights=True``, mean over
    heads) through a forward pre-hook; the layer computes the same output either way, so
    nothing the model returns changes. The last decoder layer's map of a step is kept."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.last: torch.Tensor | None = None
        self.handles: list[Any] = []

    def clear(self) -> None:
        self.last = None

    def __enter__(self) -> "AttentionProbe":
        kinds = _cell_attention_types()
        for m in self.model.modules():
            if kinds and isinstance(m, kinds):
                self.handles.append(m.register_forward_hook(self._direct))
            if isinstance(m, nn.TransformerDecoderLayer):
                mha = m.multihead_attn
                self.handles.append(mha.register_forward_pre_hook(self._ask, with_kwargs=True))
                self.handles.append(mha.register_forward_hook(self._cross))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    @property
    def found(self) -> bool:
        return bool(self.handles)

    def _direct(self, module, inputs, output) -> None:
        self.last = output.detach()

    @staticmethod
    def _ask(module, args, kwargs):
        kwargs = dict(kwargs)
        kwargs["need_weights"] = True
        kwargs["average_attn_weights"] = True
        return args, kwargs

    def _cross(self, module, inputs, output) -> None:
        weights = output[1]
        if weights is not None:
            self.last = weights.detach()[:, -1]  # [N, S]: the newest position's row


def grid_shape(subject: Subject, n_cells: int, image_size: Sequence[int]) -> tuple[int, int]:
    """The (h, w) of ``n_cells`` attention cells: the encoder's feature map when it has that
    many cells (RadTex's image tokens), else a square grid (TieNet's D x D), else one row."""
    enc = subject.image_encoder
    if enc is not None:
        with torch.no_grad():
            p = next(enc.parameters())
            h, w = enc.feature_map(torch.zeros(1, 1, *image_size, device=p.device, dtype=p.dtype)).shape[-2:]
        if h * w == n_cells:
            return int(h), int(w)
    r = int(round(math.sqrt(n_cells)))
    return (r, r) if r * r == n_cells else (1, n_cells)


# ---- [CLS] attention ------------------------------------------------------------------------------------
def cls_attention(subject: Subject, texts: Sequence[str]) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
    """Per text: (tokens, the [CLS] token's last-layer attention mean over heads, real-token
    mask), padded to the batch's width. Rows sum to 1 over real tokens and are 0 on padding
    (the mask adds the dtype's minimum before the softmax). BERT's default SDPA attention
    returns no weights, so the eager implementation (the same arithmetic) is switched on
    for the call and back afterwards."""
    bert = subject.bert
    if bert is None:
        raise ConfigError(f"{subject.root}: the model has no BERT text encoder")
    ids, mask = tokenize(subject, texts, sections=True)
    prev = getattr(bert.config, "_attn_implementation", None)
    switch = prev not in (None, "eager") and hasattr(bert, "set_attn_implementation")
    if switch:
        bert.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = bert(input_ids=ids, attention_mask=mask, output_attentions=True)
    finally:
        if switch:
            bert.set_attn_implementation(prev)
    att = getattr(out, "attentions", None)
    if not att or att[-1] is None:
        raise ConfigError(f"{subject.root}: the text encoder returned no attention weights")
    cls = att[-1].float().mean(1)[:, 0].cpu().numpy()  # [B, T]
    m = mask.cpu().numpy().astype(bool)
    rows = []
    for i in range(len(texts)):
        toks = subject.tokenizer.convert_ids_to_tokens(ids[i].tolist())
        w = np.where(m[i], cls[i], 0.0)
        rows.append((toks, w, m[i]))
    return rows


# ---- image-sentence similarity ----------------------------------------------------------------------------
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str, limit: int = 4) -> list[str]:
    return [s.strip() for s in SENTENCE.split(text or "") if s.strip()][:limit]


def cell_embeddings(subject: Subject, x: torch.Tensor) -> tuple[torch.Tensor, str]:
    """([B, h, w, D] per-cell embeddings, how they were made). The image head is applied to
    each cell's feature vector; this is exact for a head that is linear on pooled features
    and an approximation for an MLP (the mean of per-cell outputs is not the embedding).
    It is only done after checking that the model's image embedding *is* that head of the
    pooled feature map (or, for a head on the map, of the map), so the head is known; and
    whether it is exact (the cells' mean embedding equals the image's) is checked, not assumed."""
    model, enc = subject.model, subject.image_encoder
    if enc is None or not subject.joint:
        raise ConfigError(f"{subject.root}: similarity maps need a joint embedding and an image feature map")
    with torch.no_grad():
        fmap = enc.feature_map(x)
        emb = model.embed_images(x)
        b, c, h, w = fmap.shape
        cells = fmap.permute(0, 2, 3, 1).reshape(b * h * w, c)
        for name, on_map in (("image_projection", False), ("image_head", False), ("image_branch", True)):
            head = getattr(model, name, None)
            if not isinstance(head, nn.Module) or not _close(head(fmap if on_map else fmap.mean(dim=(2, 3))), emb):
                continue
            per_cell = head(cells.reshape(b * h * w, c, 1, 1) if on_map else cells).reshape(b, h, w, -1)
            where = "a head on the feature map, applied to each cell as a 1x1 map" if on_map else \
                "a head on pooled features, applied to each cell's feature vector"
            if _close(per_cell.mean(dim=(1, 2)), emb):
                return per_cell, f"{name} ({where}): exact, the mean of the cell embeddings is the image embedding"
            return per_cell, (f"{name} ({where}): an approximation, the head is non-linear after pooling, so the "
                              "mean of the cell embeddings is not the image embedding")
    raise ConfigError(f"{subject.root}: the image embedding is not a known head of the encoder's feature map, so it "
                      "cannot be applied per cell")


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5))


def similarity_maps(subject: Subject, x: torch.Tensor, texts_per_image: Sequence[Sequence[str]]
                    ) -> tuple[list[np.ndarray], str]:
    """Per image, (n_texts, h, w) cosine similarity of each cell's embedding to each text's."""
    cells, how = cell_embeddings(subject, x)
    cells = _normalise(cells.float())
    out = []
    for i, texts in enumerate(texts_per_image):
        if not texts:
            out.append(np.zeros((0, *cells.shape[1:3]), dtype=np.float32))
            continue
        t = embed_texts(subject, list(texts), sections=False)
        out.append(torch.einsum("hwd,nd->nhw", cells[i], t).cpu().numpy())
    return out, how


__all__ = ["MIN_CELLS", "LayerChoice", "choose_layer", "gradcam", "CamResult", "Target", "resolve_target",
           "greedy_reports", "AttentionProbe", "grid_shape", "cls_attention", "cell_embeddings", "similarity_maps",
           "sentences", "prompt_vectors"]

"""``explain_run``: every explanation a model offers, for corpus images or image files,
written as PNG overlays, ``index.html`` and ``explanations.json``.

Each input gets an item, readable or not: an unreadable file is listed with its reason,
and an explanation a model cannot give is listed with why, so the page never looks
complete when it is not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from radpair.errors import ConfigError, DataError
from radpair.explain import maps as M
from radpair.explain.render import page, panels, tsne_plot
from radpair.explain.subject import Subject, load_subject

MAX_WORD_PANELS = 24


@dataclass
class ExplainItem:
    input: str
    status: str = "ok"  # ok | unreadable
    reason: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)  # uint8 (H, W) as fed to the model
    report: str | None = None
    label: str | None = None  # the t-SNE colour
    target: str | None = None
    gradcam: np.ndarray | None = field(default=None, repr=False)  # (h, w) at the layer's resolution
    generated: str | None = None
    words: list[str] = field(default_factory=list)
    decoder_maps: list[np.ndarray] = field(default_factory=list, repr=False)  # one (h, w) per generated word
    cls_tokens: list[str] = field(default_factory=list)
    cls_weights: list[float] = field(default_factory=list)
    cls_mask: list[bool] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    similarity: np.ndarray | None = field(default=None, repr=False)  # (n_sentences, h, w)
    files: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input, "status": self.status, "reason": self.reason,
                               "files": dict(self.files), "not_available": dict(self.skipped)}
        if self.status == "ok":
            out.update(target=self.target, report=self.report, label=self.label, generated=self.generated,
                       gradcam_cells=None if self.gradcam is None else list(self.gradcam.shape),
                       words=self.words, sentences=self.sentences)
            if self.cls_tokens:
                out["cls_attention"] = [{"token": t, "weight": round(float(w), 6)}
                                        for t, w, m in zip(self.cls_tokens, self.cls_weights, self.cls_mask) if m]
        return out


@dataclass
class ExplainResult:
    checkpoint: str
    method: str
    out: Path
    items: list[ExplainItem]
    capabilities: dict[str, bool]
    layer: str | None = None
    layer_cells: tuple[int, int] | None = None
    layer_rule: str | None = None
    layer_candidates: list[tuple[str, tuple[int, int]]] = field(default_factory=list)
    target_description: str | None = None
    similarity_note: str | None = None
    tsne: str | None = None
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "radpair-explanations", "version": 1, "checkpoint": self.checkpoint, "method": self.method,
                "capabilities": self.capabilities,
                "gradcam": {"layer": self.layer, "cells": None if self.layer_cells is None else list(self.layer_cells),
                            "rule": self.layer_rule, "min_cells": M.MIN_CELLS,
                            "candidates": [{"layer": n, "cells": list(s)} for n, s in self.layer_candidates],
                            "target": self.target_description},
                "decoder_attention": "last decoder layer's attention over image cells (mean over heads) at the "
                                     "step that wrote each word" if self.capabilities.get("writes_reports") else None,
                "cls_attention": "[CLS] row of the last BERT layer's attention, mean over heads"
                                 if self.capabilities.get("bert_text_encoder") else None,
                "similarity_maps": self.similarity_note, "tsne": self.tsne, "notes": self.notes,
                "files": self.files, "items": [i.to_dict() for i in self.items]}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40] or "x"


def _from_files(paths: Sequence[str | Path], size: int) -> list[ExplainItem]:
    """One item per file, decoded onto the run's square as `radpair preprocess` would."""
    from radpair.data.io import RadiographError
    from radpair.data.io.geometry import ResizeSpec
    from radpair.data.io.reader import prepare_radiograph

    items = []
    for p in paths:
        item = ExplainItem(str(p))
        path = Path(p)
        try:
            if not path.is_file():
                raise RadiographError(path, "no such file" if not path.exists() else "not a file")
            if path.stat().st_size == 0:
                raise RadiographError(path, "empty file (0 bytes)")
            img = np.asarray(prepare_radiograph(path, ResizeSpec(size=int(size))))
            if img.dtype != np.uint8:  # 16-bit outputs: the model reads 8-bit
                img = (img.astype(np.float64) / max(float(np.iinfo(img.dtype).max), 1.0) * 255).round().astype(np.uint8)
            item.image = img
        except RadiographError as exc:
            item.status, item.reason = "unreadable", exc.reason if hasattr(exc, "reason") else str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            item.status, item.reason = "unreadable", f"cannot decode ({type(exc).__name__}: {exc})"
        items.append(item)
    return items


def _from_corpus(corpus, split: str, limit: int | None, color_by: str | None) -> tuple[list[ExplainItem], str | None]:
    from radpair.tasks.spec import resolve_split

    rows = corpus.index if split == "all" else corpus.split_index(resolve_split(corpus, split))
    if limit:
        rows = rows.iloc[: int(limit)]
    images = corpus.read_images(rows["image_index"].to_numpy(dtype=np.int64))
    labels, column = None, color_by
    try:
        table = corpus.labels("ground_truth")
    except DataError:
        table = corpus.labels("index") if corpus.label_columns else None
    if table is not None:
        cols = [c for c in table.columns if c != "image_id"]
        if column is None and cols:
            column = cols[0]
        if column is not None:
            if column not in table.columns:
                from radpair.errors import unknown_choice_message

                raise ConfigError(unknown_choice_message("--color-by column", column, cols))
            labels = table.set_index("image_id")[column]
    items = []
    for k, (_, r) in enumerate(rows.iterrows()):
        item = ExplainItem(f"{corpus.root.name}:{r['image_id']}", image=np.asarray(images[k]), report=str(r["report"]))
        if labels is not None:
            item.label = str(labels.get(r["image_id"], "?"))
        items.append(item)
    return items, column


def explain_run(checkpoint: str | Path, out: str | Path, *, corpus: str | Path | Any = None, split: str = "test",
                limit: int | None = 16, images: Sequence[str | Path] | None = None, target: str | None = "auto",
                layer: str | None = None, device: str = "cpu", progress: bool = False, prompts: str = "findings7",
                color_by: str | None = None, tokenizer: str | Path | None = None, max_sentences: int = 4,
                tsne: bool = True) -> ExplainResult:
    """Explain a finished run (any method) or a model package on corpus images or image
    files; write everything under ``out`` and return the maps as arrays too."""
    if (corpus is None) == (not images):
        raise ConfigError("give either a corpus (--corpus DIR) or image files (--images FILES...), not both")
    subject = load_subject(checkpoint, device=device, tokenizer=tokenizer)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    colour = None
    if corpus is not None:
        from radpair.data.corpus import Corpus

        corpus = corpus if isinstance(corpus, Corpus) else Corpus.open(corpus)
        items, colour = _from_corpus(corpus, split, limit, color_by)
        h, w = corpus.image_size
        if subject.image_size and (h, w) != (subject.image_size, subject.image_size):
            notes.append(f"the corpus images are {h}x{w} px but the model was trained on {subject.image_size} px")
    else:
        size = subject.image_size
        if not size:
            raise DataError(f"{subject.root}: the run records no image size (image_encoder.safetensors metadata); "
                            "explain corpus images instead (--corpus)")
        items = _from_files(images, size)
        if not subject.generates and subject.classifier() is None:
            colour = None
    ok = [i for i in items if i.status == "ok"]
    result = ExplainResult(str(subject.root), subject.method, out, items, subject.capabilities(), notes=notes)
    if not ok:
        result.notes.append("no readable input")
        return _finish(result)
    x = subject.to_tensor(np.stack([i.image for i in ok])).to(subject.device)

    bar = None
    if progress:
        from radpair.progress import count_progress

        bar = count_progress("explain", "steps", True)
        bar.start()
        task = bar.add_task("explain", total=5)

    def tick():
        if bar is not None:
            bar.advance(task)

    # decoder attention per generated word (report writers)
    tokens = None
    if subject.generates:
        probe_ok = M.AttentionProbe(subject.model)
        with probe_ok:
            has_probe = probe_ok.found
        tokens, word_maps = M.greedy_reports(subject, x)
        for item, toks, wmaps in zip(ok, tokens, word_maps):
            item.words = subject.tokenizer.convert_ids_to_tokens(toks)
            item.generated = subject.tokenizer.decode(toks, skip_special_tokens=True)
            if not has_probe or len(wmaps) != len(toks):
                item.skipped["decoder attention"] = "the decoder exposes no attention over image cells"
                continue
            if wmaps:
                hw = M.grid_shape(subject, wmaps[0].shape[-1], tuple(x.shape[-2:]))
                item.decoder_maps = [m.reshape(hw) for m in wmaps]
    tick()

    # Grad-CAM
    try:
        cam = M.gradcam(subject, x, target, [i.report or "" for i in ok] if corpus is not None else None, layer,
                        tokens, prompts)
        result.layer, result.layer_cells, result.layer_rule = cam.layer.name, cam.layer.cells, cam.layer.rule
        result.layer_candidates = cam.layer.candidates
        result.target_description = cam.target.description
        for item, m, t in zip(ok, cam.maps, cam.target.per_image):
            item.gradcam, item.target = m, t
    except M.TargetError:
        raise
    except ConfigError as exc:
        for item in ok:
            item.skipped["Grad-CAM"] = str(exc)
    tick()

    # [CLS] attention over the image's own report
    if subject.bert is not None:
        texts = [i.report or "" for i in ok]
        if corpus is None or not any(t.strip() for t in texts):
            for item in ok:
                item.skipped["[CLS] attention"] = "no report for this input (explain corpus images to see it)"
        else:
            for item, (toks, wts, msk) in zip(ok, M.cls_attention(subject, texts)):
                item.cls_tokens, item.cls_weights, item.cls_mask = list(toks), [float(v) for v in wts], \
                    [bool(v) for v in msk]
    tick()

    # image-sentence similarity
    if subject.joint:
        from radpair.data.pairs import select_report_text

        per_image = []
        for item in ok:
            if item.report:
                per_image.append(M.sentences(select_report_text([item.report], subject.text_sections)[0], max_sentences))
            elif item.target and item.target not in ("own report",):
                try:
                    from radpair.evaluation.zeroshot import load_prompts

                    per_image.append([load_prompts(prompts).classes[item.target][0].positive[0]])
                except (KeyError, ConfigError):
                    per_image.append([])
            else:
                per_image.append([])
        try:
            sims, how = M.similarity_maps(subject, x, per_image)
            result.similarity_note = how
            for item, s, sent in zip(ok, sims, per_image):
                item.similarity, item.sentences = s, list(sent)
                if not sent:
                    item.skipped["similarity map"] = "no sentence to compare with"
        except ConfigError as exc:
            for item in ok:
                item.skipped["similarity map"] = str(exc)
    tick()

    _write_pngs(result, ok)
    if tsne:
        _tsne(result, subject, x, ok, colour)
    tick()
    if bar is not None:
        bar.stop()
    return _finish(result)


def _write_pngs(result: ExplainResult, ok: list[ExplainItem]) -> None:
    out = result.out
    for k, item in enumerate(ok):
        stem = f"{k:03d}_{_safe(item.input.split(':')[-1] if ':' in item.input else Path(item.input).stem)}"
        if item.gradcam is not None:
            f = panels(item.image, [item.gradcam], [f"Grad-CAM: {item.target}"], out / f"{stem}_gradcam.png",
                       suptitle=f"{result.layer} {item.gradcam.shape[0]}x{item.gradcam.shape[1]}")
            item.files["Grad-CAM"] = str(f)
        if item.decoder_maps:
            n = min(len(item.decoder_maps), MAX_WORD_PANELS)
            f = panels(item.image, item.decoder_maps[:n], item.words[:n], out / f"{stem}_decoder_attention.png",
                       cols=6, suptitle="decoder attention per generated word"
                       + (f" (first {n} of {len(item.words)})" if n < len(item.words) else ""))
            item.files["decoder attention"] = str(f)
            npz = out / f"{stem}_decoder_attention.npz"
            np.savez_compressed(npz, maps=np.stack(item.decoder_maps), words=np.array(item.words, dtype=object)
                                .astype(str))
            item.files["decoder attention (arrays)"] = str(npz)
        if item.similarity is not None and len(item.sentences):
            f = panels(item.image, list(item.similarity), item.sentences, out / f"{stem}_similarity.png",
                       normalise="fixed", vmin=-1.0, vmax=1.0, cmap="coolwarm",
                       suptitle="cosine similarity of each cell to the sentence (-1 blue .. 1 red)")
            item.files["image-sentence similarity"] = str(f)


def _tsne(result: ExplainResult, subject: Subject, x: torch.Tensor, ok: list[ExplainItem], colour: str | None) -> None:
    n = len(ok)
    if n < 5:
        result.notes.append(f"t-SNE skipped: {n} readable images (it needs at least 5)")
        return
    from sklearn.manifold import TSNE

    with torch.no_grad():
        emb = torch.cat([subject.image_embeddings(x[a:a + 64]).float() for a in range(0, n, 64)]).cpu().numpy()
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    pts = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(emb)
    labels = [i.label if i.label is not None else (i.target or "-") for i in ok]
    what = colour if colour is not None else ("Grad-CAM target" if any(i.target for i in ok) else "-")
    f = tsne_plot(pts, labels, what, result.out / "tsne.png")
    result.tsne = str(f)


def _finish(result: ExplainResult) -> ExplainResult:
    files = [f for item in result.items for f in item.files.values()]
    if result.tsne:
        files.append(result.tsne)
    html_path = page(result, result.out)
    files.append(str(html_path))
    json_path = result.out / "explanations.json"
    files.append(str(json_path))
    result.files = files
    json_path.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result


__all__ = ["explain_run", "ExplainResult", "ExplainItem"]

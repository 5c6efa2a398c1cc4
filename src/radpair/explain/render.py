"""PNG overlays (matplotlib's Agg canvas, no pyplot state) and the HTML page.

Figures are drawn on a ``Figure`` with its own ``FigureCanvasAgg``, so explaining inside a
notebook or a server never touches the caller's pyplot backend or current figure.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _upsample(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from radpair.evaluation.localisation import upsample

    return upsample(np.asarray(m, dtype=np.float64)[None], shape)[0]


def panels(image: np.ndarray, maps: Sequence[np.ndarray], titles: Sequence[str], path: Path, *,
           suptitle: str = "", cols: int = 4, normalise: str = "each", cmap: str = "jet",
           vmin: float | None = None, vmax: float | None = None) -> Path:
    """The image, then one overlay per map (upsampled bilinearly to the image), in a grid.

    ``normalise``: ``each`` scales every map to [0, 1] on its own (Grad-CAM, attention: where,
    not how much); ``fixed`` uses ``vmin``/``vmax`` for all (similarities, comparable)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(maps) + 1
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(2.6 * cols, 2.8 * rows), dpi=80)
    FigureCanvasAgg(fig)
    img = np.asarray(image, dtype=np.float32)
    ax = fig.add_subplot(rows, cols, 1)
    ax.imshow(img, cmap="gray", vmin=0, vmax=255)
    ax.set_title("input", fontsize=8)
    ax.axis("off")
    for k, (m, title) in enumerate(zip(maps, titles)):
        up = _upsample(m, img.shape)
        if normalise == "each":
            lo, hi = float(up.min()), float(up.max())
            up = (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)
            lo_v, hi_v = 0.0, 1.0
        else:
            lo_v, hi_v = vmin, vmax
        ax = fig.add_subplot(rows, cols, k + 2)
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.imshow(up, cmap=cmap, alpha=0.45, vmin=lo_v, vmax=hi_v)
        ax.set_title(_short(title), fontsize=8)
        ax.axis("off")
    if suptitle:
        fig.suptitle(_short(suptitle, 90), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _short(text: str, n: int = 32) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def tsne_plot(points: np.ndarray, colours: Sequence[Any], label: str, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.5), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    values = [str(c) for c in colours]
    kinds = sorted(set(values))
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    for k, v in enumerate(kinds):
        sel = np.array([x == v for x in values])
        ax.scatter(points[sel, 0], points[sel, 1], s=18, color=cmap(k % 10), label=_short(v, 20))
    ax.legend(title=_short(label, 24), fontsize=7, title_fontsize=8, loc="best")
    ax.set_title(f"t-SNE of image embeddings ({len(points)} images)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    return path


def token_strip(tokens: Sequence[str], weights: Sequence[float], mask: Sequence[bool]) -> str:
    """HTML spans, background opacity proportional to the weight (max = fully red)."""
    real = [(t, float(w)) for t, w, m in zip(tokens, weights, mask) if m]
    top = max((w for _, w in real), default=0.0) or 1.0
    spans = [f'<span class="tok" title="{w:.4f}" style="background: rgba(220,40,40,{w / top:.3f})">'
             f"{html.escape(t)}</span>" for t, w in real]
    return " ".join(spans)


def page(result: Any, out: Path) -> Path:
    """``index.html``: header (method, checkpoint, layer, target), one section per input."""
    e = html.escape
    rows = []
    rows.append(f"<h1>radpair explain: {e(result.method)}</h1>")
    rows.append(f"<p>checkpoint <code>{e(str(result.checkpoint))}</code>; Grad-CAM layer "
                f"<code>{e(str(result.layer or '-'))}</code> ({e(str(result.layer_cells or '-'))} cells; "
                f"{e(result.layer_rule or '')}); target: {e(result.target_description or '-')}</p>")
    if result.notes:
        rows.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in result.notes) + "</ul>")
    if result.tsne:
        rows.append(f'<h2>t-SNE</h2><img src="{e(Path(result.tsne).name)}" alt="t-SNE">')
    rows.append("<h2>Images</h2>")
    for item in result.items:
        rows.append(f"<section><h3>{e(item.input)}</h3>")
        if item.status != "ok":
            rows.append(f'<p class="err">{e(item.status)}: {e(item.reason or "")}</p></section>')
            continue
        if item.target:
            rows.append(f"<p>target: {e(item.target)}</p>")
        if item.report:
            rows.append(f"<p>report: {e(item.report)}</p>")
        if item.cls_tokens:
            rows.append(f"<p>[CLS] attention (last layer, mean over heads): "
                        f"{token_strip(item.cls_tokens, item.cls_weights, item.cls_mask)}</p>")
        if item.generated is not None:
            rows.append(f"<p>generated: {e(item.generated)}</p>")
        for kind, f in item.files.items():
            rows.append(f'<figure><img src="{e(Path(f).name)}" alt="{e(kind)}"><figcaption>{e(kind)}</figcaption>'
                        "</figure>")
        for kind, why in item.skipped.items():
            rows.append(f"<p class=\"skip\">{e(kind)}: {e(why)}</p>")
        rows.append("</section>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto} img{max-width:100%} .tok{padding:1px 2px;"
             "border-radius:3px} .err{color:#a00} .skip{color:#666;font-size:90%} figure{margin:6px 0}")
    text = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>radpair explain</title><style>{style}</style>"
            f"</head><body>{''.join(rows)}</body></html>")
    path = out / "index.html"
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["panels", "tsne_plot", "token_strip", "page"]

"""Figures of a run for its results page: a training run's loss curve and sample
image-report pairs, a localisation record's scores per finding; machine facts.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas and
never through ``pyplot``: no display is needed, and the process-wide backend of a caller
(say, a notebook) is left alone. The results page of a transfer study is
:mod:`radpair.evaluation.transfer_page`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from radpair.errors import DataError


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


@dataclass
class LossLog:
    """Parsed training log: aligned arrays, NaN where a line lacked a value."""

    steps: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)
    skipped_lines: int = 0


def read_loss_log(path: str | Path) -> LossLog:
    """Read JSONL lines ``{"step", "loss", "loss_components"?, "lr"?}``.

    Lines without ``step`` and ``loss`` (other events) are skipped and counted. A broken
    *last* line is tolerated (a run still writing); a broken line elsewhere is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: loss log does not exist")
    lines = path.read_text().splitlines()
    records: list[dict[str, Any]] = []
    skipped = 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                skipped += 1
                continue
            raise DataError(f"{path}:{i + 1}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or "step" not in rec or "loss" not in rec:
            skipped += 1
            continue
        records.append(rec)
    if not records:
        raise DataError(f"{path}: no lines with both 'step' and 'loss'")
    names = sorted({k for r in records for k in (r.get("loss_components") or {})})

    def column(get) -> np.ndarray:
        return np.array([_float_or_nan(get(r)) for r in records], dtype=float)

    return LossLog(
        steps=column(lambda r: r["step"]),
        loss=column(lambda r: r["loss"]),
        lr=column(lambda r: r.get("lr")),
        components={n: column(lambda r, n=n: (r.get("loss_components") or {}).get(n)) for n in names},
        skipped_lines=skipped,
    )


def _float_or_nan(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _ema(y: np.ndarray, span: int) -> np.ndarray:
    alpha = 2.0 / (span + 1.0)
    out = np.empty_like(y)
    acc = float("nan")
    for i, v in enumerate(y):
        if not math.isnan(v):
            acc = v if math.isnan(acc) else alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


def plot_loss_curve(log: LossLog | str | Path, out_png: str | Path) -> Path:
    """Total loss (raw + smoothed) and components vs step; learning rate below if logged."""
    if not isinstance(log, LossLog):
        log = read_loss_log(log)
    has_lr = bool(np.isfinite(log.lr).any())
    fig = _new_figure(7.0, 5.0 if has_lr else 3.8)
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1]) if has_lr else [fig.add_subplot()]
    ax = axes[0]
    span = max(1, len(log.steps) // 50)
    if span > 1:
        ax.plot(log.steps, log.loss, color="C0", alpha=0.25, linewidth=0.8)
        ax.plot(log.steps, _ema(log.loss, span), color="C0", label=f"loss (EMA {span})")
    else:
        ax.plot(log.steps, log.loss, color="C0", label="loss")
    for i, (name, vals) in enumerate(log.components.items(), start=1):
        ax.plot(log.steps, _ema(vals, span), color=f"C{i % 10}", linestyle="--", linewidth=1, label=name)
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Training loss")
    if has_lr:
        axes[1].plot(log.steps, log.lr, color="0.3")
        axes[1].set_ylabel("lr")
        axes[1].grid(True, alpha=0.3)
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    axes[-1].set_xlabel("step")
    out = Path(out_png)
    fig.savefig(out)
    return out


def plot_sample_grid(corpus: Any, rows: Sequence[int], out_png: str | Path, wrap: int = 100, max_lines: int = 14) -> Path:
    """Each sampled image with its report text beside it. ``rows`` are positions in
    ``corpus.index`` (not image ids)."""
    rows = [int(r) for r in rows]
    if not rows:
        raise DataError("sample grid: no rows given")
    bad = [r for r in rows if not 0 <= r < len(corpus.index)]
    if bad:
        raise DataError(f"sample grid: rows {bad} are outside the corpus index (0..{len(corpus.index) - 1})")
    fig = _new_figure(10.0, 2.4 * len(rows))
    grid = fig.add_gridspec(len(rows), 2, width_ratios=[1, 3])
    for i, r in enumerate(rows):
        rec = corpus.index.iloc[r]
        img = np.asarray(corpus.images[int(rec["image_index"])])
        ax = fig.add_subplot(grid[i, 0])
        vmax = np.iinfo(img.dtype).max if np.issubdtype(img.dtype, np.integer) else float(img.max() or 1.0)
        ax.imshow(img, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_axis_off()
        tx = fig.add_subplot(grid[i, 1])
        tx.set_axis_off()
        text = str(rec["report"]).strip() or "(empty report)"
        # wrap each line on its own so section breaks (FINDINGS / IMPRESSION) survive
        lines = [w for para in text.splitlines() for w in (textwrap.wrap(para, width=wrap) or [""])]
        if len(lines) > max_lines:
            lines = lines[: max_lines - 1] + ["[...]"]
        header = f"{rec['image_id']}  ·  patient {rec['patient_id']}  ·  {rec['view']}  ·  {rec['split']}"
        tx.text(0.0, 1.0, header, fontsize=8, fontweight="bold", va="top", transform=tx.transAxes)
        tx.text(0.0, 0.86, "\n".join(lines), fontsize=7.5, va="top", family="monospace", transform=tx.transAxes)
    out = Path(out_png)
    fig.savefig(out)
    return out

@dataclass(frozen=True)
class MachineInfo:
    python: str
    platform: str
    cpu_count: int
    torch: str
    accelerator: str
    numpy: str
    scikit_learn: str
    radpair: str
    git_commit: str

    def as_rows(self) -> list[list[str]]:
        return [[k.replace("_", "-"), str(v)] for k, v in self.__dict__.items()]


def _git_commit() -> str:
    """Commit of the radpair source checkout, if it is one (editable installs)."""
    import radpair

    src = Path(radpair.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> MachineInfo:
    import sklearn
    import torch

    import radpair

    if torch.cuda.is_available():
        accel = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        accel = "Apple MPS"
    else:
        accel = "none (CPU)"
    return MachineInfo(
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count() or 0,
        torch=torch.__version__,
        accelerator=accel,
        numpy=np.__version__,
        scikit_learn=sklearn.__version__,
        radpair=radpair.__version__,
        git_commit=_git_commit(),
    )


def plot_localisation(record: dict[str, Any], out_png: str | Path, metric: str = "pointing_game") -> Path | None:
    """Per finding, each model's localisation score with its CI (points and bars), the chance
    level as a grey tick: the figure of a localisation record
    (:meth:`radpair.evaluation.localisation.LocalisationResult.to_dict`). ``None`` when the
    record has no scores for ``metric``."""
    scores = [s for s in record.get("scores", []) if s.get("metric") == metric and s.get("value") is not None]
    if not scores:
        return None
    findings = list(dict.fromkeys(s["finding"] for s in scores))
    methods = [m for m in dict.fromkeys(s["method"] for s in scores) if m != "uniform"]
    by = {(s["method"], s["finding"]): s for s in scores}
    fig = _new_figure(7.5, 0.9 + 0.42 * len(findings) * max(1, len(methods)) ** 0.5 + 0.6)
    ax = fig.add_subplot()
    step = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        ys, xs, lo, hi = [], [], [], []
        for j, f in enumerate(findings):
            s = by.get((m, f))
            if s is None:
                continue
            ys.append(j - 0.4 + step * (i + 0.5))
            xs.append(s["value"])
            # a collapsed interval can sit one rounding step inside the value: matplotlib refuses negatives
            lo.append(max(0.0, s["value"] - (s["ci_low"] if s.get("ci_low") is not None else s["value"])))
            hi.append(max(0.0, (s["ci_high"] if s.get("ci_high") is not None else s["value"]) - s["value"]))
        style = {"color": "0.45", "marker": "s"} if m == "centre" else {"color": f"C{i % 10}", "marker": "o"}
        ax.errorbar(xs, ys, xerr=[lo, hi], linestyle="none", markersize=4, capsize=2, label=m, **style)
    for j, f in enumerate(findings):
        c = (record.get("chance") or {}).get(f)
        if c is not None:
            ax.plot([c, c], [j - 0.45, j + 0.45], color="0.6", linewidth=1, linestyle=":")
    n = record.get("n_images") or {}
    ax.set_yticks(range(len(findings)), [f"{f} ({n.get(f, '?')})" for f in findings])
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"{metric.replace('_', ' ')} (dotted: chance)")
    ax.grid(True, axis="x", alpha=0.3)
    if methods:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Localisation against the drawn findings")
    out = Path(out_png)
    fig.savefig(out)
    return out

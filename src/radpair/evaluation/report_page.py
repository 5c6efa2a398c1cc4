"""The results page of a run: ``report.md`` (relative PNG links) and ``report.html``.

The page is built once as a list of typed blocks and rendered twice, so the Markdown and
the HTML can never disagree. The HTML embeds its figures as base64 and is a single file
that can be mailed or attached to a ticket; the Markdown reads well on GitHub.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas and
never through ``pyplot``: no display is needed, and the process-wide backend of a
caller (say, a notebook) is left alone.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from radpair.errors import DataError
from radpair.evaluation.probe import FitStatus
from radpair.evaluation.sampling import ALL, n_labels_key, n_labels_sort_key
from radpair.evaluation.transfer import CIKind, LabelEfficiencyResult, Summary

FIGURE_DIR = "figures"


# ---- page blocks ------------------------------------------------------------------------
@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Image:
    path: str  # relative to the run folder
    caption: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Code:
    text: str


Block = Union[Heading, Paragraph, Image, Table, Code]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Image):
            out.append(f"![{b.caption}]({b.path})\n\n*{b.caption}*")
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out[-1] += "\n|" + "|".join("---" for _ in b.header) + "|"
            for row in b.rows:
                out[-1] += "\n| " + " | ".join(_md_cell(c) for c in row) + " |"
        elif isinstance(b, Code):
            fence = "````" if "```" in b.text else "```"
            out.append(f"{fence}\n{b.text}\n{fence}")
    return "\n\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
pre{background:#f6f8fa;padding:1em;overflow-x:auto}figure{margin:1em 0}img{max-width:100%}
figcaption{color:#555;font-style:italic}
"""


def render_html(blocks: Sequence[Block], run_dir: Path, title: str) -> str:
    """Self-contained HTML: every figure is inlined as a base64 PNG."""
    esc = html.escape
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{esc(b.text)}</p>")
        elif isinstance(b, Image):
            data = base64.b64encode((run_dir / b.path).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{esc(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Code):
            body.append(f"<pre><code>{esc(b.text)}</code></pre>")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# ---- figures ----------------------------------------------------------------------------
def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _x_position(s: Summary, largest_numeric: float) -> float:
    """Where a budget sits on the log N axis: the number of images actually used, so a
    budget larger than the training pool (and "all") sits at the pool size."""
    if s.n_labelled_mean:
        return float(s.n_labelled_mean)
    if s.n != ALL:
        return float(s.n)
    return largest_numeric * 3.0 if largest_numeric > 0 else 1.0


def _tick_label(budgets: list[Any], x: float) -> str:
    keys = [n_labels_key(n) for n in sorted(set(budgets), key=n_labels_sort_key)]
    if len(keys) == 1 and keys[0] != ALL and float(keys[0]) == x:
        return keys[0]
    return " / ".join(keys) + f"\n({x:.0f})"


def plot_label_efficiency(result: LabelEfficiencyResult, out_png: str | Path) -> Path:
    """Macro AUC vs number of labelled images (log x), one line per method, CI band."""
    summaries = result.summaries()
    if not summaries:
        raise DataError("label-efficiency plot: the result has no runs")
    numeric = [float(s.n) for s in summaries if s.n != ALL]
    largest = max(numeric) if numeric else 1.0
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    for method in result.methods:
        rows = sorted((s for s in summaries if s.method == method), key=lambda s: _x_position(s, largest))
        x = np.array([_x_position(s, largest) for s in rows])
        y = np.array([s.macro_mean for s in rows], dtype=float)
        lo = np.array([s.ci_low for s in rows], dtype=float)
        hi = np.array([s.ci_high for s in rows], dtype=float)
        (line,) = ax.plot(x, y, marker="o", label=method)
        band = ~(np.isnan(lo) | np.isnan(hi))
        if band.any():
            ax.fill_between(x[band], lo[band], hi[band], color=line.get_color(), alpha=0.18, linewidth=0)
        for s in rows:  # individual repeats, so the spread behind the mean is visible
            reps = [r.metrics.macro for r in result.runs_for(method, s.n)]
            if len(reps) > 1:
                ax.scatter([_x_position(s, largest)] * len(reps), reps, s=8, color=line.get_color(), alpha=0.4)
    ax.set_xscale("log")
    by_x: dict[float, list[Any]] = {}
    for s in summaries:
        by_x.setdefault(_x_position(s, largest), []).append(s.n)
    xs = sorted(by_x)
    ax.set_xticks(xs)
    ax.set_xticklabels([_tick_label(by_x[x], x) for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("labelled training images (N)")
    ax.set_ylabel("test macro ROC AUC")
    ax.axhline(0.5, color="0.6", linestyle=":", linewidth=1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Label efficiency (band: 95% CI)")
    out = Path(out_png)
    fig.savefig(out)
    return out


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


# ---- tables and machine info ------------------------------------------------------------
def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def per_class_table(result: LabelEfficiencyResult) -> Table:
    """Mean per-class AUC at each (method, N), with the macro AUC and its CI."""
    header = ["method", "N", "repeats", "macro AUC (95% CI)", *result.class_names]
    rows = []
    for s in result.summaries():
        ci = "" if s.ci_kind is CIKind.NONE else f" ({_fmt(s.ci_low)}–{_fmt(s.ci_high)})"
        n = n_labels_key(s.n)
        if s.n_labelled_mean is not None and (s.n == ALL or s.n_labelled_mean != float(s.n)):
            n += f" ({s.n_labelled_mean:.0f} used)"
        rows.append(
            [s.method, n, str(s.n_repeats), _fmt(s.macro_mean) + ci, *(_fmt(s.per_class_mean.get(c)) for c in result.class_names)]
        )
    return Table(header, rows)


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


# ---- the page ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    figures: list[Path]


def write_report(
    run_dir: str | Path,
    *,
    result: LabelEfficiencyResult | None = None,
    loss_log: str | Path | None = None,
    corpus: Any = None,
    sample_rows: Sequence[int] = (),
    command: str | Sequence[str] | None = None,
    title: str = "radpair results",
    notes: Sequence[str] = (),
    machine: MachineInfo | None = None,
) -> ReportFiles:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` into ``run_dir``.

    Every section is optional; a section without inputs is left out. ``command``
    defaults to this process's command line.
    """
    run_dir = Path(run_dir)
    fig_dir = run_dir / FIGURE_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [Heading(title, 1), Paragraph(f"Generated {generated}."), *(Paragraph(n) for n in notes)]

    if result is not None and result.runs:
        blocks.append(Heading("Label efficiency"))
        figures.append(plot_label_efficiency(result, fig_dir / "label_efficiency.png"))
        blocks.append(Image(f"{FIGURE_DIR}/label_efficiency.png", "Test macro ROC AUC vs number of labelled training images"))
        settings = result.settings
        blocks.append(
            Paragraph(
                "Linear probes on frozen features; each N is drawn "
                f"{settings.get('repeats', '?')} times (seed {settings.get('seed', '?')}); the band is the 95% "
                "interval of the mean over draws (patient bootstrap of the test set where a budget ran once). "
                f"Test set: {settings.get('n_test', '?')} images; bootstrap resamples patients "
                f"({settings.get('n_bootstrap', '?')} replicates)."
            )
        )
        blocks.append(Heading("Per-class AUC", 3))
        blocks.append(per_class_table(result))
        skipped = sorted({f"{c} ({why.value})" for r in result.runs for c, why in r.metrics.skipped.items()})
        if skipped:
            blocks.append(Paragraph("Classes left out of the macro AUC in some runs: " + ", ".join(skipped) + "."))
        flagged = sorted({f.name for r in result.runs for f in r.probe_fits if f.status is not FitStatus.FITTED})
        if flagged:
            blocks.append(
                Paragraph(
                    "Classes whose probe predicted a constant in some draws (one label value only in the subset): "
                    + ", ".join(flagged)
                    + "."
                )
            )

    if loss_log is not None:
        log = read_loss_log(loss_log)
        blocks.append(Heading("Training loss"))
        figures.append(plot_loss_curve(log, fig_dir / "loss_curve.png"))
        last = f"final loss {_fmt(float(log.loss[-1]), 4)} at step {int(log.steps[-1])}"
        blocks.append(Image(f"{FIGURE_DIR}/loss_curve.png", f"Training loss ({last})"))

    if corpus is not None and len(sample_rows):
        blocks.append(Heading("Sample images and reports"))
        figures.append(plot_sample_grid(corpus, sample_rows, fig_dir / "samples.png"))
        blocks.append(Image(f"{FIGURE_DIR}/samples.png", f"{len(sample_rows)} images from {corpus.root} with their reports"))

    blocks.append(Heading("Command and machine"))
    if command is None:
        command = shlex.join(sys.argv)
    elif not isinstance(command, str):
        command = shlex.join(list(command))
    blocks.append(Code(command))
    blocks.append(Table(["item", "value"], (machine or machine_info()).as_rows()))

    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text(render_markdown(blocks))
    html_path.write_text(render_html(blocks, run_dir, title))
    return ReportFiles(md_path, html_path, figures)

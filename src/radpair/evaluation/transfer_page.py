"""The results page of a transfer run (``radpair.transfer.run_transfer``): ``report.md`` and
``report.html`` beside ``figures/*.png``.

Why a page and not just ``results.json``: a few-label comparison is easy to over-read.
With a handful of repeats the spread over *which* images were labelled is often larger
than the gap between two arms, and a reader needs to see both kinds of uncertainty, the
paired differences (which cancel the noise arms share), and the evidence that nothing
was chosen on the test split. So the page puts, in this order:

1. what was compared: task, label sources, test set, arms with their grids and the
   selection rule, budgets, repeats and validation draws, command and machine;
2. label-efficiency curves (mean over repeats, with the interval over repeats, or the
   patient-bootstrap interval where a budget ran once);
3. paired differences: a forest plot per budget, a table, and sentences that say which
   differences hold (interval excludes 0) and which do not;
4. summary tables (mean, min-max over repeats, interval) and per-class tables;
5. ROC curves at one budget, recomputed from the saved predictions;
6. calibration (reliability curves and ECE), subgroups, and the selection tables with
   every grid setting's validation score.

Every number is read from the :class:`~radpair.transfer.results.TransferResult` (or the
saved predictions and ``test_labels.npz`` beside it); the page computes no new statistic,
so it cannot disagree with ``results.json``. Missing pieces (no paired entries when
``n_bootstrap=0``, one arm, no saved predictions, a result read back from JSON) leave out
a section or say why, and never fail the page.

The page is built once as a list of typed blocks and rendered twice (Markdown, HTML), so
the two cannot disagree. The Markdown links its figures relatively (``figures/*.png``);
the HTML embeds the same PNGs as base64 and is a single self-contained file. Figures are
drawn on :class:`matplotlib.figure.Figure` with the Agg canvas, never through ``pyplot``:
no display is needed and a caller's backend (a notebook's, say) is left alone.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np

from radpair.errors import DataError
from radpair.transfer.config import NO_STEP_CAP
from radpair.transfer.results import CellResult, TransferResult
from radpair.transfer.subsets import Budget

FIGURE_DIR = "figures"
# metrics of the paired tables besides the primary one, in the order the sweep writes them
SECONDARY_PAIRED = ("macro_ap", "macro_f1")
_GRID_STATS = {"val_score", "val_loss", "best_at", "steps", "seconds", "eval_every", "batch_size"}


# ---- page blocks --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Image:
    path: str  # relative to the page's folder
    caption: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    escape_html: bool = False
    """Also escape ``<``, ``>`` and ``&`` in the Markdown cells: for free text (a generated
    report) that a Markdown renderer would otherwise read as HTML. The HTML page escapes
    every cell anyway."""


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class RawMarkdown:
    """Caller-supplied Markdown: copied verbatim into report.md, converted for the HTML."""

    text: str


Block = Union[Heading, Paragraph, Bullets, Image, Table, Code, RawMarkdown]


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Image):
            out.append(f"![{b.caption}]({b.path})\n\n*{b.caption}*")
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |",
                     "|" + "|".join("---" for _ in b.header) + "|"]
            cell = (lambda c: _md_cell(html.escape(str(c), quote=False))) if b.escape_html else _md_cell
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Code):
            fence = "````" if "```" in b.text else "```"
            out.append(f"{fence}\n{b.text}\n{fence}")
        elif isinstance(b, RawMarkdown):
            out.append(b.text.strip("\n"))
    return "\n\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
pre{background:#f6f8fa;padding:1em;overflow-x:auto}figure{margin:1em 0}img{max-width:100%}
figcaption{color:#555;font-style:italic}code{background:#f6f8fa;padding:0 3px}
"""


def _inline_html(text: str) -> str:
    """Escaped text with the inline Markdown this module and most notes use."""
    t = html.escape(text, quote=False)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", r'<img alt="\1" src="\2">', t)
    t = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", t)
    return t


def markdown_to_html(text: str) -> str:
    """A small Markdown subset (headings, paragraphs, lists, pipe tables, fenced code,
    inline code / emphasis / links) for ``extra_markdown``; the venv has no Markdown
    library and the HTML page must not need one."""
    lines = text.strip("\n").splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s:
            i += 1
            continue
        if s.startswith("```"):
            fence = s[: len(s) - len(s.lstrip("`"))]
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(fence):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
            continue
        m = re.match(r"(#{1,6})\s+(.*)", s)
        if m:
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline_html(m.group(2))}</h{level}>")
            i += 1
            continue
        if s.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(lines[i].strip())
                i += 1

            def cells(row: str) -> list[str]:
                parts = re.split(r"(?<!\\)\|", row.strip().strip("|"))
                return [p.strip().replace("\\|", "|") for p in parts]

            body = [r for r in rows if not re.fullmatch(r"\|?[\s:|-]+\|?", r)]
            if body:
                head = "".join(f"<th>{_inline_html(c)}</th>" for c in cells(body[0]))
                trs = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in cells(r)) + "</tr>"
                              for r in body[1:])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            continue
        if re.match(r"([-*+]|\d+[.)])\s+", s):
            ordered = bool(re.match(r"\d+[.)]\s+", s))
            items = []
            while i < len(lines) and re.match(r"\s*([-*+]|\d+[.)])\s+", lines[i]):
                items.append(re.sub(r"^\s*([-*+]|\d+[.)])\s+", "", lines[i]))
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{_inline_html(x)}</li>" for x in items) + f"</{tag}>")
            continue
        para = []
        while i < len(lines) and lines[i].strip() and not re.match(r"\s*(#{1,6}\s|```|\||[-*+]\s|\d+[.)]\s)",
                                                                     lines[i]):
            para.append(lines[i].strip())
            i += 1
        if not para:  # a line no rule above consumed
            para, i = [s], i + 1
        out.append(f"<p>{_inline_html(' '.join(para))}</p>")
    return "\n".join(out)


def render_html(blocks: Sequence[Block], page_dir: Path, title: str) -> str:
    """Self-contained HTML: every figure is inlined as a base64 PNG."""
    esc = html.escape
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in b.items) + "</ul>")
        elif isinstance(b, Image):
            data = base64.b64encode((page_dir / b.path).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{esc(b.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(b.caption)}</figcaption></figure>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{esc(str(h))}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Code):
            body.append(f"<pre><code>{esc(b.text)}</code></pre>")
        elif isinstance(b, RawMarkdown):
            body.append(markdown_to_html(b.text))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---- number formatting --------------------------------------------------------------------------
def _num(x: Any) -> float:
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def fmt(x: Any, digits: int = 3) -> str:
    v = _num(x)
    return "–" if math.isnan(v) else f"{v:.{digits}f}"


def fmt_signed(x: Any, digits: int = 3) -> str:
    """A difference, always signed: ``+0.050``, ``-0.012`` (ASCII minus, easy to grep)."""
    v = _num(x)
    return "–" if math.isnan(v) else f"{v:+.{digits}f}"


def fmt_interval(lo: Any, hi: Any, digits: int = 3, signed: bool = False) -> str:
    """``0.020 to 0.080``: 'to' rather than a dash, since the ends of a difference may be negative."""
    f = fmt_signed if signed else fmt
    if math.isnan(_num(lo)) or math.isnan(_num(hi)):
        return "–"
    return f"{f(lo, digits)} to {f(hi, digits)}"


def fmt_p(p: Any) -> str:
    v = _num(p)
    if math.isnan(v):
        return "–"
    if v < 0.001:
        return "< 0.001"
    return f"{v:.3f}" if v < 0.01 else f"{v:.2f}"


METRIC_NAMES = {"macro_auc": "macro AUC", "macro_ap": "macro AP", "macro_f1": "macro F1", "accuracy": "accuracy",
                "macro_ece": "macro ECE", "ece": "ECE", "ovr_macro_auc": "one-vs-rest macro AUC",
                "macro_accuracy": "macro accuracy"}


def metric_name(metric: str) -> str:
    if metric.startswith("auc_") and "|" in metric:
        return "AUC " + metric[4:]
    return METRIC_NAMES.get(metric, metric)


# ---- reading the result -------------------------------------------------------------------------
def _is_cut(metric: str) -> bool:
    return metric.startswith("auc_") and "|" in metric


class _View:
    """Read-only helpers over one result: budgets, arms, cells, colours, file locations."""

    def __init__(self, result: TransferResult, run_dir: Path | None) -> None:
        self.r = result
        self.run_dir = run_dir
        self.kind = str(result.task.get("schema") or self._cell_kind() or "multilabel")
        self.categorical = self.kind in ("multiclass", "ordinal")
        self.arms = list(result.arm_keys)
        self.colors = {a: f"C{i % 10}" for i, a in enumerate(self.arms)}
        # budgets in the order of the images they drew, so counts and fractions interleave
        # as they sit on the curves' axis
        self.budgets = list(result.budgets)
        self.budgets = sorted(self.budgets, key=lambda k: (_nan_low(self.n_used(k)), self.budget(k).sort_value))
        self.metrics_present = {s["metric"] for s in result.summaries}
        self.confidence = float(result.config.get("confidence", 0.95) or 0.95)

    def _cell_kind(self) -> str | None:
        for c in self.r.cells:
            if c.metrics.get("kind"):
                return str(c.metrics["kind"])
        return None

    # budgets
    def budget(self, key: str) -> Budget:
        try:
            return Budget.parse(key)
        except Exception:  # noqa: BLE001 - an unknown key form still gets a place on the page
            return Budget("count", 0.0)

    def n_used(self, key: str) -> float:
        """Mean number of training images actually drawn for a budget (the x of the curves)."""
        ns = [s["n_train"] for s in self.r.subsets if str(s.get("budget")) == key and s.get("n_train") is not None]
        if not ns:
            ns = [c.n_train for c in self.r.cells if c.budget == key]
        if ns:
            return float(np.mean(ns))
        b = self.budget(key)
        return b.value if b.kind == "count" else math.nan

    def budget_text(self, key: str) -> str:
        """``N=100``, ``all labels (N=370)``, ``0.5% (N=2)``: how sentences name a budget."""
        b = self.budget(key)
        n = self.n_used(key)
        used = "" if math.isnan(n) else f"{n:.0f}"
        if b.kind == "all":
            return f"all labels (N={used})" if used else "all labels"
        if b.kind == "fraction":
            return f"{key} of the labels (N={used})" if used else key
        if used and abs(n - b.value) > 0.5:
            return f"N={key} ({used} used)"
        return f"N={key}"

    def largest_budget(self) -> str:
        return max(self.budgets, key=lambda k: (_nan_low(self.n_used(k)), self.budget(k).sort_value))

    def default_focus_budget(self) -> str:
        counts = [k for k in self.budgets if self.budget(k).kind == "count" and self.budget(k).value >= 100]
        if counts:
            return min(counts, key=lambda k: self.budget(k).value)
        return self.largest_budget()

    # arms
    def label(self, arm: str) -> str:
        try:
            return self.r.arm_label(arm)
        except DataError:
            return arm

    def arm(self, key: str) -> dict[str, Any]:
        for a in self.r.arms:
            if a["key"] == key:
                return a
        return {"key": key, "label": key}

    # summaries
    def summary(self, arm: str, budget: str, metric: str) -> dict[str, Any] | None:
        for s in self.r.summaries:
            if s["arm"] == arm and s["budget"] == budget and s["metric"] == metric:
                return s
        return None

    def band(self, s: dict[str, Any] | None) -> tuple[float, float, str]:
        """The interval drawn for a summary: over repeats when there are several, else the
        patient-bootstrap interval of the single run."""
        if not s:
            return math.nan, math.nan, ""
        if int(s.get("n_repeats", 0) or 0) > 1 and s.get("repeat_ci"):
            lo, hi = s["repeat_ci"]
            return _num(lo), _num(hi), "repeats"
        if s.get("test_ci_mean"):
            lo, hi = s["test_ci_mean"]
            return _num(lo), _num(hi), "test patients"
        return math.nan, math.nan, ""

    # cells and files
    def cells(self, arm: str, budget: str) -> list[CellResult]:
        return self.r.cells_for(arm, budget)

    def cell_dir(self, cell: CellResult) -> Path | None:
        if self.run_dir is None:
            return None
        weights = cell.files.get("weights") if cell.files else None
        if weights:
            return self.run_dir / Path(weights).parent
        dir_name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cell.arm.replace(":", "__"))
        return self.run_dir / "cells" / dir_name / f"{self.budget(cell.budget).file_key}-r{cell.repeat}"

    def predictions(self, cell: CellResult) -> np.ndarray | None:
        folder = self.cell_dir(cell)
        if folder is None or not (folder / "predictions.npz").is_file():
            return None
        with np.load(folder / "predictions.npz") as z:
            return np.asarray(z["test"], dtype=np.float64) if "test" in z.files else None

    def test_labels(self) -> dict[str, np.ndarray] | None:
        if self.run_dir is None or not (self.run_dir / "test_labels.npz").is_file():
            return None
        with np.load(self.run_dir / "test_labels.npz") as z:
            return {k: z[k] for k in z.files}

    # per-class positives of the test set
    def positives(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in (self.r.test.get("positives") or {}).items()}


def _nan_low(x: float) -> float:
    return -math.inf if math.isnan(x) else x


# ---- figures ------------------------------------------------------------------------------------
def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _budget_ticks(v: _View) -> dict[float, str]:
    """Tick position -> label; budgets that drew the same number of images share a tick."""
    by_x: dict[float, list[str]] = {}
    for k in v.budgets:
        x = v.n_used(k)
        if not math.isnan(x) and x > 0:
            by_x.setdefault(round(x, 6), []).append(k)
    out = {}
    last, lowered = None, False
    for x in sorted(by_x):
        keys = by_x[x]
        plain = len(keys) == 1 and v.budget(keys[0]).kind == "count" and abs(v.budget(keys[0]).value - x) < 0.5
        text = keys[0] if plain else " / ".join(keys) + f"\n({x:.0f})"
        # neighbours closer than a factor 1.6 on the log axis: drop every other label a row
        lowered = last is not None and x / last < 1.6 and not lowered
        out[x] = ("\n\n" + text) if lowered else text
        last = x
    return out


def plot_label_efficiency(v: _View, metrics: Sequence[str], out_png: Path) -> Path:
    """Mean over repeats vs images used (log x), one line per arm; band = interval over
    repeats, or the patient-bootstrap interval where a budget ran once; dots = repeats."""
    fig = _new_figure(5.2 * len(metrics) + 0.6, 4.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    ticks = _budget_ticks(v)
    for ax, metric in zip(axes, metrics):
        lo_all, hi_all = [], []
        for arm in v.arms:
            pts = []
            for k in v.budgets:
                s = v.summary(arm, k, metric)
                x = v.n_used(k)
                if s is None or s.get("mean") is None or math.isnan(x) or x <= 0:
                    continue
                lo, hi, _ = v.band(s)
                vals = [_num(y) for y in s.get("values", []) if y is not None]
                pts.append((x, float(s["mean"]), lo, hi, vals))
            if not pts:
                continue
            pts.sort(key=lambda p: p[0])
            x = np.array([p[0] for p in pts])
            y = np.array([p[1] for p in pts])
            lo = np.clip(np.array([p[2] for p in pts]), 0.0, 1.0)
            hi = np.clip(np.array([p[3] for p in pts]), 0.0, 1.0)
            color = v.colors[arm]
            ax.plot(x, y, marker="o", color=color, label=v.label(arm))
            ok = ~(np.isnan(lo) | np.isnan(hi))
            if ok.any():
                ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.15, linewidth=0)
            for p in pts:
                if len(p[4]) > 1:
                    ax.scatter([p[0]] * len(p[4]), p[4], s=10, color=color, alpha=0.5, linewidths=0)
            lo_all += [a for a in lo[ok]] + [min(p[4]) for p in pts if p[4]]
            hi_all += [b for b in hi[ok]] + [max(p[4]) for p in pts if p[4]]
            lo_all += list(y)
            hi_all += list(y)
        ax.set_xscale("log")
        if ticks:
            ax.set_xticks(list(ticks))
            ax.set_xticklabels(list(ticks.values()), fontsize=8)
        ax.minorticks_off()
        if lo_all:
            ax.set_ylim(max(0.0, min(lo_all) - 0.03), min(1.0, max(hi_all) + 0.03))
        if metric == "macro_auc":
            ax.axhline(0.5, color="0.6", linestyle=":", linewidth=1)
        ax.set_xlabel("labelled training images (log scale)")
        ax.set_ylabel(f"test {metric_name(metric)}")
        ax.grid(True, alpha=0.3)
        ax.set_title(metric_name(metric), fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(3, len(handles)), fontsize=8)
    fig.savefig(out_png)
    return out_png


def plot_forest(v: _View, pairs_by_budget: dict[str, list[tuple[dict[str, Any], bool]]], metric: str,
                out_png: Path) -> Path:
    """One panel per budget: each pair's mean difference with its two-level bootstrap
    interval; highlighted pairs on top, in red and thicker."""
    from matplotlib.ticker import MaxNLocator

    budgets = [k for k in v.budgets if pairs_by_budget.get(k)]
    n_pairs = max(len(pairs_by_budget[k]) for k in budgets)
    ncols = min(3, len(budgets))
    nrows = math.ceil(len(budgets) / ncols)
    fig = _new_figure(2.6 * ncols + 2.6, (0.32 * n_pairs + 1.0) * nrows + 0.3)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    labels = [f"{p['arm_a']} − {p['arm_b']}" for p, _ in pairs_by_budget[budgets[0]]]
    for idx, ax in enumerate(axes.ravel()):
        if idx >= len(budgets):
            ax.set_axis_off()
            continue
        k = budgets[idx]
        rows = pairs_by_budget[k]
        for j, (p, hl) in enumerate(rows):
            yj = len(rows) - 1 - j
            d, lo, hi = _num(p.get("mean_diff")), _num(p.get("ci_low")), _num(p.get("ci_high"))
            color = "C3" if hl else "0.25"
            if not (math.isnan(lo) or math.isnan(hi)):
                ax.plot([lo, hi], [yj, yj], color=color, linewidth=2.6 if hl else 1.4)
            if not math.isnan(d):
                ax.plot([d], [yj], marker="D" if hl else "o", color=color, markersize=6 if hl else 4.5)
        ax.axvline(0.0, color="0.5", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(list(reversed(labels[: len(rows)])), fontsize=8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_title(v.budget_text(k), fontsize=9)
        ax.set_xlabel(f"difference in {metric_name(metric)}", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.grid(True, axis="x", alpha=0.3)
        for t, (_, hl) in zip(reversed(ax.get_yticklabels()), rows):
            if hl:
                t.set_fontweight("bold")
                t.set_color("C3")
    fig.savefig(out_png)
    return out_png


def roc_units(kind: str, y: np.ndarray, mask: np.ndarray, probs: np.ndarray,
              class_names: Sequence[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, labels 0/1, scores) of each binary problem a task's ROC curves show: one per
    class (binary / multilabel), one-vs-rest per level (multiclass), and the K-1
    dichotomised cuts ``y > k`` scored by ``P(y > k)`` (ordinal), as the metrics define them."""
    from radpair.evaluation.taskmetrics import ordinal_cut_names

    out = []
    if kind in ("multiclass", "ordinal"):
        yy = np.asarray(y).reshape(-1)
        m = np.asarray(mask, dtype=bool).reshape(-1)
        p = probs[m]
        yk = yy[m].astype(np.int64)
        if kind == "ordinal":
            for c, name in enumerate(ordinal_cut_names(p.shape[1])):
                out.append((name, (yk > c).astype(np.int8), p[:, c + 1:].sum(axis=1)))
        else:
            for c, name in enumerate(class_names):
                out.append((str(name), (yk == c).astype(np.int8), p[:, c]))
    else:
        yy = np.asarray(y).reshape(len(probs), -1)
        m = np.asarray(mask, dtype=bool).reshape(len(probs), -1)
        for c, name in enumerate(class_names):
            rows = m[:, c]
            out.append((str(name), yy[rows, c].astype(np.int8), probs[rows, c]))
    return out


def plot_roc(v: _View, budget: str, out_png: Path) -> tuple[Path | None, list[str], dict[tuple[str, str], float]]:
    """ROC small multiples at ``budget``, repeat 0 of each arm, from the saved predictions.

    Returns (figure or None, notes, AUC per (arm, unit)) so the caption can say what was
    missing and a test can check the curves against the stored AUCs.
    """
    from sklearn.metrics import auc as area, roc_curve

    notes: list[str] = []
    labels = v.test_labels()
    if labels is None:
        return None, [f"no test_labels.npz in {v.run_dir}; ROC curves need the saved test labels "
                      "(runs from before they were saved, or a result without its run folder)"], {}
    y, mask = labels["y"], labels["mask"]
    names = [str(c) for c in labels.get("class_names", v.r.class_names)]
    curves: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for arm in v.arms:
        cells = [c for c in v.cells(arm, budget) if c.repeat == 0] or v.cells(arm, budget)[:1]
        if not cells:
            notes.append(f"{v.label(arm)}: no cell at budget {budget}")
            continue
        probs = v.predictions(cells[0])
        if probs is None:
            notes.append(f"{v.label(arm)}: predictions.npz not found for budget {budget}")
            continue
        if probs.shape[0] != np.asarray(y).shape[0]:
            notes.append(f"{v.label(arm)}: {probs.shape[0]} test predictions but {np.asarray(y).shape[0]} test labels")
            continue
        curves[arm] = roc_units(v.kind, y, mask, probs, names)
    if not curves:
        return None, notes, {}
    units = [u[0] for u in next(iter(curves.values()))]
    ncols = min(4, len(units))
    nrows = math.ceil(len(units) / ncols)
    fig = _new_figure(2.7 * ncols, 2.6 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    aucs: dict[tuple[str, str], float] = {}
    for i, ax in enumerate(axes.ravel()):
        if i >= len(units):
            ax.set_axis_off()
            continue
        ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
        n_pos = n_neg = None
        for arm, us in curves.items():
            name, yt, s = us[i]
            if yt.size == 0 or yt.min() == yt.max():
                continue
            fpr, tpr, _ = roc_curve(yt, s)
            a = float(area(fpr, tpr))
            aucs[(arm, name)] = a
            ax.plot(fpr, tpr, color=v.colors[arm], linewidth=1.3, label=f"{a:.2f}")
            n_pos, n_neg = int(yt.sum()), int(yt.size - yt.sum())
        name = f"levels {units[i][4:]}" if _is_cut(units[i]) else units[i]
        title = name if n_pos is None else f"{name} ({n_pos}+ / {n_neg}−)"
        if n_pos is None:
            ax.text(0.5, 0.5, "one label value only:\nnot scored", ha="center", va="center", fontsize=8)
        ax.set_title(title, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right", title="AUC", title_fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("false positive rate", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("true positive rate", fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=v.colors[a], label=v.label(a)) for a in curves]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(handles)), fontsize=8)
    fig.savefig(out_png)
    return out_png, notes, aucs


def pooled_reliability(cells: Iterable[CellResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Reliability of several curves with the same bins (classes, repeats), pooled by
    weighting each bin by its count: the diagram of all (image, class) decisions at once."""
    num_p = num_o = cnt = None
    for c in cells:
        for curve in (c.metrics.get("reliability") or {}).values():
            n = np.array([_num(x) for x in curve.get("count", [])], dtype=float)
            mp = np.array([_num(x) for x in curve.get("mean_predicted", [])], dtype=float)
            ob = np.array([_num(x) for x in curve.get("observed", [])], dtype=float)
            if not n.size or mp.size != n.size or ob.size != n.size:
                continue
            if cnt is not None and cnt.size != n.size:
                continue
            w = np.nan_to_num(n)
            tp, to = np.nan_to_num(mp) * w, np.nan_to_num(ob) * w
            if cnt is None:
                num_p, num_o, cnt = tp, to, w
            else:
                num_p, num_o, cnt = num_p + tp, num_o + to, cnt + w
    if cnt is None:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, num_p / cnt, np.nan), np.where(cnt > 0, num_o / cnt, np.nan), cnt


def plot_calibration(v: _View, budget: str, ece_metric: str, out_png: Path) -> Path | None:
    """Reliability diagram at ``budget``: one line per arm, pooled over classes and repeats;
    marker area proportional to the images in the bin; ECE (mean over repeats) in the legend."""
    fig = _new_figure(5.6, 4.6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    drawn = 0
    for arm in v.arms:
        pooled = pooled_reliability(v.cells(arm, budget))
        if pooled is None:
            continue
        mp, ob, cnt = pooled
        ok = cnt > 0
        if not ok.any():
            continue
        s = v.summary(arm, budget, ece_metric)
        ece = f", ECE {fmt(s.get('mean'))}" if s and s.get("mean") is not None else ""
        color = v.colors[arm]
        ax.plot(mp[ok], ob[ok], color=color, linewidth=1.3, label=f"{v.label(arm)}{ece}")
        ax.scatter(mp[ok], ob[ok], s=8 + 120 * cnt[ok] / cnt.sum(), color=color, alpha=0.7, linewidths=0)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("mean predicted probability" if not v.categorical else "top-class confidence")
    ax.set_ylabel("observed frequency" if not v.categorical else "accuracy")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Reliability at {v.budget_text(budget)}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.savefig(out_png)
    return out_png


# ---- sections -----------------------------------------------------------------------------------
def _fmt_value(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


def _set(values: Sequence[Any]) -> str:
    return "{" + ", ".join(_fmt_value(x) for x in values) + "}"


def _config_text(config: dict[str, Any]) -> str:
    """``C=0.1`` / ``lr=0.001, wd=0.0001`` for a grid setting."""
    short = {"c": "C", "weight_decay": "wd"}
    return ", ".join(f"{short.get(k, k)}={_fmt_value(x)}" for k, x in config.items()) or "–"


def _grid_text(protocol: str, cfg: dict[str, Any]) -> str:
    if protocol == "linear":
        s = cfg.get("linear") or {}
        return f"C ∈ {_set(s.get('c_grid', []))} (L2 logistic / multinomial, max_iter {s.get('max_iter', '?')})"
    if protocol == "frozen-head":
        s = cfg.get("frozen_head") or {}
        return (f"{s.get('head', 'linear')} head; lr ∈ {_set(s.get('lr', []))} × weight decay ∈ "
                f"{_set(s.get('weight_decay', []))}; batch {s.get('batch_size', '?')}, ≤ {s.get('max_epochs', '?')} "
                f"epochs, patience {s.get('patience', '?')}")
    if protocol == "finetune":
        s = cfg.get("finetune") or {}
        aug = s.get("augment") or {}
        return (f"encoder lr ∈ {_set(s.get('lr', []))} (head ×{_fmt_value(s.get('head_lr_scale', 1.0))}) × weight "
                f"decay ∈ {_set(s.get('weight_decay', []))}; batch {s.get('batch_size', '?')}, "
                + (f"{_fmt_value(s['epochs'])} passes over the draw"
                   + (f" (at most {s['max_steps']} steps)" if (s.get("max_steps") or 0) < NO_STEP_CAP else "")
                   if s.get("epochs") else
                   f"{s.get('min_steps', '?')}–{s.get('max_steps', '?')} steps"
                   + (f" (at least {_fmt_value(s['min_epochs'])} passes over large draws)" if s.get("min_epochs") else ""))
                + f", patience {s.get('patience', '?')}, "
                f"warmup {_fmt_value(s.get('warmup_fraction', 0))}; augmentation "
                f"{'on' if aug.get('enabled', False) else 'off'}")
    return "–"


def _selection_rule(protocol: str) -> str:
    rule = "best validation macro AUC (ties: lower validation loss)"
    if protocol in ("frozen-head", "finetune"):
        rule += "; early stopping on the same score"
    return rule


def _start_text(start: dict[str, Any] | Any) -> str:
    if not isinstance(start, dict):
        return str(start)
    if start.get("weights"):
        return f"{start.get('name')}: {start['weights']}"
    return f"random init of {start.get('arch', '?')}"


def _header(v: _View, blocks: list[Block]) -> None:
    r, task, cfg = v.r, v.r.task, v.r.config
    blocks.append(Heading("What was compared"))
    views = task.get("views")
    levels = task.get("levels") or []
    text = (f"Task **{task.get('name', cfg.get('task', '?'))}** ({v.kind}, {len(r.class_names)} "
            f"{'levels' if v.categorical else 'classes'}): {task.get('description') or 'no description'}. "
            f"Training and selection labels: `{task.get('train_labels', '?')}`; test labels: "
            f"`{task.get('test_labels', r.test.get('labels', '?'))}`. "
            f"Views: {', '.join(views) if views else 'all'}.")
    if levels:
        text += f" Levels (in order): {', '.join(str(x) for x in levels)}."
    blocks.append(Paragraph(text))
    t = r.test
    nb = t.get("n_bootstrap", cfg.get("n_bootstrap"))
    blocks.append(Paragraph(
        f"Test set: {t.get('n_images', '?')} images of {t.get('n_patients', '?')} patients. Intervals on test "
        f"sampling resample patients ({nb} bootstrap replicates, {v.confidence:.0%} level); "
        f"{'no bootstrap was run, so there are no test intervals and no paired differences' if not nb else ''}"
        .rstrip("; ") + "."))
    pos = v.positives()
    if pos:
        head = ["class", "positives"] if not v.categorical else ["level", "images"]
        blocks.append(Table(head, [[k, str(n)] for k, n in pos.items()]))
    blocks.append(Heading("Arms", 3))
    rows = []
    for a in r.arms:
        proto = str(a.get("protocol", "?"))
        rows.append([a["key"], a.get("label", a["key"]), _start_text(a.get("start")), proto, _grid_text(proto, cfg),
                     _selection_rule(proto)])
    blocks.append(Table(["key", "label", "start", "protocol", "grid", "selection rule"], rows))
    val_mode = cfg.get("val", "matched")
    blocks.append(Paragraph(
        "Every arm tries its grid on the training subset and keeps the setting with the best score on the "
        + ("validation draw of the budget's size (matched: a budget of N spends about 2N labels)"
           if val_mode == "matched" else "whole validation split")
        + ". Repeat r of every arm uses the same training and validation images. No test label is read "
          "before every choice is made."))
    blocks.append(Heading("Budgets and repeats", 3))
    rows = []
    for k in v.budgets:
        subs = [s for s in r.subsets if str(s.get("budget")) == k]
        n_rep = len(subs) or len({c.repeat for c in r.cells if c.budget == k})
        cells = [c for c in r.cells if c.budget == k]
        n_tr = sorted({int(s["n_train"]) for s in subs} if subs else {c.n_train for c in cells})
        n_va = sorted({int(s["n_val"]) for s in subs} if subs else {c.n_val for c in cells})
        pool = subs[0].get("train_pool") if subs else None
        vpool = subs[0].get("val_pool") if subs else None
        rows.append([k, str(n_rep), "/".join(map(str, n_tr)) or "–", "/".join(map(str, n_va)) or "–",
                     "–" if pool is None else str(pool), "–" if vpool is None else str(vpool)])
    blocks.append(Table(["budget", "repeats run", "training images", "validation draw", "training pool",
                         "validation pool"], rows))
    blocks.append(Paragraph(
        f"{r.repeats} repeats requested (seed {cfg.get('seed', '?')}); a budget that covers the whole pool runs once, "
        "since its repeats would be identical."))
    command = cfg.get("command")
    if command:
        blocks.append(Heading("Command", 3))
        blocks.append(Code(command if isinstance(command, str) else " ".join(map(str, command))))
    env = dict(r.environment)
    if r.timing.get("total_s") is not None:
        env["run time"] = f"{r.timing['total_s']:.0f} s"
    if env:
        blocks.append(Heading("Machine", 3))
        blocks.append(Table(["item", "value"], [[str(k), str(x)] for k, x in env.items()]))


def _curve_metrics(v: _View) -> list[str]:
    return [m for m in (v.r.primary_metric, "macro_ap") if m in v.metrics_present]


def _summary_metrics(v: _View) -> list[str]:
    cuts = sorted((m for m in v.metrics_present if _is_cut(m)), key=lambda m: m.index("|"))
    order = [v.r.primary_metric, *cuts, "macro_ap", "macro_f1"]
    if v.kind == "multiclass":
        order.append("accuracy")
    return list(dict.fromkeys(m for m in order if m in v.metrics_present))


def _oriented_pairs(v: _View, highlight: Sequence[tuple[str, str]], budget: str,
                    metric: str) -> list[tuple[dict[str, Any], bool]]:
    """Pairs at one budget: highlighted ones first (read as a − b as given), then the rest."""
    out: list[tuple[dict[str, Any], bool]] = []
    seen: set[frozenset[str]] = set()
    for a, b in highlight:
        if frozenset((a, b)) in seen:
            continue
        try:
            out.append((v.r.paired_difference(a, b, budget, metric), True))
            seen.add(frozenset((a, b)))
        except DataError:
            continue
    for p in v.r.paired:
        if p["budget"] == budget and p["metric"] == metric and frozenset((p["arm_a"], p["arm_b"])) not in seen:
            out.append((p, False))
    return out


def _excludes_zero(p: dict[str, Any]) -> bool:
    lo, hi = _num(p.get("ci_low")), _num(p.get("ci_high"))
    return not (math.isnan(lo) or math.isnan(hi)) and (lo > 0 or hi < 0)


def _statement(v: _View, p: dict[str, Any], budget: str, keep_order: bool) -> str:
    """``A > B at N=100: +0.050 (0.020 to 0.080), p = 0.01`` for a pair whose interval
    excludes 0; for one that includes 0, the same numbers and 'does not hold here'."""
    # the direction is the interval's, not the mean's: a pooled mean can fall outside its
    # percentile interval (skew, discarded replicates), and the sentence must not contradict it
    below = _excludes_zero(p) and _num(p.get("ci_high")) < 0
    if below and not keep_order:  # say it as "the better arm > the other"
        p = v.r.paired_difference(p["arm_b"], p["arm_a"], budget, p["metric"])
        below = False
    a, b = v.label(p["arm_a"]), v.label(p["arm_b"])
    pv = fmt_p(p.get("p_value"))
    valid = _valid_text(p)
    nums = (f"{fmt_signed(p.get('mean_diff'))} ({fmt_interval(p.get('ci_low'), p.get('ci_high'), signed=True)}), "
            + ("p < 0.001" if pv == "< 0.001" else f"p = {pv}") + valid)
    where = v.budget_text(budget)
    if _excludes_zero(p):
        rel = "<" if below else ">"
        return f"**{a} {rel} {b}** at {where}: {nums}."
    return f"{a} vs {b} at {where}: {nums}; a difference does not hold here (the interval includes 0)."


def _valid_text(p: dict[str, Any]) -> str:
    """Say when many bootstrap replicates were discarded (a class lost all its positives):
    the interval then describes only resamples that kept every class."""
    nv, nb = p.get("n_valid"), p.get("n_bootstrap")
    if not nb or nv is None or nv >= 0.9 * nb:
        return ""
    return f"; only {nv} of {nb} bootstrap replicates kept every class"


def _per_repeat_text(p: dict[str, Any]) -> str:
    parts = []
    for rr in p.get("per_repeat", []) or []:
        ci = fmt_interval(rr.get("ci_low"), rr.get("ci_high"), signed=True)
        parts.append(f"r{rr.get('repeat')}: {fmt_signed(rr.get('diff'))}" + ("" if ci == "–" else f" ({ci})"))
    return "; ".join(parts) or "–"


def _paired_section(v: _View, highlight: Sequence[tuple[str, str]], fig_dir: Path, blocks: list[Block],
                    figures: dict[str, Path]) -> None:
    metric = v.r.primary_metric
    blocks.append(Heading("Paired differences"))
    if len(v.arms) < 2:
        blocks.append(Paragraph("One arm only: there is nothing to compare."))
        return
    if not v.r.paired:
        nb = v.r.test.get("n_bootstrap", v.r.config.get("n_bootstrap"))
        why = "the run drew no bootstrap replicates (n_bootstrap = 0)" if not nb else "results.json holds none"
        blocks.append(Paragraph(f"No paired differences: {why}. Compare the summary tables with care: their "
                                "intervals are not paired and overstate the uncertainty of a difference."))
        return
    by_budget = {k: _oriented_pairs(v, highlight, k, metric) for k in v.budgets}
    by_budget = {k: ps for k, ps in by_budget.items() if ps}
    if not by_budget:
        blocks.append(Paragraph(f"No paired differences of {metric_name(metric)} in results.json."))
        return
    conf = f"{v.confidence:.0%}"
    blocks.append(Paragraph(
        f"Each row is a − b in test {metric_name(metric)}. The interval is a two-level bootstrap ({conf}) that "
        "resamples repeats (which images were labelled) and test patients on the draws every arm shares; "
        "the t-interval is over the per-repeat differences alone, and the p-value is the bootstrap's two-sided "
        "one. A budget that ran once has no t-interval."
        + (" Highlighted pairs come first (in red on the plot, ★ in the tables)." if highlight else "")))
    png = plot_forest(v, by_budget, metric, fig_dir / "paired_differences.png")
    figures["paired_differences"] = png
    blocks.append(Image(f"{FIGURE_DIR}/{png.name}",
                        f"Paired differences of {metric_name(metric)} per budget: mean over repeats and the "
                        f"two-level bootstrap {conf} interval; the dashed line is no difference"))
    statements: list[str] = []
    for k, ps in by_budget.items():
        quiet = []
        for p, hl in ps:
            if hl or _excludes_zero(p):
                statements.append(_statement(v, p, k, keep_order=hl))
            else:
                quiet.append(f"{v.label(p['arm_a'])} vs {v.label(p['arm_b'])}")
        if quiet:
            statements.append(f"At {v.budget_text(k)}, no difference holds for {len(quiet)} other pair"
                              f"{'s' if len(quiet) > 1 else ''} (interval includes 0): " + "; ".join(quiet) + ".")
    blocks.append(Heading("What holds", 3))
    blocks.append(Bullets(statements))
    rows = []
    for k, ps in by_budget.items():
        for p, hl in ps:
            comp = f"{v.label(p['arm_a'])} − {v.label(p['arm_b'])}" + (" ★" if hl else "")
            rows.append([k, comp, fmt_signed(p.get("mean_diff")),
                         fmt_interval(p.get("ci_low"), p.get("ci_high"), signed=True),
                         fmt_interval(p.get("t_ci_low"), p.get("t_ci_high"), signed=True), fmt_p(p.get("p_value")),
                         str(p.get("n_repeats", len(p.get("per_repeat", []) or []))), _per_repeat_text(p)])
    blocks.append(Heading(f"Table: {metric_name(metric)}", 3))
    blocks.append(Table(["budget", "a − b", "mean difference", f"{conf} CI (two-level bootstrap)",
                         "t-interval over repeats", "p", "repeats", "per repeat (patient-bootstrap CI)"], rows))
    rows = []
    for m in SECONDARY_PAIRED:
        for k in by_budget:
            for p, hl in _oriented_pairs(v, highlight, k, m):
                comp = f"{v.label(p['arm_a'])} − {v.label(p['arm_b'])}" + (" ★" if hl else "")
                rows.append([metric_name(m), k, comp,
                             fmt_signed(p.get("mean_diff")),
                             fmt_interval(p.get("ci_low"), p.get("ci_high"), signed=True), fmt_p(p.get("p_value"))])
    if rows:
        blocks.append(Heading("Other metrics", 3))
        blocks.append(Table(["metric", "budget", "a − b", "mean difference", f"{conf} CI", "p"], rows))


def _summary_section(v: _View, blocks: list[Block]) -> None:
    blocks.append(Heading("Summary"))
    conf = f"{v.confidence:.0%}"
    blocks.append(Paragraph(
        f"Mean over repeats, the range (min–max) of the repeats, and a {conf} interval: the t-interval over "
        "repeats where a budget ran several times (it is wide with few repeats, by construction), else the "
        "patient-bootstrap interval of the single run."))
    for metric in _summary_metrics(v):
        rows = []
        for k in v.budgets:
            for arm in v.arms:
                s = v.summary(arm, k, metric)
                if s is None:
                    continue
                lo, hi, kind = v.band(s)
                n = int(s.get("n_repeats", 0) or 0)
                rng = f"{fmt(s.get('min'))}–{fmt(s.get('max'))}" if n > 1 else "–"
                rows.append([k, v.label(arm), fmt(v.n_used(k), 0), str(n), fmt(s.get("mean")), rng,
                             fmt_interval(lo, hi), kind or "–"])
        if rows:
            title = metric_name(metric)
            if metric == "macro_auc" and v.kind == "ordinal":
                title += " (mean of the dichotomised AUCs)"
            blocks.append(Heading(title, 3))
            blocks.append(Table(["budget", "arm", "images", "repeats", "mean", "min–max", f"{conf} CI", "CI over"],
                                rows))


def _per_class_section(v: _View, blocks: list[Block]) -> None:
    names = list(v.r.class_names)
    if not names or not v.r.cells:
        return
    blocks.append(Heading("Per class" if not v.categorical else "Per level (one vs rest)"))
    pos = v.positives()
    header_names = [(f"{c} (n={pos[c]})" if v.categorical else f"{c} ({pos[c]}+)") if c in pos else c for c in names]
    skipped: set[str] = set()
    partial = False
    for metric, title in (("auc", "AUC"), ("ap", "AP")):
        rows = []
        for k in v.budgets:
            for arm in v.arms:
                cells = v.cells(arm, k)
                if not cells:
                    continue
                row = [k, v.label(arm)]
                for c in names:
                    vals = [_num((cell.metrics.get("per_class") or {}).get(c, {}).get(metric)) for cell in cells]
                    ok = [x for x in vals if not math.isnan(x)]
                    for cell in cells:
                        if c in (cell.metrics.get("skipped") or {}):
                            skipped.add(f"{c} ({cell.metrics['skipped'][c]})")
                    text = fmt(np.mean(ok)) if ok else "–"
                    if ok and len(ok) < len(cells):
                        text += "†"
                        partial = True
                    row.append(text)
                rows.append(row)
        blocks.append(Heading(f"{title}, mean over repeats", 3))
        blocks.append(Table(["budget", "arm", *header_names], rows))
    notes = []
    if partial:
        notes.append("† mean over the repeats in which the class could be scored.")
    if skipped:
        notes.append("Left out of the macro averages in some cells (test labels of one value only): "
                     + ", ".join(sorted(skipped)) + ".")
    if notes:
        blocks.append(Paragraph(" ".join(notes)))


def _roc_section(v: _View, budget: str, fig_dir: Path, blocks: list[Block], figures: dict[str, Path]) -> None:
    blocks.append(Heading(f"ROC curves at {v.budget_text(budget)}"))
    try:
        png, notes, _ = plot_roc(v, budget, fig_dir / "roc.png")
    except Exception as exc:  # noqa: BLE001 - a broken prediction file must not cost the whole page
        png, notes = None, [f"ROC curves could not be drawn: {type(exc).__name__}: {exc}"]
    what = {"ordinal": "one panel per dichotomised cut (levels left of | against those right of it, scored by "
                       "the probability of the higher levels)",
            "multiclass": "one panel per level, one vs rest"}.get(v.kind, "one panel per class")
    if png is not None:
        figures["roc"] = png
        blocks.append(Image(f"{FIGURE_DIR}/{png.name}",
                            f"Test ROC curves of repeat 0 of each arm at {v.budget_text(budget)}; {what}; "
                            "AUC in each legend"))
    if notes:
        blocks.append(Paragraph("Not shown: " + "; ".join(notes) + "."))


def _calibration_section(v: _View, fig_dir: Path, blocks: list[Block], figures: dict[str, Path]) -> None:
    ece_metric = "ece" if "ece" in v.metrics_present else "macro_ece"
    has_rel = any(c.metrics.get("reliability") for c in v.r.cells)
    if ece_metric not in v.metrics_present and not has_rel:
        return
    blocks.append(Heading("Calibration"))
    budget = v.largest_budget()
    png = plot_calibration(v, budget, ece_metric, fig_dir / "calibration.png") if has_rel else None
    if png is not None:
        figures["calibration"] = png
        pooled = ("top-class confidence against accuracy" if v.categorical
                  else "every class's predicted probability against the observed rate, pooled over classes")
        blocks.append(Image(f"{FIGURE_DIR}/{png.name}",
                            f"Reliability at {v.budget_text(budget)}: {pooled} and over repeats; equal-width bins, "
                            "marker area ∝ images in the bin; the dotted line is perfect calibration"))
    rows = []
    for arm in v.arms:
        row = [v.label(arm)]
        for k in v.budgets:
            s = v.summary(arm, k, ece_metric)
            row.append(fmt(s.get("mean")) if s else "–")
        rows.append(row)
    if ece_metric in v.metrics_present:
        what = "expected calibration error of the top class" if v.categorical else \
            "expected calibration error, mean over classes"
        blocks.append(Paragraph(f"{metric_name(ece_metric)} ({what}; lower is better), mean over repeats:"))
        blocks.append(Table(["arm", *v.budgets], rows))


def _subgroup_section(v: _View, budget: str, blocks: list[Block]) -> None:
    metric = v.r.primary_metric
    columns: list[str] = []
    for arm in v.arms:
        for c in v.cells(arm, budget):
            for col in (c.metrics.get("subgroups") or {}):
                if col not in columns:
                    columns.append(col)
    if not columns:
        return
    blocks.append(Heading(f"Subgroups at {v.budget_text(budget)}"))
    rows = []
    skipped = []
    for col in columns:
        values: list[str] = []
        for arm in v.arms:
            for c in v.cells(arm, budget):
                for val in (c.metrics.get("subgroups") or {}).get(col, {}):
                    if val not in values:
                        values.append(val)
                for val, why in ((c.metrics.get("subgroups_skipped") or {}).get(col, {}) or {}).items():
                    note = f"{col} = {val}: {why}"
                    if note not in skipped:
                        skipped.append(note)
        for val in sorted(values):
            n = n_pat = None
            row = [col, val]
            means = []
            for arm in v.arms:
                subs = [(c.metrics.get("subgroups") or {}).get(col, {}).get(val) for c in v.cells(arm, budget)]
                subs = [s for s in subs if s]
                for s in subs:
                    n = s.get("n", n)
                    n_pat = s.get("n_groups", n_pat)
                got = [_num((s.get("values") or {}).get(metric)) for s in subs]
                got = [x for x in got if not math.isnan(x)]
                means.append(fmt(np.mean(got)) if got else "–")
            rows.append(row + ["–" if n is None else str(n), "–" if n_pat is None else str(n_pat)] + means)
    blocks.append(Paragraph(f"Test {metric_name(metric)} within each subgroup, mean over repeats. Small subgroups "
                            "give unstable numbers; per-cell intervals are in results.json."))
    blocks.append(Table(["subgroup", "value", "images", "patients", *[v.label(a) for a in v.arms]], rows))
    if skipped:
        blocks.append(Paragraph("Not scored: " + "; ".join(skipped) + "."))


def _selection_section(v: _View, blocks: list[Block]) -> None:
    if not v.r.cells:
        return
    blocks.append(Heading("Selection on validation"))
    blocks.append(Paragraph(
        "Every grid setting's score on the validation draw (macro AUC; `n/a` where no class could be scored and "
        "the validation loss decided); * marks the setting kept. Test labels played no part in these choices."))
    for arm in v.arms:
        cells = [c for k in v.budgets for c in v.cells(arm, k)]
        if not cells:
            continue
        grid: list[str] = []
        for c in cells:
            for e in c.selection:
                key = _config_text({k: x for k, x in e.items() if k not in _GRID_STATS})
                if key not in grid:
                    grid.append(key)
        protocol = str(v.arm(arm).get("protocol", ""))
        rows = []
        for c in cells:
            chosen = _config_text(c.chosen)
            scores = {}
            extra = ""
            for e in c.selection:
                key = _config_text({k: x for k, x in e.items() if k not in _GRID_STATS})
                s = e.get("val_score")
                text = fmt(s) if s is not None else f"n/a (loss {fmt(e.get('val_loss'))})"
                if key == chosen:
                    text += " *"
                    if e.get("best_at") is not None:
                        # frozen heads stop per epoch, fine-tuning per evaluation step
                        extra = (f"best at step {e['best_at']} of {e.get('steps', '?')}" if protocol == "finetune"
                                 else f"best at epoch {e['best_at']}")
                scores[key] = text
            rows.append([c.budget, f"r{c.repeat}", str(c.n_train), str(c.n_val), *(scores.get(g, "–") for g in grid),
                         chosen + (f" ({extra})" if extra else "")])
        blocks.append(Heading(v.label(arm), 3))
        blocks.append(Table(["budget", "repeat", "train", "validation", *grid, "kept"], rows))
        summary = []
        for k in v.budgets:
            chosen = [_config_text(c.chosen) for c in v.cells(arm, k)]
            if chosen:
                counts = {x: chosen.count(x) for x in dict.fromkeys(chosen)}
                summary.append(f"{k}: " + ", ".join(f"{x} ×{n}" for x, n in counts.items()))
        if summary:
            blocks.append(Paragraph("Kept across repeats — " + "; ".join(summary) + "."))
    notes = []
    for s in v.r.subsets:
        for which, key in (("training subset", "lacking_train"), ("validation draw", "lacking_val")):
            lack = s.get(key) or []
            if lack:
                notes.append(f"budget {s.get('budget')} repeat {s.get('repeat')}: the {which} lacks "
                             + ", ".join(map(str, lack)))
    for c in v.r.cells:
        for n in c.notes or []:
            notes.append(f"{v.label(c.arm)}, budget {c.budget} repeat {c.repeat}: {n}")
    if notes:
        blocks.append(Heading("Notes from the draws and fits", 3))
        blocks.append(Bullets(notes))


# ---- the page -----------------------------------------------------------------------------------
def _load(result: TransferResult | str | Path, run_dir: str | Path | None,
          out_dir: Path) -> tuple[TransferResult, Path | None]:
    if isinstance(result, TransferResult):
        if run_dir is not None:
            return result, Path(run_dir)
        return result, out_dir
    path = Path(result)
    if path.is_dir():
        path = path / "results.json"
    loaded = TransferResult.load(path)
    return loaded, Path(run_dir) if run_dir is not None else path.parent


def write_transfer_report(
    out_dir: str | Path,
    result: TransferResult | str | Path,
    *,
    title: str = "radpair transfer",
    notes: Sequence[str] = (),
    highlight: Sequence[tuple[str, str]] = (),
    extra_markdown: str = "",
    focus_budget: str | None = None,
    run_dir: str | Path | None = None,
    extra_blocks: Sequence[Block] = (),
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` into ``out_dir``.

    ``result``: a :class:`TransferResult`, or the path of a ``results.json`` (or of the run
    folder holding it). ``run_dir``: the run folder with ``cells/*/predictions.npz`` and
    ``test_labels.npz`` (for the ROC curves); default: the folder of a ``results.json``
    given by path, else ``out_dir``. ``highlight``: (arm_a, arm_b) key pairs shown first
    and read as a − b. ``focus_budget``: the budget of the ROC curves and the subgroup
    table (default: the smallest count budget ≥ 100, else the largest). ``notes``:
    paragraphs under the title; ``extra_markdown``: appended at the end (verbatim in the
    Markdown, converted for the HTML); ``extra_blocks``: page blocks after it (the demo's
    sections, whose tables hold free text and so must be escaped in each rendering).

    Returns ``{"markdown": ..., "html": ..., <figure name>: ...}``. The HTML embeds its
    figures (base64) and stands alone; the Markdown links ``figures/*.png`` relatively.
    """
    out_dir = Path(out_dir)
    res, rdir = _load(result, run_dir, out_dir)
    v = _View(res, rdir)
    for pair in highlight:
        if len(pair) != 2:
            raise DataError(f"highlight entries are (arm_a, arm_b) pairs; got {pair!r}")
        bad = [a for a in pair if a not in v.arms]
        if bad:
            raise DataError(f"highlight names arms {bad} that this result lacks (arms: {v.arms})")
    if focus_budget is None and v.budgets:
        focus_budget = v.default_focus_budget()
    elif focus_budget is not None and str(focus_budget) not in v.budgets:
        raise DataError(f"focus_budget {focus_budget!r} is not a budget of this result (budgets: {v.budgets})")
    fig_dir = out_dir / FIGURE_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}

    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [Heading(title, 1), Paragraph(f"Generated {generated} from a radpair transfer result "
                                                        f"({len(v.arms)} arms, budgets {', '.join(v.budgets)}).")]
    blocks += [Paragraph(str(n)) for n in notes]
    _header(v, blocks)

    metrics = _curve_metrics(v)
    if metrics and v.r.summaries:
        blocks.append(Heading("Label efficiency"))
        png = plot_label_efficiency(v, metrics, fig_dir / "label_efficiency.png")
        figures["label_efficiency"] = png
        conf = f"{v.confidence:.0%}"
        blocks.append(Image(f"{FIGURE_DIR}/{png.name}",
                            f"Test {' and '.join(metric_name(m) for m in metrics)} against the number of labelled "
                            f"training images (log scale): mean over repeats, band = {conf} t-interval over repeats "
                            "(patient-bootstrap interval where a budget ran once), dots = single repeats"))
    _paired_section(v, highlight, fig_dir, blocks, figures)
    _summary_section(v, blocks)
    _per_class_section(v, blocks)
    if focus_budget is not None and v.r.cells:
        _roc_section(v, focus_budget, fig_dir, blocks, figures)
    _calibration_section(v, fig_dir, blocks, figures)
    if focus_budget is not None:
        _subgroup_section(v, focus_budget, blocks)
    _selection_section(v, blocks)
    if extra_markdown.strip():
        blocks.append(RawMarkdown(extra_markdown))
    blocks += [b for b in extra_blocks if not isinstance(b, RawMarkdown) or b.text.strip()]

    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(render_markdown(blocks), encoding="utf-8")
    html_path.write_text(render_html(blocks, out_dir, title), encoding="utf-8")
    return {"markdown": md_path, "html": html_path, **figures}


__all__ = ["Bullets", "Code", "Heading", "Image", "Paragraph", "RawMarkdown", "Table", "markdown_to_html", "pooled_reliability", "roc_units",
           "write_transfer_report"]

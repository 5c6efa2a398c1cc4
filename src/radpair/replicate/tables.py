"""Paper tables beside measured numbers, and the claims those tables decide.

``measured`` is ``{row_id: {column_id: (value, ci_low, ci_high)}}`` for one table; a bare
number (no interval) and ``None`` (not measured) are accepted too. Cells the run did not
produce read "not run"; cells this replication cannot produce read "N/A here".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from radpair.errors import ConfigError
from radpair.replicate.schema import Claim, Paper, TableSpec, expectation_cells, expectation_pairs

Measured = Mapping[str, Mapping[str, Any]]
NOT_RUN = "not run"
NA_HERE = "N/A here"
NOT_READABLE = "–"


def _as_triple(value: Any) -> tuple[float | None, float | None, float | None]:
    if value is None:
        return None, None, None
    if isinstance(value, (tuple, list)):
        if len(value) != 3:
            raise ConfigError(f"a measured cell is (value, ci_low, ci_high), got {value!r}")
        v, lo, hi = value
        return _num(v), _num(lo), _num(hi)
    return _num(value), None, None


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def format_measured(value: Any, decimals: int, scale: float = 1.0) -> str:
    """``0.812 (0.781–0.843)`` from ``(value, ci_low, ci_high)``; "not run" for None."""
    v, lo, hi = _as_triple(value)
    if v is None:
        return NOT_RUN
    text = _fmt(v * scale, decimals)
    if lo is not None and hi is not None:
        text += f" ({_fmt(lo * scale, decimals)}–{_fmt(hi * scale, decimals)})"
    return text


def _check_measured(table: TableSpec, measured: Measured) -> None:
    for row_id, cols in measured.items():
        table.row(row_id)  # raises with did-you-mean
        if not isinstance(cols, Mapping):
            raise ConfigError(f"measured[{row_id!r}] of table {table.id} must map column ids to values")
        for col_id in cols:
            table.column(col_id)


def _cell_md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(paper: Paper, table_id: str, measured: Measured | None = None) -> str:
    """Markdown: each column of the paper's table as a "paper" and a "here" column."""
    table = paper.table(table_id)
    measured = measured or {}
    _check_measured(table, measured)
    header = [""]
    for c in table.columns:
        header += [f"{_cell_md(c.label)}: paper", f"{_cell_md(c.label)}: here"]
    lines = [
        f"**{paper.name} {table.source}** ({table.id}): {table.caption.strip()}",
        "",
        f"Units: {table.units}. \"paper\" is the published number; \"here\" is measured by this replication "
        "(95 % interval in brackets)" + (f"; measured values are multiplied by {table.scale:g} to match." if
                                         table.scale != 1.0 else "."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    notes: list[str] = []
    for r in table.rows:
        cells = [_cell_md(r.label)]
        for c in table.columns:
            decimals = next(d for d in (c.decimals, r.decimals, table.decimals) if d is not None)
            pub = table.published[r.id][c.id]
            cells.append(NOT_READABLE if pub is None else _fmt(pub, decimals))
            na = table.na(r.id, c.id)
            if na:
                cells.append(NA_HERE)
                if na not in notes:
                    notes.append(na)
            else:
                cells.append(format_measured(measured.get(r.id, {}).get(c.id), decimals, table.scale))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if any(v is None for row in table.published.values() for v in row.values()):
        lines.append(f"{NOT_READABLE}: not reported in the paper or not readable in its text file.")
    for n in notes:
        lines.append(f"{NA_HERE}: {n}")
    if table.notes:
        lines.append(f"Notes: {table.notes.strip()}")
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- claims


def published_values(paper: Paper) -> dict[str, dict[str, dict[str, float | None]]]:
    """The published numbers of every table, ``{table: {row: {column: value}}}``."""
    return {t.id: {r: dict(cols) for r, cols in t.published.items()} for t in paper.tables}


@dataclass(frozen=True)
class Comparison:
    a: tuple[str, str, str]
    b: tuple[str, str, str]
    a_value: float | None
    b_value: float | None
    ok: bool | None  # None: a value is missing


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    holds: bool | None  # None: undecided (a deciding value is missing, or the claim has no rule)
    comparisons: tuple[Comparison, ...]

    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.ok is False]


def evaluate_claim(paper: Paper, claim: Claim, values: Mapping[str, Measured], *,
                   published: bool = False) -> ClaimResult:
    """Check a claim's rule on ``{table: {row: {column: value | (value, lo, hi)}}}``.

    ``values`` are measured (in 0-1 units; a table's ``scale`` converts them to the
    paper's units, in which margins and tolerances are written), or with
    ``published=True`` the paper's own numbers (:func:`published_values`)."""

    def _lookup(cell: tuple[str, str, str]) -> float | None:
        t, r, c = cell
        v = _as_triple(values.get(t, {}).get(r, {}).get(c))[0]
        return v if v is None or published else v * paper.table(t).scale

    comps = []
    for e in claim.expect:
        if e.kind == "spread":
            cells = expectation_cells(paper, e)
            vals = [_lookup(c) for c in cells]
            if any(v is None for v in vals):
                comps.append(Comparison(cells[0], cells[-1], None, None, None))
                continue
            hi = max(range(len(cells)), key=lambda i: vals[i])
            lo = min(range(len(cells)), key=lambda i: vals[i])
            ok = vals[hi] - vals[lo] <= e.tol + 1e-9
            comps.append(Comparison(cells[hi], cells[lo], vals[hi], vals[lo], ok))
            continue
        for a, b in expectation_pairs(paper, e):
            va, vb = _lookup(a), _lookup(b)
            if va is None or vb is None:
                ok = None
            elif e.kind == "higher":
                ok = va - vb > e.margin
            else:
                ok = abs(va - vb) <= e.tol + 1e-9
            comps.append(Comparison(a, b, va, vb, ok))
    if not comps:
        return ClaimResult(claim, None, ())
    if any(c.ok is False for c in comps):
        holds: bool | None = False
    elif any(c.ok is None for c in comps):
        holds = None
    else:
        holds = True
    return ClaimResult(claim, holds, tuple(comps))


def evaluate_claims(paper: Paper, values: Mapping[str, Measured], *, published: bool = False) -> list[ClaimResult]:
    return [evaluate_claim(paper, c, values, published=published) for c in paper.claims]


def check_published_claims(paper: Paper) -> list[str]:
    """Claims whose rule, applied to the published numbers, disagrees with ``holds_in_paper``
    (a transcription error, or a claim the paper's own table contradicts unannotated)."""
    problems = []
    for r in evaluate_claims(paper, published_values(paper), published=True):
        if r.holds != r.claim.holds_in_paper:
            problems.append(f"{paper.name}: claim {r.claim.id!r}: the published numbers give {r.holds}, the file "
                            f"says holds_in_paper: {r.claim.holds_in_paper}")
    return problems

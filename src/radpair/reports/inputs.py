"""Reading report collections for the command line: a CSV, or a folder of ``.txt`` files.

Real collections are messy: a CSV exported with another column name, a file that is not
UTF-8, a report a permission change made unreadable. The reader never drops an input:
every id comes back, with its text or with the reason it could not be read, so one bad
file costs one blank row rather than the whole run.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from radpair.errors import DataError

DEFAULT_TEXT_COLUMN = "report"
DEFAULT_ID_COLUMN = "id"


@dataclass
class ReportInputs:
    """Ids and texts in input order; ``texts[i]`` is None when input ``ids[i]`` was unreadable."""

    ids: list[str]
    texts: list[str | None]
    id_column: str
    problems: list[tuple[str, str]] = field(default_factory=list)  # (id or file, reason)
    notes: list[str] = field(default_factory=list)  # things the user should know, not errors

    def __len__(self) -> int:
        return len(self.ids)


def _decode(data: bytes) -> tuple[str, str | None]:
    """UTF-8 text (BOM removed), plus a problem description when bytes had to be replaced."""
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", errors="replace")
        text = text.removeprefix("\ufeff")
        return text, f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); undecodable bytes replaced"


def read_text_folder(folder: Path) -> ReportInputs:
    """Every ``*.txt`` under ``folder`` (recursively); the id is the path without ``.txt``."""
    files = sorted(p for p in folder.rglob("*.txt"))
    if not files:
        raise DataError(f"{folder}: no .txt files found (give a folder of .txt reports or a CSV file)")
    out = ReportInputs([], [], "id")
    for path in files:
        rid = path.relative_to(folder).with_suffix("").as_posix()
        out.ids.append(rid)
        try:
            data = path.read_bytes()
        except IsADirectoryError:
            out.texts.append(None)
            out.problems.append((str(path), "is a directory, not a file"))
            continue
        except OSError as exc:
            out.texts.append(None)
            out.problems.append((str(path), exc.strerror or str(exc)))
            continue
        text, problem = _decode(data)
        out.texts.append(text)
        if problem:
            out.problems.append((str(path), problem))
    return out


def _split_columns(spec: str) -> list[str]:
    return [c.strip() for c in spec.split(",") if c.strip()]


def read_csv_reports(path: Path, text_column: str = DEFAULT_TEXT_COLUMN, id_column: str | None = None) -> ReportInputs:
    """Reports from a CSV (or TSV). ``text_column`` may list several columns, comma-separated:
    each becomes a ``NAME: text`` section (IU X-ray's ``findings,impression``, say).

    ``id_column`` None means "``id`` if present, else the row number".
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    text, problem = _decode(data)
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({str(exc).strip()})") from None
    found = ", ".join(map(str, df.columns)) or "(none)"
    wanted = _split_columns(text_column)
    missing = [c for c in wanted if c not in df.columns]
    if not wanted or missing:
        raise DataError(
            f"{path}: no column {', '.join(repr(c) for c in missing or [text_column])} for the report text; "
            f"columns found: {found}. Choose one with --text-column"
        )
    notes = []
    if id_column is None:
        if DEFAULT_ID_COLUMN in df.columns:
            id_column = DEFAULT_ID_COLUMN
        else:
            id_column = "row"
            notes.append(f"{path}: no 'id' column (columns found: {found}); using row numbers (0-based) as ids")
            df[id_column] = [str(i) for i in range(len(df))]
    elif id_column not in df.columns:
        raise DataError(f"{path}: no id column {id_column!r}; columns found: {found}. Choose one with --id-column")
    if len(wanted) == 1:
        texts = df[wanted[0]].tolist()
    else:
        texts = [
            "\n\n".join(f"{c.upper()}: {v}" for c, v in zip(wanted, values) if str(v).strip())
            for values in zip(*(df[c].tolist() for c in wanted))
        ]
    ids = df[id_column].astype(str).tolist()
    out = ReportInputs(ids, texts, id_column, notes=notes)
    if problem:
        out.problems.append((str(path), problem))
    dup = len(ids) - len(set(ids))
    if dup:
        out.notes.append(f"{path}: {dup} duplicate id(s) in column {id_column!r}; rows are kept in input order")
    return out


def read_report_inputs(
    source: str | Path, text_column: str = DEFAULT_TEXT_COLUMN, id_column: str | None = None
) -> ReportInputs:
    """A CSV/TSV file, a folder of ``.txt`` reports, or a single ``.txt`` report."""
    path = Path(source)
    if path.is_dir():
        return read_text_folder(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix.lower() in (".csv", ".tsv", ".tab"):
        return read_csv_reports(path, text_column, id_column)
    if path.suffix.lower() == ".txt":
        out = ReportInputs([path.stem], [None], "id")
        try:
            text, problem = _decode(path.read_bytes())
            out.texts[0] = text
            if problem:
                out.problems.append((str(path), problem))
        except OSError as exc:
            out.problems.append((str(path), exc.strerror or str(exc)))
        return out
    raise DataError(f"{path}: expected a .csv/.tsv file, a .txt report or a folder of .txt reports")


def write_table(df: pd.DataFrame, output: str | Path) -> None:
    """Write a CSV (``-`` for standard output); the folder must exist."""
    if str(output) == "-":
        import sys

        df.to_csv(sys.stdout, index=False)
        return
    out = Path(output)
    if not out.parent.exists():
        raise DataError(f"{out}: folder {out.parent} does not exist")
    try:
        df.to_csv(out, index=False)
    except OSError as exc:
        raise DataError(f"{out}: cannot write ({exc.strerror or exc})") from None

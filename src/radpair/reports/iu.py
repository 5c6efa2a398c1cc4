"""IU X-ray (Open-i) reports: the Kaggle CSV columns and the NLM XML files.

The collection stores sections in separate fields, so nothing has to be guessed: the
helpers lay the fields out as ``HEADER: text`` blocks and record each section's span,
giving the same :class:`~radpair.reports.Report` as the free-text parsers.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from radpair.errors import DataError
from radpair.reports.report import PARSED_SECTIONS, Report, Section

#: the CSV's report columns, in the order the report is read
IU_COLUMNS: tuple[str, ...] = ("indication", "comparison", "findings", "impression")
_VALID = {s.value for s in PARSED_SECTIONS}


def _value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return ""
    return str(v).strip()


def build_report(fields: Sequence[tuple[str, str]], layout: str = "iu", meta: dict | None = None) -> Report:
    """A report from ``(section name, text)`` pairs, laid out as ``NAME: text`` blocks."""
    chunks: list[str] = []
    parts: list[Section] = []
    pos = 0
    for name, value in fields:
        value = _value(value)
        if not value:
            continue
        if name not in _VALID:
            raise DataError(f"unknown section name {name!r} (valid: {', '.join(sorted(_VALID))})")
        if chunks:
            chunks.append("\n\n")
            pos += 2
        header = name.upper().replace("_", " ")
        prefix = f"{header}: "
        chunks.append(prefix + value)
        start = pos + len(prefix)
        parts.append(Section(name, value, start, start + len(value), header, pos))
        pos = start + len(value)
    return Report(text="".join(chunks), parts=tuple(parts), layout=layout, meta=dict(meta or {}))


def parse_iu_row(row: Mapping[str, Any], columns: Sequence[str] = IU_COLUMNS) -> Report:
    """A report from one row of ``indiana_reports.csv`` (a dict or a pandas row).

    Missing or empty fields are skipped; ``uid``, ``MeSH``, ``Problems`` and ``image`` go to
    ``report.meta`` (MeSH and Problems split at ``;``).
    """
    meta: dict[str, Any] = {}
    if "uid" in row:
        meta["uid"] = row["uid"]
    for key in ("MeSH", "Problems"):
        if key in row and _value(row[key]):
            meta[key] = [t.strip() for t in _value(row[key]).split(";") if t.strip()]
    if "image" in row and _value(row["image"]):
        meta["image"] = _value(row["image"])
    return build_report([(c, row.get(c) if hasattr(row, "get") else row[c]) for c in columns], meta=meta)


def parse_iu_xml(source: str | bytes | os.PathLike) -> Report:
    """A report from one Open-i ``ecgen-radiology`` XML file (path, XML string or bytes).

    Sections come from ``<AbstractText Label="...">``; ``report.meta`` holds ``uid``
    (``<uId id=...>``), ``MeSH`` (``<major>`` terms), ``MeSH_automatic`` and ``images``
    (``<parentImage id=...>``).
    """
    where = "XML text"
    if isinstance(source, os.PathLike) or (isinstance(source, str) and not source.lstrip().startswith("<")):
        where = str(source)
        try:
            data: str | bytes = Path(source).read_bytes()
        except OSError as exc:
            raise DataError(f"{where}: cannot read ({exc.strerror or exc})") from None
    else:
        data = source
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DataError(f"{where}: not valid XML ({exc})") from None
    fields: list[tuple[str, str]] = []
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().lower()
        if label in _VALID:
            fields.append((label, "".join(node.itertext())))
    meta: dict[str, Any] = {}
    uid = root.find(".//uId")
    if uid is not None and uid.get("id"):
        meta["uid"] = uid.get("id")
    major = [(n.text or "").strip() for n in root.iter("major") if (n.text or "").strip()]
    auto = [(n.text or "").strip() for n in root.iter("automatic") if (n.text or "").strip()]
    if major:
        meta["MeSH"] = major
    if auto:
        meta["MeSH_automatic"] = auto
    images = [n.get("id") for n in root.iter("parentImage") if n.get("id")]
    if images:
        meta["images"] = images
    return build_report(fields, meta=meta)

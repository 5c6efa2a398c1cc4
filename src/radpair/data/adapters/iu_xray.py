"""IU X-ray / Open-i (Indiana University): CSV layout or the NLM XML reports.

* CSV (Kaggle layout): ``indiana_reports.csv`` (uid, indication, comparison, findings,
  impression, ...) + ``indiana_projections.csv`` (uid, filename, Frontal/Lateral).
* XML (NLM ``ecgen-radiology/*.xml``): one report per file, images listed as
  ``parentImage id="CXR12_IM-0123-1001"``; views come from ``indiana_projections.csv``
  when it sits next to the XML, else they are unknown.

One report (``uid``) per patient encounter; the collection cannot link patients across
reports, so the uid is the patient id. Study ids follow the NLM image names
(``CXR<uid>_IM-xxxx``), the form used by the R2Gen split, so that split can be passed with
``--split-file``. Report text is laid out by :mod:`radpair.reports.iu` (``INDICATION: ...``
blocks of the non-empty sections, in the collection's order), the same text its parser
reads back as a :class:`~radpair.reports.Report`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from radpair.data.adapters.base import (
    AdapterOptions,
    AdapterResult,
    DatasetAdapter,
    maybe_file,
    read_table,
    require_columns,
    text,
)
from radpair.data.adapters.registry import ADAPTERS
from radpair.errors import DataError

IMAGE_DIRS = ["images/images_normalized", "images_normalized", "NLMCXR_png", "images", "."]
_DUP_UID = re.compile(r"^CXR(\d+)_\1_")


def canonical_id(value: str) -> str:
    """NLM ids sometimes repeat the uid ('CXR1_1_IM-0001'); map both spellings to one."""
    return _DUP_UID.sub(r"CXR\1_", str(value))


def image_key(filename: str) -> str:
    """'12_IM-0123-1001.dcm.png' or 'CXR12_IM-0123-1001.png' -> 'CXR12_IM-0123-1001'."""
    stem = re.sub(r"(\.dcm)?\.(png|jpe?g)$", "", Path(filename).name, flags=re.IGNORECASE)
    return canonical_id(stem if stem.startswith("CXR") else f"CXR{stem}")


def study_key(image: str) -> str:
    """Image key without its last '-NNNN' part: the R2Gen study id."""
    return re.sub(r"-\d+$", "", image)


def _image_dir(root: Path, sample: str | None) -> Path:
    for rel in IMAGE_DIRS:
        candidate = root / rel
        if sample and (candidate / sample).is_file():
            return candidate
    return root / IMAGE_DIRS[0]


def _from_csv(root: Path, reports_path: Path, notes: list[str]) -> pd.DataFrame:
    reports = read_table(reports_path)
    require_columns(reports, ["uid"], reports_path)
    proj_path = maybe_file(root, ["indiana_projections.csv"])
    if proj_path is None:
        raise DataError(f"{root}: indiana_reports.csv found but no indiana_projections.csv (it lists the image files)")
    proj = read_table(proj_path)
    require_columns(proj, ["uid", "filename", "projection"], proj_path)
    from radpair.reports import parse_iu_row

    texts = [parse_iu_row(row).text for row in reports.to_dict("records")]
    reports = pd.DataFrame({"uid": reports["uid"], "report": texts})
    rows = proj.merge(reports, on="uid", how="left")
    no_report = rows["report"].isna()
    if no_report.any():
        notes.append(f"{int(no_report.sum())} image(s) in {proj_path.name} have no report row")
    return pd.DataFrame(
        {"uid": rows["uid"], "filename": rows["filename"], "view": rows["projection"], "report": text(rows["report"])}
    )


def _parse_xml(path: Path) -> tuple[str, str, list[str]]:
    """(uid digits, report text, image ids) of one NLM report file."""
    from radpair.reports import parse_iu_xml

    report = parse_iu_xml(path)
    uid = re.sub(r"\D", "", str(report.meta.get("uid", ""))) or re.sub(r"\D", "", path.stem)
    return uid, report.text, list(report.meta.get("images", []))


def _from_xml(root: Path, xml_files: list[Path], notes: list[str]) -> pd.DataFrame:
    rows = []
    for path in xml_files:
        uid, report, images = _parse_xml(path)
        if not images:
            notes.append(f"{path.name}: report without images skipped")
            continue
        for image in images:
            rows.append((uid, f"{image}.png", "", report))
    table = pd.DataFrame(rows, columns=["uid", "filename", "view", "report"])
    proj_path = maybe_file(root, ["indiana_projections.csv"])
    if proj_path is not None:
        proj = read_table(proj_path)
        views = dict(zip(proj["filename"].map(image_key), proj["projection"]))
        table["view"] = table["filename"].map(image_key).map(views).fillna("")
    else:
        notes.append("NLM XML has no projections; views unknown (pass --views all, or add indiana_projections.csv)")
    return table


@ADAPTERS.register("iu_xray")
class IUXray(DatasetAdapter):
    name = "iu_xray"
    summary = "IU X-ray / Open-i: indiana_reports.csv + indiana_projections.csv, or NLM XML reports"
    uses = frozenset()

    def load(self, root: Path, options: AdapterOptions) -> AdapterResult:
        notes: list[str] = []
        reports_path = maybe_file(root, ["indiana_reports.csv"])
        if reports_path is not None:
            rows = _from_csv(root, reports_path, notes)
        else:
            xml_dir = root / "ecgen-radiology" if (root / "ecgen-radiology").is_dir() else root
            xml_files = sorted(xml_dir.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
            if not xml_files:
                raise DataError(f"{root}: neither indiana_reports.csv nor NLM XML reports (ecgen-radiology/*.xml)")
            rows = _from_xml(root, xml_files, notes)
        keys = rows["filename"].map(image_key)
        image_dir = Path(options.image_root) if options.image_root else _image_dir(root, rows["filename"].iloc[0] if len(rows) else None)
        table = pd.DataFrame(
            {
                "path": rows["filename"].to_numpy(),
                "image_id": keys.to_numpy(),
                "patient_id": ("CXR" + rows["uid"].astype(str)).to_numpy(),
                "study_id": keys.map(study_key).to_numpy(),
                "view": text(rows["view"]).to_numpy(),
                "split": "",
                "report": rows["report"].to_numpy(),
            }
        )
        return AdapterResult(table, [], image_dir, notes, split_key=canonical_id)

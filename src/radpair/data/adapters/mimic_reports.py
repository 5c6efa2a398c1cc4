"""MIMIC-CXR free-text reports: ``files/pXX/pNNNNNNNN/sNNNNNNNN.txt``, extracted or zipped.

PhysioNet ships the reports as ``mimic-cxr-reports.zip``; many sites unzip it next to the
DICOM tree. Both work; the text is kept whole (section selection happens at load time)
with line endings normalised and surrounding whitespace trimmed.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from radpair.errors import DataError

_MEMBER = re.compile(r"^(.*?)p\d\d/p(\d+)/s(\d+)\.txt$")
REPORT_CANDIDATES = ["mimic-cxr-reports.zip", "mimic-cxr-reports", "reports", "."]


def clean_report(raw: bytes | str) -> str:
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def study_relpath(subject_id: str, study_id: str) -> str:
    subject_id, study_id = str(subject_id), str(study_id)
    return f"p{subject_id[:2]}/p{subject_id}/s{study_id}.txt"


class MimicReports:
    """Look up a study's report in a folder tree or in the PhysioNet zip."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        if source.is_file():
            try:
                self._zip = zipfile.ZipFile(source)
            except zipfile.BadZipFile:
                raise DataError(f"{source}: not a valid zip file of MIMIC-CXR reports") from None
            # members are looked up by their standard name; only the leading folder varies
            # (no second index of 227k names: zipfile's own already costs ~100 MB)
            match = next((m for m in map(_MEMBER.match, self._zip.namelist()) if m), None)
            if match is None:
                raise DataError(f"{source}: contains no pXX/pNNNNNNNN/sNNNNNNNN.txt report files")
            self._prefix = match.group(1)
            self.base = None
        else:
            self.base = source / "files" if (source / "files").is_dir() else source

    @classmethod
    def discover(cls, root: Path, explicit: str | None) -> MimicReports | None:
        """The explicit source, else the first candidate under root that holds reports."""
        if explicit:
            path = Path(explicit)
            if not path.exists():
                raise DataError(f"reports source {path} does not exist (expected a folder or mimic-cxr-reports.zip)")
            return cls(path)
        for name in REPORT_CANDIDATES:
            candidate = (root / name).resolve() if name != "." else root
            if candidate.is_file() and candidate.suffix == ".zip":
                return cls(candidate)
            if candidate.is_dir():
                files = candidate / "files" if (candidate / "files").is_dir() else candidate
                if any(True for _ in _first_txt(files)):
                    return cls(candidate)
        return None

    def get(self, subject_id: str, study_id: str) -> str | None:
        if self._zip is not None:
            try:
                return clean_report(self._zip.read(self._prefix + study_relpath(subject_id, study_id)))
            except KeyError:
                return None
        path = self.base / study_relpath(subject_id, study_id)
        try:
            return clean_report(path.read_bytes())
        except FileNotFoundError:
            return None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _first_txt(files_dir: Path):
    """Yield at most one report path, looking only two levels deep (cheap on huge trees)."""
    try:
        for group in sorted(files_dir.iterdir())[:3]:
            if group.is_dir() and group.name.startswith("p"):
                for patient in sorted(group.iterdir())[:3]:
                    if patient.is_dir():
                        for item in patient.iterdir():
                            if item.suffix == ".txt":
                                yield item
                                return
    except OSError:
        return


def attach_reports(subjects, studies, reports: MimicReports | None) -> tuple[list[str], int]:
    """Report text per row (read once per study) and the number of studies without one."""
    cache: dict[tuple[str, str], str] = {}
    missing = 0
    out = []
    for subject, study in zip(subjects, studies):
        key = (str(subject), str(study))
        if key not in cache:
            text = reports.get(*key) if reports is not None else None
            if text is None:
                missing += 1
            cache[key] = text or ""
        out.append(cache[key])
    return out, missing

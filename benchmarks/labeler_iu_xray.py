"""Agreement of the ``chestxray14`` labeler with the IU X-ray MeSH annotations.

The Open-i collection indexes each report with MeSH terms (``Term/qualifier/...``),
assigned by people reading the report. This benchmark maps the terms to the ChestX-ray14
classes (table ``MESH_MAP`` below, chosen by meaning, before looking at agreement),
labels the same reports, and reports precision, recall and F1 per class.

Usage (from the project root)::

    python benchmarks/labeler_iu_xray.py                       # all 3,851 reports
    python benchmarks/labeler_iu_xray.py --split test          # R2Gen test split only
    python benchmarks/labeler_iu_xray.py --uncertain positive  # count -1 as positive
    python benchmarks/labeler_iu_xray.py --errors Nodule       # show disagreements

Reports indexed "No Indexing" have no annotation and are left out. The labeler reads the
findings and impression (section policy ``body``: the indication and comparison columns
are laid out as sections and skipped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from radpair.reports import parse_iu_row
from radpair.reports.labeling import get_labeler

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "iu_xray"

# ChestX-ray14 class -> MeSH main headings (before the first "/"), and optionally a
# required first qualifier. Chosen by meaning:
#  * Cardiomegaly: "Cardiomegaly" and "Cardiac Shadow/enlarged" (an enlarged cardiac
#    silhouette is how a radiograph shows cardiomegaly);
#  * Effusion: pleural effusion only ("Pericardial Effusion" is another finding);
#  * Infiltration: "Infiltrate"; Pneumothorax includes hydro-/hemopneumothorax;
#  * Emphysema: pulmonary and bullous emphysema, not "Subcutaneous Emphysema";
#  * Fibrosis: "Pulmonary Fibrosis", "Fibrosis" (not "Cystic Fibrosis", not "Cicatrix");
#  * Pleural_Thickening: "Thickening" whose first qualifier is "pleura";
#  * Hernia: hiatal and diaphragmatic hernia;
#  * normal: the report's MeSH is exactly "normal".
MESH_MAP: dict[str, list[tuple[str, str | None]]] = {
    "Atelectasis": [("Pulmonary Atelectasis", None)],
    "Cardiomegaly": [("Cardiomegaly", None), ("Cardiac Shadow", "enlarged")],
    "Effusion": [("Pleural Effusion", None)],
    "Infiltration": [("Infiltrate", None)],
    "Mass": [("Mass", None)],
    "Nodule": [("Nodule", None)],
    "Pneumonia": [("Pneumonia", None)],
    "Pneumothorax": [("Pneumothorax", None), ("Hydropneumothorax", None), ("Hemopneumothorax", None)],
    "Consolidation": [("Consolidation", None)],
    "Edema": [("Pulmonary Edema", None)],
    "Emphysema": [("Emphysema", None), ("Pulmonary Emphysema", None), ("Bullous Emphysema", None)],
    "Fibrosis": [("Pulmonary Fibrosis", None), ("Fibrosis", None)],
    "Pleural_Thickening": [("Thickening", "pleura")],
    "Hernia": [("Hernia, Hiatal", None), ("Hernia, Diaphragmatic", None)],
}


def mesh_labels(mesh: str) -> dict[str, int]:
    terms = [t.strip() for t in str(mesh).split(";") if t.strip()]
    parsed = []
    for t in terms:
        parts = [p.strip() for p in t.split("/")]
        parsed.append((parts[0].lower(), parts[1].lower() if len(parts) > 1 else None))
    out = {}
    for cls, keys in MESH_MAP.items():
        out[cls] = int(
            any(head == k.lower() and (q is None or qual == q) for head, qual in parsed for k, q in keys)
        )
    out["normal"] = int([t.lower() for t in terms] == ["normal"])
    return out


@dataclass
class Score:
    cls: str
    support: int
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def defined(self) -> bool:
        """F1 is undefined for a class that neither side ever marks (e.g. Mass in a small split)."""
        return self.tp + self.fp + self.fn > 0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def macro_f1(scores: list[Score]) -> float:
    defined = [s.f1 for s in scores if s.defined]
    return sum(defined) / len(defined) if defined else float("nan")


def load(data_dir: Path, split: str) -> pd.DataFrame:
    path = data_dir / "indiana_reports.csv"
    if not path.is_file():
        sys.exit(f"IU X-ray reports not found at {path} (pass --data DIR)")
    df = pd.read_csv(path)
    df = df[df["MeSH"].str.strip() != "No Indexing"].reset_index(drop=True)
    if split != "all":
        sp = pd.read_csv(data_dir / "r2gen_split.csv")
        sp["uid"] = sp["study_id"].str.extract(r"^CXR(\d+)_")[0].astype(int)
        uids = set(sp.loc[sp["split"] == split, "uid"])
        df = df[df["uid"].isin(uids)].reset_index(drop=True)
    return df


def evaluate(df: pd.DataFrame, uncertain: str, labeler=None) -> tuple[list[Score], pd.DataFrame, pd.DataFrame, float]:
    labeler = labeler or get_labeler("chestxray14")
    texts = [parse_iu_row(row).text for row in df.to_dict("records")]
    t0 = time.perf_counter()
    pred = labeler.label_many(texts)
    elapsed = time.perf_counter() - t0
    truth = pd.DataFrame([mesh_labels(m) for m in df["MeSH"]])
    scores = []
    for cls in list(MESH_MAP) + ["normal"]:
        p = pred[cls].fillna(0).astype(int)
        p = (p == 1) | ((p == -1) & (uncertain == "positive"))
        t = truth[cls] == 1
        scores.append(Score(cls, int(t.sum()), int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())))
    return scores, pred, truth, elapsed


def table(scores: list[Score]) -> str:
    lines = ["| class | MeSH positives | TP | FP | FN | precision | recall | F1 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in scores:
        if s.defined:
            lines.append(f"| {s.cls} | {s.support} | {s.tp} | {s.fp} | {s.fn} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} |")
        else:
            lines.append(f"| {s.cls} | 0 | 0 | 0 | 0 | n/a | n/a | n/a (excluded) |")
    findings = [s for s in scores if s.cls != "normal"]
    n14 = sum(s.defined for s in findings)
    lines.append(f"| **macro F1, {n14} findings** | | | | | | | **{macro_f1(findings):.3f}** |")
    lines.append(f"| **macro F1, {n14} findings + normal** | | | | | | | **{macro_f1(scores):.3f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with indiana_reports.csv")
    ap.add_argument("--split", choices=["all", "train", "val", "test"], default="all")
    ap.add_argument("--uncertain", choices=["negative", "positive"], default="negative",
                    help="how an uncertain (-1) label counts (default: negative)")
    ap.add_argument("--errors", metavar="CLASS", help="print the reports where CLASS disagrees")
    ap.add_argument("--max-errors", type=int, default=25)
    ap.add_argument("--json", type=Path, help="also write the scores as JSON")
    args = ap.parse_args(argv)

    df = load(args.data, args.split)
    scores, pred, truth, elapsed = evaluate(df, args.uncertain)
    print(f"{len(df)} IU X-ray reports (split {args.split}, uncertain={args.uncertain}); "
          f"labeled in {elapsed:.2f} s ({len(df) / elapsed:.0f} reports/s)\n")
    print(table(scores))
    if args.json:
        args.json.write_text(json.dumps([s.__dict__ | {"f1": s.f1 if s.defined else None} for s in scores], indent=1))
    if args.errors:
        cls = args.errors
        lab = get_labeler("chestxray14")
        shown = 0
        for i, row in df.iterrows():
            p = pred.loc[i, cls]
            p = 0 if pd.isna(p) else int(p)
            pos = p == 1 or (p == -1 and args.uncertain == "positive")
            if pos != bool(truth.loc[i, cls]):
                kind = "FP" if pos else "FN"
                text = parse_iu_row(row.to_dict()).text
                print(f"\n--- {kind} uid={row['uid']} pred={p}\nMeSH: {row['MeSH']}\n{text}")
                res = lab.label(text)
                print(res.explain(cls))
                shown += 1
                if shown >= args.max_errors:
                    break
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory and time of indexing 400k MIMIC-CXR-JPG-style records.

    python benchmarks/index_memory.py --n 400000 [--no-reports] [--json out.json]

Writes synthetic MIMIC-CXR-JPG metadata/split/chexpert CSVs (gzipped) for ``n`` images
(~1.75 images per study, ~3.5 studies per patient, like MIMIC-CXR) and, unless
``--no-reports``, a ``mimic-cxr-reports.zip`` with one ~500-character report per study.
A fresh child process then imports radpair (baseline), runs
``build_index("mimic_cxr_jpg", root, views=all)`` and the cache's planning step
(``plan_table`` + fingerprint), recording peak RSS (``ru_maxrss``) after each.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from engine_common import write_json

REPO = Path(__file__).resolve().parents[1]
LABELS = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion",
    "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
]  # fmt: skip
SENTENCES = [
    "The lungs are clear without focal consolidation.", "There is no pleural effusion or pneumothorax.",
    "Heart size is normal.", "Mild pulmonary vascular congestion.", "Moderate cardiomegaly is stable.",
    "Left basilar atelectasis.", "Endotracheal tube terminates {n} cm above the carina.", "No acute cardiopulmonary process.",
    "Small right pleural effusion has increased since {d}.", "Right internal jugular line ends in the mid SVC.",
]  # fmt: skip


def _peak_mb() -> float:
    """Peak RSS of this process image. /proc VmHWM is reset by exec; ru_maxrss is not (on
    Linux it keeps the parent's peak across fork+exec), so it is only the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_fixture(root: Path, n: int, reports: bool, seed: int = 0) -> dict:
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_studies = int(n / 1.75)
    n_patients = max(1, int(n_studies / 3.5))
    study_patient = np.sort(rng.integers(0, n_patients, n_studies))
    image_study = np.sort(rng.integers(0, n_studies, n))
    subject = (10_000_000 + study_patient[image_study]).astype(str)
    study = (50_000_000 + image_study).astype(str)
    dicom = np.array([f"{i:08x}-{i * 7919 % 2**32:08x}-1b22c6b4-fa7d01c6-{i * 104729 % 2**32:08x}" for i in range(n)])
    views = rng.choice(["PA", "AP", "LATERAL", "LL", ""], n, p=[0.4, 0.3, 0.22, 0.05, 0.03])
    root.mkdir(parents=True, exist_ok=True)

    def gz(df, name):
        with gzip.open(root / name, "wt", compresslevel=1, newline="") as fh:
            df.to_csv(fh, index=False)

    gz(pd.DataFrame({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": views}), "mimic-cxr-2.0.0-metadata.csv.gz")
    patient_split = rng.choice(["train", "validate", "test"], n_patients, p=[0.98, 0.01, 0.01])
    gz(pd.DataFrame({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": patient_split[study_patient[image_study]]}), "mimic-cxr-2.0.0-split.csv.gz")
    studies = pd.DataFrame({"subject_id": (10_000_000 + study_patient).astype(str), "study_id": (50_000_000 + np.arange(n_studies)).astype(str)})
    for name in LABELS:
        studies[name] = rng.choice([1.0, 0.0, -1.0, np.nan], n_studies, p=[0.15, 0.15, 0.05, 0.65])
    gz(studies, "mimic-cxr-2.0.0-chexpert.csv.gz")
    if reports:
        bodies = []
        for k in range(2000):  # distinct texts; each study's file is read into its own string anyway
            picks = rng.choice(len(SENTENCES), 6, replace=False)
            body = " ".join(SENTENCES[i].format(n=2 + k % 5, d=f"{1 + k % 28}/{1 + k % 12}") for i in picks)
            bodies.append(
                f"                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  ___ with cough.\n\n"
                f" FINDINGS:  {body}\n\n IMPRESSION:  {SENTENCES[picks[0]]}\n"
            )
        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w", compression=zipfile.ZIP_STORED) as zf:
            for k, (subj, st) in enumerate(zip(studies["subject_id"], studies["study_id"])):
                zf.writestr(f"files/p{subj[:2]}/p{subj}/s{st}.txt", bodies[k % len(bodies)])
    return {"n_images": n, "n_studies": n_studies, "n_patients": n_patients}


def child(root: str) -> None:
    """Runs in a fresh process so peak RSS belongs to indexing alone."""
    from radpair.data.adapters import AdapterOptions, build_index
    from radpair.data.cache import fingerprint, plan_table, write_plan_csv

    base = _peak_mb()
    t0 = time.perf_counter()
    index = build_index("mimic_cxr_jpg", root, AdapterOptions(views="all"))
    t_index = time.perf_counter() - t0
    peak_index = _peak_mb()
    table_mb = index.table.memory_usage(deep=True).sum() / 2**20
    t0 = time.perf_counter()
    plan = plan_table(index)
    fingerprint(write_plan_csv(plan, Path(root) / "plan.csv"), {}, index.describe())
    t_plan = time.perf_counter() - t0
    print(json.dumps({
        "records": len(index),
        "reports_non_empty": int((index.table["report"] != "").sum()),
        "baseline_rss_mb": round(base, 1),
        "peak_rss_after_index_mb": round(peak_index, 1),
        "peak_rss_after_cache_plan_mb": round(_peak_mb(), 1),
        "index_table_mb": round(table_mb, 1),
        "index_seconds": round(t_index, 1),
        "cache_plan_seconds": round(t_plan, 1),
    }))  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400_000)
    ap.add_argument("--no-reports", action="store_true")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sizes = write_fixture(Path(tmp) / "mimic", args.n, not args.no_reports)
        gen_s = time.perf_counter() - t0
        env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run([sys.executable, __file__, "--child", str(Path(tmp) / "mimic")], env=env, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(proc.stderr)
        measured = json.loads(proc.stdout.strip().splitlines()[-1])
    delta = measured["peak_rss_after_cache_plan_mb"] - measured["baseline_rss_mb"]
    result = {
        "benchmark": "index_memory",
        "command": "python benchmarks/index_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.cpu_count()}-vCPU {platform.processor() or platform.machine()}, Python {platform.python_version()}",
        **sizes,
        "with_reports": not args.no_reports,
        **measured,
        "peak_over_baseline_mb": round(delta, 1),
        "bytes_per_record_over_baseline": int(delta * 2**20 / args.n),
        "fixture_generation_s": round(gen_s, 1),
    }
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()

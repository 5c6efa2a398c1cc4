"""Labeling speed on IU X-ray-length reports, in reports per second per core.

Speed is CPU time of this process (``time.process_time``), so other jobs sharing the
machine inflate it less than wall-clock time would; the benchmark is single-threaded, so
reports per CPU-second is reports per second per core. Each configuration is timed
``--repeats`` times and the median is reported.

Usage (from the project root)::

    python benchmarks/labeler_speed.py                  # every schema, 3,851 IU reports
    python benchmarks/labeler_speed.py --schema chexpert --repeats 5

Input: the IU X-ray reports laid out as "INDICATION: ... FINDINGS: ... IMPRESSION: ..."
(parse_iu_row), mean 357 characters; the labeler sections each report itself (policy
``body``), so sectioning is part of the measured time. A synthetic fallback is used when
the shared data is absent (``--synthetic``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "iu_xray" / "indiana_reports.csv"

_SYNTHETIC = [
    (
        "FINDINGS: The heart size is normal. No focal consolidation, pleural effusion or pneumothorax. "
        "IMPRESSION: No acute cardiopulmonary process."
    ),
    (
        "FINDINGS: Mild cardiomegaly. Small left pleural effusion with adjacent atelectasis, cannot exclude "
        "pneumonia. IMPRESSION: 1. Small left effusion. 2. Possible left lower lobe pneumonia."
    ),
    (
        "INDICATION: ___ with cough. FINDINGS: Hyperinflated lungs compatible with emphysema. Calcified "
        "granuloma in the right upper lobe. No pneumothorax. IMPRESSION: Emphysema, no acute disease."
    ),
]


def load_texts(path: Path, synthetic: bool) -> list[str]:
    if synthetic or not path.is_file():
        if not synthetic:
            print(f"note: {path} not found, timing synthetic reports", file=sys.stderr)
        return _SYNTHETIC * 1300
    import pandas as pd

    from radpair.reports import parse_iu_row

    df = pd.read_csv(path)
    return [parse_iu_row(row).text for row in df.to_dict("records")]


def time_labeler(labeler, texts: list[str], repeats: int) -> list[float]:
    labeler.label_many(texts[:50])  # warm caches
    rates = []
    for _ in range(repeats):
        t0 = time.process_time()
        for text in texts:
            labeler.label(text)
        rates.append(len(texts) / (time.process_time() - t0))
    return rates


def main(argv: list[str] | None = None) -> int:
    from radpair.errors import ConfigError
    from radpair.reports import select_sections
    from radpair.reports.labeling import get_labeler, labeler_names

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schema", action="append", choices=labeler_names(), help="default: every schema")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--synthetic", action="store_true", help="time built-in synthetic reports")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    texts = load_texts(args.data, args.synthetic)
    mean_chars = sum(map(len, texts)) / len(texts)
    print(f"{len(texts)} reports, mean {mean_chars:.0f} characters; Python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}")
    print("| what | reports/s/core (median) | runs |")
    print("|---|---:|---|")
    t = []
    for _ in range(args.repeats):
        t0 = time.process_time()
        for text in texts:
            select_sections(text, "findings+impression")
        t.append(len(texts) / (time.process_time() - t0))
    print(f"| select_sections (findings+impression) | {statistics.median(t):,.0f} | {', '.join(f'{x:,.0f}' for x in t)} |")
    for name in args.schema or labeler_names():
        try:
            labeler = get_labeler(name)
        except ConfigError as exc:  # e.g. chexpert phrase lists absent
            print(f"| label --schema {name} | skipped: {exc} | |")
            continue
        rates = time_labeler(labeler, texts, args.repeats)
        print(f"| label --schema {name} | {statistics.median(rates):,.0f} | {', '.join(f'{x:,.0f}' for x in rates)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

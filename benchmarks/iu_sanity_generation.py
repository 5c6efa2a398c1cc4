"""Report-metric sanity table on real IU X-ray reports: IMPRESSION scored as if generated
against FINDINGS, R2Gen split (no model involved).

    python benchmarks/iu_sanity_generation.py [--data ../shared/data/iu_xray] [--split test]
        [--bootstrap 200] [--seed 0] [--no-meteor] [--out DIR]

Why: docs quote these numbers, so any change in tokenisation, scorers or the CheXpert
labeler shows up as a changed table that anyone can rerun. Prints the Markdown table, the
CPU model and the elapsed time; ``--out`` also writes generation_metrics.json and
per_report.csv. Nothing is written unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def main() -> int:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "iu_xray"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(default), help=f"folder with indiana_reports.csv and r2gen_split.csv "
                    f"(default: {default})")
    ap.add_argument("--split", default="test")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-meteor", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from radpair.evaluation.generation import iu_xray_sanity

    t0 = time.perf_counter()
    result = iu_xray_sanity(args.data, split=args.split, n_bootstrap=args.bootstrap, seed=args.seed,
                            meteor=False if args.no_meteor else "auto")
    elapsed = time.perf_counter() - t0
    result.command = "python benchmarks/iu_sanity_generation.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in (("split", args.split), ("bootstrap", args.bootstrap),
                                                      ("seed", args.seed)))
    print(result.to_markdown(), end="")
    print(f"\nCPU: {cpu_model()}; {elapsed:.1f} s")
    if args.out:
        paths = result.save(args.out)
        print(f"results: {paths['json']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

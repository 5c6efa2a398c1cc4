"""Report-generation throughput of finished captioning runs: reports/s at a beam width and batch.

    python benchmarks/generation_throughput.py --runs runs/method_quality/seed0/radtex_captioning \
        --corpus runs/calib_seeds/seed0/corpus --n 256 --batch 32 --beam 2 [--threads 2] [--json out.json]

Speed depends on how long the reports are (decoding stops when every row of a batch has
written EOS), so a *trained* run is measured on real test images, and the mean number of
tokens written is printed beside the rate. Each (run, strategy) is timed ``--repeats`` times
over the same first ``--n`` test images; the median is reported, with greedy beside beam
for the cost of the search itself.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders of captioning methods")
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--n", type=int, default=256, help="test images per timing (default: 256)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--beam", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from radpair.data.corpus import Corpus
    from radpair.generation import DecodingConfig
    from radpair.generation.generate import generate_reports
    from radpair.generation.runs import load_generative_run

    torch.set_num_threads(args.threads)
    corpus = Corpus.open(args.corpus)
    rows = []
    for run_dir in args.runs:
        run = load_generative_run(run_dir, device=args.device)
        for cfg in (DecodingConfig("greedy"), DecodingConfig("beam", beam_width=args.beam)):
            times, tokens = [], None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = generate_reports(run, corpus, split="test", limit=args.n, decoding=cfg, batch_size=args.batch)
                times.append(time.perf_counter() - t0)
                tokens = float(out.frame["n_tokens"].mean())
            med = statistics.median(times)
            row = {"run": str(run_dir), "method": run.method, "strategy": cfg.strategy,
                   "beam_width": cfg.beam_width if cfg.strategy == "beam" else 1, "batch": args.batch,
                   "reports": args.n, "median_s": round(med, 3), "reports_per_s": round(args.n / med, 2),
                   "mean_tokens": round(tokens, 1), "all_s": [round(t, 3) for t in times]}
            rows.append(row)
            print(f"{run.method:20s} {cfg.strategy:6s} w={row['beam_width']} batch {args.batch}: "
                  f"{row['reports_per_s']:7.2f} reports/s ({row['mean_tokens']} tokens/report)", flush=True)
    result = {"cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__, "python": sys.version.split()[0],
              "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

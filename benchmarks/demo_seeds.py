"""Does the demo's headline claim hold on other corpus seeds?

Runs the default demo (same settings as `radpair demo`) once per seed and checks the
acceptance claim at N=100: the ConVIRT linear probe beats the random-init probe by at
least 0.10 macro AUC and the from-scratch supervised model by at least 0.05.

    python benchmarks/demo_seeds.py --seeds 1 2 --out runs/demo_seeds   # ~15 min per seed on 2 cores

Writes ``<out>/demo_seeds.json`` with one row per seed and the overall verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from radpair.config import deep_merge, from_dict, parse_overrides, to_dict
from radpair_train.demo import DemoConfig, run_demo

CONVIRT, RANDOM, SCRATCH = "convirt (linear probe)", "random init (linear probe)", "from scratch (supervised)"


def check(headline: dict, n: str = "100") -> dict:
    c, r, s = headline[CONVIRT][n], headline[RANDOM][n], headline[SCRATCH][n]
    return {
        "convirt": c,
        "random_init": r,
        "from_scratch": s,
        "margin_vs_random": round(c - r, 4),
        "margin_vs_scratch": round(c - s, 4),
        "holds": (c - r >= 0.10) and (c - s >= 0.05),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default="runs/demo_seeds")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="demo settings, as for `radpair demo`")
    args = ap.parse_args(argv)
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        cfg = from_dict(DemoConfig, deep_merge(to_dict(DemoConfig()), parse_overrides([*args.overrides, f"seed={seed}"])))
        results = run_demo(cfg, out / f"seed{seed}", progress=False)
        row = {"seed": seed, **check(results["headline"]), "total_seconds": results["total_seconds"],
               "headline": results["headline"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"rows": rows, "all_hold": all(r["holds"] for r in rows)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_seeds.json").write_text(json.dumps(summary, indent=2))
    print(f"claim holds on all seeds: {summary['all_hold']}")
    return 0 if summary["all_hold"] else 1


if __name__ == "__main__":
    sys.exit(main())

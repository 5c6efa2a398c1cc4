"""The demo on several corpus seeds: every arm's macro AUC and the paired differences.

Runs the ConVIRT study (the settings of `radpair demo --study`) once per corpus seed, or reads
finished demo folders, and tabulates what README and docs/results.md quote: the mean and
range over seeds of each arm at each budget, and per seed the paired difference
ConVIRT x linear minus random x finetune (the tuned from-scratch baseline) and minus
random x linear, with their 95% CIs. The claim is reported whichever way it comes out.

    python benchmarks/demo_seeds.py --seeds 0 1 2 --out runs/demo_seeds     # 80+ min per seed on 2 cores
    python benchmarks/demo_seeds.py --seeds 0 1 2 --out runs/demo_seeds --reuse   # only tabulate finished runs
    python benchmarks/demo_seeds.py --seeds 3 4 --out runs/calib_seeds --corpus-only   # the study corpora alone

Writes ``<out>/demo_seeds.json`` and ``<out>/demo_seeds.md`` (not with ``--corpus-only``, which
writes only ``<out>/seed<k>/corpus`` and ``tokenizer``: enough for ``method_quality.py`` and
``preset_selection.py``, though method_quality's ``convirt`` arm and ``convirt_fn`` variant need
the full study's ``pretrain/``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from radpair.config import apply_overrides, from_dict, to_dict  # noqa: E402

PAIRS = [("convirt:linear", "random:finetune"), ("convirt:linear", "random:linear")]


def _fmt(x, digits: int = 3, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def tabulate(rows: list[dict]) -> str:
    seeds = [r["seed"] for r in rows]
    # arms and budgets from every row: seeds may have run different budgets (a missing cell prints "–")
    arms = list(dict.fromkeys(a for r in rows for a in r["headline"]["means"]))
    budgets = list(dict.fromkeys(b for r in rows for m in r["headline"]["means"].values() for b in m))
    lines = [f"Macro AUC on `findings7`, mean over repeats; corpus seeds {', '.join(map(str, seeds))}: "
             "mean (min–max over seeds).", "", "| arm | " + " | ".join(f"N={b}" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for arm in arms:
        cells = []
        for b in budgets:
            vals = [r["headline"]["means"].get(arm, {}).get(b) for r in rows]
            vals = [v for v in vals if v is not None]
            cells.append(f"{sum(vals) / len(vals):.3f} ({min(vals):.3f}–{max(vals):.3f})" if vals else "–")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for a, b in PAIRS:
        key = f"{a} - {b}"
        lines += ["", f"Paired difference {a} minus {b} (two-level bootstrap 95% CI, p):", "",
                  "| corpus seed | " + " | ".join(f"N={x}" for x in budgets) + " |", "|---|" + "---|" * len(budgets)]
        for r in rows:
            p = r["headline"]["paired"].get(key, {})
            cells = []
            for x in budgets:
                d = p.get(x)
                cells.append("–" if not d else f"{_fmt(d['mean_diff'], sign=True)} ({_fmt(d['ci'][0], sign=True)} to "
                                                 f"{_fmt(d['ci'][1], sign=True)}), p={_fmt(d['p_value'], 3)}")
            lines.append(f"| {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/demo_seeds")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--reuse", action="store_true", help="only read finished runs (seed<k>/results.json)")
    mode.add_argument("--corpus-only", action="store_true",
                    help="write only each seed's study corpus and tokenizer (seconds, not an hour), for the benchmarks "
                         "that pretrain their own runs on them (method_quality.py, preset_selection.py)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="settings on top of the study, as for `radpair demo --study`")
    args = ap.parse_args(argv)
    from radpair_train.demo import DemoConfig, run_demo, study_config, write_corpus_and_tokenizer

    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        folder = out / f"seed{seed}"
        cfg = from_dict(DemoConfig, apply_overrides(to_dict(study_config()), [*args.overrides, f"seed={seed}"]))
        if args.corpus_only:
            write_corpus_and_tokenizer(cfg, folder)
            print(f"seed {seed}: corpus and tokenizer in {folder}", flush=True)
            continue
        if args.reuse:
            results = json.loads((folder / "results.json").read_text())
        else:
            results = run_demo(cfg, folder, progress=False)
        rows.append({"seed": seed, "headline": results["headline"], "total_seconds": results.get("total_seconds"),
                     "stage_seconds": results.get("stage_seconds")})
        print(json.dumps(rows[-1]["headline"]["paired"]), flush=True)
    if args.corpus_only:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_seeds.json").write_text(json.dumps({"rows": rows}, indent=2))
    table = tabulate(rows)
    (out / "demo_seeds.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo's transfer arms at chosen budgets, on a finished demo folder.

When a protocol change reruns only some budgets (the fine-tune step-limit floor reran only
the all-label budget), this runs the demo's four arms there on the demo's corpus and ConVIRT
encoder, reusing every cell whose fingerprint still matches, and writes the headline (mean
per arm, the paired differences README quotes) for those budgets:

    python benchmarks/demo_arms_at_budget.py --demo-dir runs/calib_seeds --seed 1 --n all

``--work-dir`` runs on a copy of the demo whose corpus was re-made elsewhere (its corpus and
transfer folders), with the encoder still read from the demo folder. Writes
``<work-dir>/headline_<budgets>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-dir", type=Path, required=True, help="folder holding seed<k>/ demo outputs")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--n", nargs="+", default=["all"], help="budgets to run (default: all)")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="folder with the corpus/ and transfer/ to use (default: the demo's seed folder)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    from radpair.transfer import run_transfer
    from radpair_train.demo import _headline, study_config

    demo = args.demo_dir / f"seed{args.seed}"
    work = args.work_dir or demo
    encoder = demo / "pretrain" / "image_encoder.safetensors"
    if not encoder.is_file():
        raise SystemExit(f"{encoder}: no ConVIRT encoder; run the demo for seed {args.seed} first")
    tcfg = study_config().transfer  # the study's settings: a reused cell's fingerprint proves they match
    tcfg.encoders = [f"convirt={encoder}", "random"]
    tcfg.n, tcfg.arch, tcfg.seed, tcfg.workers = list(args.n), "resnet_tiny", args.seed, args.workers
    result = run_transfer(tcfg, work / "corpus", work / "transfer", log=print)
    headline = _headline(result)
    out = work / f"headline_{'_'.join(args.n)}.json"
    out.write_text(json.dumps(headline, indent=1))
    print(json.dumps(headline["means"]))
    print(json.dumps({pair: v for pair, v in headline["paired"].items()}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What does a whole transfer sweep cost next to one feature-extraction pass?

The frozen protocols reuse one forward pass per image: features are extracted once per
start and every budget, repeat and grid value works on the cached (N, D) array. This
benchmark checks that the rest (subset draws, the linear grid, the frozen-head grid with
early stopping, validation selection and bootstrap scoring) stays small next to that pass:
a ResNet-18 at 224 px on 2,000 synthetic images, 4 budgets x 5 repeats, ``linear`` and
``frozen-head``, compared in the same run with a plain extraction pass over the same images.

    python benchmarks/transfer_sweep.py                   # generates the corpus once under --work
    python benchmarks/transfer_sweep.py --json out.json --rounds 2

Acceptance (issue 9): sweep time <= 1.3 x one extraction pass.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/bench_transfer_sweep")
    ap.add_argument("--n-images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="alternate extraction-only and sweep this many times")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from radpair.data.corpus import Corpus
    from radpair.data.synth import generate_corpus
    from radpair.tasks import load_task
    from radpair.transfer import TransferConfig, run_transfer
    from radpair.transfer.heads import build_start_encoder
    from radpair.transfer.sweep import encoder_features, load_task_data, make_subsets
    from radpair.transfer.subsets import parse_budgets

    work = Path(args.work)
    corpus_dir = work / f"corpus_{args.n_images}_{args.size}"
    if (corpus_dir / "meta.json").is_file():
        corpus = Corpus.open(corpus_dir)
    else:
        t0 = time.perf_counter()
        corpus = generate_corpus(corpus_dir, n_images=args.n_images, size=args.size, seed=0, workers=2)
        print(f"corpus: {time.perf_counter() - t0:.0f}s", flush=True)

    cfg = TransferConfig(task="findings7", encoders=["random"], arch=args.arch, protocols=["linear", "frozen-head"],
                         n=["10", "100", "1000", "all"], repeats=5, seed=0)
    spec = load_task(cfg.task)
    data = load_task_data(corpus, spec, spec.views)
    subsets = make_subsets(data, parse_budgets(cfg.n), cfg.repeats, cfg.seed, cfg.val, None, lambda s: None)
    rows = np.unique(np.concatenate([data.train_rows[s.train] for s in subsets]
                                    + [data.val_rows[s.val] for s in subsets] + [data.test_rows]))
    image_rows = data.image_index[rows]
    rounds = []
    for r in range(args.rounds):
        enc = build_start_encoder(None, args.arch, 0)
        t0 = time.perf_counter()
        encoder_features(enc, corpus, image_rows, False, cfg.feature_batch, torch.device("cpu"))
        extract_s = time.perf_counter() - t0
        out = work / f"sweep_round{r}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        result = run_transfer(cfg, corpus, out, log=lambda s: None)
        sweep_s = time.perf_counter() - t0
        row = {"round": r, "images": int(rows.size), "extract_s": round(extract_s, 2), "sweep_s": round(sweep_s, 2),
               "ratio": round(sweep_s / extract_s, 3), "sweep_timing": result.timing}
        rounds.append(row)
        print(json.dumps(row), flush=True)
    env = result.environment
    summary = {"arch": args.arch, "size": args.size, "n_images": args.n_images, "threads": args.threads,
               "cpu": env.get("cpu"), "torch": env.get("torch"), "rounds": rounds,
               "worst_ratio": max(r["ratio"] for r in rounds), "target": 1.3,
               "meets_target": all(r["ratio"] <= 1.3 for r in rounds)}
    print(f"sweep / extraction: {[r['ratio'] for r in rounds]} (target <= 1.3) on {summary['cpu']}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

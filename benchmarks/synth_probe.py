"""A quick difficulty probe for one set of generator knobs: the lever table of docs/synthetic.md.

Calibrating the corpus (issue 10) meant trying knob settings faster than the full
benchmark (`synth_calibration.py`, the transfer protocol's tuned from-scratch arm, about an
hour per seed) allows. This probe trains the same ResNet from scratch at one fixed
learning rate (3e-3, weight decay 1e-4) for a fixed number of steps on 100 labels (two
draws) and, with ``--all``, on every training label, and scores it on the *validate*
split against the drawn truth at the best step. The best step is chosen on the same
split, so the numbers are a little optimistic: they rank settings, they do not measure a
method; the benchmark is the measurement of record. No test-split image is read.

    python benchmarks/synth_probe.py --out runs/probe/classic --difficulty classic
    python benchmarks/synth_probe.py --out runs/probe/c50 --all conspicuity=0.5 noise=1.3 \\
        anatomy_variation=1.5 heart_size_confounding=1.0

Each N=100 draw takes about 2-4 min on 2 cores, the all-label run about 10 min; generating
a 20,000-image corpus about 2-3 min (kept in ``--out`` for a rerun).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="corpus folder (reused when complete) and probe.json")
    ap.add_argument("--difficulty", default="default", help="preset the knobs apply to (default: default)")
    ap.add_argument("--n-images", type=int, default=20000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=2, help="draws of 100 labels (default 2)")
    ap.add_argument("--steps", type=int, default=600, help="steps at N=100 (default 600)")
    ap.add_argument("--all", action="store_true", help="also train on every training label (3,000 steps)")
    ap.add_argument("knobs", nargs="*", metavar="key=value", help="SynthConfig knobs on top of the preset")
    args = ap.parse_args(argv)

    from radpair.config import parse_overrides
    from radpair.data.corpus import Corpus
    from radpair.data.synth import generate_corpus, load_synth_config
    from radpair.evaluation.taskmetrics import score_task
    from radpair.tasks import load_task, task_labels
    from radpair.transfer.config import FinetuneSettings
    from radpair.transfer.subsets import Budget, draw_generator, draw_rows
    from radpair.transfer.sweep import load_task_data
    from radpair.transfer.training import finetune_one

    knobs = parse_overrides(args.knobs)
    root = Path(args.out)
    cfg = load_synth_config(args.difficulty, overrides=knobs)
    if not (root / "meta.json").is_file():
        t = time.perf_counter()
        generate_corpus(root, n_images=args.n_images, size=args.size, seed=args.seed, workers=2, config=cfg)
        print(f"corpus generated in {time.perf_counter() - t:.0f}s", flush=True)
    corpus = Corpus.open(root)
    if corpus.meta.get("generator", {}).get("config") != cfg.to_dict():
        raise SystemExit(f"{root} holds a corpus made with other knobs; use another --out")
    spec = load_task("findings7")
    data = load_task_data(corpus, spec, ["PA", "AP"])
    truth_val = task_labels(corpus, spec, "truth", data.val_rows)

    def train(rows: np.ndarray, steps: int, draw: int) -> dict:
        settings = FinetuneSettings(max_steps=steps, min_steps=steps, min_epochs=0, patience=10**6,
                                    eval_every=max(10, steps // 20))
        job = {"corpus": str(root), "train_rows": data.image_index[data.train_rows[rows]],
               "val_rows": data.image_index[data.val_rows], "train": data.train.take(rows), "val": truth_val,
               "start": {"weights": None, "arch": "resnet_tiny", "seed": 0},
               "config": {"lr": 3e-3, "weight_decay": 1e-4}, "settings": settings, "seed": (draw, 7)}
        t = time.perf_counter()
        fit = finetune_one(job)
        m = score_task("multilabel", truth_val.y, truth_val.mask, fit.val_probs, truth_val.class_names)
        return {"macro_auc": round(float(m.values["macro_auc"]), 4),
                "per_class": {k: round(float(v["auc"]), 3) for k, v in m.per_class.items()},
                "best_step": fit.best_at, "seconds": round(time.perf_counter() - t)}

    results: dict[str, list] = {"100": []}
    for draw in range(args.draws):
        rows = draw_rows(data.train, data.patients[data.train_rows], 100,
                         draw_generator(0, Budget.parse("100"), draw, 0)).rows
        results["100"].append(train(rows, args.steps, draw))
        print("N=100", draw, json.dumps(results["100"][-1]), flush=True)
    if args.all:
        results["all"] = [train(np.flatnonzero(data.train.usable_rows), 3000, 0)]
        print("N=all", json.dumps(results["all"][-1]), flush=True)
    out = {"difficulty": args.difficulty, "knobs": knobs, "n_images": len(corpus), "seed": args.seed,
           "train_pool": int(len(data.train_rows)),
           "label_agreement": corpus.meta.get("report_agreement", {}).get("overall"), "results": results}
    (root / "probe.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: [r["macro_auc"] for r in v] for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

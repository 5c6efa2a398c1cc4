"""Calibrate the synthetic corpus's difficulty with a small CNN trained from scratch.

The default difficulty should make image signal subtle but learnable: a CNN trained on
every training label should reach a macro AUC of roughly 0.80-0.92 over the seven
findings, and one trained on only 100 labels should be clearly worse (>= 0.08 lower),
leaving room for report-supervised pretraining to help.

    OMP_NUM_THREADS=1 python benchmarks/synth_difficulty.py --n 3000 --size 64 --json out.json
    python benchmarks/synth_difficulty.py --set conspicuity=0.8 noise=1.2     # try other knobs

Labels are the generator's ground truth (what is drawn), frontal views only; the test
split is the corpus's patient-level ``test`` split. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from radpair.data.synth.config import DIFFICULTIES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3000, help="images to generate (default 3000)")
    p.add_argument("--size", type=int, default=64, help="image size (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="generator processes")
    p.add_argument("--difficulty", default="default", choices=list(DIFFICULTIES))
    p.add_argument("--set", nargs="*", default=[], metavar="key=value", help="SynthConfig overrides")
    p.add_argument("--corpus", help="reuse/create the corpus here (default: a temporary folder)")
    p.add_argument("--few", type=int, default=100, help="labels for the few-label model (default 100)")
    p.add_argument("--epochs", type=int, default=12, help="epochs of the all-label model (default 12)")
    p.add_argument("--few-steps", type=int, default=120, help="optimizer steps of the few-label model (default 120)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the CPU is shared)")
    p.add_argument("--json", help="also write the result here")
    return p.parse_args(argv)


def make_corpus(args: argparse.Namespace, root: Path):
    from radpair.config import parse_overrides
    from radpair.data.corpus import Corpus
    from radpair.data.synth import generate_corpus, load_synth_config

    cfg = load_synth_config(args.difficulty, overrides=parse_overrides(args.set))
    if (root / "meta.json").is_file():
        c = Corpus.open(root)
        gen = c.meta.get("generator", {})
        if (c.meta.get("n_images") == args.n and list(c.image_size) == [args.size] * 2
                and gen.get("seed") == args.seed and gen.get("config") == cfg.to_dict()):
            return c, 0.0
    t0 = time.perf_counter()
    c = generate_corpus(root, n_images=args.n, size=args.size, seed=args.seed, workers=args.workers, config=cfg)
    return c, time.perf_counter() - t0


def build_model(n_out: int):
    import torch.nn as nn

    def block(cin: int, cout: int, stride: int) -> list:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(1, 16, 1), nn.MaxPool2d(2),
        *block(16, 32, 1), nn.MaxPool2d(2),
        *block(32, 64, 1), nn.MaxPool2d(2),
        *block(64, 64, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, n_out),
    )


def train_eval(x_train, y_train, x_test, y_test, steps: int, seed: int, batch: int = 64) -> dict:
    """Train from scratch for ``steps`` optimizer steps; macro AUC on the test images."""
    import torch
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(y_train.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    pos = y_train.mean(0).clip(0.02, 0.98)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / pos, dtype=torch.float32).sqrt())
    xt = torch.from_numpy(x_train)
    yt = torch.from_numpy(y_train.astype(np.float32))
    n = len(xt)
    model.train()
    for _ in range(steps):
        idx = rng.integers(0, n, min(batch, n))
        xb = xt[idx]
        if rng.random() < 0.5:  # small shift augmentation
            dx, dy = rng.integers(-2, 3, 2)
            xb = torch.roll(xb, shifts=(int(dy), int(dx)), dims=(2, 3))
        loss = loss_fn(model(xb), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.inference_mode():
        scores = torch.cat([torch.sigmoid(model(torch.from_numpy(x_test[i:i + 256])))
                            for i in range(0, len(x_test), 256)]).numpy()
    aucs = {}
    for j in range(y_test.shape[1]):
        if 0 < y_test[:, j].sum() < len(y_test):
            aucs[j] = float(roc_auc_score(y_test[:, j], scores[:, j]))
    return {"macro_auc": float(np.mean(list(aucs.values()))), "per_class": aucs}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from radpair.data.synth import FINDINGS
    from radpair.data.tensors import images_to_tensor

    torch.set_num_threads(args.threads)
    tmp = None
    if args.corpus:
        root = Path(args.corpus)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="synth_difficulty_")
        root = Path(tmp.name) / "corpus"
    corpus, gen_s = make_corpus(args, root)
    idx = corpus.index
    truth = corpus.labels("ground_truth")[list(FINDINGS)].to_numpy(dtype=np.float32)
    frontal = idx["view"].isin(["PA", "AP"]).to_numpy()
    tr = np.flatnonzero(frontal & (idx["split"] == "train").to_numpy())
    te = np.flatnonzero(frontal & (idx["split"] == "test").to_numpy())
    rows = idx["image_index"].to_numpy()
    x = images_to_tensor(np.asarray(corpus.images)).numpy()
    x_tr, y_tr = x[rows[tr]], truth[tr]
    x_te, y_te = x[rows[te]], truth[te]
    rng = np.random.default_rng(args.seed)
    few = rng.choice(len(tr), size=min(args.few, len(tr)), replace=False)

    t0 = time.perf_counter()
    steps_all = int(np.ceil(len(tr) / 64)) * args.epochs
    res_all = train_eval(x_tr, y_tr, x_te, y_te, steps_all, args.seed)
    t_all = time.perf_counter() - t0
    t0 = time.perf_counter()
    res_few = train_eval(x_tr[few], y_tr[few], x_te, y_te, args.few_steps, args.seed)
    t_few = time.perf_counter() - t0
    names = list(FINDINGS)
    out = {
        "difficulty": args.difficulty,
        "overrides": args.set,
        "n_images": args.n,
        "size": args.size,
        "seed": args.seed,
        "generate_seconds": round(gen_s, 1),
        "n_train_frontal": int(len(tr)),
        "n_test_frontal": int(len(te)),
        "test_positives": {names[j]: int(y_te[:, j].sum()) for j in range(len(names))},
        "report_agreement": corpus.meta["report_agreement"]["overall"]["agreement"],
        "all_labels": {"macro_auc": round(res_all["macro_auc"], 4), "steps": steps_all, "seconds": round(t_all, 1),
                       "per_finding": {names[j]: round(v, 4) for j, v in res_all["per_class"].items()}},
        "few_labels": {"n_labels": int(len(few)), "macro_auc": round(res_few["macro_auc"], 4),
                       "steps": args.few_steps, "seconds": round(t_few, 1),
                       "per_finding": {names[j]: round(v, 4) for j, v in res_few["per_class"].items()}},
    }
    out["gap"] = round(out["all_labels"]["macro_auc"] - out["few_labels"]["macro_auc"], 4)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if tmp is not None:
        tmp.cleanup()
    return out


if __name__ == "__main__":
    main(sys.argv[1:])

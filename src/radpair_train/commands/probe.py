"""`radpair probe`: linear-probe transfer of exported encoders at N labelled images."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe",
        help="linear-probe one or more frozen encoders at N labels (AUC with patient-level CIs)",
    )
    p.add_argument("--corpus", required=True, help="corpus folder")
    p.add_argument("--encoder", action="append", required=True, metavar="[NAME=]FILE",
                   help="exported image_encoder.safetensors; repeat to compare encoders")
    p.add_argument("--labels", required=True, help="comma-separated label columns")
    p.add_argument("--label-source", default="ground_truth", choices=["ground_truth", "index"])
    p.add_argument("--n", default="10,100,1000,all", help="label budgets (default: 10,100,1000,all)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", default="", help="comma-separated views to keep, e.g. PA,AP (default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="folder for results.json and report.md")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import numpy as np

    from radpair.data.corpus import Corpus
    from radpair.errors import DataError
    from radpair.evaluation import extract_features, label_efficiency
    from radpair.evaluation.report_page import write_report
    from radpair.models.export import input_mismatches, load_image_encoder, read_safetensors_metadata
    from radpair_train.loop import check_output_dir

    out = check_output_dir(args.out)
    corpus = Corpus.open(args.corpus)
    labels = [c.strip() for c in args.labels.split(",") if c.strip()]
    frame = corpus.labels(args.label_source)
    missing = [c for c in labels if c not in frame.columns]
    if missing:
        raise DataError(f"{corpus.root}: label columns {missing} not found (available: {list(frame.columns)[1:]})")
    keep = np.ones(len(corpus), dtype=bool)
    if args.views:
        keep &= corpus.index["view"].isin(args.views.split(",")).to_numpy()
    train = np.flatnonzero((corpus.index["split"] == "train").to_numpy() & keep)
    test = np.flatnonzero((corpus.index["split"] == "test").to_numpy() & keep)
    Y = frame[labels].apply(lambda s: s.astype(float)).to_numpy()
    groups = corpus.index["patient_id"].astype(str).to_numpy()
    rows = corpus.index["image_index"].to_numpy()
    feats = {}
    for spec in args.encoder:
        name, _, path = spec.rpartition("=")
        name = name or Path(path).parent.name or Path(path).stem
        enc = load_image_encoder(path)
        for problem in input_mismatches(read_safetensors_metadata(path), corpus):
            print(f"warning: {path}: {corpus.root} differs from the encoder's training images: {problem}",
                  file=sys.stderr)
        feats[name] = (
            extract_features(enc, corpus.images, indices=rows[train], device=args.device),
            extract_features(enc, corpus.images, indices=rows[test], device=args.device),
        )
    n_values = [v if v == "all" else int(v) for v in args.n.split(",")]
    result = label_efficiency(feats, Y[train], Y[test], groups[test], n_values=n_values, repeats=args.repeats,
                              seed=args.seed, train_groups=groups[train], class_names=labels)
    result.save_json(out / "results.json")
    write_report(out, result=result, title="radpair linear probe")
    for s in result.summaries():
        print(f"{s.method:>30s}  N={s.n!s:>5}  macro AUC {s.macro_mean:.3f}")
    return 0

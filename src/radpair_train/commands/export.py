"""`radpair export`: package one trained downstream model for use without this repository.

A thin layer over :func:`radpair.package.export_package`; the folder it writes is what
``radpair predict --model`` reads.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a self-contained model package (safetensors, JSON, model card, optional ONNX)",
        description="Package a transfer arm's encoder and head (--transfer RUN --arm ARM) or a pretraining run's own "
        "image classifier (--pretrain RUN): weights, resolved config, preprocessing spec, labels with thresholds "
        "chosen on validation, optional temperature scaling, training-feature statistics for out-of-distribution "
        "flags, and a model card with the SHA-256 of every file.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--transfer", metavar="RUN", help="a `radpair transfer` output folder (results.json, cells/)")
    src.add_argument("--pretrain", metavar="RUN", help="a finished `radpair pretrain` run whose method has its own "
                     "image classifier")
    p.add_argument("--arm", help="arm key or label of the transfer run, e.g. convirt:linear")
    p.add_argument("--budget", default=None, help="label budget of the cell (default: the one with the most labels)")
    p.add_argument("--repeat", type=int, default=None,
                   help="repeat of the cell (default: the best validation score at that budget)")
    p.add_argument("--task", default=None, help="--pretrain: the task its classifier predicts (default: the method's)")
    p.add_argument("--corpus", default=None, help="corpus folder, when not where the run recorded it")
    p.add_argument("--encoder", default=None, help="the start encoder file of a frozen arm, when not where the "
                   "transfer run recorded it")
    p.add_argument("--no-temperature", action="store_true", help="skip temperature scaling on validation outputs")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (needs pip install 'radpair[onnx]')")
    p.add_argument("--feature-sample", type=int, default=2000,
                   help="training images for the out-of-distribution statistics (0: none; default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the feature sample (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--out", "-o", required=True, help="package folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radpair.package import export_package

    export_package(args.out, transfer_run=args.transfer, arm=args.arm, budget=args.budget, repeat=args.repeat,
                   pretraining_run=args.pretrain, task=args.task, corpus=args.corpus, encoder=args.encoder,
                   temperature=not args.no_temperature, onnx=args.onnx, feature_sample=args.feature_sample,
                   seed=args.seed, device=args.device, overwrite=args.overwrite)
    return 0

"""`radpair pretrain --config FILE [key=value ...]`: run any registered method."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain an image encoder with a report-supervised method",
        description="Train with a YAML config; dotted overrides such as optim.lr=3e-4 data.batch_size=32 win.",
    )
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the newest readable checkpoint in train.out_dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.epochs=3")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radpair.config import load_config
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    result = Trainer(cfg).fit(resume=args.resume)
    if result.image_encoder_weights is None:  # not the main process of a distributed run
        return 0
    print(f"finished {result.steps} steps, final loss {result.final_loss:.4f}; encoder -> {result.image_encoder_weights}")
    return 0

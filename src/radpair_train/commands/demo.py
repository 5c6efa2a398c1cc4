"""`radpair demo`: the main job on the built-in synthetic corpus."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate a corpus, pretrain every method, measure few-label transfer, write a results page",
        description="Runs the whole pipeline on the synthetic corpus. Settings are a typed config; "
        "override any with key=value, e.g. n_images=3000 pretrain.optim.lr=5e-4.",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a two-minute run for smoke tests")
    size.add_argument("--study", action="store_true",
                      help="the ConVIRT study the docs quote: ConVIRT alone, 6 pretraining epochs, budgets 10, 100, "
                      "1000 and all (more than an hour on 2 cores)")
    p.add_argument("--config", help="YAML file with demo settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument("--methods", default=None, metavar="M1,M2",
                   help="pretraining methods to compare (default: every method that learns from reports: convirt,chauhan_ranking,"
                   "convirt_sections,radtex_captioning,tienet,timnet_matching); methods that write reports "
                   "also get a generated-reports section on the page")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radpair.config import apply_overrides, deep_merge, from_dict, to_dict
    from radpair_train.demo import DemoConfig, quick_config, run_demo, study_config
    from radpair_train.loop import check_output_dir

    check_output_dir(args.out)
    base = to_dict(quick_config() if args.quick else study_config() if args.study else DemoConfig())
    if args.config:
        import yaml
        from pathlib import Path

        base = deep_merge(base, yaml.safe_load(Path(args.config).read_text()) or {})
    merged = apply_overrides(base, args.overrides)
    if args.methods:
        merged["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    cfg = from_dict(DemoConfig, merged)
    run_demo(cfg, args.out, progress=not args.no_progress)
    return 0

"""`radpair transfer`: few-label transfer of encoders, every arm selected on validation only.

A thin layer over :func:`radpair.transfer.run_transfer`: flags fill a
:class:`~radpair.transfer.TransferConfig`, ``--config`` and ``key=value`` reach the rest
(grids, early stopping), and the results page is written beside ``results.json``.
"""

from __future__ import annotations

import argparse


def add_transfer_arguments(p: argparse.ArgumentParser, require_encoder: bool = True) -> None:
    p.add_argument("--corpus", required=True, help="corpus folder (radpair synth / radpair preprocess)")
    p.add_argument("--task", default=None,
                   help="built-in task name (radpair transfer --list-tasks) or a task YAML file (default: findings7)")
    p.add_argument("--encoder", action="append", required=require_encoder, metavar="[NAME=]FILE|random",
                   help="an exported image_encoder.safetensors, or 'random' (random init of --arch); repeat to compare")
    p.add_argument("--arch", default=None, help="architecture of the random start (default: resnet_tiny)")
    p.add_argument("--protocol", default=None,
                   help="comma-separated: linear, frozen-head, finetune (default: linear)")
    p.add_argument("--arm", action="append", default=[], metavar="START:PROTOCOL",
                   help="run only these arms instead of every encoder x protocol (repeatable)")
    p.add_argument("--n", default=None, help="label budgets: counts and/or 'all' (default: 10,100,1000,all)")
    p.add_argument("--fractions", default=None, help="label budgets as fractions of the pool, e.g. 0.005,0.01,0.1,1")
    p.add_argument("--repeats", type=int, default=None, help="subsets per budget (default: 5)")
    p.add_argument("--seed", type=int, default=None, help="sampling and initialisation seed (default: 0)")
    p.add_argument("--val", choices=["matched", "full"], default=None,
                   help="validation labels: a draw the size of the budget (default) or the whole split")
    p.add_argument("--train-labels", choices=["report", "truth", "index"], default=None,
                   help="source of training/selection labels (default: the task's)")
    p.add_argument("--test-labels", choices=["report", "truth", "index"], default=None,
                   help="source of test labels (default: the task's)")
    p.add_argument("--views", default=None, help="comma-separated views to keep, or 'all' (default: the task's)")
    p.add_argument("--head", choices=["linear", "timnet"], default=None, help="frozen-head head (default: linear)")
    p.add_argument("--manifest", default=None, help="a manifests/ folder of an earlier run: rerun exactly those subsets")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap replicates of test patients (default: 1000)")
    p.add_argument("--workers", type=int, default=None, help="processes for fine-tuning jobs (default: 1)")
    p.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N")
    p.add_argument("--config", help="YAML file with TransferConfig keys (flags given on the command line win)")
    p.add_argument("--out", required=True, help="output folder (results.json, report.md, manifests/, cells/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. finetune.max_steps=3000 linear.c_grid=[0.01,1]")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transfer",
        help="few-label transfer: encoders x protocols (linear, frozen-head, finetune) at label budgets, "
        "selected on validation, paired comparisons with CIs",
        description="Measure how well image encoders transfer with few labels. Every arm (start x protocol) trains on "
        "the same patient-level subsets, chooses its settings on the validate split only, and is scored on the "
        "test split with patient-bootstrap CIs and paired differences.",
    )
    add_transfer_arguments(p, require_encoder=False)
    p.add_argument("--list-tasks", action="store_true", help="list the built-in tasks and exit")
    p.set_defaults(func=run)


def _csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_config(args: argparse.Namespace):
    """TransferConfig defaults, then ``--config``, then the flags actually given, then key=value."""
    from radpair.config import apply_overrides, deep_merge, from_dict, read_yaml_mapping, to_dict
    from radpair.errors import ConfigError
    from radpair.transfer import TransferConfig

    base = to_dict(TransferConfig())
    if args.config:
        base = deep_merge(base, read_yaml_mapping(args.config))
    flags: dict = {}
    for key, value in (("task", args.task), ("arch", args.arch), ("repeats", args.repeats), ("seed", args.seed),
                       ("val", args.val), ("device", args.device), ("train_labels", args.train_labels),
                       ("test_labels", args.test_labels), ("manifest", args.manifest), ("n_bootstrap", args.bootstrap),
                       ("workers", args.workers)):
        if value is not None:
            flags[key] = value
    if args.encoder:
        flags["encoders"] = list(args.encoder)
    if args.protocol is not None:
        flags["protocols"] = _csv(args.protocol)
    if args.arm:
        flags["arms"] = list(args.arm)
    if args.n is not None or args.fractions is not None:
        flags["n"] = _csv(args.n or "")
        try:
            flags["fractions"] = [float(v) for v in _csv(args.fractions or "")]
        except ValueError:
            raise ConfigError(f"--fractions {args.fractions!r}: expected numbers such as 0.005,0.01,1") from None
    if args.views is not None:
        flags["views"] = [] if args.views.strip().lower() == "all" else _csv(args.views)
    if args.head is not None:
        flags["frozen_head"] = {"head": args.head}
    merged = apply_overrides(deep_merge(base, flags), args.overrides)
    try:
        cfg = from_dict(TransferConfig, merged)
    except ConfigError as exc:
        where = f" (flags, {args.config} or key=value)" if args.config else ""
        raise ConfigError(f"{exc}{where}") from None
    cfg.validate()
    return cfg


def run(args: argparse.Namespace, task=None) -> int:
    """``task``: a TaskSpec built by the caller (the probe alias's ``--labels``)."""
    import shlex
    import sys

    from radpair.errors import ConfigError
    from radpair.evaluation.transfer_page import write_transfer_report
    from radpair.tasks import load_task, task_names
    from radpair.transfer import run_transfer
    from radpair_train.loop import check_output_dir

    if args.list_tasks:
        for name in task_names():
            t = load_task(name)
            print(f"{name:<22s} {t.schema:<10s} {t.description}")
        return 0
    cfg = build_config(args)
    if args.encoder is None and "encoders" not in _config_keys(args.config):
        raise ConfigError("give at least one --encoder (an exported image_encoder.safetensors, or random)")
    out = check_output_dir(args.out)
    result = run_transfer(cfg, args.corpus, out, progress=not args.no_progress, task=task)
    command = " ".join(shlex.quote(a) for a in ["radpair", *sys.argv[1:]]) if sys.argv else "radpair transfer"
    result.config["command"] = command
    result.save(out / "results.json")
    pages = write_transfer_report(out, result, title=f"radpair transfer: {result.task['name']}")
    print_summary(result)
    print(f"results: {out / 'results.json'}; page: {pages.get('markdown', out / 'report.md')}")
    return 0


def _config_keys(path: str | None) -> set[str]:
    from radpair.config import read_yaml_mapping

    return set(read_yaml_mapping(path)) if path else set()


def print_summary(result) -> None:
    metric = result.primary_metric
    for arm in result.arm_keys:
        cells = []
        for b in result.budgets:
            try:
                s = result.summary(arm, b, metric)
            except Exception:  # noqa: BLE001 - a budget an arm did not run
                continue
            if s.get("mean") is not None:
                cells.append(f"N={b} {s['mean']:.3f}")
        print(f"{result.arm_label(arm):>44s}  {metric}: " + ", ".join(cells))

"""`radpair evaluate retrieval|zeroshot|matching|generation`: evaluate a joint image-text run without labels for
training, or score generated reports.

A thin layer over :func:`radpair.evaluation.retrieval.evaluate_retrieval`,
:func:`radpair.evaluation.zeroshot.evaluate_zeroshot`,
:func:`radpair.evaluation.matching.evaluate_matching` and
:func:`radpair.evaluation.generation.evaluate_generation`. ``--checkpoint`` is a run folder
(the ``train.out_dir`` of ``radpair pretrain``); results go to ``--out`` as JSON and a
short Markdown table, and the table is printed. ``generation`` needs no run: it reads a
CSV of generated reports and the references.
"""

from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="RUN",
                   help="run folder of `radpair pretrain` (config.yaml, *_encoder.safetensors, checkpoints/)")
    p.add_argument("--corpus", required=True, help="corpus folder (radpair synth / radpair preprocess)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer folder (default: the one recorded in RUN/config.yaml, text_encoder.tokenizer)")
    p.add_argument("--out", default=None, help="output folder for the JSON and Markdown results (default: print only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pool draw / bootstrap (default: 0)")
    p.add_argument("--views", default=None, help="comma-separated views to keep, or 'all'")
    p.add_argument("--batch-size", type=int, default=256, help="images / texts per forward pass (default: 256)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="zero-shot classification, image<->text retrieval and matching of a joint-embedding run",
        description="Evaluate a joint image-text run (e.g. ConVIRT) directly in its embedding space.",
    )
    kinds = p.add_subparsers(dest="evaluation", metavar="KIND")
    r = kinds.add_parser(
        "retrieval", help="image->text and text->image Recall@1/5/10 and median rank, with chance rates",
        description="Rank a pool of held-out pairs by cosine similarity; a candidate whose report text equals the "
        "query's (after the run's section policy and tokenizer normalisation) is a hit; chance is computed the same "
        "way. See docs/retrieval.md.",
    )
    _common(r)
    r.add_argument("--split", default="test", help="split the pool is drawn from (default: test)")
    r.add_argument("--pool-size", type=int, default=None, metavar="N",
                   help="draw N pairs of the split from --seed (default: every pair)")
    r.set_defaults(func=run_retrieval)
    z = kinds.add_parser(
        "zeroshot", help="classification from class prompts, prompt sets chosen on validate only",
        description="Score each class by similarity to positive minus negative prompts; each class's prompt set and "
        "threshold are chosen on the validate split, then the test split is scored with patient-bootstrap CIs. "
        "See docs/retrieval.md.",
    )
    _common(z)
    z.add_argument("--task", default="findings7",
                   help="binary or multi-label task name or YAML file (default: findings7)")
    z.add_argument("--prompts", default=None,
                   help="prompt file name or YAML path (default: the one named like the task)")
    z.add_argument("--val-labels", choices=["report", "truth", "index"], default=None,
                   help="labels of the validate split used for the choice (default: the task's training labels)")
    z.add_argument("--test-labels", choices=["report", "truth", "index"], default=None,
                   help="test labels (default: the task's; index when it says truth and the corpus has none)")
    z.add_argument("--bootstrap", type=int, default=1000, help="patient-bootstrap replicates (default: 1000)")
    z.set_defaults(func=run_zeroshot)
    m = kinds.add_parser(
        "matching", help="image-report matching accuracy, AUC, F1, precision, recall and AP (TIMNet's Table I)",
        description="Score a matching run's classifier on every held-out pair and one false pair per image (a "
        "partner's text, never an identical report), balanced. See docs/methods.md.",
    )
    _common(m)
    m.add_argument("--split", default="test", help="split the pairs come from (default: test)")
    m.set_defaults(func=run_matching)
    g = kinds.add_parser(
        "generation", help="BLEU-1..4, ROUGE-L, CIDEr-D, METEOR and CheXpert clinical efficacy of generated reports",
        description="Score generated reports (CSV: image_id, report|generated) against references joined by id, "
        "with bootstrap CIs; --compare gives paired differences with another system. See docs/generation.md.",
    )
    g.add_argument("--pred", required=True, metavar="CSV", help="generated reports: image_id, report (or generated)")
    g.add_argument("--ref", required=True, metavar="REF",
                   help="references: a CSV with image_id, report, or a radpair corpus folder")
    g.add_argument("--ref-sections", default=None, metavar="POLICY",
                   help="section policy applied to the reference text (default: findings for a corpus, the text as "
                   "given for a CSV)")
    g.add_argument("--id-column", default="image_id", help="id column joining the two (default: image_id)")
    g.add_argument("--out", default=None, help="output folder for generation_metrics.json, per_report.csv and the "
                   "Markdown table (default: print only)")
    g.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (default: 1000; 0: no CIs)")
    g.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws (default: 0)")
    g.add_argument("--compare", default=None, metavar="OTHER_CSV",
                   help="a second system's generated reports for the same ids: paired differences pred - other")
    g.add_argument("--no-meteor", action="store_true", help="skip METEOR (it needs Java and ~10 s to start)")
    g.add_argument("--meteor-timeout", type=float, default=600.0, metavar="S",
                   help="give up on METEOR after S seconds (default: 600); the result says why")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.set_defaults(func=run_generation)
    p.set_defaults(func=lambda args: _no_kind(p))


def _no_kind(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _views(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text.strip().lower() == "all":
        return []
    return [v.strip() for v in text.split(",") if v.strip()]


def _device(name: str) -> str:
    import torch

    from radpair.errors import ConfigError

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here")
    return name


def _prepare(args: argparse.Namespace):
    from pathlib import Path

    from radpair.errors import ConfigError
    from radpair.evaluation.joint import load_joint_run

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    out = None
    if args.out:
        from radpair_train.loop import check_output_dir

        out = check_output_dir(args.out)
    if not Path(args.corpus).is_dir():
        raise ConfigError(f"corpus folder {args.corpus!r} does not exist")
    run = load_joint_run(args.checkpoint, tokenizer=args.tokenizer, device=_device(args.device))
    return run, out


def _finish(result, out) -> int:
    import shlex
    import sys

    result.command = " ".join(shlex.quote(a) for a in ["radpair", *sys.argv[1:]])
    print(result.to_markdown(), end="")
    if out is not None:
        paths = result.save(out)
        print(f"results: {paths['json']}; table: {paths['markdown']}")
    return 0


def run_retrieval(args: argparse.Namespace) -> int:
    from radpair.evaluation.retrieval import evaluate_retrieval

    run, out = _prepare(args)
    result = evaluate_retrieval(run, args.corpus, split=args.split, pool_size=args.pool_size, seed=args.seed,
                                views=_views(args.views), batch_size=args.batch_size, progress=not args.no_progress)
    return _finish(result, out)


def run_zeroshot(args: argparse.Namespace) -> int:
    from radpair.evaluation.zeroshot import evaluate_zeroshot

    run, out = _prepare(args)
    result = evaluate_zeroshot(run, args.corpus, task=args.task, prompts=args.prompts, val_labels=args.val_labels,
                               test_labels=args.test_labels, views=_views(args.views),
                               n_bootstrap=args.bootstrap, seed=args.seed, batch_size=args.batch_size,
                               progress=not args.no_progress)
    return _finish(result, out)


def run_matching(args: argparse.Namespace) -> int:
    from radpair.evaluation.matching import evaluate_matching

    run, out = _prepare(args)
    result = evaluate_matching(run, args.corpus, split=args.split, seed=args.seed, views=_views(args.views),
                               batch_size=args.batch_size, progress=not args.no_progress)
    return _finish(result, out)


def _writable_dir(path: str):
    from radpair_train.output_dir import check_output_dir

    return check_output_dir(path)


def run_generation(args: argparse.Namespace) -> int:
    from radpair.errors import ConfigError
    from radpair.evaluation.generation import evaluate_generation

    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    # checked before any work; not via radpair_train.loop, which would import torch for nothing
    out = _writable_dir(args.out) if args.out else None
    result = evaluate_generation(args.pred, args.ref, id_column=args.id_column, ref_sections=args.ref_sections,
                                 n_bootstrap=args.bootstrap, seed=args.seed, compare=args.compare,
                                 meteor=False if args.no_meteor else "auto", meteor_timeout=args.meteor_timeout,
                                 progress=not args.no_progress)
    import shlex
    import sys

    result.command = " ".join(shlex.quote(a) for a in ["radpair", *sys.argv[1:]])
    print(result.to_markdown(), end="")
    if out is not None:
        paths = result.save(out)
        print(f"results: {paths['json']}; per report: {paths['per_report']}; table: {paths['markdown']}")
    return 0

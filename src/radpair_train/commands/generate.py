"""`radpair generate`: write a report for each radiograph of a corpus with a captioning run.

A thin layer over :func:`radpair.generation.generate.generate_reports`. ``--checkpoint``
is the run folder of a report-writing method (``radtex_captioning``, ``tienet``); the CSV
(``image_id, patient_id, study_id, report, n_tokens, finished, score``) goes to ``--out``
with a JSON of the run, decoding settings and speed beside it, ready for
``radpair evaluate generation --pred OUT.csv --ref CORPUS``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="write reports for the radiographs of a corpus with a captioning run (RadTex, TieNet)",
        description="Greedy, beam or nucleus decoding with a finished captioning run; see docs/generation.md.",
    )
    p.add_argument("corpus", metavar="CORPUS", help="corpus folder (radpair synth / radpair preprocess)")
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run folder of `radpair pretrain`")
    p.add_argument("-o", "--out", required=True, metavar="OUT.csv", help="CSV of generated reports")
    p.add_argument("--split", default="test", help="split to write reports for, or 'all' (default: test)")
    p.add_argument("--views", default=None, help="comma-separated views to keep (default: all views)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    p.add_argument("--strategy", choices=["greedy", "beam", "nucleus"], default=None,
                   help="decoding strategy (default: greedy; beam when --beam is given)")
    p.add_argument("--beam", type=int, default=None, metavar="W", help="beam search with width W")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score = logprob / length**p (default: 1)")
    p.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N", help="forbid repeated N-grams (0: off)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default: 0.9)")
    p.add_argument("--temperature", type=float, default=1.0, help="nucleus sampling temperature (default: 1)")
    p.add_argument("--max-length", type=int, default=None,
                   help="new tokens at most (default and ceiling: the decoder's positions less BOS)")
    p.add_argument("--min-length", type=int, default=0, help="no EOS before this many tokens (default: 0)")
    p.add_argument("--batch-size", type=int, default=32, help="images per decoding batch (default: 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of nucleus sampling (default: 0)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the run's)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def decoding_from_args(args: argparse.Namespace):
    from radpair.generation import DecodingConfig

    strategy = args.strategy or ("beam" if args.beam else "greedy")
    return DecodingConfig(strategy=strategy, max_length=args.max_length or 10**6, min_length=args.min_length,
                          beam_width=args.beam or 2, length_penalty=args.length_penalty,
                          no_repeat_ngram=args.no_repeat_ngram, top_p=args.top_p, temperature=args.temperature)


def run(args: argparse.Namespace) -> int:
    from radpair.generation.generate import generate_reports, write_generated

    views = [v.strip() for v in args.views.split(",") if v.strip()] if args.views else None
    result = generate_reports(args.checkpoint, args.corpus, split=args.split, views=views, limit=args.limit,
                              decoding=decoding_from_args(args), batch_size=args.batch_size, seed=args.seed,
                              tokenizer=args.tokenizer, device=args.device, progress=not args.no_progress)
    path = write_generated(result, args.out)
    unfinished = int((~result.frame["finished"].astype(bool)).sum())
    print(f"{len(result.frame)} reports -> {path} ({result.reports_per_second:.1f} reports/s; "
          f"{unfinished} stopped at the length limit)")
    for _, row in result.frame.head(3).iterrows():
        print(f"  {row['image_id']}: {row['report'][:160]}")
    return 0

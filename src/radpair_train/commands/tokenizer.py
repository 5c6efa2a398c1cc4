"""`radpair tokenizer`: train a WordPiece tokenizer on a corpus's reports."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train a WordPiece tokenizer on a corpus's report text")
    p.add_argument("--corpus", required=True, help="corpus folder (from synth or preprocess)")
    p.add_argument("--out", required=True, help="folder to save the Hugging Face tokenizer in")
    p.add_argument("--vocab-size", type=int, default=4000)
    p.add_argument("--split", default="train", help="which split's reports to train on (default: train)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radpair.data.corpus import Corpus
    from radpair.text import train_wordpiece_tokenizer
    from radpair_train.loop import check_output_dir

    check_output_dir(args.out)
    corpus = Corpus.open(args.corpus)
    texts = corpus.split_index(args.split)["report"].astype(str).tolist()
    tok = train_wordpiece_tokenizer(texts, args.out, vocab_size=args.vocab_size)
    print(f"tokenizer with {len(tok)} tokens trained on {len(texts)} reports -> {args.out}")
    return 0

"""`radpair tokenizer`: train a tokenizer on a corpus's reports (WordPiece, or one token per word)."""

from __future__ import annotations

import argparse

KINDS = ("wordpiece", "word")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train a tokenizer (WordPiece or word-level) on a corpus's report text")
    p.add_argument("--corpus", required=True, help="corpus folder (from synth or preprocess)")
    p.add_argument("--out", required=True, help="folder to save the Hugging Face tokenizer in")
    p.add_argument("--kind", choices=KINDS, default="wordpiece",
                   help="wordpiece (default): subword pieces; word: one token per word seen --min-count times, "
                        "[UNK] for the rest (TieNet's report vocabulary)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="vocabulary size, special tokens included (default: 4000 for wordpiece; no cap for word)")
    p.add_argument("--min-count", type=int, default=2,
                   help="word: keep words seen at least this often (default 2, as TieNet); wordpiece: the least "
                        "count of a merged pair")
    p.add_argument("--split", default="train", help="which split's reports to train on (default: train)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radpair.data.corpus import Corpus
    from radpair.text import train_word_tokenizer, train_wordpiece_tokenizer
    from radpair_train.loop import check_output_dir

    check_output_dir(args.out)
    corpus = Corpus.open(args.corpus)
    texts = corpus.split_index(args.split)["report"].astype(str).tolist()
    if args.kind == "word":
        tok = train_word_tokenizer(texts, args.out, min_count=args.min_count, max_vocab_size=args.vocab_size)
        what = f"word-level tokenizer ({len(tok)} tokens: words seen >= {args.min_count} times + 5 special)"
    else:
        tok = train_wordpiece_tokenizer(texts, args.out, vocab_size=args.vocab_size or 4000,
                                        min_frequency=args.min_count)
        what = f"tokenizer with {len(tok)} tokens"
    print(f"{what} trained on {len(texts)} reports -> {args.out}")
    return 0

"""`radpair word-vectors`: a word-embedding matrix aligned to a tokenizer's vocabulary.

    radpair word-vectors --tokenizer tok --corpus corpus --out tok/word2vec.safetensors [--dim 200]
    radpair word-vectors --tokenizer tok --vectors pubmed.bin --out tok/pubmed.safetensors

Trains gensim word2vec on a split's reports (the stand-in for TieNet's PubMed vectors:
nothing is downloaded) or reads a local vectors file, then writes one row per token id
(:func:`radpair.text.word_vectors.make_word_vectors`) and a JSON of its coverage beside it.
A TieNet run starts its word embedding from it with ``method.word_vectors=FILE``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("word-vectors", help="word2vec (or a local vectors file) aligned to a tokenizer's vocabulary",
                       description="Train word2vec on a corpus's reports (or read a local word2vec file) and write "
                                   "it as a matrix aligned to a tokenizer's vocabulary, for TieNet's "
                                   "method.word_vectors.")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder (radpair tokenizer --kind word)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", help="train word2vec on this corpus's reports")
    src.add_argument("--vectors", help="read this word2vec text (.txt/.vec) or binary (.bin) file instead")
    p.add_argument("--out", required=True, help="matrix file to write (.safetensors; a .json summary goes beside it)")
    p.add_argument("--split", default="train", help="with --corpus: which split's reports (default: train)")
    p.add_argument("--dim", type=int, default=None, help="vector size (default 200 as TieNet; with --vectors: checked)")
    p.add_argument("--epochs", type=int, default=5, help="word2vec passes over the reports (default 5)")
    p.add_argument("--window", type=int, default=5, help="word2vec context window (default 5)")
    p.add_argument("--seed", type=int, default=0, help="word2vec seed (training is single-threaded, so repeatable)")
    p.add_argument("--binary", action=argparse.BooleanOptionalAction, default=None,
                   help="with --vectors: binary format (default: by suffix, .bin/.bin.gz)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from radpair.text import load_tokenizer, make_word_vectors
    from radpair_train.output_dir import check_output_dir

    check_output_dir(Path(args.out).parent)
    tok = load_tokenizer(args.tokenizer)
    texts, source = None, {"tokenizer": str(args.tokenizer)}
    if args.corpus:
        from radpair.data.corpus import Corpus

        texts = Corpus.open(args.corpus).split_index(args.split)["report"].astype(str).tolist()
        source.update(corpus=str(args.corpus), split=args.split, reports=len(texts))
    summary = make_word_vectors(tok, args.out, texts=texts, vectors_file=args.vectors, binary=args.binary,
                                dim=args.dim, seed=args.seed, epochs=args.epochs, window=args.window, source=source)
    print(f"{summary['dim']}-d vectors for {summary['with_vector']} of {summary['words']} vocabulary words "
          f"({summary['coverage']:.1%}) -> {args.out}")
    return 0

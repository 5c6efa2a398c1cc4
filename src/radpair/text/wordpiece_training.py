"""A WordPiece vocabulary learned the way Hugging Face's trainer learns it, but reproducibly.

``tokenizers``' ``WordPieceTrainer`` (a BPE trainer with a ``##`` continuing-subword
prefix) gives a different vocabulary in every process: it numbers the ``##`` pieces in
hash-map iteration order, and those numbers break ties between merges of equal count
(huggingface/tokenizers#1794). Five trainings on the same 10k synthetic reports gave five
different vocabularies, so a demo or paper run could not be repeated token for token.

This module runs the same algorithm with every tie broken by the strings themselves:

1. texts are normalised and split into words by the same ``BertNormalizer`` and
   ``BertPreTokenizer`` that the saved tokenizer applies when encoding;
2. the alphabet is the ``limit_alphabet`` most frequent characters (ties by character);
   each word starts as its first character followed by ``##``-prefixed characters;
3. repeatedly, the adjacent pair with the highest count (ties: the smaller pair of
   strings) is merged, until the vocabulary is full or no pair occurs ``min_frequency``
   times.

Encoding still runs in ``tokenizers`` (Rust); only the vocabulary comes from here.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Iterable

PREFIX = "##"


def count_words(texts: Iterable[str], normalizer, pre_tokenizer) -> Counter:
    """Word frequencies after the tokenizer's own normalisation and pre-tokenisation."""
    words: Counter = Counter()
    for text in texts:  # streamed: only the word counts are kept
        if text:
            words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    return words


def learn_vocabulary(
    word_counts: Counter,
    vocab_size: int,
    special_tokens: list[str],
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
) -> list[str]:
    """Tokens in id order: special tokens, the alphabet, then merged pieces in merge order."""
    char_counts: Counter = Counter()
    for word, n in word_counts.items():
        for ch in word:
            char_counts[ch] += n
    alphabet = sorted(sorted(char_counts), key=lambda c: -char_counts[c])[:limit_alphabet]
    allowed = set(alphabet)

    vocab: list[str] = list(special_tokens)
    known = set(vocab)

    def add(token: str) -> None:
        if token not in known:
            known.add(token)
            vocab.append(token)

    for ch in sorted(alphabet):
        add(ch)
    # words as symbol lists; a word with a character outside the alphabet cannot be
    # spelled and (as in the reference trainer's output) becomes [UNK] when encoded
    words: list[list[str]] = []
    counts: list[int] = []
    for word in sorted(word_counts):
        if not set(word) <= allowed:
            continue
        words.append([word[0]] + [PREFIX + ch for ch in word[1:]])
        counts.append(word_counts[word])
    for piece in sorted({s for symbols in words for s in symbols[1:]}):
        add(piece)

    pair_counts: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += counts[i]
            where[pair].add(i)
    heap = [(-c, a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        neg, a, b = heapq.heappop(heap)
        if pair_counts.get((a, b), 0) != -neg:
            continue  # stale entry; the current count was pushed when it changed
        if -neg < min_frequency:
            break
        merged = a + b[len(PREFIX):] if b.startswith(PREFIX) else a + b
        add(merged)
        changed: Counter = Counter()
        for i in sorted(where.pop((a, b), ())):
            symbols, n = words[i], counts[i]
            j, out = 0, []
            while j < len(symbols):
                if j + 1 < len(symbols) and symbols[j] == a and symbols[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(symbols[j])
                    j += 1
            for pair in zip(symbols, symbols[1:]):
                changed[pair] -= n
            for pair in zip(out, out[1:]):
                changed[pair] += n
                where[pair].add(i)
            words[i] = out
        del pair_counts[(a, b)]
        for pair, delta in changed.items():
            if pair == (a, b) or delta == 0:
                continue
            pair_counts[pair] += delta
            if pair_counts[pair] <= 0:
                del pair_counts[pair]
            else:
                heapq.heappush(heap, (-pair_counts[pair], *pair))
    return vocab

"""The WordPiece vocabulary is learned reproducibly: a hand-checked merge order, and the
same vocabulary from separate processes (the ``tokenizers`` trainer gives a new one each
time, huggingface/tokenizers#1794)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

from radpair.text.wordpiece_training import learn_vocabulary


def test_merges_follow_counts_and_break_ties_by_string():
    words = Counter({"low": 5, "lower": 2, "newest": 6, "widest": 3})
    base = 10 + 8  # 10 characters, 8 continuing pieces (##d ##e ##i ##o ##r ##s ##t ##w)
    vocab = learn_vocabulary(words, vocab_size=base + 4, special_tokens=[], min_frequency=1)
    assert vocab[:10] == sorted("lowernstid")
    assert vocab[10:base] == ["##d", "##e", "##i", "##o", "##r", "##s", "##t", "##w"]
    # (##e,##s) and (##s,##t) both occur 9 times: the smaller pair wins; then (##o,##w)
    # and (l,##o) tie at 7 and "##" sorts before "l"
    assert vocab[base:] == ["##es", "##est", "##ow", "low"]


def test_min_frequency_stops_merging():
    vocab = learn_vocabulary(Counter({"ab": 1, "cd": 1}), vocab_size=100, special_tokens=["[UNK]"], min_frequency=2)
    assert vocab == ["[UNK]", "a", "b", "c", "d", "##b", "##d"]


def test_alphabet_limit_drops_rare_characters():
    vocab = learn_vocabulary(Counter({"aa": 10, "zq": 1}), vocab_size=100, special_tokens=[], limit_alphabet=1)
    assert "z" not in vocab and "q" not in vocab and "##q" not in vocab


_CHILD = """
import json, sys
from radpair.text import train_wordpiece_tokenizer
texts = json.loads(sys.argv[1])
print(json.dumps(sorted(train_wordpiece_tokenizer(texts, sys.argv[2], vocab_size=200).get_vocab().items())))
"""


def test_same_vocabulary_in_separate_processes(tmp_path):
    from radpair_train.testing import random_reports

    texts = random_reports(300, seed=1) + ["Pneumothorax resolved; pneumonia, pneumatocele."] * 3
    vocabs = [
        subprocess.run([sys.executable, "-c", _CHILD, json.dumps(texts), str(tmp_path / f"t{k}")],
                       check=True, capture_output=True, text=True).stdout
        for k in range(2)
    ]
    assert vocabs[0] == vocabs[1]
    ids = sorted(i for _, i in json.loads(vocabs[0]))
    assert ids == list(range(len(ids))) and 100 < len(ids) <= 200
    assert (tmp_path / "t0" / "tokenizer.json").read_bytes() == (tmp_path / "t1" / "tokenizer.json").read_bytes()

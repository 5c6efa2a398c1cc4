"""radpair's WordPiece training against the ``tokenizers`` trainer: reproducibility and result.

    python benchmarks/tokenizer_training.py [--corpus DIR] [--iu-xray DIR] [--processes 3] [--json out.json]

For each text set (a synthetic corpus's reports; the real IU X-ray findings + impressions
when ``../shared/data/iu_xray`` is present), both trainers run ``--processes`` times, each
in a fresh process, with the same vocabulary size and ``min_frequency=2``:

* ``distinct_vocabularies`` — how many different vocabularies (token -> id) the runs gave;
* ``vocab_size``, ``seconds`` (median);
* ``tokens_per_text`` and ``unk_rate`` when encoding the same texts;
* ``large_vocabulary_seconds`` — radpair's merge loop alone on 60k random word types with
  Zipf counts into a 30,000-token vocabulary (the scale of a MIMIC-CXR vocabulary);
* ``overlap_with_reference`` — the share of radpair's tokens that the ``tokenizers``
  trainer's first run also has, next to ``reference_run_to_run_overlap``, the share the
  reference's first two runs have in common.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from engine_common import REPO, machine, synthetic_corpus, write_json

CHILD = r"""
import json, sys, time
texts = json.load(open(sys.argv[2]))
vocab_size = int(sys.argv[3])
t0 = time.perf_counter()
if sys.argv[1] == 'radpair':
    from radpair.text import train_wordpiece_tokenizer
    tok = train_wordpiece_tokenizer(texts, sys.argv[4], vocab_size=vocab_size)
else:
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast
    wp = BertWordPieceTokenizer(lowercase=True, strip_accents=True, clean_text=True)
    wp.train_from_iterator((t for t in texts if t), vocab_size=vocab_size, min_frequency=2,
                           special_tokens=['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'], show_progress=False)
    tok = BertTokenizerFast(tokenizer_object=wp._tokenizer, do_lower_case=True, unk_token='[UNK]')
seconds = time.perf_counter() - t0
ids = tok(texts, add_special_tokens=False)['input_ids']
unk = tok.convert_tokens_to_ids('[UNK]')
n = sum(len(x) for x in ids)
json.dump({'seconds': seconds, 'vocab': tok.get_vocab(), 'tokens_per_text': n / len(texts),
           'unk_rate': sum(i == unk for x in ids for i in x) / max(n, 1)}, open(sys.argv[5], 'w'))
"""


def iu_xray_texts(folder: Path) -> list[str]:
    import pandas as pd

    frame = pd.read_csv(folder / "indiana_reports.csv")
    return [f"FINDINGS: {f if isinstance(f, str) else ''} IMPRESSION: {i if isinstance(i, str) else ''}"
            for f, i in zip(frame["findings"], frame["impression"])]


def compare(name: str, texts: list[str], vocab_size: int, processes: int, work: Path) -> dict:
    src = work / f"{name}-texts.json"
    src.write_text(json.dumps(texts))
    out: dict = {"texts": len(texts), "requested_vocab_size": vocab_size}
    runs: dict[str, list[dict]] = {"radpair": [], "tokenizers": []}
    for k in range(processes):
        for trainer in runs:
            result = work / f"{name}-{trainer}-{k}.json"
            subprocess.run([sys.executable, "-c", CHILD, trainer, str(src), str(vocab_size),
                            str(work / f"{name}-{trainer}-{k}"), str(result)], check=True)
            runs[trainer].append(json.loads(result.read_text()))
    for trainer, rs in runs.items():
        digests = {hashlib.sha256(json.dumps(sorted(r["vocab"].items())).encode()).hexdigest() for r in rs}
        out[trainer] = {"distinct_vocabularies": len(digests), "runs": len(rs), "vocab_size": len(rs[0]["vocab"]),
                        "seconds": statistics.median(r["seconds"] for r in rs),
                        "tokens_per_text": rs[0]["tokens_per_text"], "unk_rate": rs[0]["unk_rate"]}
    ours, ref = set(runs["radpair"][0]["vocab"]), set(runs["tokenizers"][0]["vocab"])
    out["overlap_with_reference"] = len(ours & ref) / len(ours)
    if processes > 1:  # how much two runs of the reference trainer itself share
        out["reference_run_to_run_overlap"] = len(ref & set(runs["tokenizers"][1]["vocab"])) / len(ref)
    print(name, json.dumps(out), flush=True)
    return out


def large_vocabulary_seconds(types: int = 60000, vocab_size: int = 30000) -> float:
    import time
    from collections import Counter

    import numpy as np

    from radpair.text.wordpiece_training import learn_vocabulary

    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(3, 13))) for _ in range(types)]
    counts = Counter(dict(zip(words, rng.zipf(1.3, types).clip(1, 10**6).tolist())))
    t0 = time.perf_counter()
    learn_vocabulary(counts, vocab_size, ["[PAD]", "[UNK]"], min_frequency=2)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=None, help="a corpus folder (default: a 10k-pair synthetic one)")
    p.add_argument("--iu-xray", default=str(REPO.parent / "shared" / "data" / "iu_xray"))
    p.add_argument("--processes", type=int, default=3)
    p.add_argument("--work", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="radpair-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.corpus:
        from radpair.data.corpus import Corpus

        corpus = Corpus.open(args.corpus)
    else:
        corpus = synthetic_corpus(work / "tok-corpus", 10000, 64, base=2000)
    result = {"benchmark": "tokenizer_training", "machine": machine(),
              "synthetic": compare("synthetic", corpus.index["report"].astype(str).tolist(), 3000, args.processes, work)}
    iu = Path(args.iu_xray)
    if (iu / "indiana_reports.csv").is_file():
        result["iu_xray"] = compare("iu_xray", iu_xray_texts(iu), 3000, args.processes, work)
    else:
        result["iu_xray"] = f"skipped: {iu / 'indiana_reports.csv'} not found"
    result["large_vocabulary_seconds"] = large_vocabulary_seconds()
    write_json(result, args.json)


if __name__ == "__main__":
    main()

"""Peak memory (RSS) while pretraining, against the number of pairs in the corpus.

    python benchmarks/engine_memory.py --sizes 10000,30000,100000 [--steps 30] [--json out.json]

For each corpus size a fresh process builds a ``Trainer`` (ConVIRT CPU preset,
``train.channels_last=true``, batch 64, 128 px) and trains ``--steps`` steps, recording
``/proc/self/status`` at each stage: after imports, after the trainer is built (reports
tokenised, model built) and during training (sampled every step). ``VmHWM`` is the peak
resident set; ``RssAnon`` is the process's own memory, ``RssFile`` the pages of mapped
files (the image memory map) that are resident — page cache the kernel can drop, which
grows with the images a run has touched, not with the corpus.

A last pair of processes isolates what used to be the largest term: tokenising every
report of the largest corpus in one call into int64 ids and masks (what ``PairDataset``
did until the fix) against ``radpair.data.pairs.tokenize_texts``, which it uses now
(chunks of 4096 into uint16 or int32 ids and int32 lengths): ``tokenize_whole`` / ``tokenize_chunked``.

The corpora are synthetic: ``--base`` pairs from the generator, repeated with new ids up to
each size (rendering 100k images would take longer than the measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from engine_common import PRESET, machine, synthetic_corpus, tokenizer_for, write_json

CHILD = r"""
import json, sys, time
def status():
    out = {}
    for line in open('/proc/self/status'):
        key, _, rest = line.partition(':')
        if key in ('VmHWM', 'VmRSS', 'RssAnon', 'RssFile'):
            out[key] = int(rest.split()[0]) / 1024  # MiB
    return out
stages = {'start': status()}
import torch
torch.set_num_threads(int(sys.argv[2]))
from radpair.config import load_config
from radpair_train.config import PretrainConfig
from radpair_train.loop import Trainer
stages['imports'] = status()
cfg = load_config(PretrainConfig, sys.argv[3], sys.argv[4:])
t0 = time.perf_counter()
trainer = Trainer(cfg)
stages['trainer_built'] = status()
stages['trainer_built']['seconds'] = time.perf_counter() - t0
peak = {}
def on_step(step, out):
    s = status()
    for k, v in s.items():
        peak[k] = max(peak.get(k, 0.0), v)
trainer.on_step = on_step
trainer.fit()
stages['training_max'] = peak
stages['end'] = status()
json.dump(stages, open(sys.argv[1], 'w'))
"""


TOKENIZE = r"""
import json, sys
import numpy as np
def status():
    out = {}
    for line in open('/proc/self/status'):
        key, _, rest = line.partition(':')
        if key in ('VmHWM', 'RssAnon'):
            out[key] = int(rest.split()[0]) / 1024
    return out
from radpair.data.corpus import Corpus
from radpair.text import load_tokenizer
tok = load_tokenizer(sys.argv[3])
texts = Corpus.open(sys.argv[2]).index['report'].astype(str).tolist()
before = status()
if sys.argv[4] == 'whole':
    enc = tok(texts, max_length=96, truncation=True, padding='max_length', return_tensors='np')
    ids, mask = enc['input_ids'].astype(np.int64), enc['attention_mask'].astype(np.int64)
    del enc
else:
    from radpair.data.pairs import tokenize_texts
    table = tokenize_texts(texts, tok, 96)
after = status()
json.dump({'pairs': len(texts), 'peak_increase_mib': after['VmHWM'] - before['VmHWM'],
           'retained_anon_mib': after['RssAnon'] - before['RssAnon']}, open(sys.argv[1], 'w'))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,30000,100000")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--base", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # children inherit it (see engine_common.set_threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="radpair-bench-"))
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        corpus = synthetic_corpus(work / f"mem-corpus-{n}-{args.size}", n, args.size, base=args.base)
        tok = work / "tokenizer-mem"
        tokenizer_for(corpus, tok)
        out = work / f"mem-{n}.json"
        overrides = [f"data.corpus={corpus.root}", f"text_encoder.tokenizer={tok}", f"train.out_dir={work / f'mem-run-{n}'}",
                     "train.progress=false", "train.device=cpu", "train.channels_last=true",
                     f"train.max_steps={args.steps}", "train.checkpoint_every=1000", f"train.threads={args.threads}"]
        subprocess.run([sys.executable, "-c", CHILD, str(out), str(args.threads), str(PRESET), *overrides], check=True)
        stages = json.loads(out.read_text())
        rows.append({"pairs": n, "images_file_mib": (corpus.root / "images.npy").stat().st_size / 2**20,
                     "peak_rss_mib": stages["end"]["VmHWM"], "stages_mib": stages})
        print(json.dumps(rows[-1]), flush=True)
    tokenize = {}
    for mode in ("whole", "chunked"):
        out = work / f"mem-tokenize-{mode}.json"
        subprocess.run([sys.executable, "-c", TOKENIZE, str(out), str(corpus.root), str(tok), mode], check=True)
        tokenize[mode] = json.loads(out.read_text())
    first, last = rows[0], rows[-1]
    write_json({"benchmark": "engine_memory", "machine": machine(),
                "config": {"preset": PRESET.name, "image_size": args.size, "steps": args.steps, "batch": 64},
                "runs": rows,
                "tokenize_whole": tokenize["whole"], "tokenize_chunked": tokenize["chunked"],
                "peak_rss_growth_mib_per_1000_pairs": (last["peak_rss_mib"] - first["peak_rss_mib"])
                / max(1, (last["pairs"] - first["pairs"]) / 1000),
                "peak_rss_ratio_largest_to_smallest": last["peak_rss_mib"] / first["peak_rss_mib"]}, args.json)


if __name__ == "__main__":
    main()

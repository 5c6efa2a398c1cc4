"""OpenMP idle policy: the ConVIRT preset's step with libgomp's default vs OMP_WAIT_POLICY=PASSIVE.

    python benchmarks/engine_omp_wait.py --threads 2 [--rounds 2] [--json out.json]

The policy is read when the OpenMP runtime loads, so each measurement is a fresh process
(``engine_throughput.preset_throughput``: ``Trainer.train_step`` on batches already read,
``train.channels_last=true``), the two policies alternating ``--rounds`` times. On a
dedicated machine the two are close; on a machine whose cores other jobs also use,
spinning threads wait for each other at every barrier.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from engine_common import machine, synthetic_corpus, tokenizer_for, write_json

CHILD = """
import json, os, sys
threads, policy = sys.argv[2], sys.argv[7]
os.environ["OMP_NUM_THREADS"] = threads
if policy == "default":
    os.environ.pop("OMP_WAIT_POLICY", None)
else:
    os.environ["OMP_WAIT_POLICY"] = policy
import torch  # the OpenMP runtime reads the policy now
torch.set_num_threads(int(threads))
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from engine_common import PRESET
from radpair.data.corpus import Corpus
import engine_throughput as et
row = et.preset_throughput(PRESET, Corpus.open(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]), int(sys.argv[6]),
                           ["train.channels_last=true"])
print("RESULT " + json.dumps(row))
"""


def measure(policy: str, args, corpus, tok: Path, work: Path) -> dict:
    cmd = [sys.executable, "-c", CHILD, str(Path(__file__).parent), str(args.threads), str(corpus.root), str(tok),
           str(work / "omp-run"), str(args.steps), policy]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--work", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="radpair-bench-"))
    corpus = synthetic_corpus(work / "corpus-128", 1024, 128)
    tok = work / "tokenizer"
    tokenizer_for(corpus, tok)
    rows: dict[str, list[float]] = {"default (unset)": [], "PASSIVE": []}
    for _ in range(args.rounds):
        for label, policy in (("default (unset)", "default"), ("PASSIVE", "PASSIVE")):
            r = measure(policy, args, corpus, tok, work)
            rows[label].append(r["step_s_median"])
            print(label, r["step_s_median"], flush=True)
    batch = 64
    rates = {k: batch / statistics.median(v) for k, v in rows.items()}
    write_json({"benchmark": "engine_omp_wait", "machine": machine(), "threads": args.threads,
                "step_s_per_round": rows, "images_per_s": rates,
                "passive_over_default": rates["PASSIVE"] / rates["default (unset)"]}, args.json)


if __name__ == "__main__":
    main()

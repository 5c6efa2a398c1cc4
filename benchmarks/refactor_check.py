"""ConVIRT weights before and after a refactor of the method contract: bit-identical or not.

Trains the CPU ConVIRT preset (shrunk: 64 px, tiny encoders) for a fixed number of steps on
a small synthetic corpus with a fixed seed, in one process with one thread, and prints the
SHA-256 of every exported weights file and of the final checkpoint's model state. Run it
at two commits on the same machine; equal digests mean the refactor changed no arithmetic.

    python benchmarks/refactor_check.py --out /tmp/rc_after --json after.json
    git worktree add /tmp/before <commit>; cd /tmp/before && PYTHONPATH=src python <this file> --out ... --json before.json

Run it from the repository root (it reads configs/convirt_cpu.yaml there).
    python benchmarks/refactor_check.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path


def _digest_safetensors(path: Path) -> str:
    from safetensors.torch import load_file

    state = load_file(str(path))
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().numpy().tobytes())
    return h.hexdigest()


def _digest_state(state: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(out: Path, steps: int, seed: int, method: str = "convirt") -> dict:
    import torch

    from radpair.config import load_config
    from radpair.text import train_wordpiece_tokenizer
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus"
    if not (corpus / "index.csv").is_file() and not (corpus / "meta.json").is_file():
        subprocess.run([sys.executable, "-m", "radpair_train.cli", "synth", "--n", "256", "--size", "64",
                        "--seed", str(seed), "--out", str(corpus), "--workers", "1", "--no-progress"], check=True)
    tok = out / "tokenizer"
    if not tok.is_dir():
        import pandas as pd

        reports = pd.read_csv(corpus / "index.csv")["report"].astype(str).tolist()
        train_wordpiece_tokenizer(reports, tok, vocab_size=400, min_frequency=1)
    root = Path.cwd()
    overrides = [f"data.corpus={corpus}", f"text_encoder.tokenizer={tok}", f"train.out_dir={out / method}",
                 f"train.max_steps={steps}", f"train.seed={seed}", "train.threads=1", "train.progress=false",
                 "train.device=cpu", "data.batch_size=32", "text_encoder.max_length=64"]
    if method == "supervised":
        overrides += ["method.name=supervised", "method.labels=[edema,cardiomegaly,pleural_effusion]"]
    cfg = load_config(PretrainConfig, root / "configs" / "convirt_cpu.yaml", overrides)
    trainer = Trainer(cfg)
    trainer.fit()
    digests = {p.name: _digest_safetensors(p) for p in sorted((out / method).glob("*.safetensors"))}
    digests["checkpoint_model_state"] = _digest_state(trainer.model.state_dict())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    return {"commit": commit, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "steps": steps, "seed": seed, "method": method, "digests": digests}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/refactor_check"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", choices=("convirt", "supervised"), default="convirt")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        shared = sorted(set(a["digests"]) & set(b["digests"]))
        same = bool(shared) and all(a["digests"][k] == b["digests"][k] for k in shared)
        for key in sorted(set(a["digests"]) | set(b["digests"])):
            if key not in shared:  # e.g. a head that only the newer code exports
                print(f"{key:32s} only in {'before' if key in a['digests'] else 'after'}")
                continue
            print(f"{key:32s} {'same' if a['digests'][key] == b['digests'][key] else 'DIFFERENT'}")
        print(f"{a['commit'][:9]} vs {b['commit'][:9]}: {'bit-identical' if same else 'NOT bit-identical'}")
        return 0 if same else 1
    result = run(args.out, args.steps, args.seed, args.method)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

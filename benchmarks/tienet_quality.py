"""TieNet's reporting system (I+GR) against the same CNN trained on the labels alone.

    python benchmarks/tienet_quality.py --demo-dir runs/calib_seeds --seed 0 --steps 800 \
        --alphas 0.5 0.9 --out runs/tienet_quality

On a demo corpus (``radpair demo --study`` writes it; ``benchmarks/demo_seeds.py`` per seed), the
TieNet CPU preset (``configs/tienet_cpu.yaml``) is trained as

* ``tienet`` (variant tienet, one run per α of ``--alphas``; α is chosen on the
  **validate** split by the I+GR classifier's macro AUC, the test split never sees the
  other candidates), and
* ``image_only`` (Table 1's **I**: the same encoder and transition layer, global average
  pooling, the same weighted BCE, no text),

for the same ``--steps`` on the same labelled rows (radpair's report labels for
``findings7``, the paper's NLP-mined labels), so the comparison is at equal labels and
equal steps. Both are scored on the test split from the **image alone** (I+GR writes its
report first), and the paired difference of macro AUC comes with a patient-bootstrap CI
(same draws for both). Every candidate's validate score is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train(variant: str, alpha: float | None, corpus: Path, tokenizer: Path, out: Path, steps: int, seed: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from method_quality import fit_preset

    extra = [f"train.max_steps={steps}", f"method.variant={variant}"]
    if alpha is not None:
        extra.append(f"method.alpha={alpha}")
    fit_preset(REPO / "configs" / "tienet_cpu.yaml", corpus, tokenizer, out, seed, extra, stamp="DONE")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-dir", type=Path, default=Path("runs/calib_seeds"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.9])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("runs/tienet_quality"))
    args = ap.parse_args()

    from radpair.evaluation.own_classifier import evaluate_own_classifier
    from radpair.evaluation.paired import paired_difference

    seed_dir = args.demo_dir / f"seed{args.seed}"
    corpus, tok = seed_dir / "corpus", seed_dir / "tokenizer"
    out = args.out / f"seed{args.seed}"
    candidates = []
    for alpha in args.alphas:
        run = train("tienet", alpha, corpus, tok, out / f"tienet_alpha{alpha}", args.steps, args.seed)
        val = evaluate_own_classifier(run, corpus, "findings7", test_labels="report", inputs="image",
                                      split="validate", n_bootstrap=0)
        candidates.append({"alpha": alpha, "run": str(run), "validate_macro_auc": val["values"].get("macro_auc")})
        print(f"tienet alpha={alpha}: validate macro AUC {candidates[-1]['validate_macro_auc']:.4f}", flush=True)
    best = max(candidates, key=lambda c: c["validate_macro_auc"])
    image_only = train("image_only", None, corpus, tok, out / "image_only", args.steps, args.seed)

    scored, metrics = {}, {}
    for name, run in (("I+GR", Path(best["run"])), ("I", image_only)):
        box: list = []
        scored[name] = evaluate_own_classifier(run, corpus, "findings7", test_labels="report", inputs="image",
                                               split="test", n_bootstrap=args.bootstrap, seed=args.seed,
                                               metrics_out=box)
        metrics[name] = box[0]
    diff = paired_difference([metrics["I+GR"]], [metrics["I"]], "macro_auc", arm_a="I+GR", arm_b="I")
    d = diff.to_dict() if hasattr(diff, "to_dict") else diff.__dict__
    summary = {"seed": args.seed, "steps": args.steps, "alpha_candidates": candidates, "alpha_chosen": best["alpha"],
               "test": {k: {"macro_auc": v["values"].get("macro_auc"), "ci": v["ci"].get("macro_auc"),
                            "n_test": v["n_test"]} for k, v in scored.items()},
               "paired_macro_auc_IGR_minus_I": d}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

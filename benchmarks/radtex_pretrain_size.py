"""RadTex's Fig. 3 on the synthetic corpus: transfer quality against the pretraining-set size.

    python benchmarks/radtex_pretrain_size.py --demo-dir runs/calib_seeds --quality-dir runs/method_quality \
        --seed 0 --fractions 0.1 0.25 0.5 --pretrain-repeats 1 --n 100 --out runs/radtex_size
    python benchmarks/radtex_pretrain_size.py --seed 0 --fractions 0.1 0.5 1.0 --pretrain-repeats 5 5 3

The RadTex CPU preset (``configs/radtex_captioning_cpu.yaml``, 6 epochs, as in
``benchmarks/method_quality.py``) is pretrained on a seeded fraction of the training
patients (``data.pair_fraction``; smaller fractions are subsets of larger ones) and its
encoder is linearly probed on ``findings7`` at ``--n`` labels with the transfer protocol's
repeats, on the same subsets as every other arm of ``method_quality`` (the 100 % run is that
benchmark's ``radtex_captioning``). Epochs stay fixed, so compute shrinks with the data, as
in the paper (50 epochs at every size). ``--pretrain-repeats`` > 1 reruns pretraining with
other ``train.seed`` and ``data.pair_fraction_seed`` values (the paper: 5); every repeat is
reported, not the best. It takes one count for every fraction or one per fraction, and
pretraining runs repeat by repeat across the fractions, so a sweep stopped early (and
rerun with fewer repeats; finished runs are reused) still has balanced fractions. Fraction
1.0 at repeat 0 is the same run as ``method_quality``'s ``radtex_captioning`` (a fraction of
1.0 keeps every row in order), which is then not taken from ``--quality-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pretrain(fraction: float, repeat: int, corpus: Path, tokenizer: Path, out: Path, seed: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from method_quality import fit_preset

    fit_preset(REPO / "configs" / "radtex_captioning_cpu.yaml", corpus, tokenizer, out, seed + 1000 * repeat,
               [f"data.pair_fraction={fraction}", f"data.pair_fraction_seed={repeat}"])
    return out / "image_encoder.safetensors"


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from method_quality import transfer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-dir", type=Path, default=Path("runs/calib_seeds"))
    ap.add_argument("--quality-dir", type=Path, default=Path("runs/method_quality"),
                    help="where method_quality.py put the 100 %% run (seed<k>/radtex_captioning)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    ap.add_argument("--pretrain-repeats", type=int, nargs="+", default=[1],
                    help="pretraining repeats: one count, or one per fraction")
    ap.add_argument("--n", nargs="+", default=["100"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/radtex_size"))
    args = ap.parse_args()

    seed_dir = args.demo_dir / f"seed{args.seed}"
    out = args.out / f"seed{args.seed}"
    repeats = args.pretrain_repeats * len(args.fractions) if len(args.pretrain_repeats) == 1 else args.pretrain_repeats
    if len(repeats) != len(args.fractions):
        ap.error(f"--pretrain-repeats takes one count or one per fraction ({len(args.fractions)}), "
                 f"got {len(args.pretrain_repeats)}")
    encoders: dict[str, Path] = {}
    walls: dict[str, float] = {}
    for repeat in range(max(repeats)):
        for fraction, count in zip(args.fractions, repeats):
            if repeat >= count:
                continue
            name = f"radtex_f{int(round(fraction * 100)):03d}_r{repeat}"
            encoders[name] = pretrain(fraction, repeat, seed_dir / "corpus", seed_dir / "tokenizer", out / name,
                                      args.seed)
            # fit_preset's stamp: the seconds of the launch that finished the run (a resumed
            # run's earlier launches are not counted)
            walls[name] = float((out / name / "wall_s.txt").read_text())
            print(f"{name}: pretrained ({walls[name]:.0f} s in its last launch)", flush=True)
    full = args.quality_dir / f"seed{args.seed}" / "radtex_captioning" / "image_encoder.safetensors"
    if full.is_file() and "radtex_f100_r0" not in encoders:
        encoders["radtex_f100_r0"] = full
    results = transfer(seed_dir, out, encoders, args.n, args.repeats, args.workers, args.seed, progress=False)
    r = json.loads(results.read_text())
    means = {(s["arm"], s["budget"]): s["mean"] for s in r["summaries"] if s["metric"] == "macro_auc"}
    paired = {}
    for p in r["paired"]:
        if p["metric"] == "macro_auc" and "random:linear" in (p["arm_a"], p["arm_b"]):
            other = p["arm_b"] if p["arm_a"] == "random:linear" else p["arm_a"]
            sign = 1.0 if p["arm_a"] == other else -1.0
            lo, hi = (p["ci_low"], p["ci_high"]) if sign > 0 else (-p["ci_high"], -p["ci_low"])
            paired[f"{other} - random:linear@{p['budget']}"] = {"mean": sign * p["mean_diff"], "ci": [lo, hi]}
    summary = {"seed": args.seed, "fractions": args.fractions, "pretrain_repeats": dict(zip(map(str, args.fractions), repeats)),
               "pretrain_wall_s_last_launch": walls, "macro_auc": {f"{a}@{b}": v for (a, b), v in means.items()},
               "paired_vs_random_linear": paired}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("| encoder | N | macro AUC | Δ vs random × linear | CI |\n|---|---|---|---|---|")
    for (arm, budget), v in sorted(means.items()):
        d = paired.get(f"{arm} - random:linear@{budget}")
        extra = f"{d['mean']:+.3f} | [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d else "— | —"
        print(f"| {arm} | {budget} | {v:.3f} | {extra} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

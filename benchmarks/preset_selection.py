"""Choose a method's CPU preset on the validate split: pretrain candidates, score their linear probes.

    python benchmarks/preset_selection.py --method timnet_matching --demo-dir runs/calib_seeds --seed 0 \\
        --candidate lr1e-3 optim.lr=1e-3 --candidate lr3e-4 optim.lr=3e-4 --out runs/preset_selection

Each ``--candidate NAME [KEY=VALUE ...]`` is the method's CPU preset (``configs/<method>_cpu.yaml``)
with those overrides, pretrained on one study corpus (``radpair demo --study`` writes it;
``benchmarks/demo_seeds.py --corpus-only`` per seed) with the preset's epochs. Every candidate's image encoder
then gets the transfer protocol's linear probe on ``findings7`` at ``--n`` labels (``--repeats``
draws, the same subsets for every candidate), with the probe's C chosen on the **whole validate
split** (``val=full``), and the candidate's score is the mean over draws of that chosen probe's
validate macro AUC. The winner is the highest score (ties: the first candidate given).

The choice reads no test score: the transfer protocol still scores its cells on test (and
writes those scores under ``transfer_validate/``), but this script takes only each cell's
``chosen`` setting and its ``selection`` records, so what it prints cannot depend on test
labels. Every candidate's score is printed and written, not only the winner's; a candidate
with a missing or undefined score stops the choice.

Give every setting a candidate depends on as an override (``optim.lr=1e-3``, not "the preset"):
the preset file may change later, and a run folder trained with other settings is refused,
never reused. Pretraining resumes, so candidates can be split across processes
(``--pretrain-only``, ``OMP_NUM_THREADS=1`` each, then one scoring run over all of them once
they have finished); give each candidate to one process only, as nothing locks a run folder.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_candidates(raw: list[list[str]]) -> dict[str, list[str]]:
    """``[[name, key=value, ...], ...]`` -> ``{name: overrides}``; names are unique, overrides are KEY=VALUE."""
    out: dict[str, list[str]] = {}
    for item in raw:
        name, *over = item
        if "=" in name:
            raise SystemExit(f"--candidate {' '.join(item)}: the first word is the candidate's name, not an override")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name == "random":
            raise SystemExit(f"--candidate {name}: a name is letters, digits, '_', '.', '-' (and not 'random', "
                             "the transfer protocol's random start)")
        if name in out:
            raise SystemExit(f"--candidate {name}: given twice")
        bad = [o for o in over if "=" not in o]
        if bad:
            raise SystemExit(f"--candidate {name}: overrides are KEY=VALUE, got {bad}")
        out[name] = over
    return out


def validate_scores(cells: list[dict], metric_arm: str, budget: str, repeats: int) -> list[float]:
    """The validate score of the chosen probe setting of each repeat of ``metric_arm`` at ``budget``.

    A cell's ``selection`` lists every setting of its grid with its validate score; ``chosen`` is
    the one the protocol kept. Only these two fields are read. Every repeat ``0..repeats-1``
    must be there, once, with a defined score."""
    scores: dict[int, float] = {}
    for c in cells:
        if c["arm"] != metric_arm or str(c["budget"]) != budget:
            continue
        if int(c["repeat"]) in scores:
            raise SystemExit(f"{metric_arm} N={budget}: repeat {c['repeat']} given twice")
        chosen = c["chosen"]
        match = [s for s in c["selection"] if all(s.get(k) == v for k, v in chosen.items())]
        if len(match) != 1:
            raise SystemExit(f"cell {metric_arm} repeat {c['repeat']}: the chosen setting {chosen} is not once in its "
                             f"selection records")
        v = match[0]["val_score"]
        if v is None or math.isnan(float(v)):
            raise SystemExit(f"{metric_arm} N={budget} repeat {c['repeat']}: no validate score (no class "
                             "scorable on the validate draw, or a diverged fit); no choice is made")
        scores[int(c["repeat"])] = float(v)
    if sorted(scores) != list(range(repeats)):
        raise SystemExit(f"{metric_arm} N={budget}: repeats {sorted(scores)} scored, {list(range(repeats))} expected")
    return [scores[r] for r in range(repeats)]


def rank(scores: dict[str, list[float]]) -> list[str]:
    """Candidates by mean validate score, best first; ties keep the order given."""
    order = list(scores)
    means = {k: sum(v) / len(v) for k, v in scores.items()}
    return sorted(order, key=lambda k: (-means[k], order.index(k)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", required=True, help="a method with configs/<method>_cpu.yaml")
    ap.add_argument("--candidate", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE]",
                    help="a candidate preset: a name, then overrides of the CPU preset (none: the preset itself)")
    ap.add_argument("--demo-dir", type=Path, default=Path("runs/calib_seeds"),
                    help="folder holding seed<k>/corpus and seed<k>/tokenizer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", default="100")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pretrain-only", action="store_true", help="pretrain the candidates, score nothing")
    ap.add_argument("--out", type=Path, default=Path("runs/preset_selection"))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from method_quality import fit_preset

    config = REPO / "configs" / f"{args.method}_cpu.yaml"
    if not config.is_file():
        raise SystemExit(f"{config}: no CPU preset for method {args.method!r}")
    candidates = parse_candidates(args.candidate)
    from radpair.errors import ConfigError
    from radpair.transfer.subsets import Budget

    try:  # checked before hours of pretraining, not after
        budget = Budget.parse(args.n).key
    except ConfigError as exc:
        raise SystemExit(f"--n {args.n}: {exc}") from None
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")
    seed_dir = args.demo_dir / f"seed{args.seed}"
    corpus, tokenizer = seed_dir / "corpus", seed_dir / "tokenizer"
    if not corpus.is_dir() or not tokenizer.is_dir():
        raise SystemExit(f"{seed_dir}: no corpus/tokenizer; run `python benchmarks/demo_seeds.py --seeds {args.seed} "
                         f"--out {args.demo_dir} --corpus-only`")
    out = args.out / args.method / f"seed{args.seed}"
    walls: dict[str, float] = {}
    for name, over in candidates.items():
        run = out / name
        seconds = fit_preset(config, corpus, tokenizer, run, args.seed, over, progress=not args.no_progress)
        if seconds is not None:
            print(f"{name}: pretrained in {seconds:.0f} s", flush=True)
        stamp = run / "wall_s.txt"
        walls[name] = float(stamp.read_text()) if stamp.is_file() else math.nan
    if args.pretrain_only:
        return 0

    from radpair.transfer import TransferConfig, run_transfer

    cfg = TransferConfig(task="findings7", encoders=[f"{k}={out / k / 'image_encoder.safetensors'}" for k in candidates],
                         arch="resnet_tiny", arms=[f"{k}:linear" for k in candidates], n=[args.n],
                         repeats=args.repeats, seed=args.seed, val="full", n_bootstrap=0, subgroups=[],
                         save_models=False)
    tdir = out / "transfer_validate"
    study = run_transfer(cfg, corpus, tdir, progress=not args.no_progress)
    cells = [c.to_dict() for c in study.cells]  # this study's cells only, not older ones in the folder
    scores = {k: validate_scores(cells, f"{k}:linear", budget, args.repeats) for k in candidates}
    order = rank(scores)
    result = {"method": args.method, "seed": args.seed, "n": args.n, "repeats": args.repeats,
              "score": "mean over repeats of the chosen linear probe's macro AUC on the whole validate split",
              "candidates": {k: {"overrides": candidates[k], "validate_macro_auc": scores[k],
                                 "mean": sum(scores[k]) / len(scores[k]), "pretrain_s": walls[k]} for k in candidates},
              "ranking": order, "chosen": order[0]}
    (out / "selection.json").write_text(json.dumps(result, indent=2))
    print("| candidate | overrides | validate macro AUC per draw | mean | pretraining s |")
    print("|---|---|---|---|---|")
    for k in order:
        c = result["candidates"][k]
        print(f"| {k} | {' '.join(c['overrides']) or '(preset)'} | {', '.join(f'{v:.3f}' for v in c['validate_macro_auc'])}"
              f" | {c['mean']:.3f} | {c['pretrain_s']:.0f} |")
    print(f"chosen on validate: {order[0]}  -> {out / 'selection.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

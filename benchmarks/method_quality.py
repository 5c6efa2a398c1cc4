"""Learning quality of every joint-embedding objective: linear probe at few labels against random init.

For each corpus seed, on the study's corpus and tokenizer (``radpair demo --study`` writes both;
``benchmarks/demo_seeds.py`` runs it per seed, ``--corpus-only`` the corpus and tokenizer alone), this pretrains every method's CPU preset
(``configs/<method>_cpu.yaml``: the study's encoders, batch and 6 epochs over the same
pairs, so pretraining compute is equal up to what each method adds per pair), then runs the
transfer protocol on task ``findings7`` with arms ``<method>:linear``, ``convirt:linear``
(the demo's ConVIRT encoder), ``random:linear`` and ``random:finetune`` (tuned from
scratch), and reports paired macro-AUC differences with 95 % CIs:

    python benchmarks/method_quality.py --demo-dir runs/calib_seeds --seeds 0 1 2 --out runs/method_quality
    python benchmarks/method_quality.py --tabulate runs/method_quality   # the objective x N table (markdown)

Resumable: pretraining resumes from its checkpoints, transfer cells are reused. The
issue's bar: against random x linear at N=100, each objective's difference averages at
least 0.08 over the three seeds and each seed's CI lower bound is above 0.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("chauhan_ranking", "convirt_sections", "timnet_matching", "radtex_captioning")
VARIANTS = {
    # the demo's own ConVIRT run, with false negatives (same report text or same study) masked
    "convirt_fn": ["method.false_negatives=[report,study]", "method.false_negative_mode=mask"],
}


PATH_KEYS = ("data.corpus", "text_encoder.tokenizer")


def preset_config(config: Path, corpus: Path, tokenizer: Path, out: Path, seed: int, extra: list[str] | None = None,
                  progress: bool = False):
    """The resolved pretraining config of preset ``config`` on a demo folder's corpus and tokenizer."""
    from radpair.config import load_config
    from radpair_train.config import PretrainConfig

    over = [f"data.corpus={corpus}", f"text_encoder.tokenizer={tokenizer}", f"train.out_dir={out}",
            f"train.seed={seed}", f"train.progress={'true' if progress else 'false'}", *(extra or [])]
    return load_config(PretrainConfig, config, over)


def check_run_folder(out: Path, cfg) -> None:
    """Refuse to reuse or resume ``out`` when its ``config.yaml`` was written for other settings.

    A benchmark reuses a finished run and resumes an interrupted one; either would silently mix
    settings if a preset, an override or a candidate's name changed since (the trainer itself
    resumes across an optimiser change, by design). The comparison is the trainer's own
    (:func:`radpair_train.checkpoint.config_changes`: display, cadence and thread keys are
    ignored, a key added to the config later counts only when it differs from its default),
    with the corpus and tokenizer paths compared resolved, so a run started from another
    working folder still matches."""
    import copy

    import yaml

    from radpair_train.checkpoint import RESUME_IGNORED_KEYS, config_changes

    saved_file = out / "config.yaml"
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text()) or {}
    current = copy.deepcopy(cfg)
    for key in PATH_KEYS:
        section, name = key.split(".")
        if isinstance(saved.get(section), dict) and saved[section].get(name):
            saved[section][name] = str(Path(saved[section][name]).resolve())
        value = getattr(getattr(current, section), name)
        if value:
            setattr(getattr(current, section), name, str(Path(value).resolve()))
    diff = config_changes(saved, current, RESUME_IGNORED_KEYS)
    if diff:
        shown = "; ".join(f"{k}: {'absent' if a is None else repr(a)} there, {b!r} asked"
                          for k, (a, b) in list(diff.items())[:6])
        raise SystemExit(f"{out}: this run folder was trained with other settings ({shown}"
                         f"{'; ...' if len(diff) > 6 else ''}); remove it or choose another --out")


def finished(out: Path) -> bool:
    return (out / "image_encoder.safetensors").is_file() and (out / "run_info.json").is_file()


def fit_preset(config: Path, corpus: Path, tokenizer: Path, out: Path, seed: int, extra: list[str] | None = None,
               progress: bool = False, stamp: str = "wall_s.txt") -> float | None:
    """Train the preset ``config`` on a demo folder's corpus and tokenizer into ``out``, with
    ``extra`` overrides, and write the wall seconds to ``out/stamp``; returns them, or None when
    a finished run of the same settings is already there (its encoder, or its ``stamp``). An
    interrupted run of the same settings resumes; a run folder of other settings is refused.
    Every benchmark that pretrains on the demo's data uses it."""
    from radpair_train.loop import Trainer

    cfg = preset_config(config, corpus, tokenizer, out, seed, extra, progress)
    check_run_folder(out, cfg)
    if finished(out) or (out / stamp).is_file():
        return None
    t0 = time.time()
    Trainer(cfg).fit(resume=True)
    seconds = time.time() - t0
    (out / stamp).write_text(f"{seconds:.0f}\n")
    return seconds


def pretrain(method: str, corpus: Path, tokenizer: Path, out: Path, seed: int, progress: bool,
             demo_config: Path | None = None) -> Path:
    """Pretrain ``method``'s CPU preset, or a variant of the demo's ConVIRT run (``VARIANTS``);
    a finished run of the same settings is reused."""
    weights = out / "image_encoder.safetensors"
    if method in VARIANTS:
        if demo_config is None or not demo_config.is_file():
            raise SystemExit(f"variant {method} needs the demo's pretrain/config.yaml ({demo_config})")
        config, extra = demo_config, VARIANTS[method]
    else:
        config, extra = REPO / "configs" / f"{method}_cpu.yaml", []
    fit_preset(config, corpus, tokenizer, out, seed, extra, progress)
    return weights


def transfer(seed_dir: Path, out: Path, encoders: dict[str, Path], n: list[str], repeats: int, workers: int,
             seed: int, progress: bool) -> Path:
    from radpair.transfer import TransferConfig, run_transfer

    tdir = out / "transfer"
    if not tdir.exists() and (seed_dir / "transfer" / "cells").is_dir():
        # the demo already ran random x finetune on these subsets: its cells carry fingerprints
        shutil.copytree(seed_dir / "transfer", tdir)
    arms = [f"{name}:linear" for name in encoders] + ["random:linear", "random:finetune"]
    cfg = TransferConfig(task="findings7", encoders=[f"{k}={v}" for k, v in encoders.items()] + ["random"],
                         arch="resnet_tiny", arms=arms, n=n, repeats=repeats, seed=seed, workers=workers)
    run_transfer(cfg, seed_dir / "corpus", tdir, progress=progress)
    return tdir / "results.json"


def retrieval(seed_dir: Path, out: Path, variants: list[str]) -> dict:
    """Test-split retrieval (1,000 pairs from seed 0) of the demo's ConVIRT and each ConVIRT variant."""
    from radpair.evaluation.retrieval import evaluate_retrieval

    if not variants:
        return {}
    runs = {"convirt": seed_dir / "pretrain", **{v: out / v for v in variants}}
    found = {}
    for name, run in runs.items():
        r = evaluate_retrieval(run, seed_dir / "corpus", split="test", pool_size=1000, seed=0)
        found[name] = {d: {k: v for k, v in r.directions[d].items() if k.startswith(("recall@", "chance@"))}
                       for d in r.directions}
    return found


def summarise(results: Path, methods: list[str]) -> dict:
    r = json.loads(results.read_text())
    means = {(s["arm"], s["budget"]): s["mean"] for s in r["summaries"] if s["metric"] == "macro_auc"}
    out: dict = {"means": {f"{a}@{b}": v for (a, b), v in means.items()}, "paired": {}}
    for p in r["paired"]:
        if p["metric"] != "macro_auc":
            continue
        for method in methods:
            arm = f"{method}:linear"
            bases = ["random:linear", "random:finetune"] + (["convirt:linear"] if method in VARIANTS else [])
            for base in bases:
                if {p["arm_a"], p["arm_b"]} == {arm, base}:
                    sign = 1.0 if p["arm_a"] == arm else -1.0
                    rows = p["per_repeat"]
                    lo_key, hi_key = ("ci_low", "ci_high") if sign > 0 else ("ci_high", "ci_low")
                    out["paired"][f"{arm} - {base}@{p['budget']}"] = {
                        "per_repeat": [sign * r_["diff"] for r_ in rows],
                        "per_repeat_ci": [[sign * r_[lo_key], sign * r_[hi_key]] for r_ in rows],
                        "mean": sign * p["mean_diff"],
                        "pooled_ci": [sign * p[lo_key], sign * p[hi_key]],
                        "t_ci_over_repeats": [sign * p["t_" + lo_key], sign * p["t_" + hi_key]],
                    }
    return out


def tabulate(root: Path) -> str:
    seeds = sorted(root.glob("seed*/summary.json"))
    lines = ["| seed | objective − baseline | N | mean paired Δ macro AUC | CI (patient bootstrap) | per repeat |",
             "|---|---|---|---|---|---|"]
    for path in seeds:
        s = json.loads(path.read_text())
        for key, v in sorted(s["paired"].items()):
            name, budget = key.rsplit("@", 1)
            ci = v["pooled_ci"]
            ci_s = f"{ci[0]:+.3f}..{ci[1]:+.3f}" if ci else "—"
            reps = ", ".join(f"{d:+.3f}" for d in v["per_repeat"])
            lines.append(f"| {path.parent.name[4:]} | {name} | {budget} | {v['mean']:+.3f} | {ci_s} | {reps} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-dir", type=Path, default=Path("runs/calib_seeds"),
                    help="folder holding seed<k>/ demo outputs (corpus, tokenizer, pretrain, transfer)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--n", nargs="+", default=["10", "100", "1000"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/method_quality"))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--tabulate", type=Path, metavar="OUT", help="print the table of an earlier run and exit")
    args = ap.parse_args()
    if args.tabulate:
        print(tabulate(args.tabulate))
        return 0
    progress = not args.no_progress
    for seed in args.seeds:
        seed_dir = args.demo_dir / f"seed{seed}"
        if not (seed_dir / "corpus").is_dir() or not (seed_dir / "tokenizer").is_dir():
            raise SystemExit(f"{seed_dir}: no corpus/tokenizer; run `python benchmarks/demo_seeds.py --seeds {seed} "
                             f"--out {args.demo_dir} --corpus-only` first (without --corpus-only for the convirt arm and convirt_fn)")
        out = args.out / f"seed{seed}"
        encoders: dict[str, Path] = {}
        walls = {}
        for method in args.methods:
            t0 = time.time()
            encoders[method] = pretrain(method, seed_dir / "corpus", seed_dir / "tokenizer", out / method, seed, progress,
                                        seed_dir / "pretrain" / "config.yaml")
            walls[method] = round(time.time() - t0)
            print(f"seed {seed}: {method} pretrained ({walls[method]} s)", flush=True)
        convirt = seed_dir / "pretrain" / "image_encoder.safetensors"
        if convirt.is_file():
            encoders["convirt"] = convirt
        results = transfer(seed_dir, out, encoders, args.n, args.repeats, args.workers, seed, progress)
        summary = summarise(results, list(encoders))
        summary["pretrain_wall_s"] = walls
        summary["retrieval"] = retrieval(seed_dir, out, [m for m in args.methods if m in VARIANTS])
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"seed {seed}: done -> {out / 'summary.json'}", flush=True)
    print(tabulate(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Is the synthetic corpus as hard for supervised learning as the papers' real task?

Every claim radpair reproduces is measured on the synthetic corpus, so a supervised model
must sit where the papers put one: near chance with 100 labels, good only with many. This
benchmark measures the calibrated generator on the corpus of `radpair demo --study` (the ConVIRT
study: 25,000 images; the default demo draws 12,500 of the same generator, the replicates
25,100) against the
targets of issue 10, all about supervised learning and label noise, none about any
report-supervised method:

* the tuned from-scratch arm of the transfer protocol (random x finetune, selected on
  validation) on ``findings7`` at N = 10, 100, 1000 and all, macro and per finding:
  at N=100 macro AUC <= 0.62 and no finding above 0.85; with all labels >= 0.78 and at
  least 0.18 above N=100;
* agreement of report-derived labels (radpair's labelers) with the drawn truth: 0.85-0.93;
* the shortcut floor: the same corpus settings at conspicuity 0, PA films without
  devices, a probe's macro AUC interval contains 0.5;
* the pretraining set of the default demo and of ``radpair replicate`` holds >= 20,000
  image-report pairs, or as many as the time limits allow, with the reason stated. Counted
  as the image-report pairs of the corpus's train split (what any method may pretrain on; a
  method that follows its paper's section rule drops reports without those sections, e.g.
  FINDINGS-only methods) and checked per corpus seed on every replicate's cpu corpus drawn at
  that seed; the default demo draws fewer for its 30-minute limit (``radpair_train.demo.DEMO_PAIRS_REASON``, the
  table shows its count). The corpus this benchmark trains on is the calibration measurement,
  not a pretraining set the issue names; its pairs are shown for information.

    python benchmarks/synth_calibration.py --seeds 0,1,2 --json runs/calibration.json
    python benchmarks/synth_calibration.py --seeds 0 --out runs/demo_seeds n_images=8000   # demo overrides
    python benchmarks/synth_calibration.py --seeds 1,2 --json b.json 'transfer.n=["10","100","1000"]'  # partial
    python benchmarks/synth_calibration.py --tabulate a.json b.json                        # one table
    python benchmarks/synth_calibration.py --seeds 1 --json all.json 'transfer.n=["all"]'  # one budget again
    python benchmarks/synth_calibration.py --tabulate s1.json all.json --json joined.json   # all.json's N=all wins
    python benchmarks/synth_calibration.py --pairs --seeds 0,1,2   # pretraining sets of the demo, study, replicates (no images)

Each seed runs in ``<out>/seed<k>`` with the demo's layout (corpus, transfer of the
from-scratch arm), so `python benchmarks/demo_seeds.py --out <out>` afterwards reuses the
corpus and those cells. The other way round, ``--reuse --out <demo_seeds out>`` reads the
from-scratch arm of finished demos and runs only the label agreement and floor checks. Test AUC is read here to describe the corpus, never to choose
anything in a method.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

TARGETS = {
    "scratch_100_max": 0.62,
    "scratch_100_finding_max": 0.85,
    "scratch_all_min": 0.78,
    "scratch_gap_min": 0.18,
    "agreement": (0.85, 0.93),
    "pretraining_pairs_min": 20000,
}


def demo_pairs_reason() -> str:
    """Why the default demo pretrains on fewer pairs: kept in one place, ``radpair_train.demo``."""
    from radpair_train.demo import DEMO_PAIRS_REASON

    return DEMO_PAIRS_REASON


def floor_check(synth_cfg, size: int, seed: int, n_images: int = 1200) -> dict:
    """The corpus settings at conspicuity 0: PA films without devices, random-init features,
    a linear probe from train to test patients. Its macro AUC interval must contain 0.5."""
    import tempfile
    from dataclasses import replace

    import torch

    from radpair.data.synth import FINDINGS, generate_corpus
    from radpair.evaluation import LinearProbe, ProbeConfig, evaluate_classification, extract_features
    from radpair.models.image_encoders import IMAGE_ENCODERS

    cfg = replace(synth_cfg, conspicuity=0.0, split_fractions=[0.5, 0.0, 0.5])
    with tempfile.TemporaryDirectory() as tmp:
        corpus = generate_corpus(Path(tmp) / "c", n_images=n_images, size=size, seed=seed, workers=2, config=cfg)
        idx, gt = corpus.index, corpus.labels("ground_truth")
        keep = (idx["view"] == "PA").to_numpy() & (gt["support_devices"] == 0).to_numpy()
        train = np.flatnonzero(keep & (idx["split"] == "train").to_numpy())
        test = np.flatnonzero(keep & (idx["split"] == "test").to_numpy())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = IMAGE_ENCODERS.build("resnet_tiny")
        X = extract_features(encoder, np.asarray(corpus.images))
        Y = gt[list(FINDINGS)].to_numpy(dtype=np.float64)
        patients = idx["patient_id"].to_numpy()
        probe = LinearProbe(ProbeConfig(min_samples_for_cv=10**9), class_names=list(FINDINGS))
        probs = probe.fit(X[train], Y[train], groups=patients[train]).predict_proba(X[test])
        m = evaluate_classification(Y[test], probs, groups=patients[test], class_names=list(FINDINGS),
                                    n_bootstrap=1000, seed=seed)
    return {"macro_auc": round(m.macro, 4), "ci": [round(m.ci_low, 4), round(m.ci_high, 4)],
            "contains_half": bool(m.ci.contains(0.5)), "n_test": int(m.n), "n_patients": int(m.n_groups)}


def measure_seed(seed: int, out: Path, overrides: list[str], reuse: bool = False) -> dict:
    from radpair.config import apply_overrides, from_dict, to_dict
    from radpair.data.corpus import Corpus
    from radpair.data.synth import SynthConfig
    from radpair.transfer import TransferResult
    from radpair_train.demo import DemoConfig, run_demo, study_config

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from synth_label_agreement import measure as label_agreement  # noqa: E402

    cfg = from_dict(DemoConfig, apply_overrides(to_dict(study_config()), [*overrides, f"seed={seed}"]))
    t0 = time.perf_counter()
    if not reuse:
        cfg.transfer.arms = ["random:finetune"]
        run_demo(cfg, out, progress=False)
    seconds = time.perf_counter() - t0
    result = TransferResult.load(out / "transfer" / "results.json")
    if "random:finetune" not in result.arm_keys:
        raise SystemExit(f"{out / 'transfer' / 'results.json'} has no random:finetune arm to read")
    corpus = Corpus.open(out / "corpus")
    made = (corpus.meta.get("seed"), corpus.meta.get("n_images"), corpus.meta.get("generator", {}).get("difficulty"))
    if reuse and made[:2] != (seed, cfg.n_images):
        raise SystemExit(f"{out / 'corpus'} was made with seed {made[0]} and {made[1]} images, not seed {seed} and "
                         f"{cfg.n_images}; pass the overrides the demo ran with")
    macro = {b: round(result.mean("random:finetune", b), 4) for b in result.budgets}
    per_finding = {}
    for b in result.budgets:
        cells = result.cells_for("random:finetune", b)
        per_finding[b] = {c: round(float(np.nanmean([cell.metrics["per_class"].get(c, {}).get("auc", np.nan)
                                                     for cell in cells])), 4) for c in result.class_names}
    agreement = label_agreement(corpus)
    pairs = int((corpus.index["split"] == "train").sum())
    sets = seed_pretraining_sets(seed)
    floor = floor_check(SynthConfig.preset(cfg.difficulty), cfg.image_size, seed)
    checks = target_checks(macro, per_finding, agreement["overall"]["agreement"], floor, sets)
    return {"seed": seed, "difficulty": cfg.difficulty, "n_images": cfg.n_images, "image_size": cfg.image_size,
            "scratch_macro_auc": macro, "scratch_per_finding": per_finding,
            "scratch_repeat_ci": {b: result.summary("random:finetune", b).get("repeat_ci") for b in result.budgets},
            "label_agreement": agreement["overall"]["agreement"], "label_agreement_detail": agreement,
            "floor": floor, "pretraining_pairs": pairs, "pretraining_sets": sets, "targets_met": checks, "seconds": round(seconds, 1),
            "environment": result.environment}


def planned_pretraining_pairs(n_images: int, seed: int, difficulty: str = "default", synth: dict | None = None) -> int:
    """Image-report pairs in the train split of a corpus ``generate_corpus`` would draw, exact
    and without drawing a pixel: the cohort plan and the patient split are the generator's own.
    Each plan is computed once per process (seconds each; the papers share one preset)."""
    return _planned_pairs(json.dumps([int(n_images), int(seed), str(difficulty), synth or {}], sort_keys=True))


@functools.lru_cache(maxsize=None)
def _planned_pairs(key: str) -> int:
    n_images, seed, difficulty, synth = json.loads(key)
    from radpair.data.synth import load_synth_config
    from radpair.data.synth.generate import assign_splits, plan_cohort

    cfg = load_synth_config(difficulty, overrides=synth or {})
    patients = plan_cohort(n_images, seed, cfg)
    splits = assign_splits(len(patients), seed, cfg.split_fractions)
    return sum(p.n_images for p, split in zip(patients, splits) if split == "train")


def pretraining_sets(seeds: list[int]) -> list[dict]:
    """The pretraining-set target where it applies: the default demo (per corpus seed), the
    ConVIRT study the calibration runs on (for information), the replicates' cpu corpus drawn
    at each seed, and every paper's cpu replicate corpus at its own seed."""
    from radpair_train.demo import DemoConfig, study_config

    rows = []
    for what, cfg in (("default demo (`radpair demo`)", DemoConfig()), ("study (`radpair demo --study`)", study_config())):
        for seed in seeds:
            rows.append({"set": what, "seed": seed, "n_images": cfg.n_images,
                         "pairs": planned_pretraining_pairs(cfg.n_images, seed, cfg.difficulty)})
    corpora = replicate_corpora()
    for seed in seeds:
        pairs, n_images = replicate_pairs_at(seed, corpora)
        rows.append({"set": "replicate cpu corpus at this seed (the fewest of any paper)", "seed": seed,
                     "n_images": n_images, "pairs": pairs})
    for name, preset in corpora.items():
        rows.append({"set": f"`radpair replicate {name}`", "seed": int(preset["seed"]), "n_images": int(preset["n"]),
                     "pairs": planned_pretraining_pairs(int(preset["n"]), int(preset["seed"]),
                                                        preset.get("difficulty", "default"), preset.get("synth"))})
    for r in rows:
        r["target_met"] = r["pairs"] >= TARGETS["pretraining_pairs_min"]
    return rows


def replicate_corpora() -> dict[str, dict]:
    """Every paper's cpu replicate corpus (its "main" corpus preset), by paper name."""
    from radpair.replicate.registry import load_all

    corpora = {}
    for paper in load_all():
        spec = paper.corpora.get("main")
        preset = spec.preset("cpu") if spec is not None else None
        if preset is not None:
            corpora[paper.name] = dict(preset)
    return corpora


def replicate_pairs_at(seed: int, corpora: dict[str, dict] | None = None) -> tuple[int, int]:
    """(pairs, images) of the cpu replicate corpus with the fewest train-split pairs were it
    drawn at ``seed`` (the replicates draw seed 0; other seeds show the margin is not the luck
    of one split)."""
    corpora = replicate_corpora() if corpora is None else corpora
    if not corpora:
        raise SystemExit("no paper has a cpu replicate corpus (radpair.replicate.registry.load_all found none)")
    return min((planned_pretraining_pairs(int(c["n"]), seed, c.get("difficulty", "default"), c.get("synth")), int(c["n"]))
               for c in corpora.values())


def seed_pretraining_sets(seed: int) -> dict:
    """The pretraining sets the issue names, at corpus seed ``seed``: the smallest cpu
    replicate corpus and the default demo, from the corpus plans (no image is drawn)."""
    from radpair_train.demo import DemoConfig

    demo = DemoConfig()
    return {"replicate_pairs": replicate_pairs_at(seed)[0],
            "demo_pairs": planned_pretraining_pairs(demo.n_images, seed, demo.difficulty),
            "demo_reason": demo_pairs_reason()}


def pairs_table(rows: list[dict]) -> str:
    """The ``--pairs`` table, with what the target asks of each set."""
    roles = {"default demo": "the target, with the time-limit exception",
             "study": "none (the calibration corpus; shown for information)",
             "replicate cpu corpus at this seed": "a check of the margin (the replicates draw seed 0)"}
    lines = ["| pretraining set | corpus seed | images | image-report pairs (train split) | >= 20,000 | target applies |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        met = "yes" if r["pairs"] >= TARGETS["pretraining_pairs_min"] else "no"
        role = next((v for k, v in roles.items() if r["set"].startswith(k)), "the target")
        lines.append(f"| {r['set']} | {r['seed']} | {r['n_images']:,} | {r['pairs']:,} | {met} | {role} |")
    return "\n".join(lines)


def target_checks(macro: dict, per_finding: dict, agreement: float, floor: dict, sets: dict) -> dict:
    """Each target met (True), missed (False) or not measured (None: a budget left out with
    transfer.n=..., never counted as met). The pretraining-set target is checked on the
    replicates' corpus (``sets`` from ``seed_pretraining_sets``), counted as train-split pairs;
    the default demo's smaller set is the issue's allowed exception only with its reason stated."""
    m100, mall = macro.get("100"), macro.get("all")
    return {
        "scratch_100": None if m100 is None else m100 <= TARGETS["scratch_100_max"],
        "scratch_100_per_finding": None if "100" not in per_finding
        else max(per_finding["100"].values()) <= TARGETS["scratch_100_finding_max"],
        "scratch_all": None if mall is None else mall >= TARGETS["scratch_all_min"],
        "scratch_gap": None if None in (m100, mall) else mall - m100 >= TARGETS["scratch_gap_min"],
        "label_agreement": TARGETS["agreement"][0] <= agreement <= TARGETS["agreement"][1],
        "floor": floor["contains_half"],
        "pretraining_pairs": sets["replicate_pairs"] >= TARGETS["pretraining_pairs_min"],
        "demo_pairs_or_reason": sets["demo_pairs"] >= TARGETS["pretraining_pairs_min"] or bool(sets.get("demo_reason")),
    }


def join_rows(rows: list[dict]) -> list[dict]:
    """One row per corpus seed: where several runs measured a seed (e.g. a rerun of only the
    all-label budget after a protocol change), later runs' budgets replace earlier ones and
    the targets are checked again on the joined numbers. Each row lists its sources."""
    joined: dict[int, dict] = {}
    for r in rows:
        seed = int(r["seed"])
        src = r.get("source", "?")
        if seed not in joined:
            joined[seed] = json.loads(json.dumps(r))
            joined[seed]["sources"] = list(r.get("sources") or [src])
            joined[seed]["budget_sources"] = dict(r.get("budget_sources")
                                                  or {b: src for b in r.get("scratch_macro_auc", {})})
            continue
        j = joined[seed]
        if (j.get("n_images"), j.get("image_size"), j.get("difficulty")) != \
                (r.get("n_images"), r.get("image_size"), r.get("difficulty")):
            raise SystemExit(f"seed {seed}: runs on different corpora cannot be joined "
                             f"({j.get('n_images')} vs {r.get('n_images')} images)")
        for key in ("scratch_macro_auc", "scratch_per_finding", "scratch_repeat_ci"):
            j.setdefault(key, {}).update(r.get(key) or {})
        j["sources"].append(src)
        j["budget_sources"].update({b: src for b in r.get("scratch_macro_auc", {})})
    for seed, j in joined.items():
        # recomputed from today's presets: a run written before the replicate corpus grew
        # stored the pairs of the presets of its day
        j["pretraining_sets"] = seed_pretraining_sets(seed)
        j["targets_met"] = target_checks(j["scratch_macro_auc"], j["scratch_per_finding"], j["label_agreement"],
                                         j["floor"], j["pretraining_sets"])
    return [joined[k] for k in sorted(joined)]


def _verdict(checks: dict) -> str:
    failed = [k for k, v in checks.items() if v is False]
    missing = [k for k, v in checks.items() if v is None]
    if failed:
        return "no: " + ", ".join(failed)
    return "yes" if not missing else "not measured: " + ", ".join(missing)


def table(rows: list[dict]) -> str:
    budgets = [b for b in ("10", "100", "1000", "all") if any(b in r["scratch_macro_auc"] for r in rows)]
    lines = ["| corpus seed | " + " | ".join(f"scratch N={b}" for b in budgets)
             + " | max finding N=100 | label agreement | floor AUC (CI) | measured corpus pairs | replicate pairs "
             "| default demo pairs | all targets |",
             "|---|" + "---|" * (len(budgets) + 7)]
    short_demo = False
    for r in rows:
        worst = max(r["scratch_per_finding"].get("100", {"-": float("nan")}).items(), key=lambda kv: kv[1])
        demo = r["pretraining_sets"]["demo_pairs"]
        mark = "¹" if demo < TARGETS["pretraining_pairs_min"] else ""
        short_demo = short_demo or bool(mark)
        fl = r["floor"]
        macro = r["scratch_macro_auc"]
        lines.append(f"| {r['seed']} | " + " | ".join(f"{macro[b]:.3f}" if b in macro else "–" for b in budgets)
                     + f" | {worst[1]:.3f} ({worst[0]}) | {r['label_agreement']:.3f} | {fl['macro_auc']:.3f} "
                     f"({fl['ci'][0]:.3f}–{fl['ci'][1]:.3f}) | {r['pretraining_pairs']:,} | "
                     f"{r['pretraining_sets']['replicate_pairs']:,} | {demo:,}{mark} | "
                     f"{_verdict(r['targets_met'])} |")
    if short_demo:
        lines.append(f"\n¹ fewer than {TARGETS['pretraining_pairs_min']:,} for {demo_pairs_reason()}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="runs/calibration", help="one demo-layout folder per seed: <out>/seed<k>")
    ap.add_argument("--reuse", action="store_true",
                    help="read the from-scratch arm of finished demos in <out>/seed<k> (e.g. benchmarks/demo_seeds.py's "
                    "folders) instead of running it; without it the run rewrites the folder's transfer results")
    ap.add_argument("--json", default=None)
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="settings on top of the study, as for `radpair demo --study`")
    ap.add_argument("--tabulate", nargs="+", metavar="JSON", default=None,
                    help="only print the table of earlier --json outputs (one or several), run nothing; a seed "
                    "measured by several joins into one row, later files' budgets replacing earlier ones "
                    "(with --json, the joined rows are written there)")
    ap.add_argument("--pairs", action="store_true",
                    help="only check the pretraining-set target (>= 20,000 pairs) of the default demo, the study "
                    "and every cpu replicate corpus, from the corpus plans (two to three minutes; draws no image)")
    args = ap.parse_args(argv)
    if args.pairs:
        rows = pretraining_sets([int(s) for s in args.seeds.split(",") if s.strip()])
        print(pairs_table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps({"pretraining_sets": rows}, indent=1))
        return 0
    if args.tabulate:
        rows = [{**r, "source": f} for f in args.tabulate for r in json.loads(Path(f).read_text())["seeds"].values()]
        joined = join_rows(rows)
        print(table(joined))
        met = all(all(v is True for v in r["targets_met"].values()) for r in joined)
        print(f"all targets met on every seed: {met}")
        if args.json:
            Path(args.json).write_text(json.dumps({"targets": TARGETS, "seeds": {str(r["seed"]): r for r in joined},
                                                   "all_targets_met": met, "joined_from": args.tabulate},
                                                  indent=1, default=str))
        return 0
    rows = []
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        rows.append(measure_seed(seed, Path(args.out) / f"seed{seed}", args.overrides, reuse=args.reuse))
        print(json.dumps({k: rows[-1][k] for k in ("seed", "scratch_macro_auc", "label_agreement", "floor",
                                                   "pretraining_pairs", "targets_met")}), flush=True)
    summary = {"targets": TARGETS, "seeds": {str(r["seed"]): r for r in rows},
               "all_targets_met": all(all(v is True for v in r["targets_met"].values()) for r in rows)}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    print(table(rows))
    print(f"all targets met on every seed: {summary['all_targets_met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the ECG-lead / oxygen-tubing shortcut is worth to a probe on the synthetic corpus.

Generates the corpus twice with the same seed, with ``distractor_illness_link`` off (0,
the default) and on (1: leads and tubing follow illness as on real wards), by default
at ``conspicuity=0`` so that no finding is visible and whatever a model learns comes
from things that travel with findings. Because ECG leads and tubing come from their own
random streams, the two corpora differ only on the images whose distractors differ.

For each corpus it reports, on frontal images:

* how often ECG leads / tubing appear with and without edema (Fisher's exact test);
* ``distractors``: a linear probe whose only features are the two 0/1 indicators
  "ECG leads drawn" and "tubing drawn" (a perfect distractor detector) - the AUC a model
  can get from the shortcut alone;
* ``resnet_tiny`` / ``pixels``: linear probes on random-init ``resnet_tiny`` features and
  on 8x8-pooled pixels, i.e. what an image model picks up with no finding drawn;
* ``cnn``: the 4-layer CNN of ``synth_difficulty.py`` trained from scratch on all seven
  findings of the frontal training images (``--cnn-epochs``, 0 to skip): what supervised
  training learns when the only things to learn are view, devices and distractors.

Probes train on the ``train`` patients and are scored on the ``test`` patients (50/50 by
default), on all frontal rows ("frontal": view and support devices also carry signal
about illness) and on PA rows without support devices ("PA, no devices": only the
distractors can differ). AUCs have patient-bootstrap 95% intervals.

    OMP_NUM_THREADS=1 python benchmarks/synth_shortcut.py --n 3000 --size 64 --json out.json
    python benchmarks/synth_shortcut.py --conspicuity 1      # the same with findings drawn
    python benchmarks/synth_shortcut.py --rates-only --n 20000   # rates only, nothing rendered

Prints a table, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FEATURES = ("distractors", "resnet_tiny", "pixels")  # linear probes; the CNN is trained apart
SUBSETS = ("frontal", "PA, no devices")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3000, help="images per corpus (default 3000)")
    p.add_argument("--size", type=int, default=64, help="image size (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="generator processes")
    p.add_argument("--conspicuity", type=float, default=0.0, help="finding conspicuity (default 0: invisible)")
    p.add_argument("--links", type=float, nargs="+", default=[0.0, 1.0], help="distractor_illness_link values")
    p.add_argument("--test-share", type=float, default=0.5, help="share of patients in the test split (default 0.5)")
    p.add_argument("--finding", default="edema", help="finding of the rate table and the headline AUC")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--cnn-epochs", type=int, default=12, help="epochs of the CNN trained from scratch (0: skip)")
    p.add_argument("--work", help="keep the corpora here and reuse them (default: a temporary folder)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the CPU is shared)")
    p.add_argument("--rates-only", action="store_true",
                   help="only the distractor rates, from the planned corpus (no images are rendered)")
    p.add_argument("--json", help="also write the result here")
    return p.parse_args(argv)


def make_corpus(args: argparse.Namespace, link: float, root: Path):
    from radpair.data.corpus import Corpus
    from radpair.data.synth import SynthConfig, generate_corpus

    cfg = SynthConfig(conspicuity=args.conspicuity, distractor_illness_link=link,
                      split_fractions=[1.0 - args.test_share, 0.0, args.test_share])
    if (root / "meta.json").is_file():
        c = Corpus.open(root)
        gen = c.meta.get("generator", {})
        if (len(c) == args.n and list(c.image_size) == [args.size] * 2 and gen.get("seed") == args.seed
                and gen.get("config") == cfg.to_dict()):
            return c, 0.0
    t0 = time.perf_counter()
    c = generate_corpus(root, n_images=args.n, size=args.size, seed=args.seed, workers=args.workers, config=cfg)
    return c, time.perf_counter() - t0


def features(corpus, kind: str, seed: int) -> np.ndarray:
    import torch

    from radpair.data.synth.shortcuts import distractor_table
    from radpair.evaluation import extract_features
    from radpair.models.image_encoders import IMAGE_ENCODERS

    images = np.asarray(corpus.images)
    if kind == "distractors":
        return distractor_table(corpus.labels("ground_truth"))[["ecg", "tubing"]].to_numpy(dtype=np.float64)
    if kind == "pixels":
        n, s = images.shape[0], images.shape[1]
        return images.astype(np.float32).reshape(n, 8, s // 8, 8, s // 8).mean(axis=(2, 4)).reshape(n, -1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = IMAGE_ENCODERS.build(kind)
    return extract_features(encoder, images)


def subset_rows(corpus, subset: str, split: str) -> np.ndarray:
    idx, gt = corpus.index, corpus.labels("ground_truth")
    if subset == "frontal":
        keep = idx["view"].isin(["PA", "AP"]).to_numpy()
    else:
        keep = (idx["view"] == "PA").to_numpy() & (gt["support_devices"] == 0).to_numpy()
    return np.flatnonzero(keep & (idx["split"] == split).to_numpy())


def summarise(corpus, test: np.ndarray, probs: np.ndarray, n_train: int, args: argparse.Namespace) -> dict:
    from radpair.data.synth import FINDINGS
    from radpair.evaluation import evaluate_classification

    Y = corpus.labels("ground_truth")[list(FINDINGS)].to_numpy(dtype=np.float64)
    m = evaluate_classification(Y[test], probs, groups=corpus.index["patient_id"].to_numpy()[test],
                                class_names=list(FINDINGS), n_bootstrap=args.n_bootstrap, seed=args.seed)
    f = args.finding
    return {
        "n_train": int(n_train), "n_test": int(test.size), "n_test_patients": int(m.n_groups),
        "finding_positives_test": m.n_positive.get(f),
        "finding_auc": round(m.per_class.get(f, float("nan")), 4),
        "finding_ci": [round(m.per_class_ci[f].low, 4), round(m.per_class_ci[f].high, 4)] if f in m.per_class_ci
        else None,
        "macro_auc": round(m.macro, 4), "macro_ci": [round(m.ci_low, 4), round(m.ci_high, 4)],
        "per_finding": {k: round(v, 4) for k, v in m.per_class.items()},
    }


def probe_auc(corpus, X: np.ndarray, subset: str, args: argparse.Namespace) -> dict:
    """Linear probe fitted on the subset's train rows, scored on its test rows."""
    from radpair.data.synth import FINDINGS
    from radpair.evaluation import LinearProbe, ProbeConfig

    train, test = subset_rows(corpus, subset, "train"), subset_rows(corpus, subset, "test")
    Y = corpus.labels("ground_truth")[list(FINDINGS)].to_numpy(dtype=np.float64)
    patients = corpus.index["patient_id"].to_numpy()
    probe = LinearProbe(ProbeConfig(seed=args.seed), class_names=list(FINDINGS))
    probs = probe.fit(X[train], Y[train], groups=patients[train]).predict_proba(X[test])
    return summarise(corpus, test, probs, train.size, args)


def cnn_auc(corpus, args: argparse.Namespace) -> dict:
    """synth_difficulty's CNN trained on the frontal train rows; scored on every subset."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from synth_difficulty import build_model

    from radpair.data.synth import FINDINGS
    from radpair.data.tensors import images_to_tensor

    train = subset_rows(corpus, "frontal", "train")
    Y = corpus.labels("ground_truth")[list(FINDINGS)].to_numpy(dtype=np.float32)
    x = images_to_tensor(np.asarray(corpus.images))
    steps = int(np.ceil(train.size / 64)) * args.cnn_epochs
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = build_model(Y.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    pos = Y[train].mean(0).clip(0.02, 0.98)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / pos, dtype=torch.float32).sqrt())
    xt, yt = x[train], torch.from_numpy(Y[train])
    model.train()
    for _ in range(steps):
        b = rng.integers(0, train.size, min(64, train.size))
        loss = loss_fn(model(xt[b]), yt[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    out = {}
    for subset in SUBSETS:
        test = subset_rows(corpus, subset, "test")
        with torch.inference_mode():
            probs = torch.cat([torch.sigmoid(model(x[test[i:i + 256]])) for i in range(0, test.size, 256)]).numpy()
        out[subset] = summarise(corpus, test, probs, train.size, args)
        out[subset]["steps"] = steps
    return out


def table(result: dict) -> str:
    f = result["finding"]
    lines = [f"{'link':>4}  {'features':<12} {'rows':<15} {f + ' AUC (95% CI)':>26} {'macro AUC (95% CI)':>26}"]
    for run in result["runs"]:
        for feat, by_subset in run["probes"].items():
            for subset, r in by_subset.items():
                fci = r["finding_ci"] or [float("nan")] * 2
                lines.append(f"{run['link']:>4g}  {feat:<12} {subset:<15} "
                             f"{r['finding_auc']:>8.3f} ({fci[0]:.3f}-{fci[1]:.3f})    "
                             f"{r['macro_auc']:>8.3f} ({r['macro_ci'][0]:.3f}-{r['macro_ci'][1]:.3f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from radpair.data.synth.generate import GENERATOR_VERSION
    from radpair.data.synth.shortcuts import distractor_rates, format_rates

    torch.set_num_threads(args.threads)
    tmp = None
    if args.work:
        work = Path(args.work)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="synth_shortcut_")
        work = Path(tmp.name)
    runs = []
    for link in args.links:
        if args.rates_only:
            from radpair.data.synth import SynthConfig
            from radpair.data.synth.shortcuts import planned_truth

            cfg = SynthConfig(conspicuity=args.conspicuity, distractor_illness_link=link)
            planned = planned_truth(args.n, args.seed, cfg)
            rates = distractor_rates(planned, args.finding)
            print(f"distractor_illness_link={link:g}:\n{format_rates(rates)}\n", file=sys.stderr)
            runs.append({"link": link, "distractor_rates": rates,
                         "lateral_distractor_rates": distractor_rates(planned, args.finding, views=("LATERAL",))})
            continue
        corpus, gen_s = make_corpus(args, link, work / f"link{link:g}")
        rates = distractor_rates(corpus.labels("ground_truth"), args.finding)
        print(f"distractor_illness_link={link:g}, conspicuity={args.conspicuity:g}:\n{format_rates(rates)}\n",
              file=sys.stderr)
        t0 = time.perf_counter()
        probes = {}
        for kind in FEATURES:
            X = features(corpus, kind, args.seed)
            probes[kind] = {subset: probe_auc(corpus, X, subset, args) for subset in SUBSETS}
        if args.cnn_epochs > 0:
            probes["cnn"] = cnn_auc(corpus, args)
        runs.append({"link": link, "generate_seconds": round(gen_s, 1),
                     "probe_seconds": round(time.perf_counter() - t0, 1), "distractor_rates": rates, "probes": probes})
    out = {
        "generator_version": GENERATOR_VERSION,
        "n_images": args.n, "size": args.size, "seed": args.seed, "conspicuity": args.conspicuity,
        "test_share": args.test_share, "finding": args.finding, "n_bootstrap": args.n_bootstrap,
        "threads": args.threads,
        "runs": runs,
    }
    if not args.rates_only:
        print(table(out), file=sys.stderr)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if tmp is not None:
        tmp.cleanup()
    return out


if __name__ == "__main__":
    main(sys.argv[1:])

"""Localisation study: does each method's Grad-CAM point at the finding the generator drew?

For runs given on the command line and a synthetic corpus with ground-truth masks
(``radpair synth`` writes them), Grad-CAM maps of the test images showing a finding are
scored with :func:`radpair.evaluation.localisation.evaluate_localisation` (pointing game
and mass share, patient-bootstrap CIs) against the centre-of-image and uniform baselines.
The from-scratch baseline is simply a ``supervised`` run passed like any other.

What each method's map explains (``radpair.explain``'s rule, per finding): a classifier's
logit of that finding where it has one; for a joint embedding the zero-shot score of the
finding's prompts; for a report writer the log-likelihood of the report it writes (the
same map for every finding). A classifier without the finding explains it through the
model's joint embedding when it has one (Chauhan's edema-severity head), and is left out of
that finding's table otherwise; the notes say which.

Beside each map's scores, the detection AUC of the score it explains (on every test image)
says whether the model detects the finding at all; a map of a score that does not cannot
point at it for the right reason.

    python benchmarks/localisation_study.py --corpus CORPUS --run convirt=RUN1 --run scratch=RUN2 --out DIR
    python benchmarks/localisation_study.py --train DIR --image-size 224 --images 4000 --epochs 4 --threads 2
    python benchmarks/localisation_study.py --smoke DIR   # 64 px corpus, briefly trained runs: plumbing only

``--train`` makes the corpus and trains every method (the demo's CPU sizes, equal epochs,
and ``scratch``: the same encoder trained on the findings' labels) before scoring them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

FINDINGS = ("edema", "cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "atelectasis", "nodule")


def _use_classifier(subject, caps: dict[str, bool], finding: str) -> bool:
    """A classifier explains the findings it outputs; for the others a joint embedding, when
    the model has one, explains them through their prompts (Chauhan's edema-severity head)."""
    return caps["classifier"] and finding in subject.class_names


def detection_auc(subject, corpus, index, findings, batch: int = 64) -> dict[str, float | None]:
    """Per finding, the test AUC of the very score Grad-CAM explains (a classifier's logit, a
    joint model's zero-shot prompt score) on every image of ``rows`` against the drawn truth.
    A map can only point at a finding its score detects, so this says which rows of the
    localisation table mean anything. Report writers explain their report, not a finding:
    ``None``."""
    from sklearn.metrics import roc_auc_score

    from radpair.errors import ConfigError
    from radpair.explain.maps import TargetError, resolve_target

    caps = subject.capabilities()
    if not (caps["classifier"] or caps["joint_embedding"]):
        return {f: None for f in findings}
    truth = corpus.labels("ground_truth").loc[index.index]  # aligned with corpus.index, like the split frame
    rows = index["image_index"].to_numpy(dtype=np.int64)
    images = corpus.read_images(rows)
    out: dict[str, float | None] = {}
    for f in findings:
        use_clf = _use_classifier(subject, caps, f)
        if f not in truth.columns or (caps["classifier"] and not use_clf and not caps["joint_embedding"]):
            out[f] = None
            continue
        y = truth[f].to_numpy(dtype=float)
        ok = np.isfinite(y)
        if len(np.unique(y[ok])) < 2:
            out[f] = None
            continue
        scores = []
        try:
            for a in range(0, len(rows), batch):
                x = subject.to_tensor(images[a:a + batch])
                fn, _ = resolve_target(subject, x, f, None, None, "findings7", use_clf)
                with torch.no_grad():
                    scores.append(fn(x).float().cpu().numpy())
        except (ConfigError, TargetError):
            out[f] = None
            continue
        out[f] = float(roc_auc_score(y[ok] > 0.5, np.concatenate(scores)[ok]))
    return out


def study(corpus, runs: dict[str, str | Path], *, split: str = "test", limit: int | None = None,
          findings=FINDINGS, n_bootstrap: int = 1000, seed: int = 0, device: str = "cpu", batch: int = 32,
          layer: str | None = None, log=print):
    """(LocalisationResult, notes, detection AUCs): every run's Grad-CAM scored on every finding,
    and how well the score it explains detects each finding on the whole split."""
    from radpair.data.corpus import Corpus
    from radpair.errors import ConfigError, DataError
    from radpair.evaluation.localisation import evaluate_localisation
    from radpair.explain import gradcam, load_subject
    from radpair.tasks.spec import resolve_split

    corpus = corpus if isinstance(corpus, Corpus) else Corpus.open(corpus)
    if not corpus.has_masks:
        raise DataError(f"{corpus.root}: no ground-truth masks (masks.json); generate the corpus with `radpair synth`")
    index = corpus.split_index(resolve_split(corpus, split))
    image_rows = index["image_index"].to_numpy(dtype=np.int64)
    present = {f: corpus.masks(image_rows, f).reshape(len(image_rows), -1).any(axis=1) for f in findings}
    keep = np.flatnonzero(np.any(np.stack(list(present.values())), axis=0))
    if limit:
        keep = keep[: int(limit)]
    rows, patients = image_rows[keep], index["patient_id"].astype(str).to_numpy()[keep]
    masks = {f: corpus.masks(rows, f) for f in findings}
    images = corpus.read_images(rows)
    log(f"{len(rows)} {split} images with a finding: " + ", ".join(f"{f} {int(m.reshape(len(m), -1).any(1).sum())}"
                                                                 for f, m in masks.items()))
    saliency: dict[str, dict[str, np.ndarray]] = {}
    notes: list[str] = []
    detection: dict[str, dict[str, float | None]] = {}
    flat: dict[str, int] = {}
    scored: dict[str, int] = {}
    for name, run in runs.items():
        t0 = time.time()
        subject = load_subject(run, device=device)
        caps = subject.capabilities()
        detection[name] = detection_auc(subject, corpus, index, findings, batch=batch)
        saliency[name] = {}
        shared = None  # a report writer's map does not depend on the finding
        for f in findings:
            sel = np.flatnonzero(masks[f].reshape(len(rows), -1).any(1))
            if sel.size == 0:
                continue
            use_clf = _use_classifier(subject, caps, f)
            if caps["classifier"] and not use_clf and not caps["joint_embedding"]:
                notes.append(f"{name}: its classifier has no {f!r} output; not scored on {f}")
                continue
            if caps["classifier"] and not use_clf:
                notes.append(f"{name}: its classifier has no {f!r} output; {f} is explained through its joint "
                             "embedding (zero-shot prompts) instead")
            target = f if (caps["classifier"] or caps["joint_embedding"]) else "auto"
            if target == "auto" and shared is not None:
                maps_sel = shared[sel]
            else:
                which = np.arange(len(rows)) if target == "auto" else sel
                x = subject.to_tensor(images[which])
                try:
                    cam = gradcam(subject, x, target, layer=layer, batch_size=batch, use_classifier=use_clf)
                except ConfigError as exc:
                    notes.append(f"{name}: no Grad-CAM for {f} ({exc})")
                    continue
                if target == "auto":
                    shared = cam.maps
                    maps_sel = cam.maps[sel]
                else:
                    maps_sel = cam.maps
                what = {"class": "the classifier's logit of the finding",
                        "text": "the zero-shot score of the finding's prompts",
                        "report": "the log-likelihood of its own generated report"}[cam.target.kind]
                notes.append(f"{name}: Grad-CAM on {cam.layer.name} ({cam.layer.cells[0]}x{cam.layer.cells[1]} "
                             f"cells) of {what}")
            full = np.zeros((len(rows), *maps_sel.shape[1:]), dtype=np.float32)
            full[sel] = maps_sel
            saliency[name][f] = full
            flat[name] = flat.get(name, 0) + int((maps_sel.reshape(len(sel), -1).max(axis=1) <= 0).sum())
            scored[name] = scored.get(name, 0) + len(sel)
        log(f"{name}: maps in {time.time() - t0:.1f} s")
        if flat.get(name):
            notes.append(f"{name}: {flat[name]} of {scored[name]} maps are zero everywhere (no positive gradient "
                         "at the layer); a flat map scores the chance level")
    notes = list(dict.fromkeys(notes))
    res = evaluate_localisation(saliency, masks, patients, n_bootstrap=n_bootstrap, seed=seed)
    return res, notes, detection


def summary_markdown(record: dict, findings, metric: str = "pointing_game") -> str:
    """One table for the docs: findings down, runs across, each cell the score with its CI
    and a mark where the paired difference against the centre baseline excludes 0
    (+ above the centre, - below)."""
    scores = {(r["method"], r["finding"]): r for r in record["scores"] if r["metric"] == metric}
    diffs = {(d["method_a"], d["finding"]): d for d in record["differences"]
             if d["metric"] == metric and d["method_b"] == "centre"}
    runs = [m for m in dict.fromkeys(r["method"] for r in record["scores"]) if m not in ("centre", "uniform")]
    label = metric.replace("_", " ")
    lines = ["| finding (images) | chance | centre |" + "".join(f" {m} |" for m in runs),
             "|---|---|---|" + "---|" * len(runs)]

    def cell(method: str, f: str) -> str:
        r = scores.get((method, f))
        if r is None or r["value"] is None:
            return "–"
        ci = r.get("ci_low") is not None and r.get("ci_high") is not None
        text = f"{r['value']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if ci else f"{r['value']:.2f}"
        d = diffs.get((method, f))
        if d and d["ci_low"] is not None and d["ci_low"] > 0:
            text += " +"
        elif d and d["ci_high"] is not None and d["ci_high"] < 0:
            text += " -"
        return text

    for f in findings:
        n = (record.get("n_images") or {}).get(f, 0)
        if not n:
            continue
        chance = (record.get("chance") or {}).get(f)
        lines.append(f"| {f} ({n}) | {'–' if chance is None else f'{chance:.3f}'} | {cell('centre', f)} |"
                     + "".join(f" {cell(m, f)} |" for m in runs))
    return (f"\n**{label.capitalize()} per finding** (95 % patient-bootstrap CI; + / -: the paired difference "
            "against the centre baseline excludes 0, above / below)\n\n" + "\n".join(lines) + "\n")


def detection_markdown(detection: dict[str, dict[str, float | None]], findings, split: str) -> str:
    head = "| run | " + " | ".join(findings) + " |\n|---|" + "---|" * len(findings) + "\n"
    body = "".join(f"| {name} | " + " | ".join("n/a" if per.get(f) is None else f"{per[f]:.3f}" for f in findings)
                   + " |\n" for name, per in detection.items())
    return (f"\n**Detection AUC of the explained score** ({split} split, every image, drawn truth; n/a: the run "
            "explains its report, or has no output for the finding)\n\n" + head + body)


METHODS = ("scratch", "convirt", "chauhan_ranking", "convirt_sections", "timnet_matching", "radtex_captioning",
           "tienet")


def _check_same_run(folder: Path, cfg) -> None:
    """A run folder is reused only for the run this study would train: same method, encoder,
    corpus, epochs, step cap and seed. Anything else would silently break equal epochs."""
    import yaml

    from radpair.config import to_dict

    saved, want = yaml.safe_load((folder / "config.yaml").read_text()) or {}, to_dict(cfg)
    keys = [("method",), ("image_encoder",), ("data", "corpus"), ("train", "epochs"), ("train", "max_steps"),
            ("train", "seed")]
    for key in keys:
        a, b = saved, want
        for k in key:
            a, b = (a or {}).get(k), (b or {}).get(k)
        if a != b:
            raise SystemExit(f"{folder}: trained with {'.'.join(key)} = {a!r}, but this study asks for {b!r}; "
                             "remove the folder or give another --train DIR")


def train_runs(root: Path, *, image_size: int, n_images: int, epochs: int, methods=METHODS, seed: int = 0,
               max_steps: int | None = None, workers: int = 2, threads: int | None = None,
               log=print) -> tuple[Path, dict[str, Path], dict[str, float]]:
    """A synthetic corpus with masks and one run per method, trained at equal compute.

    Every run is the demo's: its ConVIRT pretraining config (``resnet_tiny``, the small BERT,
    AdamW, batch 64), another method swapped in through :func:`method_pretrain_config` with
    the demo's CPU sizes, ``epochs`` passes over the same pairs. ``scratch`` is the
    from-scratch baseline: the same encoder trained as ``supervised`` on the seven findings'
    drawn labels for the same epochs. Runs resume and are skipped once their encoder exists,
    so a killed study picks up where it stopped. Returns (corpus, runs, training seconds)."""
    from radpair.data.corpus import Corpus
    from radpair.data.synth import SynthConfig, generate_corpus
    from radpair.methods import resolve_method_config
    from radpair.text import load_tokenizer, train_wordpiece_tokenizer
    from radpair_train.demo import (
        DEMO_METHOD_OPTIONS,
        DemoConfig,
        method_pretrain_config,
    )
    from radpair_train.loop import Trainer

    root.mkdir(parents=True, exist_ok=True)
    corpus_dir, tok_dir = root / "corpus", root / "tokenizer"
    if (corpus_dir / "meta.json").is_file():
        corpus = Corpus.open(corpus_dir)
        if corpus.image_size != (image_size, image_size) or len(corpus) != n_images:
            raise SystemExit(f"{corpus_dir}: holds {len(corpus)} images of {corpus.image_size}, not {n_images} of "
                             f"{image_size} px; give another folder")
    else:
        t0 = time.time()
        corpus = generate_corpus(corpus_dir, n_images=n_images, size=image_size, seed=seed, workers=workers,
                                 config=SynthConfig.preset("default"))
        log(f"corpus: {n_images} images at {image_size} px in {time.time() - t0:.0f} s")
    if not (tok_dir / "tokenizer.json").is_file():
        train_wordpiece_tokenizer(corpus.split_index("train")["report"].astype(str).tolist(), tok_dir,
                                  vocab_size=min(3000, max(500, n_images // 4)))
    tokenizer = load_tokenizer(tok_dir)
    base = DemoConfig().pretrain
    base.data.corpus, base.text_encoder.tokenizer = str(corpus_dir), str(tok_dir)
    base.train.epochs, base.train.max_steps, base.train.seed = epochs, max_steps, seed
    base.train.progress, base.train.threads, base.train.device = False, threads, "cpu"
    base.train.log_every = 50
    runs: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    for name in methods:
        folder = root / name
        if name == "scratch":
            cfg = method_pretrain_config(base, "convirt", {}, folder)
            cfg.method = resolve_method_config({"name": "supervised", "labels": list(FINDINGS)})
        else:
            cfg = method_pretrain_config(base, name, DEMO_METHOD_OPTIONS.get(name, {}), folder)
        timing = folder / "train_seconds.json"
        if (folder / "config.yaml").is_file():
            _check_same_run(folder, cfg)
        if not (folder / "image_encoder.safetensors").is_file():
            resumed = any((folder / "checkpoints").glob("*"))
            t0 = time.time()
            Trainer(cfg, tokenizer=tokenizer).fit(resume=True)
            timing.write_text(json.dumps({"seconds": time.time() - t0, "resumed": resumed}))
        record = json.loads(timing.read_text()) if timing.is_file() else {}
        seconds[name] = record.get("seconds", float("nan"))
        log(f"{name}: trained in {seconds[name]:.0f} s ({epochs} epochs)"
            + (" since a resume; the time before it is not counted" if record.get("resumed") else ""))
        runs[name] = folder
    return corpus_dir, runs, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", help="synthetic corpus with masks")
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN", help="a run folder or package (repeat)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="at most this many images with a finding")
    p.add_argument("--findings", nargs="+", default=list(FINDINGS))
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--layer", default=None, help="Grad-CAM layer for every run (default: explain's rule)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="folder for localisation.md and localisation.json")
    p.add_argument("--train", metavar="DIR", default=None,
                   help="make a corpus and train every --methods run in DIR (equal epochs), then score them")
    p.add_argument("--methods", default=",".join(METHODS), help="with --train: comma-separated runs to train")
    p.add_argument("--image-size", type=int, default=224, help="with --train: corpus image size")
    p.add_argument("--images", type=int, default=3000, help="with --train: corpus size")
    p.add_argument("--epochs", type=int, default=3, help="with --train: passes over the pairs, every method")
    p.add_argument("--max-steps", type=int, default=None, help="with --train: cap on each run's steps")
    p.add_argument("--seed", type=int, default=0, help="with --train: corpus and training seed")
    p.add_argument("--smoke", metavar="DIR", default=None,
                   help="--train at 64 px, 400 images, scratch and ConVIRT for 60 steps (plumbing check)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = {}
    for spec in args.run:
        name, _, path = spec.partition("=")
        runs[name if path else Path(name).name] = path or name
    corpus = args.corpus
    trained: dict[str, float] = {}
    if args.smoke:
        args.train, args.methods, args.image_size, args.images = args.smoke, "scratch,convirt", 64, 400
        args.epochs, args.max_steps = 100, 60
    if args.train:
        corpus, made, trained = train_runs(Path(args.train), image_size=args.image_size, n_images=args.images,
                                           epochs=args.epochs, methods=[m for m in args.methods.split(",") if m],
                                           seed=args.seed, max_steps=args.max_steps, threads=args.threads)
        runs = {**made, **runs}
        args.out = args.out or str(Path(args.train) / "study")
    if not corpus or not runs:
        p.error("give --corpus and at least one --run (or --smoke DIR)")
    t0 = time.time()
    res, notes, detection = study(corpus, runs, split=args.split, limit=args.limit, findings=tuple(args.findings),
                       n_bootstrap=args.n_bootstrap, device=args.device, layer=args.layer)
    if trained:
        notes.append(f"training seconds ({args.threads or 'all'} CPU threads): " + ", ".join(
            f"{k} {v:.0f}" for k, v in trained.items()))
    record = res.to_dict()
    text = (summary_markdown(record, args.findings) + summary_markdown(record, args.findings, "mass_share")
            + detection_markdown(detection, args.findings, args.split) + "\n"
            + "\n".join(f"- {n}" for n in notes) + "\n\n" + res.to_markdown())
    print(text)
    print(f"scored in {time.time() - t0:.0f} s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "localisation.md").write_text(text)
        record = {**record, "notes": notes, "train_seconds": trained, "detection_auc": detection,
                  "runs": {k: str(v) for k, v in runs.items()}}
        (out / "localisation.json").write_text(json.dumps(record, indent=2))
        from radpair.evaluation.run_figures import plot_localisation

        plot_localisation(record, out / "pointing_game.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Localisation study: does each method's Grad-CAM point at the finding the generator drew?

For runs given on the command line and a synthetic corpus with ground-truth masks
(``radpair synth`` writes them), Grad-CAM maps of the test images showing a finding are
scored with :func:`radpair.evaluation.localisation.evaluate_localisation` (pointing game
and mass share, patient-bootstrap CIs) against the centre-of-image and uniform baselines.
The from-scratch baseline is simply a ``supervised`` run passed like any other.

What each method's map explains (``radpair.explain``'s rule, per finding): a classifier's
logit of that finding where it has one; for a joint embedding the zero-shot score of the
finding's prompts; for a report writer the log-likelihood of the report it writes (the
same map for every finding). A classifier without the finding is left out of that
finding's table.

    python benchmarks/localisation_study.py --corpus CORPUS --run convirt=RUN1 --run scratch=RUN2 --out DIR
    python benchmarks/localisation_study.py --smoke DIR   # 64 px corpus, briefly trained runs: plumbing only
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


def study(corpus, runs: dict[str, str | Path], *, split: str = "test", limit: int | None = None,
          findings=FINDINGS, n_bootstrap: int = 1000, seed: int = 0, device: str = "cpu", batch: int = 32,
          layer: str | None = None, log=print):
    """(LocalisationResult, notes): every run's Grad-CAM scored on every finding."""
    from radpair.data.corpus import Corpus
    from radpair.data.tensors import images_to_tensor
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
    for name, run in runs.items():
        t0 = time.time()
        subject = load_subject(run, device=device)
        caps = subject.capabilities()
        saliency[name] = {}
        shared = None  # a report writer's map does not depend on the finding
        for f in findings:
            sel = np.flatnonzero(masks[f].reshape(len(rows), -1).any(1))
            if sel.size == 0:
                continue
            if caps["classifier"] and f not in subject.class_names:
                notes.append(f"{name}: its classifier has no {f!r} output; not scored on {f}")
                continue
            target = f if (caps["classifier"] or caps["joint_embedding"]) else "auto"
            if target == "auto" and shared is not None:
                maps_sel = shared[sel]
            else:
                which = np.arange(len(rows)) if target == "auto" else sel
                x = images_to_tensor(images[which]).to(subject.device)
                try:
                    cam = gradcam(subject, x, target, layer=layer, batch_size=batch)
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
        log(f"{name}: maps in {time.time() - t0:.1f} s")
    notes = list(dict.fromkeys(notes))
    res = evaluate_localisation(saliency, masks, patients, n_bootstrap=n_bootstrap, seed=seed)
    return res, notes


def _smoke(root: Path, steps: int, n_images: int) -> tuple[Path, dict[str, Path]]:
    """A 64 px synthetic corpus and a supervised and a ConVIRT run trained for ``steps``."""
    from radpair.config import load_config
    from radpair.data.synth import generate_corpus
    from radpair.text import train_wordpiece_tokenizer
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    root.mkdir(parents=True, exist_ok=True)
    if not (root / "corpus" / "meta.json").is_file():
        c = generate_corpus(root / "corpus", n_images=n_images, size=64, seed=11, workers=1)
        train_wordpiece_tokenizer(c.index["report"].astype(str).tolist(), root / "tok", vocab_size=500,
                                  min_frequency=1)
    base = {"data.corpus": str(root / "corpus"), "text_encoder.tokenizer": str(root / "tok"),
            "image_encoder.name": "resnet_tiny", "text_encoder.hidden_size": 64, "text_encoder.num_layers": 2,
            "text_encoder.num_heads": 2, "text_encoder.intermediate_size": 128, "text_encoder.max_length": 96,
            "data.batch_size": 32, "train.progress": False, "train.threads": 2, "train.device": "cpu",
            "optim.warmup_steps": 5, "train.max_steps": steps, "train.log_every": 50}
    runs = {"scratch": {"method.name": "supervised", "method.labels": list(FINDINGS)},
            "convirt": {"method.name": "convirt", "method.projection_dim": 64}}
    out = {}
    for name, opts in runs.items():
        folder = root / name
        if not (folder / "image_encoder.safetensors").is_file():
            cfg = load_config(PretrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in
                                                     {**base, **opts, "train.out_dir": str(folder)}.items()])
            t0 = time.time()
            Trainer(cfg).fit()
            print(f"trained {name} ({steps} steps) in {time.time() - t0:.0f} s", flush=True)
        out[name] = folder
    return root / "corpus", out


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
    p.add_argument("--smoke", metavar="DIR", default=None,
                   help="make a 64 px corpus and two briefly trained runs in DIR and score them (plumbing check)")
    p.add_argument("--smoke-steps", type=int, default=60)
    p.add_argument("--smoke-images", type=int, default=400)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = {}
    for spec in args.run:
        name, _, path = spec.partition("=")
        runs[name if path else Path(name).name] = path or name
    corpus = args.corpus
    if args.smoke:
        corpus, made = _smoke(Path(args.smoke), args.smoke_steps, args.smoke_images)
        runs = {**made, **runs}
        args.out = args.out or str(Path(args.smoke) / "study")
    if not corpus or not runs:
        p.error("give --corpus and at least one --run (or --smoke DIR)")
    t0 = time.time()
    res, notes = study(corpus, runs, split=args.split, limit=args.limit, findings=tuple(args.findings),
                       n_bootstrap=args.n_bootstrap, device=args.device, layer=args.layer)
    text = res.to_markdown() + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(text)
    print(f"scored in {time.time() - t0:.0f} s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "localisation.md").write_text(text)
        (out / "localisation.json").write_text(json.dumps({**res.to_dict(), "notes": notes,
                                                           "runs": {k: str(v) for k, v in runs.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

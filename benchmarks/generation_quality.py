"""Clinical correctness of generated reports against two retrieval baselines, paired.

    python benchmarks/generation_quality.py --quality-dir runs/method_quality --demo-dir runs/calib_seeds \
        --seeds 0 1 2 --methods radtex_captioning [--beam 2] [--out runs/generation_quality]
    python benchmarks/generation_quality.py ... --select-decoding [--select-limit 500] \
        --out runs/generation_quality_selected

For each corpus seed and each captioning run (``<quality-dir>/seed<k>/<method>``, as
``benchmarks/method_quality.py`` pretrains them), on every test image whose report has the
section the method writes (FINDINGS for RadTex):

* **generated**: the run's report, beam search (width ``--beam``), or with
  ``--select-decoding`` the decoding among ``decoding_candidates()`` that scores the highest
  CE macro-F1 (common 5, uncertain positive) on the first ``--select-limit`` usable
  *validate* images (the test split is never read to choose);
* **nearest neighbour**: the section text of the training image nearest to the test image
  in the *same run's* image-encoder features (cosine, pooled features) — what the encoder
  alone retrieves, so the decoder has to beat its own encoder's memory;
* **most common**: the single most frequent training text of that section, for every image.

Each is scored with ``radpair.evaluation.generation.evaluate_generation`` against the test
reports (BLEU-4, ROUGE-L, CIDEr-D, clinical efficacy from radpair's CheXpert labeler), and
the generated reports are compared with each baseline as paired differences with 95 %
patient-bootstrap CIs. The issue's bar: CE macro-F1 over the common 5 observations,
generated − nearest neighbour, CI lower bound above 0 on each seed.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

KEY_METRICS = ("ce_upos_5_macro_f1", "ce_uneg_5_macro_f1", "ce_upos_14_micro_f1", "bleu4", "rougeL", "cider")
SELECTION_METRIC = "ce_upos_5_macro_f1"  # the bar's metric


def decoding_candidates() -> dict:
    """Beam search seeks the mode: a decoder unsure whether a finding is there writes the
    normal sentence, and names the less common findings almost never. Sampling writes each
    finding at the rate the decoder believes, as a retrieved report does; which of them
    suits the bar's macro-F1 is for the validate split to say."""
    from radpair.generation import DecodingConfig

    return {"beam2": DecodingConfig("beam", beam_width=2), "greedy": DecodingConfig("greedy"),
            "nucleus_p0.9": DecodingConfig("nucleus", top_p=0.9), "sample_t1.0": DecodingConfig("nucleus", top_p=1.0)}


def run_stamp(run_dir: Path) -> str:
    """The trained weights' hash: cached reports and decoding choices belong to one run,
    not to a folder that a retrained run may have replaced."""
    import hashlib

    from radpair.package.files import sha256_file

    files = {path.name: sha256_file(path) for path in sorted(run_dir.glob("*.safetensors"))}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def _candidate_stamp() -> dict:
    return {name: asdict(d) for name, d in decoding_candidates().items()}


def select_decoding(run, corpus, corpus_dir: Path, sections: str, limit: int, seed: int) -> tuple[str, dict]:
    """The candidate with the best validate CE macro-F1 (common 5), and every candidate's scores."""
    from radpair.evaluation.generation import evaluate_generation
    from radpair.generation.generate import generate_reports

    val = corpus.split_index("validate")
    val = val[[bool(t.strip()) for t in section_texts(val, sections)]].iloc[:limit]
    ids = val["image_id"].astype(str).tolist()
    scores: dict = {}
    for name, decoding in decoding_candidates().items():
        t0 = time.perf_counter()
        frame = generate_reports(run, corpus, split="validate", image_ids=ids, decoding=decoding, batch_size=32,
                                 seed=seed).frame
        res = evaluate_generation(frame, corpus_dir, ref_sections=sections, n_bootstrap=0, seed=seed, meteor=False)
        if res.metrics.get(SELECTION_METRIC) is None:
            raise SystemExit(f"{corpus_dir}: no {SELECTION_METRIC} to choose the decoding by "
                             f"({res.ce_reason or 'the CheXpert labeler did not run'})")
        scores[name] = {m: res.metrics.get(m) for m in KEY_METRICS} | {"seconds": round(time.perf_counter() - t0, 1)}
        print(f"  validate {name}: {SELECTION_METRIC} {scores[name][SELECTION_METRIC]:.3f} "
              f"({len(ids)} images, {scores[name]['seconds']} s)", flush=True)
    best = max(scores, key=lambda k: scores[k][SELECTION_METRIC])  # first listed wins a tie
    return best, {"limit": limit, "n_validate": len(ids), "metric": SELECTION_METRIC, "scores": scores, "chosen": best}


def section_texts(index: pd.DataFrame, sections: str) -> np.ndarray:
    from radpair.data.pairs import select_report_text

    return np.array(select_report_text(index["report"].astype(str).tolist(), sections), dtype=object)


def nearest_neighbour_reports(run, corpus, train: pd.DataFrame, test: pd.DataFrame, sections: str) -> pd.DataFrame:
    """For each test image, the section text of its nearest training image in the run's encoder features."""
    import torch

    from radpair.evaluation.features import extract_features

    train_text = section_texts(train, sections)
    keep = np.array([bool(t.strip()) for t in train_text])
    train, train_text = train[keep], train_text[keep]
    enc = run.model.image_encoder
    with torch.random.fork_rng(devices=[]):
        a = extract_features(enc, corpus.images, device=run.device, indices=train["image_index"].to_numpy())
        b = extract_features(enc, corpus.images, device=run.device, indices=test["image_index"].to_numpy())
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    nearest = np.concatenate([np.argmax(b[i:i + 512] @ a.T, axis=1) for i in range(0, len(b), 512)])
    return pd.DataFrame({"image_id": test["image_id"].astype(str).to_numpy(), "report": train_text[nearest]})


def most_common_report(train: pd.DataFrame, test: pd.DataFrame, sections: str) -> tuple[pd.DataFrame, str, float]:
    texts = pd.Series(section_texts(train, sections))
    texts = texts[texts.str.strip() != ""]
    counts = texts.value_counts()
    top = str(counts.index[0])
    frame = pd.DataFrame({"image_id": test["image_id"].astype(str).to_numpy(), "report": top})
    return frame, top, float(counts.iloc[0] / len(texts))


def evaluate_seed(seed: int, method: str, run_dir: Path, corpus_dir: Path, out: Path, beam: int, n_bootstrap: int,
                  limit: int | None, select_limit: int | None = None) -> dict:
    from radpair.data.corpus import Corpus
    from radpair.evaluation.generation import evaluate_generation
    from radpair.generation import DecodingConfig
    from radpair.generation.generate import generate_reports
    from radpair.generation.runs import load_generative_run
    from radpair.methods import method_needs, resolve_method_config

    out.mkdir(parents=True, exist_ok=True)
    corpus = Corpus.open(corpus_dir)
    run = load_generative_run(run_dir)
    fields = method_needs(resolve_method_config(run.config["method"])).text_fields
    sections = fields[0].sections or run.config.get("data", {}).get("text_sections", "full")
    test = corpus.split_index("test")
    test = test[[bool(t.strip()) for t in section_texts(test, sections)]]
    if limit:
        test = test.iloc[:limit]
    train = corpus.split_index("train")

    decoding, selection = DecodingConfig("beam", beam_width=beam), None
    weights = run_stamp(run_dir)
    sel_json = out / "decoding_selection.json"
    if select_limit:
        cached = json.loads(sel_json.read_text()) if sel_json.is_file() else {}
        if (cached.get("limit"), cached.get("run"), cached.get("candidates")) == (select_limit, weights,
                                                                                 _candidate_stamp()):
            selection = cached
        else:
            _, selection = select_decoding(run, corpus, corpus_dir, sections, select_limit, seed)
            selection.update(run=weights, candidates=_candidate_stamp())
            sel_json.write_text(json.dumps(selection, indent=2, default=float) + "\n")
        decoding = decoding_candidates()[selection["chosen"]]
    gen_csv, gen_json = out / "generated.csv", out / "generated_decoding.json"
    # reports of another decoding or another run are never scored under this one's name
    stated = json.dumps({"decoding": asdict(decoding), "run": weights}, sort_keys=True)
    made_with = gen_json.read_text() if gen_json.is_file() else None
    t0 = time.perf_counter()
    generated = pd.read_csv(gen_csv, keep_default_na=False) if gen_csv.is_file() and made_with == stated else None
    if generated is None or set(generated["image_id"].astype(str)) != set(test["image_id"].astype(str)):
        result = generate_reports(run, corpus, split="test", image_ids=test["image_id"].astype(str).tolist(),
                                  decoding=decoding, batch_size=32, seed=seed)
        generated = result.frame
        generated.to_csv(gen_csv, index=False)
        gen_json.write_text(stated)
    gen_s = time.perf_counter() - t0
    nn_frame = nearest_neighbour_reports(run, corpus, train, test, sections)
    nn_frame.to_csv(out / "nearest_neighbour.csv", index=False)
    common, top, share = most_common_report(train, test, sections)
    common.to_csv(out / "most_common.csv", index=False)

    summary: dict = {"seed": seed, "method": method, "run": str(run_dir), "sections": sections, "n_test": len(test),
                     "beam": None if selection else beam, "decoding": asdict(decoding), "decoding_selection": selection,
                     "generation_s": round(gen_s, 1), "most_common_text": top,
                     "most_common_share_of_train": round(share, 4), "systems": {}, "paired": {}}
    for name, other in (("nearest_neighbour", nn_frame), ("most_common", common)):
        res = evaluate_generation(generated, corpus_dir, ref_sections=sections, compare=other, n_bootstrap=n_bootstrap,
                                  seed=seed, out_dir=out / f"vs_{name}", meteor=False)
        summary["systems"]["generated"] = {m: res.metrics.get(m) for m in KEY_METRICS}
        summary["systems"][name] = {m: (res.compare_metrics or {}).get(m) for m in KEY_METRICS}
        summary["paired"][name] = {d.metric: {"diff": d.diff, "ci": [d.ci_low, d.ci_high], "p": d.p_value}
                                   for d in res.differences if d.metric in KEY_METRICS}
        summary["n_scored"] = res.n_reports
        summary["unit"] = res.resampling_unit
    samples = generated.merge(nn_frame, on="image_id", suffixes=("", "_nn")).head(5)
    summary["samples"] = [{"image_id": r.image_id, "generated": r.report, "nearest_neighbour": r.report_nn,
                           "original": section_texts(test[test["image_id"].astype(str) == r.image_id], sections)[0]}
                          for r in samples.itertuples()]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def table(summaries: list[dict]) -> str:
    lines = ["| seed | method | generated − baseline | metric | generated | baseline | paired Δ | 95 % CI |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        for base, rows in s["paired"].items():
            for metric in ("ce_upos_5_macro_f1", "ce_uneg_5_macro_f1", "bleu4", "rougeL"):
                if metric not in rows:
                    continue
                d = rows[metric]
                lines.append(f"| {s['seed']} | {s['method']} | {base} | {metric} | {s['systems']['generated'][metric]:.3f} "
                             f"| {s['systems'][base][metric]:.3f} | {d['diff']:+.3f} | [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quality-dir", type=Path, default=Path("runs/method_quality"))
    ap.add_argument("--demo-dir", type=Path, default=Path("runs/calib_seeds"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["radtex_captioning"])
    ap.add_argument("--beam", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=None, help="only the first N usable test images")
    ap.add_argument("--select-decoding", action="store_true",
                    help="choose the decoding on validate CE macro-F1 (common 5) among beam 2, greedy and sampling")
    ap.add_argument("--select-limit", type=int, default=500, help="validate images used to choose the decoding")
    ap.add_argument("--out", type=Path, default=Path("runs/generation_quality"))
    args = ap.parse_args()
    if args.select_decoding and args.select_limit < 1:
        ap.error(f"--select-limit must be at least 1 validate image, got {args.select_limit}")
    summaries = []
    for seed in args.seeds:
        for method in args.methods:
            run_dir = args.quality_dir / f"seed{seed}" / method
            if not (run_dir / "image_encoder.safetensors").is_file():
                raise SystemExit(f"{run_dir}: no finished run; pretrain it with benchmarks/method_quality.py first")
            s = evaluate_seed(seed, method, run_dir, args.demo_dir / f"seed{seed}" / "corpus",
                              args.out / f"seed{seed}" / method, args.beam, args.bootstrap, args.limit,
                              args.select_limit if args.select_decoding else None)
            summaries.append(s)
            chosen = (s["decoding_selection"] or {}).get("chosen", f"beam{args.beam}")
            print(f"seed {seed} {method}: {s['n_scored']} reports, decoding {chosen}, generation {s['generation_s']} s",
                  flush=True)
    print(table(summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

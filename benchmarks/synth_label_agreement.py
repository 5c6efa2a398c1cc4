"""How often do labels read from the synthetic reports agree with the drawn truth?

The papers train on regex labels that agree with expert reading roughly 90% of the
time; the synthetic corpus is calibrated to the same level. This benchmark measures it
the way a user would: run radpair's own labelers (the CheXpert rules for six findings,
Chauhan's edema rules for edema presence and severity) on the report text and compare
with ``ground_truth.csv``.

    python benchmarks/synth_label_agreement.py --corpus demo_out/corpus
    python benchmarks/synth_label_agreement.py --n 3000 --seed 0     # generates a corpus first

Agreement is counted per finding-present decision (|truth ∧ labeler| / |truth ∨ labeler|,
uncertain counted as not present), the same definition the generator stores in meta.json;
accuracy over all (image, finding) pairs is reported too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import pandas as pd

from radpair.data.corpus import Corpus
from radpair.reports.labeling import get_labeler

# synthetic finding -> CheXpert observation (edema comes from the Chauhan labeler:
# severity 1, vascular congestion, is edema there but not a CheXpert "Edema" mention)
CHEXPERT = {
    "cardiomegaly": "Cardiomegaly",
    "pleural_effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "atelectasis": "Atelectasis",
    "nodule": "Lung Lesion",
}


def agreement(truth: np.ndarray, said: np.ndarray) -> dict:
    both, either = int((truth & said).sum()), int((truth | said).sum())
    return {"agreement": round(both / either, 4) if either else 1.0, "accuracy": round(float((truth == said).mean()), 4),
            "positives": int(truth.sum())}


def measure(corpus: Corpus) -> dict:
    studies = corpus.index.drop_duplicates("study_id")
    truth = corpus.ground_truth.set_index("image_id").loc[studies["image_id"]]
    texts = studies["report"].astype(str).tolist()
    t0 = time.perf_counter()
    cx = get_labeler("chexpert").label_many(texts)
    ed = get_labeler("edema").label_many(texts)
    seconds = time.perf_counter() - t0
    sev_t = truth["edema_severity"].to_numpy()
    sev_l = pd.to_numeric(ed["edema_severity"], errors="coerce").to_numpy()
    said = {"edema": np.nan_to_num(sev_l, nan=0.0) >= 1}
    said.update({f: pd.to_numeric(cx[c], errors="coerce").fillna(0).to_numpy() == 1 for f, c in CHEXPERT.items()})
    per, all_t, all_s = {}, [], []
    for finding, s in said.items():
        t = truth[finding].to_numpy().astype(bool)
        per[finding] = agreement(t, s)
        all_t.append(t)
        all_s.append(s)
    labelled = ~np.isnan(sev_l)
    return {
        "reports": len(texts),
        "overall": agreement(np.concatenate(all_t), np.concatenate(all_s)),
        "per_finding": per,
        "edema_severity": {
            "labelled_fraction": round(float(labelled.mean()), 4),
            "exact_on_labelled": round(float((sev_l[labelled] == sev_t[labelled]).mean()), 4),
        },
        "labeling_reports_per_s": round(2 * len(texts) / seconds, 1),
        "generator_measured": corpus.meta.get("report_agreement", {}).get("overall"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", help="existing corpus folder; otherwise one is generated")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the JSON here as well")
    args = ap.parse_args(argv)
    if args.corpus:
        corpus = Corpus.open(args.corpus)
    else:
        from radpair.data.synth import generate_corpus

        corpus = generate_corpus(tempfile.mkdtemp(prefix="radpair-agree-"), n_images=args.n, size=64, seed=args.seed)
    result = measure(corpus)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        open(args.out, "w").write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

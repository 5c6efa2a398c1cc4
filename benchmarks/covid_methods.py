"""Every joint method end to end on the real COVID-19 image-text pairs (``../shared/data/covid_cxr``).

The ieee8023 collection's notes are case descriptions without report sections, so each
method reads the whole note (``text_sections: full``); the section study cannot run on it
and says so. Per method: pretraining on the collection's training split (its CPU preset,
shrunk to ``--epochs``), then image<->text retrieval on the test split and, for TIMNet,
matching on held-out pairs. Numbers here are a smoke measurement on 297 images, not a
claim:

    python benchmarks/covid_methods.py --out runs/covid_methods [--epochs 20] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "covid_cxr"

RUNS = {
    "convirt": ["method.text_sections=full"],
    "chauhan_ranking": ["method.text_sections=full", "method.labelled_fraction=null", "method.impostors=batch"],
    "timnet_matching": ["method.text_sections=full"],
    "convirt_sections": [],
}


def prepare(out: Path, size: int) -> tuple[Path, Path]:
    from radpair.data.corpus import Corpus
    from radpair.text import train_wordpiece_tokenizer
    from radpair_train.cli import main

    corpus = out / "corpus"
    if not (corpus / "meta.json").is_file():
        if main(["preprocess", "--dataset", "covid", "--root", str(SHARED), "--out", str(corpus), "--size", str(size),
                 "--no-progress"]) != 0:
            raise SystemExit("preprocess failed")
    tok = out / "tokenizer"
    if not (tok / "tokenizer.json").is_file():
        texts = Corpus.open(corpus).split_index("train")["report"].astype(str).tolist()
        train_wordpiece_tokenizer(texts, tok, vocab_size=1000, min_frequency=1)
    return corpus, tok


def run_method(name: str, corpus: Path, tok: Path, out: Path, epochs: int, batch: int, extra: list[str]) -> dict:
    from radpair.config import load_config
    from radpair.errors import ConfigError, DataError
    from radpair.evaluation.retrieval import evaluate_retrieval
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    preset = REPO / "configs" / f"{name}_cpu.yaml"
    overrides = [f"data.corpus={corpus}", f"text_encoder.tokenizer={tok}", f"train.out_dir={out / name}",
                 "train.progress=false", f"data.batch_size={batch}", "optim.warmup_steps=5", *extra]
    overrides += ([f"method.ranking_epochs={epochs}", f"method.joint_epochs={epochs}"] if name == "chauhan_ranking"
                  else [f"train.epochs={epochs}"])
    t0 = time.time()
    try:
        cfg = load_config(PretrainConfig, preset, overrides)
        result = Trainer(cfg).fit()
    except (ConfigError, DataError) as exc:  # e.g. the section study on notes without sections
        return {"ran": False, "error": str(exc)}
    record = {"ran": True, "steps": result.steps, "final_loss": result.final_loss, "pretrain_s": round(time.time() - t0)}
    r = evaluate_retrieval(out / name, corpus, split="test")
    record["retrieval"] = {d: {k: round(v, 4) for k, v in r.directions[d].items() if k.startswith(("recall@", "chance@"))}
                           for d in r.directions}
    if name == "timnet_matching":
        from radpair.evaluation.matching import evaluate_matching

        record["matching"] = evaluate_matching(out / name, corpus, split="test").metrics
    return record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/covid_methods"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--methods", nargs="+", default=list(RUNS))
    args = ap.parse_args()
    if not (SHARED / "pairs.csv").is_file():
        raise SystemExit(f"{SHARED} is absent: this benchmark needs the shared COVID-19 pairs")
    args.out.mkdir(parents=True, exist_ok=True)
    corpus, tok = prepare(args.out, args.size)
    results = {name: run_method(name, corpus, tok, args.out, args.epochs, args.batch, RUNS[name]) for name in args.methods}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Batch image reads through the memory map against ``pread`` (what the engine uses).

    python benchmarks/engine_read_path.py --threads 2 [--rounds 2] [--steps 12] [--json out.json]

``Corpus.read_images`` reads a batch with ``os.preadv`` so that the image file's pages do not
become the process's resident memory (see ``engine_memory.py``). This measures what that
costs:

* **reads alone** — milliseconds per batch of 64 random rows, both ways, alternately;
* **training** — ``Trainer.fit`` on the ConVIRT CPU preset (``train.channels_last=true``,
  batch 64, 128 px), once with ``Corpus.read_images`` swapped for a memory-map read and
  once as shipped, alternately ``--rounds`` times; step times come from ``on_step``
  timestamps after two warm-up steps. The read happens in the prefetch thread, so only
  contention for the cores could reach the step time.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from engine_common import PRESET, alternating_run_parser, bench_inputs, machine, set_threads, write_json


def read_through_map(self, rows, out=None):
    """The pre-change read: one sorted fancy index of the memory map."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    result = np.empty((len(rows), *self.image_size), dtype=np.uint8) if out is None else out
    result[order] = self.images[rows[order]]
    return result


def main() -> None:
    p = alternating_run_parser(__doc__)
    args = p.parse_args()
    set_threads(args.threads)

    from radpair.config import load_config
    from radpair.data.corpus import Corpus
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    work, corpus, tok = bench_inputs(args.work, 1024, args.size)
    shipped = Corpus.read_images
    ways = {"memory_map": read_through_map, "pread": shipped}

    rng = np.random.default_rng(0)
    batches = [rng.permutation(len(corpus.images))[:64] for _ in range(200)]
    read_ms: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(2):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            for b in batches:
                fn(corpus, b)
            read_ms[name].append((time.perf_counter() - t0) / len(batches) * 1e3)

    steps: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(args.rounds):
        for name, fn in ways.items():
            Corpus.read_images = fn
            stamps: list[float] = []
            cfg = load_config(PretrainConfig, PRESET, [
                f"data.corpus={corpus.root}", f"text_encoder.tokenizer={tok}", "train.progress=false",
                "train.device=cpu", "train.channels_last=true", f"train.max_steps={args.steps + 2}",
                "train.checkpoint_every=1000", f"train.threads={args.threads}", f"train.out_dir={work / f'read-{name}-{r}'}"])
            Trainer(cfg, on_step=lambda s, o: stamps.append(time.perf_counter())).fit()
            steps[name] += [b - a for a, b in zip(stamps[1:], stamps[2:])]
            print(name, r, "median step", round(statistics.median(steps[name][-args.steps:]), 3), flush=True)
    Corpus.read_images = shipped
    write_json({"benchmark": "engine_read_path", "machine": machine(),
                "config": {"preset": PRESET.name, "image_size": args.size, "batch": 64, "rounds": args.rounds},
                "read_ms_per_batch_of_64": {k: statistics.median(v) for k, v in read_ms.items()},
                "train_step_s_median": {k: statistics.median(v) for k, v in steps.items()},
                "train_step_s_max": {k: max(v) for k, v in steps.items()},
                "pread_over_map_step_time": statistics.median(steps["pread"]) / statistics.median(steps["memory_map"])},
               args.json)


if __name__ == "__main__":
    main()

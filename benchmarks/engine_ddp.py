"""Two gloo processes on this machine against one process, at the same global batch.

    python benchmarks/engine_ddp.py --threads 2 [--steps 12] [--rounds 2] [--json out.json]

The ConVIRT CPU preset (``train.channels_last=true``, global batch 64) runs as
  * one process with ``--threads`` intra-op threads, and
  * ``--threads`` processes (gloo, one thread each; each process holds half the batch,
    InfoNCE negatives gathered from both, gradients all-reduced by DDP),
alternately ``--rounds`` times. Workers are forked from a forkserver that has imported
the engine once. Step times come from ``on_step`` timestamps of rank 0 after two
warm-up steps, so start-up is not counted. On a 2-core machine this shows the cost of
the distributed path, not a speed-up: the same two cores do the same work plus the
communication.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
from pathlib import Path

from engine_common import PRESET, alternating_run_parser, bench_inputs, machine, set_threads, write_json


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, overrides: list[str], out_json: str) -> None:
    if world > 1:
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                           "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    from radpair.config import load_config
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    stamps: list[float] = []
    trainer = Trainer(load_config(PretrainConfig, PRESET, overrides), on_step=lambda s, o: stamps.append(time.perf_counter()))
    trainer.fit()
    if rank == 0:
        steps = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # after two warm-up steps
        Path(out_json).write_text(json.dumps({"step_s": steps, "batch": trainer.batch_size,
                                              "threads": trainer.cfg.train.threads, "world_size": world}))


def run(world: int, threads: int, base: list[str], out: Path) -> dict:
    import torch.multiprocessing as mp

    over = base + [f"train.threads={threads}", f"train.out_dir={out}"]
    mp.start_processes(worker, args=(world, _port(), over, str(out) + ".json"), nprocs=world,
                       start_method="forkserver", join=True)
    return json.loads(Path(str(out) + ".json").read_text())


def main() -> None:
    p = alternating_run_parser(__doc__, "cores: threads of the single process = number of processes")
    args = p.parse_args()
    set_threads(1)  # the parent only orchestrates
    import torch.multiprocessing as mp

    work, corpus, tok = bench_inputs(args.work, 1024, args.size)
    mp.set_forkserver_preload(["radpair_train.loop"])
    base = [f"data.corpus={corpus.root}", f"text_encoder.tokenizer={tok}", "train.progress=false", "train.device=cpu",
            "train.channels_last=true", f"train.max_steps={args.steps + 2}", "train.checkpoint_every=1000"]
    single, multi = [], []
    for r in range(args.rounds):
        one = run(1, args.threads, base, work / f"ddp-one-{r}")
        single += one["step_s"]
        multi += run(args.threads, 1, base, work / f"ddp-two-{r}")["step_s"]
    batch = one["batch"]
    rate_one = batch / statistics.median(single)
    rate_two = batch / statistics.median(multi)
    write_json({"benchmark": "engine_ddp", "machine": machine(),
                "config": {"preset": PRESET.name, "image_size": args.size, "global_batch": batch,
                           "steps_timed": {"one_process": len(single), "gloo_processes": len(multi)}},
                "images_per_s": {f"1 process x {args.threads} threads": rate_one,
                                 f"{args.threads} gloo processes x 1 thread": rate_two},
                "multi_over_single": rate_two / rate_one}, args.json)


if __name__ == "__main__":
    main()

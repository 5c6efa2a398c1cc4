"""Pretraining step throughput of every objective's CPU preset, and image-encoder GFLOP/s.

    python benchmarks/engine_throughput.py --threads 2 [--json out.json] [--compile]

1. **Presets** — for every ``configs/*_cpu.yaml`` (one per registered objective: ConVIRT
   today; later objectives add their preset and join automatically), a ``Trainer`` is
   built on a synthetic corpus and ``Trainer.train_step`` (forward, loss, backward,
   clipping, optimiser, scheduler) is timed on batches already read; once as the preset
   is written and once with ``train.channels_last=true``.
2. **Image encoder vs matmul** — forward+backward of ResNet image encoders at 224 px,
   fp32, channels-last (what ``train.channels_last`` gives), FLOPs counted exactly with
   ``torch.utils.flop_counter`` (2 FLOPs per multiply-add); the fp32 2048² matmul rate is
   measured alternately with it in the same process; ``fraction_of_matmul`` is the ratio
   of the medians and ``fraction_of_matmul_best`` of the best repeats (on a shared
   machine other jobs only ever add time, so the best repeat is the least disturbed). ``--compile`` adds the ``torch.compile`` variant (cold compile
   takes about a minute per model here). ``--profile`` adds, per encoder, the share of a
   step's time spent in each kind of operator (``torch.profiler``) and
   ``conv_fraction_of_matmul``: the FLOP rate of the convolutions alone (all counted FLOPs
   are convolutions but the final pooling-free head) against the matmul, i.e. how far the
   kernels that do the arithmetic are from the peak, apart from the memory-bound
   BatchNorm, ReLU and residual additions between them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from engine_common import PRESET, REPO, bench_inputs, machine, matmul_gflops, set_threads, timed, write_json


def preset_throughput(preset: Path, corpus, tok_dir: Path, out: Path, steps: int, extra: list[str]) -> dict:
    import torch

    from radpair.config import load_config
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    cfg = load_config(PretrainConfig, preset, [f"data.corpus={corpus.root}", f"text_encoder.tokenizer={tok_dir}",
                                               f"train.out_dir={out}", "train.progress=false", "train.device=cpu",
                                               f"train.threads={torch.get_num_threads()}", *extra])
    trainer = Trainer(cfg)
    batches = []
    for s in range(steps + 2):
        gen = torch.Generator().manual_seed(s)
        batches.append([trainer._prepare(trainer.dataset.get_batch(rows), gen) for rows in trainer.plan.rows(s)])
    for b in batches[:2]:
        trainer.train_step(b)
    times = [t for b in batches[2:] for t in timed(lambda b=b: trainer.train_step(b), 1)]
    per_step = statistics.median(times)
    return {"preset": preset.name, "overrides": extra, "method": cfg.method.name, "image_encoder": cfg.image_encoder.name,
            "image_size": list(corpus.image_size), "batch": trainer.batch_size, "steps_timed": len(times),
            "step_s_median": per_step, "images_per_s": trainer.batch_size / per_step,
            "images_per_s_best": trainer.batch_size / min(times)}


def encoder_flops(model, images) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(images).float().pow(2).mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


OP_KINDS = {"convolution": ("convolution",), "batch_norm": ("batch_norm",), "relu": ("threshold", "relu", "clamp_min"),
            "residual_add": ("add",), "copy_and_layout": ("copy_", "contiguous", "clone")}


def time_shares(step) -> dict[str, float]:
    """Fraction of one step's operator self-time in each ``OP_KINDS`` group (rest: ``other``)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    shares = {k: 0.0 for k in [*OP_KINDS, "other"]}
    for e in events:
        kind = next((k for k, keys in OP_KINDS.items() if any(x in e.key for x in keys)), "other")
        shares[kind] += e.self_cpu_time_total / total
    return shares


def encoder_rows(names: list[str], batch: int, size: int, repeats: int, compile_too: bool,
                 profile_ops: bool = False) -> list[dict]:
    import torch

    from radpair.models.image_encoders import IMAGE_ENCODERS

    rows = []
    for name in names:
        variants = [("channels_last", False)] + ([("channels_last+compile", True)] if compile_too else [])
        for label, comp in variants:
            torch.manual_seed(0)
            model = IMAGE_ENCODERS.build(name).to(memory_format=torch.channels_last).train()
            x = torch.randn(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
            flops = encoder_flops(model, x)
            t_compile = None
            if comp:
                t0 = time.perf_counter()
                model.compile()
                model(x).float().pow(2).mean().backward()
                t_compile = time.perf_counter() - t0

            def step():
                model(x).float().pow(2).mean().backward()
                model.zero_grad(set_to_none=True)

            step()
            enc, mm = [], []
            for _ in range(repeats):  # alternate, so drift in machine speed hits both sides
                mm.append(matmul_gflops(repeats=3))
                enc.append(timed(step, 1)[0])
            t = statistics.median(enc)
            peak = statistics.median(mm)
            achieved = flops / t / 1e9
            best = flops / min(enc) / 1e9  # noise from other jobs only ever adds time
            rows.append({"encoder": name, "variant": label, "image_size": size, "batch": batch,
                         "gflop_per_image_fwd_bwd": flops / batch / 1e9, "step_s_median": t,
                         "images_per_s": batch / t, "achieved_gflops": achieved, "matmul_gflops": peak,
                         "fraction_of_matmul": achieved / peak,
                         "best_achieved_gflops": best, "best_matmul_gflops": max(mm),
                         "fraction_of_matmul_best": best / max(mm), "cold_compile_s": t_compile})
            if profile_ops and not comp:
                shares = time_shares(step)
                rows[-1]["time_shares"] = shares
                rows[-1]["conv_fraction_of_matmul"] = achieved / peak / max(shares["convolution"], 1e-9)
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="corpus image size for the presets")
    p.add_argument("--steps", type=int, default=6, help="timed steps per preset")
    p.add_argument("--encoders", default="resnet18,resnet50")
    p.add_argument("--encoder-batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--encoders-only", action="store_true", help="skip the preset measurements")
    p.add_argument("--profile", action="store_true", help="add per-operator time shares of the encoder step")
    p.add_argument("--work", default=None, help="folder for the corpus (kept between runs)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    set_threads(args.threads)
    work, corpus, tok = bench_inputs(args.work, 1024, args.size)
    presets = sorted((REPO / "configs").glob("*_cpu.yaml")) or [PRESET]
    preset_rows = []
    for preset in [] if args.encoders_only else presets:
        for extra in ([], ["train.channels_last=true"]):
            preset_rows.append(preset_throughput(preset, corpus, tok, work / "run", args.steps, extra))
            print(preset_rows[-1], flush=True)
    encoders = encoder_rows(args.encoders.split(","), args.encoder_batch, 224, args.repeats, args.compile, args.profile)
    write_json({"benchmark": "engine_throughput", "machine": machine(), "presets": preset_rows, "image_encoders": encoders},
               args.json)


if __name__ == "__main__":
    main()

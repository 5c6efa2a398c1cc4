"""Pretraining step throughput of every method's CPU preset, and image-encoder GFLOP/s.

    python benchmarks/engine_throughput.py --threads 2 [--json out.json] [--presets convirt_cpu ...]
                                           [--steps 6] [--presets-only | --encoders-only] [--compile] [--profile]

1. **Presets** — for every ``configs/*_cpu.yaml`` (one per method; a new preset joins
   automatically; ``--presets`` restricts to some, by file stem), a ``Trainer`` is built on
   a synthetic corpus (``radpair.data.synth``: FINDINGS/IMPRESSION sections, which
   ``convirt_sections`` requires, and ground-truth edema grades) with a WordPiece tokenizer
   trained on its reports. A step's batches are read with ``radpair_train.batches.read_step``
   (so a method's extra rows — ``impostor_*``, ``false_*`` — are included) and prepared
   (augmentation, memory format) before timing. Two things are timed on the same batches,
   alternately (and in alternating order) so drift in machine speed hits both:

   * the full ``Trainer.train_step`` (forward, loss, backward, clipping, optimiser, scheduler);
   * an image-encoder-only step: forward+backward of ``trainer.model.image_encoder`` alone on
     each micro-batch's ``images`` with a trivial loss (``out.float().pow(2).mean()``).

   ``full_over_image_encoder`` is the ratio of the two medians: how much the text encoder,
   heads, loss, extra rows and optimiser add over the image encoder. Each preset runs as
   written and with ``train.channels_last=true``. Multi-phase methods (``chauhan_ranking``)
   are told their phase with ``Trainer._enter_phase`` and timed in their first phase
   (``phase`` in the output). A method reading labels from reports
   (``method.label_source=report``) is run with ``method.label_source=truth`` instead: the
   report labeler takes long to warm up and labels do not change the step's cost.
2. **Image encoder vs matmul** (skip with ``--presets-only``) — forward+backward of ResNet image encoders at 224 px,
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
import hashlib
import statistics
import sys
import time
from pathlib import Path

from engine_common import PRESET, REPO, bench_inputs, machine, matmul_gflops, set_threads, timed, write_json


def preset_overrides(preset: Path) -> list[str]:
    """Overrides the benchmark applies to ``preset`` on top of the caller's: report-derived
    labels are replaced by the corpus's ground truth (the labeler's warm-up is not the step)."""
    import yaml

    method = (yaml.safe_load(preset.read_text()) or {}).get("method") or {}
    return ["method.label_source=truth"] if method.get("label_source") == "report" else []


def preset_throughput(preset: Path, corpus, tok_dir: Path, out: Path, steps: int, extra: list[str]) -> dict:
    import torch

    from radpair.config import load_config
    from radpair_train.batches import read_step
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    forced = preset_overrides(preset)
    cfg = load_config(PretrainConfig, preset, [f"data.corpus={corpus.root}", f"text_encoder.tokenizer={tok_dir}",
                                               f"train.out_dir={out}", "train.progress=false", "train.device=cpu",
                                               f"train.threads={torch.get_num_threads()}", *forced, *extra])
    trainer = Trainer(cfg)
    first, _ = trainer.plan.span(0)
    trainer._enter_phase(0)  # multi-phase methods: the first phase (chauhan_ranking: ranking)
    n_read = min(steps + 2, first.steps)
    batches = []
    for s in range(n_read):
        gen = torch.Generator().manual_seed(s)
        batches.append([trainer._prepare(b, gen) for b in read_step(trainer.dataset, trainer.plan, s)])
    batches = [batches[k % n_read] for k in range(steps + 2)]  # a short first phase: repeat its batches

    encoder = trainer.model.image_encoder

    def encoder_step(micro):
        encoder.train()
        encoder.zero_grad(set_to_none=True)
        for mb in micro:
            with trainer._autocast():
                out = encoder(mb["images"])
            (out.float().pow(2).mean() / len(micro)).backward()
        encoder.zero_grad(set_to_none=True)

    for b in batches[:2]:
        trainer.train_step(b)
        encoder_step(b)
    full, enc = [], []
    for k, b in enumerate(batches[2:]):  # alternate, and swap the order every step
        order = ((full, lambda b=b: trainer.train_step(b)), (enc, lambda b=b: encoder_step(b)))
        for times, fn in order if k % 2 == 0 else order[::-1]:
            times.extend(timed(fn, 1))
    per_step, per_enc = statistics.median(full), statistics.median(enc)
    micro = batches[0]
    image_keys = sorted({k for mb in micro for k in mb if k == "images" or k.endswith("_images")})
    return {"preset": preset.name, "preset_sha256": hashlib.sha256(preset.read_bytes()).hexdigest()[:12],
            "overrides": [*forced, *extra], "method": cfg.method.name,
            "phase": first.phase.name, "phases": [sp.phase.name for sp in trainer.plan.spans],
            "image_encoder": cfg.image_encoder.name, "image_size": list(corpus.image_size),
            "text_max_length": cfg.text_encoder.max_length, "augment": bool(cfg.data.augment.enabled),
            "rows": len(trainer.dataset), "batch": trainer.batch_size, "micro_batches": len(micro),
            "image_tensors": image_keys,
            "images_per_step": sum(int(mb[k].shape[0]) for mb in micro for k in image_keys if k in mb),
            "batch_keys": sorted({k for mb in micro for k in mb}),
            "steps_timed": len(full),
            "full_step_s_median": per_step, "image_encoder_step_s_median": per_enc,
            "full_over_image_encoder": per_step / per_enc,
            "full_step_s_all": full, "image_encoder_step_s_all": enc,
            "step_s_median": per_step, "images_per_s": trainer.batch_size / per_step,
            "images_per_s_best": trainer.batch_size / min(full)}


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


def select_presets(names: list[str] | None) -> list[Path]:
    presets = sorted((REPO / "configs").glob("*_cpu.yaml")) or [PRESET]
    if not names:
        return presets
    by_stem = {p.stem: p for p in presets}
    by_stem.update({p.stem.removesuffix("_cpu"): p for p in presets})
    unknown = [n for n in names if n not in by_stem]
    if unknown:
        sys.exit(f"unknown preset(s) {unknown}; known: {sorted(p.stem for p in presets)}")
    return list(dict.fromkeys(by_stem[n] for n in names))


def print_table(rows: list[dict]) -> None:
    head = f"{'method':<18} {'preset':<28} {'variant':<14} {'phase':<10} {'batch':>5} " \
           f"{'full step s':>11} {'img-enc step s':>14} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        variant = "channels_last" if "train.channels_last=true" in r["overrides"] else "as written"
        print(f"{r['method']:<18} {r['preset']:<28} {variant:<14} {r['phase']:<10} {r['batch']:>5} "
              f"{r['full_step_s_median']:>11.3f} {r['image_encoder_step_s_median']:>14.3f} "
              f"{r['full_over_image_encoder']:>6.2f}")


def check_corpus(corpus) -> None:
    """The presets need report sections and ground-truth edema grades (see the docstring)."""
    truth = corpus.ground_truth
    if truth is None or "edema_severity" not in truth.columns:
        sys.exit(f"{corpus.root}: no ground-truth edema_severity (is radpair.data.synth available?)")
    reports = corpus.index["report"].astype(str)
    if not reports.str.contains("FINDINGS").any() or not reports.str.contains("IMPRESSION").any():
        sys.exit(f"{corpus.root}: reports have no FINDINGS/IMPRESSION sections")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="corpus image size for the presets")
    p.add_argument("--images", type=int, default=1024, help="synthetic corpus size for the presets")
    p.add_argument("--steps", type=int, default=6, help="timed steps per preset (2 more are warm-up)")
    p.add_argument("--presets", nargs="+", default=None, metavar="NAME",
                   help="only these presets, by file stem (convirt_cpu; the _cpu may be left off)")
    p.add_argument("--no-channels-last", action="store_true", help="presets as written only")
    p.add_argument("--encoders", default="resnet18,resnet50")
    p.add_argument("--encoder-batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--encoders-only", action="store_true", help="skip the preset measurements")
    only.add_argument("--presets-only", action="store_true", help="skip the image encoder vs matmul section")
    p.add_argument("--profile", action="store_true", help="add per-operator time shares of the encoder step")
    p.add_argument("--work", default=None, help="folder for the corpus (kept between runs)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    set_threads(args.threads)
    presets = [] if args.encoders_only else select_presets(args.presets)
    preset_rows = []
    if presets:
        work, corpus, tok = bench_inputs(args.work, args.images, args.size)
        check_corpus(corpus)
        variants = [[]] + ([] if args.no_channels_last else [["train.channels_last=true"]])
        for preset in presets:
            for k, extra in enumerate(variants):
                out = work / "runs" / f"{preset.stem}-{k}"
                preset_rows.append(preset_throughput(preset, corpus, tok, out, args.steps, extra))
                print({k: v for k, v in preset_rows[-1].items() if not k.endswith("_all")}, flush=True)
    encoders = [] if args.presets_only else encoder_rows(args.encoders.split(","), args.encoder_batch, 224,
                                                           args.repeats, args.compile, args.profile)
    write_json({"benchmark": "engine_throughput", "machine": machine(), "presets": preset_rows, "image_encoders": encoders},
               args.json)
    if preset_rows:
        print_table(preset_rows)


if __name__ == "__main__":
    main()

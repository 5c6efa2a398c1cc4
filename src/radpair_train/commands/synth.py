"""`radpair synth`: write a synthetic radiograph-report corpus.

    radpair synth --n 2000 --size 128 --seed 0 --out cache/synth128
    radpair synth --n 5000 --size 64 --difficulty hard --config synth.yaml --out cache/hard64 --workers 4

``--config`` is a YAML file of :class:`radpair.data.synth.SynthConfig` keys (top level or
under ``synth:``) applied on top of the ``--difficulty`` preset.
"""

from __future__ import annotations

import argparse

from radpair.data.synth.config import DIFFICULTIES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate a synthetic chest radiograph + report corpus",
        description="Generate paired chest radiographs and radiology reports with known ground truth "
        "(the development stand-in for MIMIC-CXR). Same seed and settings give byte-identical output "
        "for any number of workers.",
    )
    p.add_argument("--n", type=int, default=2000, help="number of images (rows) to write (default 2000)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels, 64-512 (default 128)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output corpus folder (created; an existing corpus is overwritten)")
    p.add_argument("--workers", type=int, default=2, help="rendering processes (default 2; 1 = in-process)")
    p.add_argument("--difficulty", default="default", choices=list(DIFFICULTIES),
                   help="preset of image conspicuity, noise and report-error knobs (default: default)")
    p.add_argument("--config", help="YAML file with SynthConfig keys applied on top of the preset")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radpair.data.synth import generate_corpus, load_synth_config
    from radpair.data.synth.generate import _validate, check_output_dir

    cfg = load_synth_config(args.difficulty, args.config)
    _validate(args.n, args.size, args.seed, args.workers)
    check_output_dir(args.out, args.n, args.size)  # fail before any work, naming the folder

    if args.no_progress:
        corpus = generate_corpus(args.out, n_images=args.n, size=args.size, seed=args.seed, workers=args.workers,
                                 config=cfg)
    else:
        from radpair.progress import count_progress

        with count_progress("[bold]radpair synth") as bar:
            task = bar.add_task("render", total=args.n)
            corpus = generate_corpus(args.out, n_images=args.n, size=args.size, seed=args.seed,
                                     workers=args.workers, config=cfg,
                                     progress=lambda done, total: bar.update(task, completed=done))
    agree = corpus.meta["report_agreement"]["overall"]["agreement"]
    splits = ", ".join(f"{k} {v}" for k, v in corpus.meta["splits"].items())
    print(f"wrote {len(corpus)} images ({corpus.meta['n_patients']} patients, {corpus.meta['n_studies']} studies; "
          f"{splits}) to {corpus.root}; report/truth agreement {agree:.3f}")
    return 0

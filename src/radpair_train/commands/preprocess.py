"""`radpair preprocess`: turn a real dataset into a memory-mapped radpair corpus.

    radpair preprocess --dataset mimic_cxr_jpg --root /data/mimic-cxr-jpg --size 512 --out cache/mimic512
    radpair preprocess ... --shard 0/4      # on machine 0 of 4, then:
    radpair preprocess --merge shard0 shard1 shard2 shard3 --out cache/mimic512

Rerunning an interrupted command resumes it; see :mod:`radpair.data.cache`.
"""

from __future__ import annotations

import argparse
import sys


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    from radpair.errors import ConfigError

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{what} must be {n} comma-separated numbers, got {text!r}") from None
    if len(values) != n:
        raise ConfigError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess",
        help="decode a real dataset once into a resumable, memory-mapped cache",
        description="Decode, normalise and resize a dataset's radiographs into a radpair corpus folder. "
        "Interrupted runs resume; undecodable files are listed in skipped.csv.",
    )
    p.add_argument("--dataset", help="adapter name (see --list-datasets)")
    p.add_argument("--root", help="dataset folder")
    p.add_argument("--out", help="cache folder to create (or resume)")
    p.add_argument("--size", type=int, help="output side length in pixels (images are square)")
    p.add_argument("--workers", type=int, default=0, help="decoder processes (default: one per CPU core; 1: in-process)")
    p.add_argument("--shard", default="0/1", help="process only shard i of n (0-based), e.g. 0/4; merge with --merge")
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--pad", dest="fit", action="store_const", const="pad", help="fit the whole film, pad to square (default)")
    fit.add_argument("--crop", dest="fit", action="store_const", const="crop", help="fill the square, centre-crop the long side")
    p.set_defaults(fit="pad")
    p.add_argument("--resample", default="area", help="area (default), bilinear, bicubic or lanczos")
    p.add_argument("--no-draft", action="store_true", help="decode JPEGs at full size (draft DCT scaling is faster)")
    p.add_argument("--chunk-size", type=int, default=256, help="images per resumable unit of work (default 256)")
    p.add_argument("--limit", type=int, help="only the first N images of the index (smoke tests)")

    norm = p.add_argument_group("normalisation (recorded in meta.json)")
    norm.add_argument("--voi", default="auto", help="DICOM VOI: auto (LUT, else window), window, none")
    norm.add_argument("--fallback", default="minmax", help="range without VOI for >8-bit data: minmax, percentile, bits_stored")
    norm.add_argument("--percentiles", default="0.5,99.5", help="low,high for --fallback percentile")
    norm.add_argument("--no-invert-monochrome1", action="store_true", help="keep MONOCHROME1 polarity (not recommended)")
    norm.add_argument("--stretch-8bit", action="store_true", help="also apply --fallback to 8-bit images")

    sel = p.add_argument_group("selection and splits")
    sel.add_argument("--views", help="frontal, frontal_or_unknown or all (default: the dataset's)")
    sel.add_argument("--split-file", help="CSV with split + image_id/study_id/patient_id (e.g. a saved split_manifest.csv)")
    sel.add_argument("--unassigned", default="drop", help="rows missing from --split-file: drop (default) or hash")
    sel.add_argument("--split-seed", type=int, default=0, help="seed of the hashed patient split")
    sel.add_argument("--split-fractions", default="0.8,0.1,0.1", help="train,val,test for hashed splits")
    sel.add_argument("--ignore-official-split", action="store_true", help="hash patients even where an official split exists")

    ad = p.add_argument_group("dataset options (each dataset reads a subset)")
    ad.add_argument("--image-root", help="folder the image paths are relative to, if not --root")
    ad.add_argument("--uncertainty", default="keep", help="CheXpert-style -1 labels: keep (default), zeros, ones, ignore")
    ad.add_argument("--labels", dest="label_source", help="mimic: chexpert (default), negbio or none")
    ad.add_argument("--reports", help="mimic: reports folder or mimic-cxr-reports.zip")
    ad.add_argument("--metadata-root", help="mimic_cxr_dicom: folder with the MIMIC-CXR-JPG CSVs")
    ad.add_argument("--edema-root", help="mimic: folder with the edema severity CSVs")
    ad.add_argument("--csv", help="generic_csv / covid: the metadata CSV")
    ad.add_argument("--image-column")
    ad.add_argument("--text-column")
    ad.add_argument("--label-columns", help="comma-separated")
    ad.add_argument("--patient-column")
    ad.add_argument("--study-column")
    ad.add_argument("--view-column")
    ad.add_argument("--split-column")
    ad.add_argument("--patient-regex", help="regex whose first group (or group 'patient') is the patient id in a file name")
    ad.add_argument("--image-ext", help="mimic_cxr_jpg: jpg (default) or png")

    run_group = p.add_argument_group("running")
    run_group.add_argument("--merge", nargs="+", metavar="SHARD_DIR", help="assemble --out from finished shard folders")
    run_group.add_argument("--overwrite", action="store_true", help="discard an existing cache or unfinished work in --out")
    run_group.add_argument("--keep-work", action="store_true", help="keep the per-chunk files after assembly")
    run_group.add_argument("--no-progress", action="store_true")
    run_group.add_argument("--list-datasets", action="store_true", help="list dataset adapters and exit")
    p.set_defaults(func=run)


def _list_datasets() -> int:
    from radpair.data.adapters import ADAPTERS

    for name in ADAPTERS.names():
        print(f"{name:18s} {ADAPTERS.get(name).summary}")
    return 0


def _print_report(report, index=None) -> None:
    if index is not None:
        for note in index.notes:
            print(f"  note: {note}")
    for note in report.notes:
        print(f"  note: {note}")
    if report.complete:
        rate = report.images_decoded_now and report.seconds and (report.images_decoded_now / report.seconds)
        print(
            f"cache {report.out}: {report.n_written} images written, {report.n_skipped} skipped"
            + (f" (see {report.out / 'skipped.csv'})" if report.n_skipped else "")
            + f"; {report.chunks_done_now} chunks decoded now, {report.chunks_reused} reused, {report.seconds:.1f} s"
            + (f" ({rate:.0f} images/s)" if rate else "")
        )
        for reason, count in sorted(report.skip_reasons.items(), key=lambda kv: -kv[1]):
            print(f"  skipped {count}: {reason}")
    else:
        print(
            f"{report.out}: {report.chunks_done_now} chunks ({report.images_decoded_now} images) decoded, "
            f"{report.chunks_reused} reused ({report.seconds:.1f} s)"
        )


def run(args: argparse.Namespace) -> int:
    from radpair.errors import ConfigError

    if args.list_datasets:
        return _list_datasets()
    if not args.out:
        raise ConfigError("--out is required")
    from radpair.data.cache import merge_shards

    if args.merge:
        report = merge_shards(args.out, args.merge, keep_work=args.keep_work)
        _print_report(report)
        return 0
    missing = [f"--{n}" for n in ("dataset", "root", "size") if getattr(args, n) in (None, "")]
    if missing:
        raise ConfigError(f"{', '.join(missing)} required (or --merge SHARD_DIR ... to assemble shards)")

    from radpair.data.adapters import AdapterOptions, SplitSpec, build_index
    from radpair.data.cache import CacheConfig, build_cache, parse_shard
    from radpair.data.io import NormalisationSpec, ResizeSpec

    options = AdapterOptions(
        image_root=args.image_root,
        views=args.views,
        uncertainty=args.uncertainty,
        label_source=args.label_source,
        reports=args.reports,
        metadata_root=args.metadata_root,
        edema_root=args.edema_root,
        csv=args.csv,
        image_column=args.image_column,
        text_column=args.text_column,
        label_columns=[c.strip() for c in args.label_columns.split(",") if c.strip()] if args.label_columns else None,
        patient_column=args.patient_column,
        study_column=args.study_column,
        view_column=args.view_column,
        split_column=args.split_column,
        patient_regex=args.patient_regex,
        image_ext=args.image_ext,
    )
    split = SplitSpec(
        seed=args.split_seed,
        fractions=_floats(args.split_fractions, 3, "--split-fractions"),
        file=args.split_file,
        unassigned=args.unassigned,
        ignore_official=args.ignore_official_split,
    )
    config = CacheConfig(
        resize=ResizeSpec(args.size, fit=args.fit, resample=args.resample, draft=not args.no_draft),
        normalisation=NormalisationSpec(
            voi=args.voi,
            fallback=args.fallback,
            percentiles=_floats(args.percentiles, 2, "--percentiles"),
            invert_monochrome1=not args.no_invert_monochrome1,
            stretch_8bit=args.stretch_8bit,
        ),
        chunk_size=args.chunk_size,
        workers=args.workers,
        shard=parse_shard(args.shard),
        progress=not args.no_progress and sys.stderr.isatty(),
        keep_work=args.keep_work,
        overwrite=args.overwrite,
    )
    index = build_index(args.dataset, args.root, options, split, limit=args.limit)
    print(f"{args.dataset}: {len(index)} images from {args.root} ({index.split.source} split: {index.split.counts})")
    report = build_cache(index, args.out, config)
    _print_report(report, index)
    return 0

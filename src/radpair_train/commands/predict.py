"""`radpair predict`: apply a model package to DICOM, PNG and JPEG files.

A thin layer over :func:`radpair.package.predict`. Every input file gets a row; an
unreadable one says why in ``reason`` instead of disappearing.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="probabilities and labels for image files (DICOM, PNG, JPEG) from a model package",
        description="Read images and folders (recursively) the way `radpair preprocess` does, prepare them with the "
        "package's preprocessing spec, and write per-image probabilities, thresholded labels, and a status/reason "
        "column (unreadable files, inputs unlike the training images, out-of-distribution features) to a CSV, "
        "streaming: rows are written as batches finish.",
    )
    p.add_argument("--model", required=True, help="model package folder (radpair export)")
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDER", help="image files and/or folders")
    p.add_argument("--out", "-o", required=True, help="output CSV (study aggregates go to OUT.studies.csv)")
    p.add_argument("--cam", metavar="DIR", default=None, help="write Grad-CAM overlays (PNG) of the top output here")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--study-column", default=None,
                   help="study id per image: 'folder' (parent folder), a DICOM keyword (e.g. StudyInstanceUID), or "
                   "a column of --study-map; adds max/mean per study")
    p.add_argument("--study-map", default=None, help="CSV with a 'path' column and the --study-column column")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: up to 4)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the model (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radpair.package import predict

    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    predict(args.model, args.inputs, args.out, batch_size=args.batch, cam_dir=args.cam,
            study_column=args.study_column, study_map=args.study_map, device=args.device, workers=args.workers,
            progress=not args.no_progress)
    return 0

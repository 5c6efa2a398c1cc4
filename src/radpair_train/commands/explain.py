"""`radpair explain`: what a trained model looked at, as PNG overlays and an HTML page.

A thin layer over :func:`radpair.explain.explain_run`; every explanation the model offers
is written, and every input that cannot be read gets a row with the reason.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="Grad-CAM, attention and similarity maps, t-SNE of a finished run or model package",
        description="Explain a finished run (any method) or a model package (radpair export) on corpus images or "
        "image files: Grad-CAM on the image branch, the [CLS] token's attention over the report (BERT text "
        "encoders), decoder attention per generated word (report writers), image-sentence similarity maps "
        "(joint embeddings) and a t-SNE of image embeddings. Writes PNGs, index.html and explanations.json.",
    )
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run folder (radpair pretrain) or package")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", metavar="DIR", help="corpus folder (images, reports, labels)")
    src.add_argument("--images", nargs="+", metavar="FILE", help="image files (DICOM, PNG, JPEG)")
    p.add_argument("--split", default="test", help="corpus split (default test; 'all' for every row)")
    p.add_argument("--limit", type=int, default=16, help="corpus images to explain (default 16)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--target", default="auto",
                   help="class whose score Grad-CAM explains (a classifier's class, or a prompt class for joint "
                   "embeddings); auto: each image's top class / own report (default)")
    p.add_argument("--layer", default=None, help="Grad-CAM layer (dotted module name); default: the last encoder "
                   "stage with at least 14x14 cells at the input size")
    p.add_argument("--prompts", default="findings7", help="prompt file for joint-embedding targets (default findings7)")
    p.add_argument("--color-by", default=None, help="label column colouring the t-SNE (default: the first)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder, when the run's is not found")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radpair.explain import explain_run

    result = explain_run(args.checkpoint, args.out, corpus=args.corpus, split=args.split, limit=args.limit,
                         images=args.images, target=args.target, layer=args.layer, device=args.device,
                         progress=not args.no_progress, prompts=args.prompts, color_by=args.color_by,
                         tokenizer=args.tokenizer)
    bad = [i for i in result.items if i.status != "ok"]
    print(f"explained {len(result.items) - len(bad)} of {len(result.items)} inputs with {result.method}; "
          f"Grad-CAM layer {result.layer} {result.layer_cells}; page {result.out / 'index.html'}")
    for item in bad:
        print(f"  {item.input}: {item.reason}")
    return 0

"""`radpair label`: label reports with a schema (edema severity, CheXpert, ChestX-ray14).

    radpair label --schema chexpert reports.csv -o labels.csv
    radpair label --schema edema mimic-cxr-reports/files/ -o edema.csv --sections chauhan2020
    radpair label --schema chestxray14 indiana_reports.csv --id-column uid \\
        --text-column indication,findings,impression -o iu_labels.csv --explain

INPUT is a CSV (``--text-column``, default ``report``; ``--id-column``, default ``id`` or
the row number) or a folder of ``.txt`` reports. The output has the id column and one
column per label: 1 / 0 / -1 (uncertain) / empty, or 0-3 for edema severity; with
``--explain`` an ``evidence`` column says which phrase, where, and which cue. Every input
id appears in the output; unreadable inputs are listed on standard error and get empty
labels.
"""

from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    from radpair.reports import LAYOUTS

    p = sub.add_parser(
        "label",
        help="label reports: edema severity, CheXpert or ChestX-ray14 findings",
        description="Label radiology reports with a rule pack run by one engine with NegEx/ConText-style "
        "negation and uncertainty detection.",
    )
    p.add_argument("input", help="CSV/TSV file, a .txt report, or a folder of .txt reports")
    p.add_argument("-o", "--output", required=True, help="output CSV ('-' for standard output)")
    p.add_argument("--schema", required=True, help="edema, chexpert or chestxray14")
    p.add_argument("--text-column", default="report", help="CSV column(s) with the report text (default: report)")
    p.add_argument("--id-column", default=None, help="CSV id column (default: 'id', else the row number)")
    p.add_argument("--sections", default="body", metavar="POLICY",
                   help="which sections to read (default: body = all but indication/history/technique/comparison)")
    p.add_argument("--layout", default="auto", choices=list(LAYOUTS), help="report layout (default: auto)")
    p.add_argument("--phrases-dir", help="chexpert: chexpert-labeler checkout with phrases/mention "
                   "(default: ../shared/data/chexpert_labeler or $RADPAIR_CHEXPERT_DIR)")
    p.add_argument("--edema-keywords", choices=["table", "extended"], default="table",
                   help="edema: the paper's Table 1 keywords (default) or radpair's extended list")
    p.add_argument("--edema-uncertain", choices=["affirm", "ignore", "negate"], default="affirm",
                   help="edema: how an uncertain keyword counts (default: affirm, as the paper's regex)")
    p.add_argument("--explain", action="store_true", help="add an 'evidence' column")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when an input could not be read")
    p.set_defaults(func=run)


def build_labeler(args: argparse.Namespace):
    from radpair.reports.labeling import get_labeler

    opts = {"sections": args.sections, "layout": args.layout}
    if args.schema == "chexpert":
        opts["phrases_dir"] = args.phrases_dir
    elif args.schema == "edema":
        opts.update(keywords=args.edema_keywords, uncertain=args.edema_uncertain)
    return get_labeler(args.schema, **opts)


def evidence_text(result) -> str:
    parts = []
    for ev in result.evidence:
        cue = f" ({ev.cue_kind}: {ev.cue!r})" if ev.cue else ""
        parts.append(f"{ev.label}: {ev.phrase!r}@{ev.start}-{ev.end} {ev.status.value}{cue}")
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from radpair.reports.inputs import read_report_inputs, write_table
    from radpair_train.commands.sections import report_problems

    labeler = build_labeler(args)  # bad schema/options fail before reading the input
    t0 = time.perf_counter()
    inputs = read_report_inputs(args.input, args.text_column, args.id_column)
    names = labeler.label_names
    rows, evidence = [], []
    for text in inputs.texts:
        result = labeler.label(text) if text is not None else labeler.empty()
        rows.append([result.values[n] for n in names])
        if args.explain:
            evidence.append(evidence_text(result))
    table = pd.DataFrame(rows, columns=names).astype("Int64")
    table.insert(0, inputs.id_column, inputs.ids)
    if args.explain:
        table["evidence"] = evidence
    write_table(table, args.output)
    report_problems("label", inputs)
    dt = time.perf_counter() - t0
    if args.output != "-":
        print(f"labeled {len(inputs)} reports with {args.schema} in {dt:.1f} s -> {args.output}", file=sys.stderr)
    return 1 if (args.strict and inputs.problems) else 0
